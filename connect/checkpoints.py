"""Checkpoints: orbax for the arrays, a JSON file for what they are, and a digest of both, written last::

    CKPT/params/              orbax StandardCheckpointer tree of the params pytree
    CKPT/opt_state/           (training states) orbax tree {"000000": leaf, ...} of the optimizer state's leaves
    CKPT/params.safetensors   (``export_arrays=True``) the same arrays for readers without connect, keys the dotted
                              key paths (``W``, ``h.mlp.c_fc.kernel``): ``safetensors.numpy.load_file``
    CKPT/metadata.json        model, architecture, optimizer, λ, seed, data, final loss; "format": FORMAT
    CKPT/digest.json          {"format": DIGEST_FORMAT, "metadata.json": sha256 of its bytes, "files": {"params/_METADATA":
                              sha256, ...}, "arrays": {"params/W": {"sha256" of the C-order bytes, "shape", "dtype"}, ...}}

``digest.json`` is written last (atomically): a directory without it is an interrupted save, never taken for a
finished one (``LEGACY_FORMAT`` checkpoints, from before digests, end at their metadata and still load). Loading
checks the metadata, each file read and each array against the digest (a flipped byte that orbax decodes into other
numbers is caught, the array named), then that every float is finite (``allow_nonfinite`` reads a diverged model);
families type their ``model_config`` (:func:`model_config`) and check shapes (:func:`check_shapes`). No pickle."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from connect.errors import UserError
from connect.io import write_json_atomic

FORMAT = "connect-checkpoint/2"
#: Checkpoints written before digests: complete once their metadata is written, loaded without a digest.
LEGACY_FORMAT = "connect-checkpoint/1"
DIGEST_FORMAT = "connect-digest/1"
DIGEST_FILE = "digest.json"
_DIGEST_KEYS = {"format": str, "metadata.json": str, "arrays": dict, "files": dict}
#: The arrays of a checkpoint saved with ``export_arrays`` (safetensors, readable without connect).
ARRAYS_FILE = "params.safetensors"
#: The command that writes each family's checkpoints and its output flag (named in the fix of a damaged one).
_LM = ("gpt2", "llama", "qwen2", "mistral", "gpt_neox")  # language-model families and Hugging Face model types
WRITERS = {"relu": ("connect width-sweep", "--run-dir"), **{f: ("connect train-lm", "--out") for f in _LM}}


def save_checkpoint(path: str, params: dict, metadata: dict, *, export_arrays: bool = False) -> None:
    """Save ``params`` (a pytree of arrays) and ``metadata`` (JSON-able) to directory ``path`` (with ``export_arrays``
    also ``params.safetensors``). An existing checkpoint (finished or interrupted) at ``path`` is replaced; any
    other existing file or directory is left alone and raises :class:`UserError`."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not _holds_only_a_checkpoint(path):
        raise UserError(f"{path} exists and is not a checkpoint directory: refusing to overwrite it, pass a new path")
    _save(path, {"params": params}, metadata, export_arrays)


def _save(path: str, trees: dict, metadata: dict, export_arrays: bool = False) -> None:
    """Write the orbax ``trees`` (name -> pytree) into a fresh ``path``, then the metadata, then the digest."""
    if jax.process_index() != 0:  # orbax writes numpy arrays on process 0 only; there it waits at no other process's barrier
        raise UserError(f"{path}: a jax.distributed run saves checkpoints on process 0 only, not on process {jax.process_index()}")
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    host = {name: jax.tree.map(np.asarray, jax.device_get(tree)) for name, tree in trees.items()}
    with ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(0, {0})) as ckptr:
        for name, tree in host.items():
            ckptr.save(os.path.join(path, name), tree)
        ckptr.wait_until_finished()
    if export_arrays:
        flat = {name: np.ascontiguousarray(x) for name, x in _flat(host["params"]).items()}
        safetensors.numpy.save_file(flat, os.path.join(path, ARRAYS_FILE))
    write_json_atomic(os.path.join(path, "metadata.json"), {**metadata, "format": FORMAT})
    files = {rel: _file_sha256(os.path.join(path, rel)) for rel in _files(path)}
    arrays = {f"{name}/{key}": _array_digest(x) for name, tree in host.items() for key, x in _flat(tree).items()}
    write_json_atomic(os.path.join(path, DIGEST_FILE), {"format": DIGEST_FORMAT, "metadata.json": files.pop("metadata.json"),
                                                        "arrays": arrays, "files": files})


