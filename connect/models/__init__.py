"""Models: each is a pure ``init(key, cfg) -> params`` and ``apply(params, x) -> outputs``.

The language-model families (:data:`LM_FAMILIES`) share one interface, which the analysis core, ``connect.lm``
and the studies use without knowing the family:

* ``FAMILY`` (the name recorded in checkpoints), a frozen config dataclass with ``vocab_size``,
  ``tie_word_embeddings``, ``to_dict()`` and the properties ``d_model``, ``n_layers``, ``context_limit``;
  ``CONFIGS`` (named configs, ``tiny`` among them), ``config(name_or_cfg, **overrides)``, ``check_context``;
* ``init(key, cfg)``, ``apply(params, tokens, cfg, *, compute_dtype)`` (logits), ``features(...)`` (the final
  hidden states and the head, whose product ``apply`` returns), ``loss(...)``, ``activations(...)``;
* the weight matrices under one naming (Hugging Face's): ``LAYER_MATRICES``, ``matrix_names``,
  ``hidden_matrix_names``, ``checked_matrix_names``, ``matrices`` (each ``(…, fan_out, fan_in)``) and
  ``MUON_MATRICES`` (leaf path -> matrices fused along its last axis);
* the function-preserving transformations as data: ``symmetry(cfg)`` (permutations, :mod:`connect.symmetry`)
  and ``RESIDUAL`` (what reads and writes the residual stream, and its norms, for rotations).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

import jax
import jax.numpy as jnp

from connect.errors import UserError
from connect.models import language, relu

#: Language-model families, each a module ``connect.models.<name>``.
LM_FAMILIES = ("gpt2", "llama", "gpt_neox")

__all__ = ["relu", "LM_FAMILIES", "family", "token_nll"]


class LMConfig(Protocol):
    """What every language-model family's config offers the code that does not know its family."""

    vocab_size: int
    tie_word_embeddings: bool

    @property
    def d_model(self) -> int: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def context_limit(self) -> int: ...

    def to_dict(self) -> dict: ...


def family(name_or_cfg) -> ModuleType:
    """The family module of a config object (by its class's module) or of a family name."""
    if isinstance(name_or_cfg, str):
        if name_or_cfg not in LM_FAMILIES:
            raise UserError(f"unknown model family {name_or_cfg!r}: use one of {', '.join(LM_FAMILIES)}")
        return importlib.import_module(f"connect.models.{name_or_cfg}")
    module = type(name_or_cfg).__module__
    if module.rsplit(".", 1)[-1] not in LM_FAMILIES:
        raise TypeError(f"{type(name_or_cfg).__name__} is not the config of a language-model family")
    return importlib.import_module(module)


def token_nll(params, tokens_BxT, targets_BxT, cfg, compute_dtype=jnp.float32) -> jax.Array:
    """``−log p(y_bi | x_b,≤i)`` per token, ``(B, T)`` float32, of any family's model (its ``features`` and
    :func:`connect.models.language.head_nll`: on CPU the logits are never stored)."""
    x_BxTxD, head_VxD = family(cfg).features(params, tokens_BxT, cfg, compute_dtype=compute_dtype)
    return language.head_nll(x_BxTxD, head_VxD, targets_BxT, compute_dtype)


def layer_matrices(cfg) -> dict[str, list[str]]:
    """Each kind of per-layer matrix of ``cfg``'s family (``attn.q``, ``self_attn.q_proj``, …) -> its names in
    layers ``0..L−1`` (the family's ``hidden_matrix_names`` are ``<layers>.<l>.<kind>``)."""
    out: dict[str, list[str]] = {}
    for name in family(cfg).hidden_matrix_names(cfg):
        _, layer, kind = name.split(".", 2)
        out.setdefault(kind, []).append(name)
    return out
