"""Checkpoints: orbax for the parameters, a JSON file for what they are.

A checkpoint is a directory::

    CKPT/params/         orbax StandardCheckpointer tree of the params pytree
    CKPT/params.safetensors   (``export_arrays=True``) the same arrays for readers without connect:
                         ``safetensors.numpy.load_file``, keys the dotted key paths (``W``, ``h.mlp.c_fc.kernel``)
    CKPT/metadata.json   model, architecture, optimizer, λ, seed, data, final loss

``metadata.json`` is written last (atomically), so a directory without it is an
interrupted save and is never mistaken for a finished one. No pickle is involved.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from connect.errors import UserError
from connect.io import write_json_atomic

FORMAT = "connect-checkpoint/1"
#: The arrays of a checkpoint saved with ``export_arrays`` (safetensors, readable without connect).
ARRAYS_FILE = "params.safetensors"


def save_checkpoint(path: str, params: dict, metadata: dict, *, export_arrays: bool = False) -> None:
    """Save ``params`` (a pytree of arrays) and ``metadata`` (JSON-able) to directory ``path``;
    with ``export_arrays`` also ``params.safetensors`` (see the module docstring), before the metadata.

    An existing checkpoint (finished or interrupted) at ``path`` is replaced; any other
    existing file or directory is left alone and raises :class:`UserError`.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not _holds_only_a_checkpoint(path):
            raise UserError(f"{path} exists and is not a checkpoint directory: refusing to overwrite it, pass a new path")
        shutil.rmtree(path)
    os.makedirs(path)
    host = jax.tree.map(np.asarray, jax.device_get(params))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), host)
        ckptr.wait_until_finished()
    if export_arrays:
        safetensors.numpy.save_file(_flat_arrays(host), os.path.join(path, ARRAYS_FILE))
    write_json_atomic(os.path.join(path, "metadata.json"), {**metadata, "format": FORMAT})


def _flat_arrays(params) -> dict[str, np.ndarray]:
    """Every leaf of ``params`` under its dotted key path (``{"h": {"ln_f": …}}`` -> ``"h.ln_f"``)."""
    flat = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path)
        flat[name] = np.ascontiguousarray(leaf)
    return flat


def _holds_only_a_checkpoint(path: str) -> bool:
    """``path`` is a directory with nothing but what :func:`save_checkpoint` writes (``params``,
    orbax's ``params.orbax-checkpoint-tmp-*``, ``params.safetensors``, ``metadata.json`` and its
    ``.tmp-*`` file)."""
    return os.path.isdir(path) and all(
        e.startswith("params") or e == "metadata.json" or e.startswith(".tmp-") for e in os.listdir(path)
    )


def is_complete(path: str) -> bool:
    """True when ``path`` holds a finished checkpoint (its metadata was written)."""
    return os.path.isfile(os.path.join(path, "metadata.json")) and os.path.isdir(os.path.join(path, "params"))


def load_checkpoint(path: str) -> tuple[dict, dict]:
    """``(params, metadata)`` of the checkpoint in directory ``path``; params as numpy arrays.

    Raises :class:`UserError` when the directory is missing, incomplete or unreadable.
    """
    if not os.path.isdir(path):
        raise UserError(f"checkpoint {path} not found: pass a checkpoint directory written by `connect width-sweep` (RUN/checkpoints/...)")
    meta_path = os.path.join(path, "metadata.json")
    if not os.path.isfile(meta_path):
        raise UserError(f"checkpoint {path} is incomplete (no metadata.json): re-run the sweep with the same run directory to finish it")
    try:
        with open(meta_path) as f:
            metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint {path} has a corrupt metadata.json ({e}): re-run the sweep to rewrite it") from None
    if not isinstance(metadata, dict):
        raise UserError(f"checkpoint {path} has a corrupt metadata.json (a JSON {type(metadata).__name__}, not an object): re-run the sweep to rewrite it")
    if metadata.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a connect checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(os.path.abspath(os.path.join(path, "params")))
    except Exception as e:  # orbax raises many types for damaged trees
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"checkpoint {path} has unreadable parameters ({msg}): delete it and re-run the sweep to retrain") from None
    params = jax.tree.map(np.asarray, params)
    return params, metadata


# --- training state: params + optimizer state + step, for resuming (connect.lm.training) ---------------
#
#     DIR/step-00000250/params/      orbax tree of the params (loadable by load_checkpoint)
#     DIR/step-00000250/opt_state/   orbax tree {"000000": leaf, ...} of the optimizer state's leaves
#     DIR/step-00000250/metadata.json   written last: {"step": 250, ...}

STEP_PREFIX = "step-"


def step_dir(directory: str, step: int) -> str:
    """The checkpoint directory of training step ``step`` inside ``directory``."""
    return os.path.join(directory, f"{STEP_PREFIX}{step:08d}")


