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
