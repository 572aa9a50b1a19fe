"""Hugging Face ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``MistralForCausalLM`` <-> :mod:`connect.models.llama`:
the config fields and the tensor names.

``nn.Linear`` stores weights ``(out, in)``, the transpose of connect's kernels::

    model.embed_tokens.weight                              (V, D)   <->  embed_tokens
    model.layers.{i}.input_layernorm.weight                (D,)     <->  layers.input_layernorm.scale[i]
    model.layers.{i}.self_attn.{q,k,v,o}_proj.weight       (O, I)   <->  layers.self_attn.{q,k,v,o}_proj.kernel[i]ᵀ
    model.layers.{i}.self_attn.{q,k,v,o}_proj.bias         (O,)     <->  layers.self_attn.*.bias[i]  (where present)
    model.layers.{i}.post_attention_layernorm.weight       (D,)     <->  layers.post_attention_layernorm.scale[i]
    model.layers.{i}.mlp.{gate,up,down}_proj.weight|bias   (O, I)   <->  layers.mlp.*.kernel[i]ᵀ | bias[i]
    model.norm.weight                                      (D,)     <->  norm.scale
    lm_head.weight                                         (V, D)   <->  lm_head (untied heads only)

Keys without the ``model.`` prefix (a bare ``LlamaModel``) load too; rotary ``inv_freq`` buffers are ignored.
Rotary settings are read from ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling``
(older files), with ``rope_scaling`` taking precedence as in ``transformers``. ``pretraining_tp`` is read and
ignored: ``transformers`` 5 no longer splits the matmuls by it, and it never changed the result beyond rounding.
"""

from __future__ import annotations

import re

from connect.lm.huggingface.fields import REQUIRED, Fields
from connect.models import llama

MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
#: A key that lacks this prefix is read as if it had it.
OPTIONAL_PREFIX = "model."
#: Buffers of ``transformers``' module, not weights: dropped when reading.
IGNORED = re.compile(r"^(model\.)?(layers\.\d+\.self_attn\.)?rotary_emb\.(inv_freq|original_inv_freq)$")

#: The ``transformers`` defaults of the fields a config.json may leave out, per model type.
_DEFAULTS = {"llama": {"num_key_value_heads": None, "max_position_embeddings": 2048, "sliding_window": None},
             "qwen2": {"num_key_value_heads": 32, "max_position_embeddings": 32768, "sliding_window": 4096},
             "mistral": {"num_key_value_heads": 8, "max_position_embeddings": 4096 * 32, "sliding_window": 4096}}
_LAYER_KEYS = {
    "input_layernorm.weight": (("input_layernorm", "scale"), False),
    "post_attention_layernorm.weight": (("post_attention_layernorm", "scale"), False),
}


