"""Singular-value spectra of weight matrices and their summaries.

For singular values ``σ_1 ≥ … ≥ σ_r ≥ 0`` of a matrix W:

* stable rank ``Σσ²/σ_1² = ‖W‖_F²/‖W‖_2²`` (Rudelson & Vershynin 2007);
* condition number ``σ_1 / σ_(5th percentile)`` — the paper's robust variant
  (Zhang et al., arXiv 2605.09991, §5), percentile by linear interpolation as numpy's;
* effective rank ``exp(H(p))``, ``p = σ/Σσ``, H the Shannon entropy (Roy & Vetterli 2007);
* spectral norm σ_1, nuclear norm Σσ, max-abs entry ``max|W_ij|``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from connect.constraints import ConstraintSet

SUMMARIES = ("spectral_norm", "stable_rank", "condition_number", "effective_rank", "nuclear_norm", "max_abs")


def singular_values(w_MxN: jax.Array) -> jax.Array:
    """All singular values, descending, shape ``(min(M, N),)``."""
    return jnp.linalg.svd(w_MxN, compute_uv=False)


def stable_rank(s_R: jax.Array) -> jax.Array:
    return jnp.sum(s_R**2) / jnp.maximum(s_R[0] ** 2, 1e-30)


def condition_number(s_R: jax.Array, percentile: float = 5.0) -> jax.Array:
    return s_R[0] / jnp.maximum(jnp.percentile(s_R, percentile), 1e-30)


def effective_rank(s_R: jax.Array) -> jax.Array:
    p = s_R / jnp.maximum(jnp.sum(s_R), 1e-30)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def summarize(w_MxN: jax.Array) -> dict:
    """Singular values and every summary of :data:`SUMMARIES` for one matrix."""
    s_R = singular_values(w_MxN)
    return {
        "singular_values": s_R,
        "spectral_norm": s_R[0],
        "stable_rank": stable_rank(s_R),
        "condition_number": condition_number(s_R),
        "effective_rank": effective_rank(s_R),
        "nuclear_norm": jnp.sum(s_R),
        "max_abs": jnp.max(jnp.abs(w_MxN)),
    }


def summarize_stack(w_xMxN: jax.Array) -> dict:
    """:func:`summarize` of every matrix of a stack ``(…, M, N)`` (vmapped over all leading axes):
    ``singular_values`` of shape ``(…, min(M, N))``, every summary of shape ``(…)``."""
    fn = summarize
    for _ in range(w_xMxN.ndim - 2):
        fn = jax.vmap(fn)
    return fn(w_xMxN)


def constraint_relative(summary: dict, constraint: ConstraintSet, name: str, shape_out_in: tuple[int, int]) -> jax.Array:
    """One matrix's norm relative to its radius in ``constraint``'s set (≤ 1: inside), read from its
    :func:`summarize` output (no second SVD): ``σ_1 / (s/λ)`` for a matrix the set names (Muon's spectral
    ball, ``s`` the shape factor of ``shape_out_in = (fan_out, fan_in)``), ``max|W_ij| / (1/λ)`` on the
    ℓ∞ ball (AdamW, Lion; Muon's other arrays), ``‖W‖_F / (1/λ)`` with ``‖W‖_F² = Σσ²`` on the ℓ₂ balls
    (``l2``, ``muon_full``'s other arrays), 0 without a ball (see :mod:`connect.constraints`)."""
    if constraint.kind == "none" or constraint.lam == 0:
        return jnp.zeros_like(summary["spectral_norm"])
    if constraint.kind in ("muon", "muon_full") and name in constraint.matrices:
        return summary["spectral_norm"] / constraint.spectral_radius(shape_out_in)
    if constraint.kind in ("linf", "muon"):
        return summary["max_abs"] / constraint.linf_radius
    return jnp.sqrt(jnp.sum(summary["singular_values"] ** 2, axis=-1)) * constraint.lam


def medians(per_matrix: dict[str, dict], stats) -> dict:
    """The median over matrices of each scalar statistic in ``stats``: ``{stat: (…)}`` from
    ``{name: {stat: (…)}}`` (as the study reports spectra, Zhang et al., arXiv 2605.09991, §5)."""
    return {s: jnp.median(jnp.stack([jnp.asarray(m[s]) for m in per_matrix.values()]), axis=0) for s in stats}
