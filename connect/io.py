"""Atomic file writes (a result file is either complete or absent, never half-written) and the
settings file that ties a resumable run directory to the settings it was started with."""

from __future__ import annotations

import json
import os
import tempfile


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def claim_directory(out: str, settings: dict, *, filename: str = "config.json", ignore=(), allowed=None,
                    extra: dict | None = None, rewrite: bool = False) -> None:
    """Tie run directory ``out`` to ``settings``: write ``out/filename`` (``settings`` plus ``extra``) when
    it is absent, else check that every stored setting not in ``ignore`` equals ``settings``' (a resumed
    run computes what the first one would have) — a mismatch or an unreadable file is a UserError naming
    the key. With ``allowed`` (names), an ``out`` without the file must hold no entries but those (a
    directory of something else is refused). ``rewrite`` stores the new settings after a match (for
    settings in ``ignore`` that may grow, e.g. a learning-rate grid)."""
    from connect.errors import UserError

    path = os.path.join(out, filename)
    want = json.loads(json.dumps(settings))
    if os.path.isfile(path):
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is unreadable ({e}): pass a new --out") from None
        if not isinstance(stored, dict):
            raise UserError(f"{path} is not a settings file (a JSON {type(stored).__name__}, not an object): pass a new --out")
        for key, val in want.items():
            if key not in ignore and stored.get(key) != val:
                raise UserError(f"{out} was started with {key} = {stored.get(key)!r}, not {val!r}: "
                                f"rerun with the same {key} to resume, or pass a new --out")
        if not rewrite:
            return
    elif allowed is not None and os.path.isdir(out) and set(os.listdir(out)) - set(allowed):
        raise UserError(f"{out} exists and was not written by this command: pass an empty or new --out")
    write_json_atomic(path, {**want, **(extra or {})})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
