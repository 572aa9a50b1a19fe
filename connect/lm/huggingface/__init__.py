"""Hugging Face checkpoints to and from connect params, for every language-model family.

A checkpoint directory is what ``transformers``' ``save_pretrained`` writes: ``config.json`` plus
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``). ``config.json``'s ``model_type``
picks the family (:data:`MODEL_TYPES`); each family's module here (:mod:`.gpt2`, :mod:`.llama`, :mod:`.gpt_neox`)
reads and writes its config fields and names its tensors — Hugging Face key -> (connect leaf, layer of the
stacked leaf, transposed) — and this module does the rest for all of them: the shapes (from the family's
``init`` at that config), stacking layers, transposing ``nn.Linear`` weights, dtypes (float32, bfloat16 and
float16 read exactly and written on request) and shards. Reading uses ``safetensors`` only: no torch, no
pickle, no network.

A directory from elsewhere is untrusted: every ``config.json`` field used is type checked
(:mod:`.fields`), each safetensors header is checked before any data is read
(:mod:`connect.lm.safetensors_file`), and the shard names of ``model.safetensors.index.json`` must stay inside
the directory; any malformed file, unknown ``model_type`` or unsupported option ends in one
:class:`UserError` line naming the file and the fix.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from types import ModuleType

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy

from connect import io, models
from connect.errors import UserError
from connect.lm import safetensors_file
from connect.lm.huggingface.fields import json_type, shown

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: ``model_type`` of ``config.json`` -> the module of this package that reads it.
MODEL_TYPES = {"gpt2": "gpt2", "llama": "llama", "qwen2": "llama", "mistral": "llama", "gpt_neox": "gpt_neox"}
#: Dtypes :func:`save_pretrained` writes (``config.json``'s ``dtype`` names them as torch does).
SAVE_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
#: ``config.json`` and ``model.safetensors.index.json`` larger than this are refused before they are read.
_MAX_JSON_BYTES = 2**24
#: Heads some writers store although the model ties them to the input embedding (dropped when reading).
_TIED_HEADS = ("lm_head.weight", "embed_out.weight")
_LAYER = re.compile(r"(?:^|\.)(?:h|layers)\.(\d+)\.")


def is_pretrained_dir(path: str) -> bool:
    """Whether ``path`` is a directory with ``config.json`` and safetensors weights (single or sharded)."""
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))
            and any(os.path.isfile(os.path.join(path, f)) for f in (WEIGHTS_FILE, INDEX_FILE)))


def load_pretrained(directory: str) -> tuple[dict, object]:
    """Params (float32) and config of the Hugging Face checkpoint in ``directory``, of any supported family;
    every shape asserted."""
    if not os.path.isdir(directory):
        raise UserError(f"Hugging Face checkpoint {directory} is not a directory: pass the folder `save_pretrained` wrote")
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UserError(f"{config_path} not found: pass a directory written by `save_pretrained` (config.json + model.safetensors)")
    cfg = config_from_hf(_read_json(config_path, "pass a config.json written by `save_pretrained`"), source=config_path)
    tensors = _read_tensors(directory)
    return params_from_hf(tensors, cfg, source=directory), cfg


def save_pretrained(params: dict, cfg, directory: str, *, dtype: str = "float32", max_shard_bytes: int | None = None) -> None:
    """Write ``params`` as a Hugging Face directory that ``transformers``' ``from_pretrained`` loads: weights in
    ``dtype`` (float32, bfloat16 or float16), in one ``model.safetensors`` or, past ``max_shard_bytes``, in shards
    listed by ``model.safetensors.index.json``; every file atomically, ``config.json`` last."""
    if dtype not in SAVE_DTYPES:
        raise UserError(f"dtype {dtype!r} cannot be saved: use one of {', '.join(SAVE_DTYPES)}")
    tensors = {k: np.ascontiguousarray(v.astype(SAVE_DTYPES[dtype])) for k, v in params_to_hf(params, cfg).items()}
    shards = _shards(tensors, max_shard_bytes)
    stale = os.path.join(directory, INDEX_FILE if len(shards) == 1 else WEIGHTS_FILE)
    if os.path.exists(stale):
        raise UserError(f"{stale} exists and would shadow or mix with the new weights: save to an empty directory")
    os.makedirs(directory, exist_ok=True)
    names = [WEIGHTS_FILE] if len(shards) == 1 else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        _write_bytes_atomic(os.path.join(directory, name), safetensors.numpy.save(shard, metadata={"format": "pt"}))
    if len(shards) > 1:
        weight_map = {key: name for name, shard in zip(names, shards) for key in shard}
        total = sum(v.nbytes for v in tensors.values())
        io.write_json_atomic(os.path.join(directory, INDEX_FILE), {"metadata": {"total_size": total}, "weight_map": weight_map})
    io.write_json_atomic(os.path.join(directory, CONFIG_FILE), {**config_to_hf(cfg), "dtype": dtype})  # last


def _shards(tensors: dict[str, np.ndarray], max_bytes: int | None) -> list[dict[str, np.ndarray]]:
    """``tensors`` split, in order, into shards of at most ``max_bytes`` (a larger tensor alone in its shard)."""
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise UserError(f"max_shard_bytes={max_bytes!r} is invalid: use a positive number of bytes or None for one file")
    shards, size = [{}], 0
    for key, value in tensors.items():
        if max_bytes is not None and shards[-1] and size + value.nbytes > max_bytes:
            shards, size = shards + [{}], 0
        shards[-1][key] = value
        size += value.nbytes
    return shards


def family_module(model_type_or_cfg) -> ModuleType:
    """This package's module for a ``model_type`` string or a connect config object."""
    if isinstance(model_type_or_cfg, str):
        return importlib.import_module(f"{__name__}.{MODEL_TYPES[model_type_or_cfg]}")
    return importlib.import_module(f"{__name__}.{models.family(model_type_or_cfg).FAMILY}")


