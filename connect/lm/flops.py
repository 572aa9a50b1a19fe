"""Compute accounting of a language-model training run: matmul parameters, training FLOPs per token and the
accelerators' peak FLOP/s, for throughput and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import jax
import numpy as np

from connect import models
from connect.models import LMConfig

#: Dense bf16 peak FLOP/s per device, by a substring of ``device.device_kind`` (vendor data sheets, without sparsity).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def n_params(model_cfg: LMConfig) -> int:
    """Parameters that take part in matmuls: all but the embedding tables (GPT-2's ``wpe``, and the token embedding
    when the head is untied: a lookup does no multiply-adds), as nanoGPT counts ``N`` for its MFU."""
    fam = models.family(model_cfg)
    shapes = jax.eval_shape(lambda: fam.init(jax.random.key(0), model_cfg))
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    lookups = [k for k in fam.RESIDUAL["embeddings"] if not (model_cfg.tie_word_embeddings and k == fam.RESIDUAL["tied"])]
    return total - sum(int(np.prod(shapes[k].shape)) for k in lookups)


def flops_per_token(model_cfg: LMConfig, context: int) -> float:
    """Training FLOPs per token, ``6N + 12·L·T·D`` (Chowdhery et al. 2022, PaLM, appendix B): 6N for the
    forward and backward matmuls with the weights, 12·L·T·D for attention's ``QKᵀ`` and ``PV`` (D the residual
    width: exact when the heads span it, as in GPT-2 and GPT-NeoX)."""
    return 6.0 * n_params(model_cfg) + 12.0 * model_cfg.n_layers * context * model_cfg.d_model


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of ``device`` from :data:`PEAK_FLOPS`; ``None`` when unknown (e.g. CPU)."""
    if device.platform == "cpu":
        return None
    return next((v for k, v in PEAK_FLOPS.items() if k in device.device_kind), None)
