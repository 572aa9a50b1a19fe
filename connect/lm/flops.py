"""Compute accounting of a GPT-2 training run: matmul parameters, training FLOPs per token and the
accelerators' peak FLOP/s, for throughput and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import jax
import numpy as np

from connect.models import gpt2

#: Dense bf16 peak FLOP/s per device, by a substring of ``device.device_kind`` (vendor data sheets, without sparsity).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def n_params(model_cfg: gpt2.GPT2Config) -> int:
    """Parameters that take part in matmuls: all but ``wpe``, and but ``wte`` when the head is untied
    (an embedding lookup does no multiply-adds), as nanoGPT counts ``N`` for its MFU."""
    shapes = jax.eval_shape(lambda: gpt2.init(jax.random.key(0), model_cfg))
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    total -= model_cfg.n_positions * model_cfg.n_embd
    if not model_cfg.tie_word_embeddings:
        total -= model_cfg.vocab_size * model_cfg.n_embd
    return total


def flops_per_token(model_cfg: gpt2.GPT2Config, context: int) -> float:
    """Training FLOPs per token, ``6N + 12·L·T·D`` (Chowdhery et al. 2022, PaLM, appendix B): 6N for the
    forward and backward matmuls with the weights, 12·L·T·D for attention's ``QKᵀ`` and ``PV``."""
    return 6.0 * n_params(model_cfg) + 12.0 * model_cfg.n_layer * context * model_cfg.n_embd


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of ``device`` from :data:`PEAK_FLOPS`; ``None`` when unknown (e.g. CPU)."""
    if device.platform == "cpu":
        return None
    return next((v for k, v in PEAK_FLOPS.items() if k in device.device_kind), None)
