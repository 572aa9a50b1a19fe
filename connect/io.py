"""Atomic file writes (a result file is either complete or absent, never half-written) and the one
run-directory contract: every input is checked before anything is written (:func:`check_directory`,
:func:`check_output_file`), then the directory gets one writer at a time (:func:`run_lock`), then its
settings file ties it to the settings it was started with (:func:`claim_directory`)::

    check_directory(out, settings)          # raises UserError, writes nothing
    with run_lock(out):                     # a second writer: UserError naming the holder's pid
        claim_directory(out, settings)
        ...                                 # the work
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

#: The lock file of a run directory (kept: unlinking a lock file races with a process opening it) and the
#: side file naming the holder's pid (the lock file itself is truncated by every process that tries it).
LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.pid"


def write_atomic(path: str, write, *, binary: bool = False) -> None:
    """Write ``path`` by ``write(file)`` into a temporary file of a unique name (``tempfile.mkstemp``) in the
    same directory, then ``os.replace``: readers see the old file or the whole new one, and processes writing
    one directory at once never share a temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, lambda f: f.write(text))


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def check_output_dir(out: str) -> None:
    """Raise :class:`~connect.errors.UserError` unless ``out`` is a directory, or can be created as one, that
    this process may write (writes nothing)."""
    from connect.errors import UserError

    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"output directory {out} is a file: pass a directory (new, or one this command wrote)")
    _check_creatable(out, "output directory")


def check_output_file(path: str) -> None:
    """Raise :class:`~connect.errors.UserError` unless ``path`` can be written as a file (writes nothing)."""
    from connect.errors import UserError

    if os.path.isdir(path):
        raise UserError(f"output file {path} is a directory: pass a file name, e.g. {os.path.join(path, 'result.json')}")
    _check_creatable(os.path.dirname(os.path.abspath(path)), "output file's directory")


def _check_creatable(directory: str, what: str) -> None:
    """``directory`` exists or can be made: its nearest existing ancestor is a directory this process may write."""
    from connect.errors import UserError

    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{what} {directory} cannot be created: {existing} is a file, not a directory: pass another path")
    mode = os.W_OK | os.X_OK | (os.R_OK if existing == os.path.abspath(directory) else 0)  # an existing one is also listed
    if not os.access(existing, mode):
        raise UserError(f"{what} {directory} is not writable ({existing} denies this user): pass a path you can write")


def check_directory(out: str, settings: dict, *, filename: str = "config.json", ignore=(), allowed=None,
                    flag: str = "--out") -> bool:
    """Check, writing nothing, that :func:`claim_directory` can claim ``out`` for ``settings``: ``out`` is a
    writable directory or can be made one, its ``filename`` (if any) is a JSON object whose settings not in
    ``ignore`` equal ``settings``', and without it ``out`` holds no entries but ``allowed`` (when given) and the
    lock files. Each failure is a UserError naming the problem and the fix (``flag``: the command's option that
    names ``out``); returns whether ``filename`` exists."""
    from connect.errors import UserError

    check_output_dir(out)
    path = os.path.join(out, filename)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UserError(f"{path} is not a file: pass a new {flag}")
    if not os.path.isfile(path):
        foreign = (set(os.listdir(out)) - set(allowed or ()) - {LOCK_FILE, HOLDER_FILE}) if os.path.isdir(out) else set()
        if allowed is not None and foreign:
            raise UserError(f"{out} exists and was not written by this command: pass an empty or new {flag}")
        return False
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is unreadable ({e}): pass a new {flag}") from None
    if not isinstance(stored, dict):
        raise UserError(f"{path} is not a settings file (a JSON {type(stored).__name__}, not an object): pass a new {flag}")
    for key, val in json.loads(json.dumps(settings)).items():
        if key not in ignore and stored.get(key) != val:
            raise UserError(f"{out} was started with {key} = {stored.get(key)!r}, not {val!r}: "
                            f"rerun with the same {key} to resume, or pass a new {flag}")
    return True


def claim_directory(out: str, settings: dict, *, filename: str = "config.json", ignore=(), allowed=None,
                    extra: dict | None = None, rewrite: bool = False, flag: str = "--out") -> bool:
    """Tie run directory ``out`` to ``settings``: write ``out/filename`` (``settings`` plus ``extra``) when
    it is absent, else check that every stored setting not in ``ignore`` equals ``settings``' (a resumed
    run computes what the first one would have) — a mismatch or an unreadable file is a UserError naming
    the key (:func:`check_directory`, which commands call before any work). With ``allowed`` (names), an
    ``out`` without the file must hold no entries but those (a directory of something else is refused).
    ``rewrite`` stores the new settings after a match (for settings in ``ignore`` that may grow, e.g. a
    learning-rate grid). Call it holding :func:`run_lock`; returns whether the file was new."""
    stored = check_directory(out, settings, filename=filename, ignore=ignore, allowed=allowed, flag=flag)
    if not stored or rewrite:
        write_json_atomic(os.path.join(out, filename), {**json.loads(json.dumps(settings)), **(extra or {})})
    return not stored


@contextlib.contextmanager
def run_lock(out: str):
    """Hold run directory ``out``'s one-writer lock (creating ``out`` if absent) for the ``with`` block.

    The lock is ``OUT/.lock`` (:data:`LOCK_FILE`), an OS file lock (the ``filelock`` library: ``flock`` on
    POSIX), taken without waiting; the OS releases it when its process ends, so a killed writer never
    blocks the next one. The holder's pid is kept in ``OUT/.lock.pid`` (:data:`HOLDER_FILE`) while it holds
    the lock. A directory held by another process (or another ``run_lock`` of this one) is a UserError
    naming that process. Take it after checking every input, before writing anything into ``out``."""
    import filelock

    from connect.errors import UserError

    check_output_dir(out)
    os.makedirs(out, exist_ok=True)
    lock = filelock.FileLock(os.path.join(out, LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UserError(f"{out} is being written by {_holder(out)}: wait for it to finish (or stop it), "
                        "or pass another output directory") from None
    holder = os.path.join(out, HOLDER_FILE)
    try:
        write_text_atomic(holder, f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(holder)
        lock.release()


def _holder(out: str) -> str:
    """``process PID`` of the lock's holder as its side file says (or ``another process``)."""
    try:
        with open(os.path.join(out, HOLDER_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return "another process"
    return f"process {pid}" + (" (this one)" if pid == os.getpid() else "")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
