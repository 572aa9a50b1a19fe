"""Hugging Face ``GPT2LMHeadModel`` checkpoints to and from :mod:`connect.models.gpt2` params.

A checkpoint directory is what ``transformers``' ``save_pretrained`` writes: ``config.json``
plus ``model.safetensors`` (or shards listed in ``model.safetensors.index.json``). Reading uses
``safetensors.numpy`` only: no torch, no pickle, no network. Hugging Face's ``Conv1D`` stores
kernels ``(in, out)`` exactly as connect does, so the conversion only renames keys and stacks
the per-layer arrays on a leading axis::

    transformer.wte.weight              (V, D)   <->  wte
    transformer.wpe.weight              (P, D)   <->  wpe
    transformer.h.{i}.ln_1.weight|bias  (D,)     <->  h.ln_1.scale|bias[i]
    transformer.h.{i}.attn.c_attn.*     (D, 3D)  <->  h.attn.c_attn.kernel|bias[i]
    transformer.h.{i}.attn.c_proj.*     (D, D)   <->  h.attn.c_proj.kernel|bias[i]
    transformer.h.{i}.ln_2.weight|bias  (D,)     <->  h.ln_2.scale|bias[i]
    transformer.h.{i}.mlp.c_fc.*        (D, F)   <->  h.mlp.c_fc.kernel|bias[i]
    transformer.h.{i}.mlp.c_proj.*      (F, D)   <->  h.mlp.c_proj.kernel|bias[i]
    transformer.ln_f.weight|bias        (D,)     <->  ln_f.scale|bias
    lm_head.weight                      (V, D)   <->  lm_head (untied heads only)

Keys without the ``transformer.`` prefix (the original ``openai-community/gpt2`` upload) load
too; the causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` are ignored.

A directory from elsewhere is untrusted: every ``config.json`` field used is type checked, each
safetensors header is checked before any data is read (:mod:`connect.lm.safetensors_file`), and the
shard names of ``model.safetensors.index.json`` must stay inside the directory; any malformed file
ends in one :class:`UserError` line naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from connect import io
from connect.errors import UserError
from connect.lm import safetensors_file
from connect.models import gpt2

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

#: Activations equal to connect's tanh-GELU (``gelu_pytorch_tanh`` is the same formula in torch).
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
#: ``config.json`` fields that must be positive integers, and the boolean ones with their GPT-2 defaults.
_INT_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
_BOOL_FIELDS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
                "add_cross_attention": False, "tie_word_embeddings": True}
#: ``config.json`` and ``model.safetensors.index.json`` larger than this are refused before they are read.
_MAX_JSON_BYTES = 2**24

#: Hugging Face leaf name -> connect leaf name, per transformer block.
_BLOCK_KEYS = {
    "ln_1.weight": ("ln_1", "scale"), "ln_1.bias": ("ln_1", "bias"),
    "attn.c_attn.weight": ("attn", "c_attn", "kernel"), "attn.c_attn.bias": ("attn", "c_attn", "bias"),
    "attn.c_proj.weight": ("attn", "c_proj", "kernel"), "attn.c_proj.bias": ("attn", "c_proj", "bias"),
    "ln_2.weight": ("ln_2", "scale"), "ln_2.bias": ("ln_2", "bias"),
    "mlp.c_fc.weight": ("mlp", "c_fc", "kernel"), "mlp.c_fc.bias": ("mlp", "c_fc", "bias"),
    "mlp.c_proj.weight": ("mlp", "c_proj", "kernel"), "mlp.c_proj.bias": ("mlp", "c_proj", "bias"),
}
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def is_pretrained_dir(path: str) -> bool:
    """Whether ``path`` is a directory with ``config.json`` and safetensors weights (single or sharded)."""
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))
            and any(os.path.isfile(os.path.join(path, f)) for f in (WEIGHTS_FILE, INDEX_FILE)))


def load_pretrained(directory: str) -> tuple[dict, gpt2.GPT2Config]:
    """Params (float32) and config of the ``GPT2LMHeadModel`` checkpoint in ``directory``; every shape asserted."""
    if not os.path.isdir(directory):
        raise UserError(f"Hugging Face checkpoint {directory} is not a directory: pass the folder `save_pretrained` wrote")
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UserError(f"{config_path} not found: pass a directory written by `save_pretrained` (config.json + model.safetensors)")
    cfg = config_from_hf(_read_json(config_path, "pass a config.json written by `save_pretrained`"), source=config_path)
    tensors = _read_tensors(directory)
    return params_from_hf(tensors, cfg, source=directory), cfg


def save_pretrained(params: dict, cfg: gpt2.GPT2Config, directory: str) -> None:
    """Write ``params`` as a ``GPT2LMHeadModel`` directory that ``transformers`` loads (float32, atomically)."""
    if os.path.exists(os.path.join(directory, INDEX_FILE)):
        raise UserError(f"{os.path.join(directory, INDEX_FILE)} exists and would shadow the new weights: "
                        "save to an empty directory")
    tensors = params_to_hf(params, cfg)
    os.makedirs(directory, exist_ok=True)
    _write_bytes_atomic(os.path.join(directory, WEIGHTS_FILE), safetensors.numpy.save(tensors, metadata={"format": "pt"}))
    io.write_json_atomic(os.path.join(directory, CONFIG_FILE), config_to_hf(cfg))  # last: a complete dir has both


def config_from_hf(hf_config: dict, *, source: str = CONFIG_FILE) -> gpt2.GPT2Config:
    """A :class:`GPT2Config` from a Hugging Face GPT-2 ``config.json`` dict; UserError for a mistyped field or a
    feature connect lacks (one line naming the field)."""
    if not isinstance(hf_config, dict):
        raise UserError(f"{source} holds a JSON {_json_type(hf_config)}, not an object: pass the config.json `save_pretrained` writes")
    model_type = hf_config.get("model_type", "gpt2")
    if not isinstance(model_type, str):
        raise UserError(f"{source} field model_type = {_shown(model_type)} is not a string: "
                        "pass a GPT-2 config.json (model_type 'gpt2') written by `save_pretrained`")
    if model_type != "gpt2":
        raise UserError(f"{source} has model_type {_shown(model_type)}: only GPT-2 checkpoints (model_type 'gpt2') are supported")
    missing = [k for k in _INT_FIELDS if k not in hf_config]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}: pass a GPT-2 config.json written by `save_pretrained`")
    ints, flags, activation, eps = _typed_fields(hf_config, source)
    unsupported = {
        "activation_function": activation not in _ACTIVATIONS,
        "scale_attn_weights": not flags["scale_attn_weights"],
        "scale_attn_by_inverse_layer_idx": flags["scale_attn_by_inverse_layer_idx"],
        "reorder_and_upcast_attn": flags["reorder_and_upcast_attn"],
        "add_cross_attention": flags["add_cross_attention"],
    }
    for key, bad in unsupported.items():
        if bad:
            raise UserError(f"{source} sets {key}={_shown(hf_config.get(key))}, which connect's GPT-2 does not implement: "
                            f"use a checkpoint with the GPT-2 defaults (activation {'/'.join(_ACTIVATIONS)}, "
                            "scale_attn_weights true, the others false)")
    return gpt2.config(gpt2.GPT2Config(**ints, tie_word_embeddings=flags["tie_word_embeddings"], layer_norm_epsilon=eps))


def _typed_fields(hf_config: dict, source: str) -> tuple[dict[str, int], dict[str, bool], str, float]:
    """The integer fields (``n_inner`` defaulting to 4·n_embd), the boolean ones, the activation and the LayerNorm
    epsilon of ``config.json``, each type checked (ints positive, booleans true/false, the epsilon finite and > 0)."""

    def refuse(key, want):
        return UserError(f"{source} field {key} = {_shown(hf_config[key])} is not {want}: "
                         "fix the field or re-save the model with `save_pretrained`")

    ints = {}
    for key in (*_INT_FIELDS, "n_inner"):
        value = hf_config.get(key)
        if key == "n_inner" and value is None:
            value = 4 * ints["n_embd"]
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise refuse(key, "a positive integer")
        ints[key] = value
    flags = {key: hf_config.get(key, default) for key, default in _BOOL_FIELDS.items()}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise refuse(key, "a boolean (true or false)")
    activation = hf_config.get("activation_function", "gelu_new")
    if not isinstance(activation, str):
        raise refuse("activation_function", "a string")
    eps = hf_config.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= sys.float_info.max:  # NaN fails too
        raise refuse("layer_norm_epsilon", "a finite positive number")
    return ints, flags, activation, float(eps)


def _shown(value) -> str:
    """``repr(value)`` cut to 60 characters, for messages about untrusted values."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


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


