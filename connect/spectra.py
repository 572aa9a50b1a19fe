"""Singular-value spectra of weight matrices and their summaries.

For singular values ``σ_1 ≥ … ≥ σ_r ≥ 0`` of a matrix W:

* stable rank ``Σσ²/σ_1² = ‖W‖_F²/‖W‖_2²`` (Rudelson & Vershynin 2007);
* condition number ``σ_1 / σ_(5th percentile)`` — the paper's robust variant
  (Zhang et al., arXiv 2605.09991, §5), percentile by linear interpolation as numpy's;
* effective rank ``exp(H(p))``, ``p = σ/Σσ``, H the Shannon entropy (Roy & Vetterli 2007);
* spectral norm σ_1, nuclear norm Σσ, max-abs entry ``max|W_ij|``.

Every model family names its weight matrices one way (``family.matrices(params, cfg) -> {name: W}``, each
``(…, fan_out, fan_in)``); :func:`matrix_summaries` measures such a dict at one point and
:func:`along_path` at every t of a path — the one spectra code of the width sweep, the GPT-2 study and the
finetuning study.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from connect import batching, paths
from connect.constraints import ConstraintSet

SUMMARIES = ("spectral_norm", "stable_rank", "condition_number", "effective_rank", "nuclear_norm", "max_abs")


#: a matrix at least this many times taller than wide (after turning it upright) is QR-factored before its SVD
QR_FIRST_RATIO = 2


def singular_values(w_MxN: jax.Array) -> jax.Array:
    """All singular values, descending, shape ``(min(M, N),)``.

    A wide matrix is transposed first (``σ(W) = σ(Wᵀ)``); one at least :data:`QR_FIRST_RATIO` times taller than wide
    is reduced to the triangular factor of ``W = QR`` (``σ(W) = σ(R)``, Q's columns orthonormal; Chan 1982, the
    threshold LAPACK's ``gesdd`` uses internally is ``M ≥ 11N/6``). Both are exact in exact arithmetic and backward
    stable. One core, three of GPT-2 124M's MLP matrices: ``(768, 3072)`` 600 → 276 ms, ``(3072, 768)`` 414 → 322 ms;
    the ``(50257, 768)`` embedding 1.26 → 1.17 s; square matrices unchanged (``benchmarks/README.md``)."""
    if w_MxN.shape[-2] < w_MxN.shape[-1]:
        w_MxN = jnp.swapaxes(w_MxN, -1, -2)
    if w_MxN.shape[-2] >= QR_FIRST_RATIO * w_MxN.shape[-1]:
        w_MxN = jnp.linalg.qr(w_MxN, mode="r")
    # full_matrices=False: with the default True, XLA CPU (jax 0.10) allocates the (M, M) factor it then drops —
    # 10 GB for a 50257 × 768 embedding; the singular values are bit-identical either way
    return jnp.linalg.svd(w_MxN, compute_uv=False, full_matrices=False)


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


def matrix_summaries(matrices: Mapping[str, jax.Array], constraint_sets: Mapping[str, ConstraintSet] | None = None) -> dict:
    """``{name: summary}`` of named matrices (each ``(…, fan_out, fan_in)``, leading axes vmapped): singular
    values and every summary of :data:`SUMMARIES`, plus ``{o}_rel`` for each constraint set ``o`` of
    ``constraint_sets`` (:func:`constraint_relative`; a matrix in the set's ``matrices`` is on its spectral
    ball)."""
    out = {}
    for name, w in matrices.items():
        s = summarize_stack(w)
        for o, cs in (constraint_sets or {}).items():
            s[f"{o}_rel"] = constraint_relative(s, cs, name, tuple(w.shape[-2:]))
        out[name] = s
    return out


def along_path(kind, nodes_K, ts_T, matrices_fn: Callable, *, constraint_sets: Mapping[str, ConstraintSet] | None = None,
               strategy: str = "auto") -> dict:
    """Singular values and summaries of every matrix of ``matrices_fn(θ(t))`` at every t of ``ts_T``.

    ``kind`` and ``nodes_K`` as in :func:`connect.paths.point`; ``matrices_fn`` is a family's
    ``params -> {name: W}``, a *selection* of arrays (slices, reshapes, transposes: it must commute with the
    path's elementwise combination, ``M(θ(t)) = Σ_k w_k(t) M(θ_k)``, which is how it is evaluated); reuse one
    function object per model and names, so the compiled program is reused. Per matrix: ``singular_values`` ``(T, R)``, the summaries of :data:`SUMMARIES` ``(T,)`` and
    ``{o}_rel`` ``(T,)`` per constraint set (:func:`matrix_summaries`); ``median`` holds the median over the
    matrices of every scalar ``(T,)`` (as Zhang et al., arXiv 2605.09991, §5, report spectra). The t-points
    are mapped by ``strategy`` (:mod:`connect.batching`; ``auto``: ``vmap`` on accelerators) inside one
    compiled program; on CPU always by ``lax.map``, since there a program with a dozen or more vmapped SVDs
    deadlocks in XLA's thread pool (jax 0.10.2, 2 cores). Returns numpy arrays.
    """
    strategy = batching.resolve(strategy)
    if strategy not in batching.TRACEABLE:
        raise ValueError(f"along_path maps inside jit: strategy must be one of {', '.join(batching.TRACEABLE)}")
    if jax.default_backend() == "cpu":
        strategy = "map"
    if jax.tree.leaves(nodes_K)[0].shape[0] < 2:
        raise ValueError("a path needs at least 2 nodes")
    sets = tuple(sorted((constraint_sets or {}).items()))
    ts_T = np.atleast_1d(np.asarray(ts_T, np.float32))
    names = _names(matrices_fn, nodes_K)
    per, median = jax.device_get(_along_program(kind, matrices_fn, sets, strategy)(nodes_K, jnp.asarray(ts_T)))
    per = {name: {k: np.asarray(v) for k, v in per[name].items()} for name in names}
    return {"t": ts_T, "names": names, "matrices": per, "median": {k: np.asarray(v) for k, v in median.items()}}


def _names(matrices_fn: Callable, nodes_K) -> list[str]:
    """The matrices' names in the family's order, read while tracing (no arrays computed or moved; the dicts
    that jit and eval_shape return come back sorted by key); traced once per function and tree of shapes."""
    leaves, treedef = jax.tree.flatten(nodes_K)
    return list(_traced_names(matrices_fn, treedef, tuple((np.shape(x), np.dtype(x.dtype).name) for x in leaves)))


@functools.lru_cache(maxsize=32)
def _traced_names(matrices_fn: Callable, treedef, shapes: tuple) -> tuple[str, ...]:
    order: list[str] = []

    def trace(nodes):
        out = matrices_fn(jax.tree.map(lambda x: x[0], nodes))
        order.extend(out)
        return out

    jax.eval_shape(trace, jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes]))
    return tuple(order)


@functools.lru_cache(maxsize=32)
def _along_program(kind, matrices_fn: Callable, sets: tuple, strategy: str):
    """``(nodes_K, ts_T) -> ({name: summaries with leading T}, their medians over the matrices)``, jitted once per
    path kind, matrices and sets."""

    def run(nodes_K, ts_T):
        # A family's matrices are a selection of its arrays (slices, reshapes, transposes), so they commute with the
        # path's elementwise combination: cut each node's matrices once, then combine only those at every t — the
        # whole model at every t (a 124M model's 500 MB per point, inside the loop) is never built.
        mats_K = jax.vmap(matrices_fn)(nodes_K)
        per = batching.map_leading(lambda t: matrix_summaries(paths.point(kind, mats_K, t), dict(sets)), ts_T, strategy)
        return per, medians(per, list(SUMMARIES) + [f"{o}_rel" for o, _ in sets])

    return jax.jit(run)