def _flat(tree) -> dict:
    """Every leaf of ``tree`` under its dotted key path (``{"h": {"ln_f": …}}`` -> ``"h.ln_f"``)."""
    return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path): leaf
            for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _array_digest(x) -> dict:
    x = np.ascontiguousarray(x)
    return {"sha256": hashlib.sha256(x.tobytes()).hexdigest(), "shape": list(x.shape), "dtype": x.dtype.name}


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _files(path: str) -> list[str]:
    """The files below ``path`` but the digest, relative to it with ``/`` separators."""
    found = [os.path.relpath(os.path.join(root, n), path) for root, _, names in os.walk(path) for n in names]
    return sorted(f.replace(os.sep, "/") for f in found if f != DIGEST_FILE)


def _holds_only_a_checkpoint(path: str) -> bool:
    """``path`` is a directory of what :func:`_save` writes (orbax's ``*.orbax-checkpoint-tmp-*`` and ``.tmp-*`` too)."""
    return os.path.isdir(path) and all(
        e.startswith(("params", "opt_state", ".tmp-")) or e in ("metadata.json", DIGEST_FILE) for e in os.listdir(path))


def is_complete(path: str) -> bool:
    """True when ``path`` holds a finished checkpoint: its digest was written (a ``LEGACY_FORMAT`` one: its metadata)."""
    meta = os.path.join(path, "metadata.json")
    return (os.path.isfile(meta) and os.path.isdir(os.path.join(path, "params"))
            and (os.path.isfile(os.path.join(path, DIGEST_FILE)) or _json_string(meta, "format") == LEGACY_FORMAT))


def load_checkpoint(path: str, *, allow_nonfinite: bool = False) -> tuple[dict, dict]:
    """``(params, metadata)`` (numpy) of checkpoint ``path``; a UserError when it is missing, incomplete, unreadable,
    unlike its digest, or (unless ``allow_nonfinite``) holds a NaN or an infinity."""
    metadata, digest = _open(path)
    params = _restore(path, "params", digest)
    if not allow_nonfinite:
        check_finite(path, params)
    return params, metadata


def _open(path: str) -> tuple[dict, dict | None]:
    """The metadata and digest (None: a legacy checkpoint) of checkpoint ``path``, the metadata checked against it."""
    if not os.path.isdir(path):
        raise UserError(f"checkpoint {path} not found: pass a checkpoint directory written by `connect width-sweep` "
                        "(RUN/checkpoints/...) or `connect train-lm` (OUT/seed-S/ckpt/step-K)")
    meta_path = os.path.join(path, "metadata.json")
    if not os.path.isfile(meta_path):
        raise UserError(f"checkpoint {path} is incomplete (no metadata.json: its save was interrupted): {_redo(path)}")
    try:
        metadata = json.loads(raw := Path(meta_path).read_bytes())
    except (OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} has a corrupt metadata.json ({_shown(e, 300)}): {_redo(path)}") from None
    if not isinstance(metadata, dict):
        raise UserError(f"checkpoint {path} has a corrupt metadata.json (a JSON {type(metadata).__name__}, not an object): {_redo(path)}")
    if metadata.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise UserError(f"checkpoint {path} is not a connect checkpoint (format {_shown(metadata.get('format'))}, expected {FORMAT!r})")
    if metadata["format"] == LEGACY_FORMAT:
        return metadata, None
    digest_path = os.path.join(path, DIGEST_FILE)
    if not os.path.isfile(digest_path):
        raise UserError(f"checkpoint {path} is incomplete (no {DIGEST_FILE}: its save was interrupted): {_redo(path)}")
    digest = _json_value(digest_path)
    if not (isinstance(digest, dict) and all(isinstance(digest.get(k), t) for k, t in _DIGEST_KEYS.items())
            and digest["format"] == DIGEST_FORMAT):
        raise UserError(f"checkpoint {path} has a damaged {DIGEST_FILE} (or one of a newer connect): {_redo(path)}")
    if digest["metadata.json"] != hashlib.sha256(raw).hexdigest():
        raise UserError(f"checkpoint {path}: metadata.json does not match its digest (changed after the save): {_redo(path)}")
    return metadata, digest


#: What an orbax/tensorstore error says about the array it failed on: ``Error reading "NAME/0.0" in … file "…": REASON``.
_ORBAX_ARRAY = re.compile(r'Error reading "([^"]+?)/[0-9.]+"(?: in .*? at local file "[^"]*")?:? ?(.*)')


