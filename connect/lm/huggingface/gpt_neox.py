"""Hugging Face ``GPTNeoXForCausalLM`` <-> :mod:`connect.models.gpt_neox`: the config fields and the tensor names.

``nn.Linear`` stores ``weight`` as ``(out, in)``, the transpose of connect's kernels::

    gpt_neox.embed_in.weight                         (V, D)   <->  embed_in
    gpt_neox.layers.{i}.input_layernorm.weight|bias  (D,)     <->  layers.input_layernorm.scale|bias[i]
    gpt_neox.layers.{i}.attention.query_key_value.*  (3D, D)  <->  layers.attention.query_key_value.kernelᵀ|bias[i]
    gpt_neox.layers.{i}.attention.dense.*            (D, D)   <->  layers.attention.dense.kernelᵀ|bias[i]
    gpt_neox.layers.{i}.post_attention_layernorm.*   (D,)     <->  layers.post_attention_layernorm.scale|bias[i]
    gpt_neox.layers.{i}.mlp.dense_h_to_4h.*          (F, D)   <->  layers.mlp.dense_h_to_4h.kernelᵀ|bias[i]
    gpt_neox.layers.{i}.mlp.dense_4h_to_h.*          (D, F)   <->  layers.mlp.dense_4h_to_h.kernelᵀ|bias[i]
    gpt_neox.final_layer_norm.weight|bias            (D,)     <->  final_layer_norm.scale|bias
    embed_out.weight                                 (V, D)   <->  embed_out (untied heads only)

(attention biases only with ``attention_bias``). transformers 5 names the head ``lm_head`` in the module but
writes and reads ``embed_out.weight``, as the Pythia checkpoints do. The rotary ``inv_freq`` and causal-mask
buffers older checkpoints stored are ignored.

The rotary settings have four spellings: ``rope_parameters`` (transformers 5: ``rope_type``, ``rope_theta``,
``partial_rotary_factor``), ``rope_scaling`` (older, may carry ``type``), and the top-level ``rotary_emb_base``
/ ``rope_theta`` and ``rotary_pct`` / ``partial_rotary_factor``. All present must agree (transformers 5 silently
ignores some of them, so a disagreement would make connect and transformers differ); only ``rope_type``
``default`` is implemented.
"""

from __future__ import annotations

import re

from connect.errors import UserError
from connect.lm.huggingface.fields import Fields
from connect.models import gpt_neox

MODEL_TYPES = {"gpt_neox": "GPTNeoXForCausalLM"}
#: A key that lacks this prefix is read as if it had it (a bare ``GPTNeoXModel``'s keys).
OPTIONAL_PREFIX = "gpt_neox."
#: Buffers of ``transformers``' module, not weights: dropped when reading.
IGNORED = re.compile(r"^(gpt_neox\.)?(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)|rotary_emb\.inv_freq)$")

_BOOL_FIELDS = {"use_parallel_residual": True, "attention_bias": True, "tie_word_embeddings": False}
#: Hugging Face leaf name -> (connect leaf path under ``layers``, transposed), per layer; biases of the
#: attention only with ``attention_bias``.
_BLOCK_KEYS = {
    "input_layernorm.weight": (("input_layernorm", "scale"), False),
    "input_layernorm.bias": (("input_layernorm", "bias"), False),
    "post_attention_layernorm.weight": (("post_attention_layernorm", "scale"), False),
    "post_attention_layernorm.bias": (("post_attention_layernorm", "bias"), False),
    "attention.query_key_value.weight": (("attention", "query_key_value", "kernel"), True),
    "attention.query_key_value.bias": (("attention", "query_key_value", "bias"), False),
    "attention.dense.weight": (("attention", "dense", "kernel"), True),
    "attention.dense.bias": (("attention", "dense", "bias"), False),
    "mlp.dense_h_to_4h.weight": (("mlp", "dense_h_to_4h", "kernel"), True),
    "mlp.dense_h_to_4h.bias": (("mlp", "dense_h_to_4h", "bias"), False),
    "mlp.dense_4h_to_h.weight": (("mlp", "dense_4h_to_h", "kernel"), True),
    "mlp.dense_4h_to_h.bias": (("mlp", "dense_4h_to_h", "bias"), False),
}
_ATTENTION_BIASES = ("attention.query_key_value.bias", "attention.dense.bias")


