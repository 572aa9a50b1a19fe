"""Checkpoints: orbax for the parameters, a JSON file for what they are.

A checkpoint is a directory::

    CKPT/params/         orbax StandardCheckpointer tree of the params pytree
    CKPT/metadata.json   model, architecture, optimizer, λ, seed, data, final loss

``metadata.json`` is written last (atomically), so a directory without it is an
interrupted save and is never mistaken for a finished one. No pickle is involved.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from connect.errors import UserError
from connect.io import write_json_atomic

FORMAT = "connect-checkpoint/1"


def save_checkpoint(path: str, params: dict, metadata: dict) -> None:
    """Save ``params`` (a pytree of arrays) and ``metadata`` (JSON-able) to directory ``path``.

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
    write_json_atomic(os.path.join(path, "metadata.json"), {**metadata, "format": FORMAT})


def _holds_only_a_checkpoint(path: str) -> bool:
    """``path`` is a directory with nothing but what :func:`save_checkpoint` writes (``params``,
    orbax's ``params.orbax-checkpoint-tmp-*``, ``metadata.json`` and its ``.tmp-*`` file)."""
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


# --- training state: params + optimizer state + step, for resuming (connect.lm_training) ---------------
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
