"""Hugging Face ``GPT2LMHeadModel`` <-> :mod:`connect.models.gpt2`: the config fields and the tensor names.

``Conv1D`` stores kernels ``(in, out)`` exactly as connect does, so no tensor is transposed::

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

Keys without the ``transformer.`` prefix (the original ``openai-community/gpt2`` upload) load too; the
causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` are ignored.
"""

from __future__ import annotations

import re

from connect.lm.huggingface.fields import Fields
from connect.models import gpt2

MODEL_TYPES = {"gpt2": "GPT2LMHeadModel"}
#: A key that lacks this prefix is read as if it had it.
OPTIONAL_PREFIX = "transformer."
#: Buffers of ``transformers``' module, not weights: dropped when reading.
IGNORED = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")

#: Activations equal to connect's tanh-GELU (``gelu_pytorch_tanh`` is the same formula in torch).
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
_BOOL_FIELDS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
                "add_cross_attention": False}
#: Hugging Face leaf name -> connect leaf name, per transformer block.
_BLOCK_KEYS = {
    "ln_1.weight": ("ln_1", "scale"), "ln_1.bias": ("ln_1", "bias"),
    "attn.c_attn.weight": ("attn", "c_attn", "kernel"), "attn.c_attn.bias": ("attn", "c_attn", "bias"),
    "attn.c_proj.weight": ("attn", "c_proj", "kernel"), "attn.c_proj.bias": ("attn", "c_proj", "bias"),
    "ln_2.weight": ("ln_2", "scale"), "ln_2.bias": ("ln_2", "bias"),
    "mlp.c_fc.weight": ("mlp", "c_fc", "kernel"), "mlp.c_fc.bias": ("mlp", "c_fc", "bias"),
    "mlp.c_proj.weight": ("mlp", "c_proj", "kernel"), "mlp.c_proj.bias": ("mlp", "c_proj", "bias"),
}


def config_from_hf(hf: dict, source: str) -> gpt2.GPT2Config:
    """A :class:`GPT2Config` from a GPT-2 ``config.json`` dict; UserError for a mistyped field or a feature
    connect lacks (one line naming the field)."""
    f = Fields(hf, source, "GPT-2")
    ints = {key: f.int(key) for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
    ints["n_inner"] = f.int("n_inner", 4 * ints["n_embd"])
    flags = {key: f.bool(key, default) for key, default in _BOOL_FIELDS.items()}
    activation = f.str("activation_function", "gelu_new")
    eps = f.float("layer_norm_epsilon", 1e-5)
    tied = f.bool("tie_word_embeddings", True)
    unsupported = {"activation_function": activation not in _ACTIVATIONS, **{k: v != _BOOL_FIELDS[k] for k, v in flags.items()}}
    for key, bad in unsupported.items():
        if bad:
            raise f.unsupported(key, hf.get(key), f"the GPT-2 defaults (activation {'/'.join(_ACTIVATIONS)}, "
                                "scale_attn_weights true, the others false)")
    return gpt2.config(gpt2.GPT2Config(**ints, tie_word_embeddings=tied, layer_norm_epsilon=eps))


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


def tensor_names(cfg: gpt2.GPT2Config) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
    """Hugging Face key -> (connect leaf path, layer index into the stacked leaf or None, transposed)."""
    names = {"transformer.wte.weight": (("wte",), None, False), "transformer.wpe.weight": (("wpe",), None, False)}
    for i in range(cfg.n_layer):
        names.update({f"transformer.h.{i}.{k}": (("h", *path), i, False) for k, path in _BLOCK_KEYS.items()})
    names.update({"transformer.ln_f.weight": (("ln_f", "scale"), None, False),
                  "transformer.ln_f.bias": (("ln_f", "bias"), None, False)})
    if not cfg.tie_word_embeddings:
        names["lm_head.weight"] = (("lm_head",), None, False)
    return names