def config_from_hf(hf_config: dict, *, source: str = CONFIG_FILE):
    """The connect config of a Hugging Face ``config.json`` dict, by its ``model_type`` (GPT-2 when absent, as the
    oldest GPT-2 uploads); UserError for an unknown model type, a mistyped field or an unsupported option."""
    if not isinstance(hf_config, dict):
        raise UserError(f"{source} holds a JSON {json_type(hf_config)}, not an object: pass the config.json `save_pretrained` writes")
    model_type = hf_config.get("model_type", "gpt2")
    if not isinstance(model_type, str):
        raise UserError(f"{source} field model_type = {shown(model_type)} is not a string: "
                        f"pass a config.json written by `save_pretrained` (model_type one of {', '.join(MODEL_TYPES)})")
    if model_type not in MODEL_TYPES:
        raise UserError(f"{source} has model_type {shown(model_type)}, which connect does not read: "
                        f"pass a checkpoint of one of {', '.join(MODEL_TYPES)}")
    return family_module(model_type).config_from_hf(hf_config, source)


def config_to_hf(cfg) -> dict:
    """The Hugging Face ``config.json`` dict of a connect config."""
    return family_module(cfg).config_to_hf(cfg)


def _expected(cfg) -> dict[str, tuple[tuple[str, ...], int | None, bool, tuple[int, ...]]]:
    """Hugging Face key -> (connect leaf path, layer, transposed, the Hugging Face shape), from the family's
    ``init`` shapes at ``cfg``."""
    shapes = jax.eval_shape(lambda: models.family(cfg).init(jax.random.key(0), cfg))
    out = {}
    for key, (path, layer, transposed) in family_module(cfg).tensor_names(cfg).items():
        shape = tuple(_get(shapes, path).shape)
        shape = shape[1:] if layer is not None else shape
        out[key] = (path, layer, transposed, shape[::-1] if transposed else shape)
    return out


def params_from_hf(tensors: dict[str, np.ndarray], cfg, *, source: str = "checkpoint") -> dict:
    """connect params (float32) from Hugging Face tensors of ``cfg``'s family; keys and shapes asserted."""
    fam = family_module(cfg)
    layers = {m.group(1) for key in tensors if (m := _LAYER.search(key))}
    if cfg.n_layers > len(layers):  # before listing the expected keys: a config may claim 10¹⁸ layers
        raise UserError(f"{source} holds the weights of {len(layers)} layers but its config.json says {cfg.n_layers} layers: "
                        "pass a checkpoint whose config.json matches its weights")
    expected = _expected(cfg)
    given = {}
    for key, value in tensors.items():
        if fam.IGNORED.match(key) or (cfg.tie_word_embeddings and key in _TIED_HEADS):
            continue  # buffers, and a tied head some writers store too (it is the input embedding)
        if fam.OPTIONAL_PREFIX and key not in expected and fam.OPTIONAL_PREFIX + key in expected:
            key = fam.OPTIONAL_PREFIX + key
        given[key] = value
    unexpected = sorted(set(given) - set(expected))
    if unexpected:
        raise UserError(f"{source} has unexpected key {shown(unexpected[0])} ({len(unexpected)} in all): "
                        f"pass a {'/'.join(fam.MODEL_TYPES.values())} checkpoint whose config.json matches its weights")
    leaves: dict = {}
    for key, (path, layer, transposed, shape) in expected.items():
        if key not in given:
            raise UserError(f"{source} lacks key {key!r} (expected shape {shape}): "
                            "pass a complete checkpoint whose config.json matches its weights")
        if tuple(given[key].shape) != shape:
            raise UserError(f"{source} key {key!r} has shape {tuple(given[key].shape)}, expected {shape}: "
                            "pass a checkpoint whose config.json matches its weights")
        x = np.asarray(given[key], dtype=np.float32)
        leaves.setdefault(path, {})[layer] = x.T if transposed else x
    params: dict = {}
    for path, by_layer in leaves.items():
        x = by_layer[None] if None in by_layer else np.stack([by_layer[i] for i in range(len(by_layer))])
        _set(params, path, jnp.asarray(x))
    return params