def _restore(path: str, tree: str, digest: dict | None) -> dict:
    """The numpy arrays of orbax tree ``path/tree``, its files and arrays checked against ``digest`` (when any)."""
    listed = {rel: sha for rel, sha in (digest or {}).get("files", {}).items() if rel.startswith(f"{tree}/")}
    damaged = [f"{rel} {'does not match its digest' if os.path.isfile(os.path.join(path, rel)) else 'is missing'}"
               for rel, sha in sorted(listed.items())
               if not os.path.isfile(os.path.join(path, rel)) or _file_sha256(os.path.join(path, rel)) != sha]
    what = "unreadable parameters" if tree == "params" else "an unreadable optimizer state"
    for attempt in range(2):  # a failure that names no array (seen rarely, under load) is retried once for one that does
        try:
            with _quiet(), ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(me := jax.process_index(), {me})) as ckptr:
                restored = jax.tree.map(np.asarray, ckptr.restore(os.path.join(os.path.abspath(path), tree)))
            break
        except Exception as e:  # orbax raises many types for damaged trees
            if (m := _ORBAX_ARRAY.search(_shown(e, 300))) is None and attempt == 0:
                continue
            detail = f"array {m.group(1)} cannot be read: {m.group(2)[:160] or 'damaged'}" if m else _shown(e, 300)
            raise UserError(f"checkpoint {path} has {what} ({'; '.join([detail, *damaged[:1]])}): {_redo(path)}") from None
    want = {k[len(tree) + 1:]: v for k, v in (digest or {}).get("arrays", {}).items() if k.startswith(f"{tree}/")}
    got = _flat(restored)
    bad = [] if digest is None else sorted(k for k in set(want) | set(got) if k not in got or _array_digest(got[k]) != want.get(k))
    if bad or damaged:
        detail = f"array {bad[0]}{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''} does not match its digest" if bad else damaged[0]
        raise UserError(f"checkpoint {path} has {what} ({detail}: changed after the save): {_redo(path)}")
    return restored


@contextlib.contextmanager
def _quiet():
    """Mute absl/asyncio/orbax logs while restoring; drop the later unraisable "Event loop is closed" of tensorstore."""
    previous = sys.unraisablehook
    if not getattr(previous, "drops_closed_loop", False):
        def hook(u):
            if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"):
                previous(u)
        sys.unraisablehook, hook.drops_closed_loop = hook, True
    loggers = {lg: lg.level for lg in map(logging.getLogger, ("absl", "asyncio", "orbax"))}
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in loggers.items():
            lg.setLevel(level)


def check_finite(path: str, params, *, fix: str = "") -> None:
    """A UserError naming the first array of ``params`` holding a NaN or an infinity (``fix`` ends it, default: allow_nonfinite)."""
    for name, x in _flat(params).items():
        x = np.asarray(x)
        floats = x.dtype.kind in "fc" or "float" in x.dtype.name  # bfloat16's kind is "V"
        if floats and (bad := int(x.size - np.count_nonzero(np.isfinite(x)))):
            raise UserError(f"checkpoint {path}: array {name} holds {bad} non-finite value(s) (NaN or ±inf) of {x.size}: "
                            + (fix or "the model diverged; pass --allow-nonfinite (allow_nonfinite=True) to read it anyway, "
                                      "or pass an earlier checkpoint"))


def model_config(path: str, metadata: dict, cls: type, family: str, *, required: bool = True):
    """``metadata["model_config"]`` as dataclass ``cls`` (:func:`typed`) once ``metadata["model"]`` is ``family``; None
    when not ``required`` and nothing is recorded."""
    model, values = metadata.get("model"), metadata.get("model_config")
    if (model is not None or required) and not isinstance(model, str):
        raise UserError(f"checkpoint {path}: metadata.json field model = {_shown(model)} is not a string: {_redo(path)}")
    if (model is not None or required) and model != family:
        raise UserError(f"checkpoint {path} holds a {_shown(model)} model, not a {family} one: pass a {family} checkpoint")
    if values is None and not required:
        return None
    if not isinstance(values, dict):
        raise UserError(f"checkpoint {path}: metadata.json field model_config = {_shown(values)} is not an object: {_redo(path)}")
    return typed(path, "model_config", values, cls)