def save_train_state(path: str, params, opt_state, metadata: dict) -> None:
    """Save params, the leaves of ``opt_state`` (any pytree) and ``metadata`` to ``path``; metadata last,
    so an interrupted save is never complete. An existing directory at ``path`` is replaced."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    host_params = jax.tree.map(np.asarray, jax.device_get(params))
    leaves = [np.asarray(x) for x in jax.device_get(jax.tree.leaves(opt_state))]
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), host_params)
        ckptr.save(os.path.join(path, "opt_state"), {f"{i:06d}": x for i, x in enumerate(leaves)})
        ckptr.wait_until_finished()
    write_json_atomic(os.path.join(path, "metadata.json"), {**metadata, "format": FORMAT})


def load_train_state(path: str, opt_state_like) -> tuple[dict, object, dict]:
    """``(params, opt_state, metadata)`` saved by :func:`save_train_state`; ``opt_state_like`` (e.g. a
    fresh ``optimizer.init(params)``) gives the optimizer state's tree structure."""
    params, metadata = load_checkpoint(path)
    treedef = jax.tree.structure(opt_state_like)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            flat = ckptr.restore(os.path.join(os.path.abspath(path), "opt_state"))
    except Exception as e:  # orbax raises many types for damaged trees
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"checkpoint {path} has an unreadable optimizer state ({msg}): delete it to resume from an earlier one") from None
    leaves = [np.asarray(flat[k]) for k in sorted(flat)] if flat else []
    if len(leaves) != treedef.num_leaves:
        raise UserError(f"checkpoint {path} holds {len(leaves)} optimizer-state arrays, the optimizer needs {treedef.num_leaves}: "
                        "it was written by another optimizer; pass a new run directory")
    return params, jax.tree.unflatten(treedef, leaves), metadata


def complete_steps(directory: str) -> list[int]:
    """The steps of the complete training checkpoints in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    steps = []
    for name in os.listdir(directory):
        if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit() and is_complete(os.path.join(directory, name)):
            steps.append(int(name[len(STEP_PREFIX):]))
    return sorted(steps)


def prune(directory: str, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints of ``directory``, and incomplete ones older than them."""
    steps = complete_steps(directory)
    if not steps:
        return
    kept = set(steps[-keep:])
    for name in os.listdir(directory):
        if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit():
            step = int(name[len(STEP_PREFIX):])
            if step not in kept and step < max(kept):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def recorded_optimizer(path: str) -> str | None:
    """The optimizer that trained the checkpoint at ``path``, as recorded on disk: the ``optimizer`` of
    ``path/metadata.json`` (a checkpoint directory), else of the newest ``step-*`` checkpoint below ``path``
    (highest step; a ``connect train-lm`` seed or run directory), else of a ``config.json`` in ``path`` or up
    to three directories above (the run's config). ``None`` when nothing records one (e.g. a Hugging Face directory)."""
    meta = os.path.join(path, "metadata.json")
    if not os.path.isfile(meta):
        found = glob.glob(os.path.join(glob.escape(path), "**", f"{STEP_PREFIX}*", "metadata.json"), recursive=True)
        steps = {m: os.path.basename(os.path.dirname(m))[len(STEP_PREFIX):] for m in found}
        meta = max((m for m in found if steps[m].isdigit()), key=lambda m: (int(steps[m]), m), default=meta)
    recorded = _json_string(meta, "optimizer")
    here = os.path.abspath(path)
    for _ in range(4):  # path and up to three directories above
        if recorded is not None:
            return recorded
        recorded = _json_string(os.path.join(here, "config.json"), "optimizer")
        here = os.path.dirname(here)
    return recorded


def _json_string(path: str, key: str) -> str | None:
    """``key`` of the JSON object in file ``path`` when it is a string; None when absent or unreadable."""
    try:
        with open(path) as f:
            value = json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


#: The commands that analyse each model family's checkpoints (named when a checkpoint of another family is passed).
FAMILY_COMMANDS = {"relu": "connect barrier or connect theory", "gpt2": "connect paths or connect eval-lm"}


def family(path: str) -> str | None:
    """The model family of the checkpoint at ``path``, from what is on disk: the ``model`` of a connect
    checkpoint's ``metadata.json`` (or of the newest ``step-*`` checkpoint below a run or seed directory), the
    ``model_type`` of a Hugging Face ``config.json``; None when neither says."""
    meta = os.path.join(path, "metadata.json")
    if not os.path.isfile(meta):
        found = glob.glob(os.path.join(glob.escape(path), "**", f"{STEP_PREFIX}*", "metadata.json"), recursive=True)
        meta = max(found, default=os.path.join(path, "config.json"))
        if meta.endswith("config.json"):
            return _json_string(meta, "model_type")
    return _json_string(meta, "model")


def expect_family(path: str, want: str) -> None:
    """A UserError when the checkpoint at ``path`` is recorded as another model family than ``want`` (naming the
    family found and the commands for it); nothing when it is ``want`` or unrecorded (the loader then says more)."""
    found = family(path)
    if found is not None and found != want:
        raise UserError(f"{path} holds a {found} model, not a {want} one: "
                        f"pass it to {FAMILY_COMMANDS.get(found, 'the commands of that family')}, or pass a {want} checkpoint here")