def config_to_hf(cfg: gpt2.GPT2Config) -> dict:
    """The Hugging Face ``config.json`` dict of ``cfg`` (dropout 0: connect's model has none)."""
    eos = 50256 if cfg.vocab_size == 50257 else None  # GPT-2 BPE's <|endoftext|>; other vocabularies have none
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size, "n_positions": cfg.n_positions, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.n_inner,
        "activation_function": "gelu_new", "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": gpt2.INIT_STD,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "use_cache": True, "bos_token_id": eos, "eos_token_id": eos, "dtype": "float32",
    }


def params_from_hf(tensors: dict[str, np.ndarray], cfg: gpt2.GPT2Config, *, source: str = "checkpoint") -> dict:
    """connect params from Hugging Face tensors (with or without the ``transformer.`` prefix), shapes asserted."""
    stripped = {}
    for key, value in tensors.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if _IGNORED.match(name):
            continue
        stripped[name] = value
    layers = {m.group(1) for name in stripped if (m := re.match(r"h\.(\d+)\.", name))}
    if cfg.n_layer > len(layers):  # before listing the expected keys: a config may claim 10¹⁸ layers
        raise UserError(f"{source} holds the weights of {len(layers)} layers but its config.json says n_layer={cfg.n_layer}: "
                        "pass a checkpoint whose config.json matches its weights")
    expected = _hf_shapes(cfg)
    if cfg.tie_word_embeddings:
        stripped.pop("lm_head.weight", None)  # some writers store the tied head too; it is wte
    unexpected = sorted(set(stripped) - set(expected))
    if unexpected:
        raise UserError(f"{source} has unexpected key {_shown(unexpected[0])} ({len(unexpected)} in all): "
                        "pass a GPT2LMHeadModel checkpoint whose config.json matches its weights")
    for name, shape in expected.items():
        if name not in stripped:
            raise UserError(f"{source} lacks key {_display(name)!r} (expected shape {shape}): "
                            "pass a complete GPT2LMHeadModel checkpoint whose config.json matches its weights")
        if tuple(stripped[name].shape) != shape:
            raise UserError(f"{source} key {_display(name)!r} has shape {tuple(stripped[name].shape)}, expected {shape}: "
                            "pass a checkpoint whose config.json matches its weights")

    def get(name):
        return jnp.asarray(np.asarray(stripped[name], dtype=np.float32))

    blocks: dict = {}
    for hf_name, path in _BLOCK_KEYS.items():
        stacked = np.stack([np.asarray(stripped[f"h.{i}.{hf_name}"], dtype=np.float32) for i in range(cfg.n_layer)])
        _set(blocks, path, jnp.asarray(stacked))
    params = {"wte": get("wte.weight"), "wpe": get("wpe.weight"), "h": blocks,
              "ln_f": {"scale": get("ln_f.weight"), "bias": get("ln_f.bias")}}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = get("lm_head.weight")
    return params