def config_from_hf(hf: dict, source: str) -> gpt_neox.GPTNeoXConfig:
    """A :class:`GPTNeoXConfig` from a GPT-NeoX ``config.json`` dict; UserError for a mistyped field or a feature
    connect lacks (one line naming the field)."""
    f = Fields(hf, source, "GPT-NeoX")
    ints = {key: f.int(key) for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "intermediate_size")}
    ints["max_position_embeddings"] = f.int("max_position_embeddings", 2048)
    flags = {key: f.bool(key, default) for key, default in _BOOL_FIELDS.items()}
    activation = f.str("hidden_act", "gelu")
    if activation not in gpt_neox.ACTIVATIONS:
        raise f.unsupported("hidden_act", activation, f"hidden_act {'/'.join(gpt_neox.ACTIVATIONS)}")
    if ints["hidden_size"] % ints["num_attention_heads"]:
        raise f.refuse("hidden_size", f"divisible by num_attention_heads={ints['num_attention_heads']}")
    head_dim = f.int("head_dim", ints["hidden_size"] // ints["num_attention_heads"])
    if head_dim != ints["hidden_size"] // ints["num_attention_heads"]:
        raise f.unsupported("head_dim", head_dim, "head_dim = hidden_size / num_attention_heads")
    theta, pct = _rotary(f, source)
    eps = f.float("layer_norm_eps", 1e-5)
    cfg = gpt_neox.GPTNeoXConfig(**ints, rotary_pct=pct, rotary_emb_base=theta, **flags, layer_norm_eps=eps,
                                 hidden_act=activation)
    if cfg.rotary_dim % 2:
        raise f.unsupported("rotary_pct", pct, f"an even int(head_dim·rotary_pct) (here {cfg.rotary_dim})")
    return gpt_neox.config(cfg)


def _rotary(f: Fields, source: str) -> tuple[float, float]:
    """``(rope_theta, partial_rotary_factor)`` from every spelling, which must agree; default rope only."""
    theta, pct = {}, {}
    for key in ("rope_parameters", "rope_scaling"):
        rope = f.dict(key)
        if not rope:
            continue
        sub = Fields(rope, f"{source} {key}", "GPT-NeoX")
        kind = sub.str("rope_type", sub.str("type", "default"))
        if kind != "default":
            raise f.unsupported(key, rope, "rope_type default (no rope scaling)")
        if "rope_theta" in rope:
            theta[f"{key}.rope_theta"] = sub.float("rope_theta")
        if "partial_rotary_factor" in rope:
            pct[f"{key}.partial_rotary_factor"] = sub.float("partial_rotary_factor", positive=False)
    for key in ("rotary_emb_base", "rope_theta"):
        if f.hf.get(key) is not None:
            theta[key] = f.float(key)
    for key in ("rotary_pct", "partial_rotary_factor"):
        if f.hf.get(key) is not None:
            pct[key] = f.float(key, positive=False)
    for found in (theta, pct):
        if len(set(found.values())) > 1:
            spelled = ", ".join(f"{k}={v!r}" for k, v in found.items())
            raise UserError(f"{source} gives the rotary setting conflicting values {spelled}: keep one value in all "
                            "its spellings (transformers 5 reads only some of them)")
    pct_value = next(iter(pct.values()), 0.25)
    if not 0 <= pct_value <= 1:
        raise UserError(f"{source} field {next(iter(pct))} = {pct_value!r} is not a fraction in [0, 1]: fix the field "
                        "or re-save the model with `save_pretrained`")
    return next(iter(theta.values()), 10000.0), pct_value


def config_to_hf(cfg: gpt_neox.GPTNeoXConfig) -> dict:
    """The Hugging Face ``config.json`` dict of ``cfg`` (dropout 0: connect's model has none). The rotary settings
    are written as transformers 5's ``rope_parameters`` and as the older ``rotary_emb_base`` / ``rotary_pct``."""
    eos = 0 if cfg.vocab_size == 50304 else None  # Pythia's <|endoftext|>; other vocabularies have none
    return {
        "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
        "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act, "layer_norm_eps": cfg.layer_norm_eps,
        "use_parallel_residual": cfg.use_parallel_residual, "attention_bias": cfg.attention_bias,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_emb_base,
                            "partial_rotary_factor": cfg.rotary_pct},
        "rotary_emb_base": cfg.rotary_emb_base, "rotary_pct": cfg.rotary_pct,
        "attention_dropout": 0.0, "hidden_dropout": 0.0, "initializer_range": gpt_neox.INIT_STD,
        "use_cache": True, "bos_token_id": eos, "eos_token_id": eos, "dtype": "float32",
    }


def tensor_names(cfg: gpt_neox.GPTNeoXConfig) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
    """Hugging Face key -> (connect leaf path, layer index into the stacked leaf or None, transposed)."""
    block = {k: v for k, v in _BLOCK_KEYS.items() if cfg.attention_bias or k not in _ATTENTION_BIASES}
    names = {"gpt_neox.embed_in.weight": (("embed_in",), None, False)}
    for i in range(cfg.num_hidden_layers):
        names.update({f"gpt_neox.layers.{i}.{k}": (("layers", *path), i, transposed) for k, (path, transposed) in block.items()})
    names.update({"gpt_neox.final_layer_norm.weight": (("final_layer_norm", "scale"), None, False),
                  "gpt_neox.final_layer_norm.bias": (("final_layer_norm", "bias"), None, False)})
    if not cfg.tie_word_embeddings:
        names["embed_out.weight"] = (("embed_out",), None, False)
    return names