#: How a field of each annotated type is written in JSON (an int is no bool; a float may be written as an int).
_JSON_KINDS = {"int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
               "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
               "bool": ("true or false", lambda v: isinstance(v, bool)), "str": ("a string", lambda v: isinstance(v, str)),
               "None": ("null", lambda v: v is None)}


def typed(path: str, where: str, values: dict, cls: type):
    """``cls(**values)`` for the metadata table ``where`` of checkpoint ``path``; an unknown or missing field, or a
    value not of the field's annotated type (``int``, ``float``, ``bool``, ``str``, ``X | None``) is a UserError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, val in values.items():
        if key not in fields:
            raise UserError(f"checkpoint {path}: metadata.json has an unknown field {where}.{_shown(key)[1:-1]} "
                            f"(known: {', '.join(fields)}): {_redo(path)}")
        annotation = fields[key].type if isinstance(fields[key].type, str) else getattr(fields[key].type, "__name__", "")
        kinds = [_JSON_KINDS[t.strip()] for t in annotation.split("|") if t.strip() in _JSON_KINDS]
        if kinds and not any(ok(val) for _, ok in kinds):
            raise UserError(f"checkpoint {path}: metadata.json field {where}.{key} = {_shown(val)} is not "
                            f"{' or '.join(name for name, _ in kinds)}: {_redo(path)}")
    missing = [n for n, f in fields.items() if n not in values and f.default is f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"checkpoint {path}: metadata.json lacks field {where}.{missing[0]}: {_redo(path)}")
    return cls(**{k: float(v) if fields[k].type in ("float", float) else v for k, v in values.items()})


def check_shapes(path: str, params, want) -> None:
    """A UserError naming the first array of ``params`` whose shape is not ``want``'s (a pytree of arrays or
    ``jax.ShapeDtypeStruct``, e.g. ``jax.eval_shape`` of the family's init at the recorded config), or that one lacks."""
    got, need = ({k: tuple(x.shape) for k, x in _flat(t).items()} for t in (params, want))
    for name in sorted(set(got) | set(need)):
        if got.get(name) != need.get(name):
            detail = (f"lacks array {name} of shape {need[name]} that its model_config implies" if name not in got else
                      f"has an array {name} that its model_config has no place for" if name not in need else
                      f"has array {name} of shape {got[name]}, its model_config implies {need[name]}")
            raise UserError(f"checkpoint {path} {detail}: the metadata does not describe the arrays; {_redo(path)}")


def _redo(path: str) -> str:
    """The fix for a damaged or unfinished checkpoint: delete it and rerun the command of its family (that wrote it)."""
    step = os.path.basename(os.path.normpath(path)).startswith(STEP_PREFIX)  # OUT/seed-S/ckpt/step-K of train-lm
    command, flag = WRITERS.get(family(path), WRITERS["gpt2"] if step else ("", ""))
    return (f"delete {path} and re-run `{command}` with the same {flag} to write it again" if command
            else f"delete {path} and save it again with the program that wrote it")


def _shown(value, n: int = 60) -> str:
    """``repr(value)`` (an exception: its message) on one line, cut to ``n`` characters: untrusted text in messages."""
    text = (str(value) or type(value).__name__) if isinstance(value, Exception) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


# --- training states, for resuming (connect.lm.training): DIR/step-00000250/ holds params/, opt_state/ (the
# optimizer state's leaves), metadata.json ({"step": 250, ...}) and digest.json (of all of them), as above.

STEP_PREFIX = "step-"


def step_dir(directory: str, step: int) -> str:
    """The checkpoint directory of training step ``step`` inside ``directory``."""
    return os.path.join(directory, f"{STEP_PREFIX}{step:08d}")


def save_train_state(path: str, params, opt_state, metadata: dict) -> None:
    """Save params, the leaves of ``opt_state`` (any pytree) and ``metadata`` to ``path`` (replaced if it exists); the
    digest last, so an interrupted save is never complete."""
    leaves = {f"{i:06d}": x for i, x in enumerate(jax.tree.leaves(opt_state))}
    _save(os.path.abspath(path), {"params": params, "opt_state": leaves}, metadata)