def params_to_hf(params: dict, cfg: gpt2.GPT2Config) -> dict[str, np.ndarray]:
    """Hugging Face tensors (float32, ``transformer.`` prefixed) of connect params, shapes asserted."""
    if ("lm_head" in params) == cfg.tie_word_embeddings:
        raise UserError(f"params {'have' if 'lm_head' in params else 'lack'} 'lm_head' but the config has "
                        f"tie_word_embeddings={cfg.tie_word_embeddings}: pass the config the params were trained with")
    flat = {"wte.weight": params["wte"], "wpe.weight": params["wpe"],
            "ln_f.weight": params["ln_f"]["scale"], "ln_f.bias": params["ln_f"]["bias"]}
    for hf_name, path in _BLOCK_KEYS.items():
        stacked = _get(params["h"], path)
        for i in range(stacked.shape[0]):
            flat[f"h.{i}.{hf_name}"] = stacked[i]
    if not cfg.tie_word_embeddings:
        flat["lm_head.weight"] = params["lm_head"]
    expected = _hf_shapes(cfg)
    for name, shape in expected.items():
        if name not in flat or tuple(flat[name].shape) != shape:
            found = tuple(flat[name].shape) if name in flat else "missing"
            raise UserError(f"params for {_display(name)!r} have shape {found}, expected {shape}: "
                            "pass the config the params were trained with")
    return {_display(name): np.ascontiguousarray(np.asarray(value, dtype=np.float32)) for name, value in flat.items()}


def _hf_shapes(cfg: gpt2.GPT2Config) -> dict[str, tuple[int, ...]]:
    """Hugging Face key (without the ``transformer.`` prefix) -> shape, for every tensor of ``cfg``."""
    V, P, D, F = cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_inner
    block = {"ln_1.weight": (D,), "ln_1.bias": (D,), "attn.c_attn.weight": (D, 3 * D), "attn.c_attn.bias": (3 * D,),
             "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
             "mlp.c_fc.weight": (D, F), "mlp.c_fc.bias": (F,), "mlp.c_proj.weight": (F, D), "mlp.c_proj.bias": (D,)}
    shapes = {"wte.weight": (V, D), "wpe.weight": (P, D)}
    for i in range(cfg.n_layer):
        shapes.update({f"h.{i}.{k}": s for k, s in block.items()})
    shapes.update({"ln_f.weight": (D,), "ln_f.bias": (D,)})
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def _display(name: str) -> str:
    """The key as ``save_pretrained`` writes it (``transformer.`` prefix except on the head)."""
    return name if name == "lm_head.weight" else f"transformer.{name}"


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
            raise UserError(f"{index} maps a tensor to {_shown(name)}, not a shard file name: {fix}")
    return sorted(set(weight_map.values()))


def _shard_path(directory: str, name: str) -> str:
    """``directory/name`` after checking that the shard ``name`` stays inside ``directory``: a relative path
    without ``..`` whose real path (symlinks resolved) lies in the directory's real path, or, in a Hugging Face
    cache snapshot (``…/snapshots/REV/``), in the cache's ``blobs/`` folder that its files link to."""
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or any(c < " " for c in name):
        raise UserError(f"{os.path.join(directory, INDEX_FILE)} names shard {_shown(name)}, not a file name inside the "
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