def params_to_hf(params: dict, cfg) -> dict[str, np.ndarray]:
    """Hugging Face tensors (float32, named as ``save_pretrained`` names them) of connect params; shapes asserted."""
    expected = _expected(cfg)
    want = {path for path, *_ in expected.values()}
    have = {tuple(str(k.key) for k in kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    if have != want:
        odd = sorted(have ^ want)[0]
        raise UserError(f"params {'have' if odd in have else 'lack'} {'.'.join(odd)!r}, which does not fit the config "
                        f"({'tied' if cfg.tie_word_embeddings else 'untied'} head): pass the config the params were trained with")
    out = {}
    for key, (path, layer, transposed, shape) in expected.items():
        x = np.asarray(_get(params, path), dtype=np.float32)
        x = x[layer] if layer is not None else x
        x = x.T if transposed else x
        if tuple(x.shape) != shape:
            raise UserError(f"params for {key!r} have shape {tuple(x.shape)}, expected {shape}: "
                            "pass the config the params were trained with")
        out[key] = np.ascontiguousarray(x)
    return out


def _read_json(path: str, fix: str):
    """The JSON value in file ``path`` (at most ``_MAX_JSON_BYTES``); a UserError ending in ``fix`` otherwise."""
    try:
        size = os.path.getsize(path)
        if size > _MAX_JSON_BYTES:
            raise UserError(f"{path} is {size} bytes, more than the {_MAX_JSON_BYTES} a JSON config may have: {fix}")
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8-sig"))
    except OSError as e:
        raise UserError(f"{path} is not readable ({e.strerror or type(e).__name__}): {fix}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        why = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "nested too deeply" if isinstance(e, RecursionError) else (
            f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else "not JSON")
        raise UserError(f"{path} is not readable JSON ({why}): {fix}") from None


def _get(tree: dict, path: tuple[str, ...]):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _read_tensors(directory: str) -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` or of the shards ``model.safetensors.index.json`` lists."""
    single, index = os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, INDEX_FILE)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        files = [_shard_path(directory, name) for name in _shard_names(index)]
    else:
        hint = " (pytorch_model.bin is pickle, which connect does not read)" if any(
            os.path.exists(os.path.join(directory, f)) for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")) else ""
        raise UserError(f"{directory} has no {WEIGHTS_FILE} or {INDEX_FILE}{hint}: "
                        "re-save the model with `save_pretrained(..., safe_serialization=True)`")
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"shard {path} listed in {INDEX_FILE} is missing: download or copy every shard")
        tensors.update(safetensors_file.read(path))
    return tensors


def _shard_names(index: str) -> list[str]:
    """The distinct shard file names of the index's ``weight_map`` (tensor name -> file name), sorted."""
    fix = "re-save the model with `save_pretrained`"
    doc = _read_json(index, fix)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise UserError(f"{index} is not a safetensors index with a 'weight_map' object (tensor name -> shard file): {fix}")
    for name in weight_map.values():
        if not isinstance(name, str) or not name:
            raise UserError(f"{index} maps a tensor to {shown(name)}, not a shard file name: {fix}")
    return sorted(set(weight_map.values()))


def _shard_path(directory: str, name: str) -> str:
    """``directory/name`` after checking that the shard ``name`` stays inside ``directory``: a relative path
    without ``..`` whose real path (symlinks resolved) lies in the directory's real path, or, in a Hugging Face
    cache snapshot (``…/snapshots/REV/``), in the cache's ``blobs/`` folder that its files link to."""
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or any(c < " " for c in name):
        raise UserError(f"{os.path.join(directory, INDEX_FILE)} names shard {shown(name)}, not a file name inside the "
                        "model directory: list each shard by its name in the directory (no '..', no absolute path)")
    path = os.path.join(directory, name)
    home = os.path.realpath(directory)
    roots = [home]
    if os.path.basename(os.path.dirname(home)) == "snapshots":
        roots.append(os.path.join(os.path.dirname(os.path.dirname(home)), "blobs"))
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise UserError(f"shard {path} listed in {INDEX_FILE} links to {real}, outside the model directory: "
                        "copy the shard into the directory instead of linking to it")
    return path


def _write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