def config_from_hf(hf: dict, source: str) -> llama.LlamaConfig:
    """A :class:`LlamaConfig` from a Llama, Qwen2 or Mistral ``config.json`` dict; UserError for a mistyped field
    or a feature connect lacks (one line naming the field)."""
    f = Fields(hf, source, "Llama")
    model_type = f.str("model_type")
    if model_type not in MODEL_TYPES:
        raise f.unsupported("model_type", model_type, f"model_type {', '.join(MODEL_TYPES)}")
    defaults = _DEFAULTS[model_type]
    ints = {key: f.int(key) for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads")}
    kv = defaults["num_key_value_heads"] if "num_key_value_heads" not in hf else None  # null: as many as q heads
    ints["num_key_value_heads"] = f.int("num_key_value_heads", kv or ints["num_attention_heads"])
    ints["max_position_embeddings"] = f.int("max_position_embeddings", defaults["max_position_embeddings"])
    f.int("pretraining_tp", 1)  # type checked, not used by transformers 5
    f.float("attention_dropout", 0.0, positive=False)  # eval mode: no dropout
    activation = f.str("hidden_act", "silu")
    if activation != "silu":
        raise f.unsupported("hidden_act", activation, "hidden_act 'silu' (SwiGLU)")
    biases = {"llama": (f.bool("attention_bias", False),) * 2 + (f.bool("mlp_bias", False),),
              "qwen2": (True, False, False), "mistral": (False, False, False)}[model_type]
    return llama.config(llama.LlamaConfig(
        **ints, head_dim=f.int("head_dim", None), model_type=model_type,
        tie_word_embeddings=f.bool("tie_word_embeddings", False), rms_norm_eps=f.float("rms_norm_eps", 1e-6),
        **_rope_from_hf(f, ints["max_position_embeddings"]), **dict(zip(("qkv_bias", "o_bias", "mlp_bias"), biases)),
        **_window_from_hf(f, model_type, ints["num_hidden_layers"])))


def _rope_from_hf(f: Fields, max_positions: int) -> dict:
    """The ``rope_*`` fields: the rotary dict is ``rope_scaling`` or else ``rope_parameters`` (as transformers'
    ``convert_rope_params_to_dict``), its ``rope_theta`` defaulting to the top-level one, then 10000."""
    rope = f.dict("rope_scaling") or f.dict("rope_parameters") or {}
    key = "rope_scaling" if f.dict("rope_scaling") else "rope_parameters"
    if any(isinstance(v, dict) for v in rope.values()):
        raise f.unsupported(key, rope, "one rotary setting for every layer (not nested per layer type)")
    r = Fields(rope, f"{f.source} {key}", "Llama")
    theta = r.float("rope_theta", f.float("rope_theta", 10000.0))
    rope_type = r.str("rope_type", r.str("type", "default"))
    partial = r.float("partial_rotary_factor", f.float("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise f.unsupported("partial_rotary_factor", partial, "rotary positions on the whole head (factor 1)")
    if rope_type not in ("default", "llama3"):
        raise f.unsupported(f"{key}.rope_type", rope_type, "rope_type 'default' or 'llama3'")
    out = {"rope_theta": theta, "rope_type": rope_type}
    if rope_type == "llama3":
        original = f.int("original_max_position_embeddings", r.int("original_max_position_embeddings", max_positions))
        out.update(rope_factor=r.float("factor", REQUIRED), rope_low_freq_factor=r.float("low_freq_factor", REQUIRED),
                   rope_high_freq_factor=r.float("high_freq_factor", REQUIRED),
                   rope_original_max_position_embeddings=original)
    return out


def _window_from_hf(f: Fields, model_type: str, n_layers: int) -> dict:
    """``sliding_window`` and ``max_window_layers``: Mistral slides on every layer when ``sliding_window`` is set
    (absent: 4096, null: never); Qwen2 on layers ``l ≥ max_window_layers`` when ``use_sliding_window``; an
    explicit Qwen2 ``layer_types`` must be that pattern."""
    if model_type == "llama":
        return {}
    window = f.int("sliding_window", _DEFAULTS[model_type]["sliding_window"]) if (
        "sliding_window" not in f.hf or f.hf["sliding_window"] is not None) else None
    if model_type == "mistral":
        return {"sliding_window": window}
    first = f.int("max_window_layers", 28, minimum=0)
    if not f.bool("use_sliding_window", False):
        window = None
    types = ["sliding_attention" if window is not None and i >= first else "full_attention" for i in range(n_layers)]
    given = f.hf.get("layer_types")
    if given is not None and given != types:
        raise f.unsupported("layer_types", given, "layer_types matching use_sliding_window, sliding_window and "
                            "max_window_layers (or no layer_types)")
    return {"sliding_window": window, "max_window_layers": first if window is not None else 0}


def config_to_hf(cfg: llama.LlamaConfig) -> dict:
    """The Hugging Face ``config.json`` dict of ``cfg`` for its ``model_type`` (dropout 0: connect's model has none)."""
    rope = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type == "llama3":
        rope.update(factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
                    high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_position_embeddings)
    out = {
        "model_type": cfg.model_type, "architectures": [MODEL_TYPES[cfg.model_type]],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.d_head,
        "max_position_embeddings": cfg.max_position_embeddings, "hidden_act": "silu", "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": rope, "tie_word_embeddings": cfg.tie_word_embeddings, "attention_dropout": 0.0,
        "initializer_range": llama.INIT_STD, "use_cache": True, "bos_token_id": None, "eos_token_id": None,
        "pad_token_id": None, "dtype": "float32",
    }
    if cfg.model_type == "llama":
        out.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias, pretraining_tp=1)
    elif cfg.model_type == "qwen2":
        out.update(use_sliding_window=cfg.sliding_window is not None, sliding_window=cfg.sliding_window,
                   max_window_layers=cfg.max_window_layers)
    else:
        out["sliding_window"] = cfg.sliding_window
    return out


def tensor_names(cfg: llama.LlamaConfig) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
    """Hugging Face key -> (connect leaf path, layer index into the stacked leaf or None, transposed)."""
    per_layer = dict(_LAYER_KEYS)
    has_bias = {"q_proj": cfg.qkv_bias, "k_proj": cfg.qkv_bias, "v_proj": cfg.qkv_bias, "o_proj": cfg.o_bias,
                "gate_proj": cfg.mlp_bias, "up_proj": cfg.mlp_bias, "down_proj": cfg.mlp_bias}
    for suffix in llama.LAYER_MATRICES:
        module, name = suffix.split(".")
        per_layer[f"{suffix}.weight"] = ((module, name, "kernel"), True)
        if has_bias[name]:
            per_layer[f"{suffix}.bias"] = ((module, name, "bias"), False)
    names = {"model.embed_tokens.weight": (("embed_tokens",), None, False)}
    for i in range(cfg.num_hidden_layers):
        names.update({f"model.layers.{i}.{k}": (("layers", *path), i, t) for k, (path, t) in per_layer.items()})
    names["model.norm.weight"] = (("norm", "scale"), None, False)
    if not cfg.tie_word_embeddings:
        names["lm_head.weight"] = (("lm_head",), None, False)
    return names