def load_train_state(path: str, opt_state_like) -> tuple[dict, object, dict]:
    """``(params, opt_state, metadata)`` saved by :func:`save_train_state`, checked against the digest and finite;
    ``opt_state_like`` (e.g. a fresh ``optimizer.init(params)``) gives the optimizer state's tree structure."""
    metadata, digest = _open(path)
    params, flat = _restore(path, "params", digest), _restore(path, "opt_state", digest)
    fix = f"the run diverged before this step; delete {path} to resume from an earlier checkpoint, with a smaller --lr"
    for arrays in (params, flat):  # the optimizer state's arrays are named 000000, 000001, …
        check_finite(path, arrays, fix=fix)
    treedef = jax.tree.structure(opt_state_like)
    leaves = [np.asarray(flat[k]) for k in sorted(flat)] if flat else []
    if len(leaves) != treedef.num_leaves:
        raise UserError(f"checkpoint {path} holds {len(leaves)} optimizer-state arrays, the optimizer needs {treedef.num_leaves}: "
                        "it was written by another optimizer; pass a new run directory")
    return params, jax.tree.unflatten(treedef, leaves), metadata


def _steps(directory: str) -> dict[int, str]:
    """The ``step-K`` entries of ``directory`` by step K."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return {int(n[len(STEP_PREFIX):]): n for n in names if n.startswith(STEP_PREFIX) and n[len(STEP_PREFIX):].isdigit()}


def complete_steps(directory: str) -> list[int]:
    """The steps of the complete training checkpoints in ``directory`` (their digest written), ascending."""
    return sorted(step for step, name in _steps(directory).items() if is_complete(os.path.join(directory, name)))


def prune(directory: str, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints of ``directory``, and incomplete ones older than them."""
    kept = complete_steps(directory)[-keep:]
    for step, name in _steps(directory).items():
        if kept and step not in kept and step < max(kept):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def recorded_optimizer(path: str) -> str | None:
    """The optimizer that trained the checkpoint at ``path``, as recorded on disk: the ``optimizer`` of its metadata
    (:func:`_recorded_metadata`: a checkpoint, or a ``connect train-lm`` seed or run directory), else of a ``config.json``
    in ``path`` or up to three directories above (the run's config); None when nothing records one (Hugging Face)."""
    recorded = _json_string(_recorded_metadata(path), "optimizer")
    here = os.path.abspath(path)
    for _ in range(4):  # path and up to three directories above
        if recorded is not None:
            return recorded
        recorded = _json_string(os.path.join(here, "config.json"), "optimizer")
        here = os.path.dirname(here)
    return recorded


def _recorded_metadata(path: str) -> str:
    """``path/metadata.json`` if it exists, else that of the newest ``step-*`` checkpoint below ``path``."""
    meta = os.path.join(path, "metadata.json")
    if not os.path.isfile(meta):
        found = glob.glob(os.path.join(glob.escape(path), "**", f"{STEP_PREFIX}*", "metadata.json"), recursive=True)
        steps = {m: os.path.basename(os.path.dirname(m))[len(STEP_PREFIX):] for m in found}
        meta = max((m for m in found if steps[m].isdigit()), key=lambda m: (int(steps[m]), m), default=meta)
    return meta


def _json_value(path: str):
    """The JSON value in file ``path``; None when it is unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _json_string(path: str, key: str) -> str | None:
    """``key`` of the JSON object in file ``path`` when it is a string; None when absent or unreadable."""
    return value.get(key) if isinstance(value := _json_value(path), dict) and isinstance(value.get(key), str) else None


#: The commands that analyse each model family's checkpoints (named when a checkpoint of another family is passed).
FAMILY_COMMANDS = {"relu": "connect barrier or connect theory", **dict.fromkeys(_LM, "connect paths or connect eval-lm")}


def family(path: str) -> str | None:
    """The model family of the checkpoint at ``path`` from what is on disk: the ``model`` of a connect checkpoint's
    ``metadata.json`` (or of the newest ``step-*`` below a run or seed directory), the ``model_type`` of a Hugging
    Face ``config.json`` (``qwen2``, … for the Llama family); None when neither says."""
    meta = _recorded_metadata(path)
    return _json_string(meta, "model") if os.path.isfile(meta) else _json_string(os.path.join(path, "config.json"), "model_type")


def expect_family(path: str, want: str | tuple[str, ...]) -> None:
    """A UserError when the checkpoint at ``path`` is recorded as another model family than ``want`` (one or several,
    naming the family found and its commands); nothing when it is wanted or unrecorded (the loader says more)."""
    wanted = (want,) if isinstance(want, str) else tuple(want)
    if (found := family(path)) is not None and found not in wanted:
        what = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
        raise UserError(f"{path} holds a {found} model, not a {what} one: "
                        f"pass it to {FAMILY_COMMANDS.get(found, 'the commands of that family')}, or pass a {what} checkpoint here")
