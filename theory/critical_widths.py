"""Critical widths of the convex programs (THEORY.md §C): how many neurons an optimum needs, and
from which width the optimal set is connected.

* C1, weight decay: ŷ* is unique (ℓ strictly convex) and each active block has a unique
  direction ``ρ_k`` (Mishkin & Pilanci 2023, arXiv 2306.00119), so the optimal block weights
  form the polytope ``𝒫 = {α ≥ 0 : Σ_k α_k s_k D_k X ρ_k = ŷ*}`` (the penalty is then fixed:
  ``β Σα = λ*ᵀŷ*`` with the dual ``λ* = −∇L(ŷ*)``). ``m*`` = minimum support over 𝒫 (attained
  at a vertex), ``M*`` = maximum vertex support, both by enumerating the basic solutions
  (exact for small instances); the staircase (Kim, Mishkin & Pilanci 2025, arXiv 2411.07729)
  makes the optimal set connected for ``m ≥ min(m* + M*, n + 1)`` [S]. A vertex has
  ``≤ rank ≤ n`` nonzeros, so in fact ``m* ≤ n`` (THEORY.md states ``n + 1``).
* C3, ℓ∞ box [R]: ``τ*`` = minimal ℓ∞ path norm of an interpolant
  (:func:`theory.programs.min_linf_path_norm`) brackets the interpolation width:
  ``⌈τ*/(r_W r_a)⌉ ≤ m_int ≤ ⌊τ*/(r_W r_a)⌋ + n`` (``λ²τ*`` when ``r_W = r_a = 1/λ``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from theory import programs, recovery
from theory.programs import Blocks

#: Vertex enumeration of the optimal polytope is skipped above this many candidate bases.
MAX_BASES = 200_000


@dataclasses.dataclass(frozen=True)
class WeightDecaySolution:
    """C1 solution: program ``value``, the recovered ``network`` (a minimum-support vertex of the
    optimal polytope), ``m_star``, ``M_star`` (None when enumeration was skipped), the number of
    active blocks (columns of the polytope), the vertex supports found, and the dual certificate
    ``dual_ratio = max_k max_{v ∈ K_k, ‖v‖ ≤ 1} s_k λ*ᵀD_k X v / β`` (≤ 1 ⇔ optimal over the patterns)."""

    value: float
    network: dict
    m_star: int
    M_star: int | None
    n_active: int
    vertex_supports: tuple
    solver: str
    dual_ratio: float


def vertex_supports(g_NxK: np.ndarray, yhat_N: np.ndarray, tol: float = 1e-7) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Every vertex of ``{α ≥ 0 : G α = ŷ}`` as ``(support, α)``, by enumerating the bases: a
    vertex is ``α_S = G_S⁺ ŷ ≥ 0`` for a column set ``S`` with ``G_S`` of full column rank and
    ``G_S α_S = ŷ`` (Bertsimas & Tsitsiklis, Thm 2.3). Tolerances relative to ``‖ŷ‖`` and to the
    condition of ``G_S``. Raises ``ValueError`` above :data:`MAX_BASES` candidate sets."""
    k = g_NxK.shape[1]
    rank = np.linalg.matrix_rank(g_NxK, tol=1e-9 * max(np.abs(g_NxK).max(initial=0.0), 1e-300) * max(g_NxK.shape))
    n_sets = sum(math.comb(k, j) for j in range(1, rank + 1))
    if n_sets > MAX_BASES:
        raise ValueError(f"{n_sets} candidate bases exceed MAX_BASES={MAX_BASES}")
    scale = max(float(np.linalg.norm(yhat_N)), 1e-300)
    found: dict[tuple[int, ...], np.ndarray] = {}
    for j in range(1, rank + 1):
        for cols in itertools.combinations(range(k), j):
            g = g_NxK[:, cols]
            sv = np.linalg.svd(g, compute_uv=False)
            if sv[-1] <= 1e-8 * sv[0]:
                continue
            a_s = np.linalg.lstsq(g, yhat_N, rcond=None)[0]
            if np.linalg.norm(g @ a_s - yhat_N) > tol * scale or (a_s < -tol * scale).any():
                continue
            nz = a_s > tol * scale
            support = tuple(c for c, z in zip(cols, nz) if z)
            if support and support not in found:
                alpha = np.zeros(k)
                alpha[list(support)] = np.linalg.lstsq(g_NxK[:, list(support)], yhat_N, rcond=None)[0]
                found[support] = alpha
    return list(found.items())


def weight_decay_optimum(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, beta: float,
                         loss: str = "squared") -> WeightDecaySolution:
    """C1 with the optimal polytope's critical widths (module docstring). Candidate blocks are
    those with ``c_k ≥ β(1 − 10⁻³)`` in the dual certificate (:func:`theory.programs.block_duals`)
    or used by the solver; directions are the solver's where it uses the block, else the
    certificate's maximiser.
    ``m*`` and ``M*`` are the least and largest supports of the vertices of ``{α ≥ 0 : Gα = ŷ*}``
    whose penalty ``Σα`` equals the optimum's (10⁻⁵ relative), which removes near-active blocks;
    the returned network is a least-support vertex."""
    value, blocks, solver = programs.weight_decay_program(x_NxD, y_N, d_PxN, beta, loss)
    p = len(d_PxN)
    norms = np.linalg.norm(blocks.v_KxD, axis=1)
    yhat = blocks.columns(x_NxD, d_PxN).sum(axis=1)
    c_2P, dirs_2PxD = programs.block_duals(x_NxD, d_PxN, programs.dual(yhat, y_N, loss))
    used = blocks.pattern_K + p * (blocks.sign_K < 0)
    dirs_2PxD = dirs_2PxD / np.maximum(np.linalg.norm(dirs_2PxD, axis=1), 1e-300)[:, None]
    dirs_2PxD[used] = blocks.v_KxD / norms[:, None]
    active = np.flatnonzero(c_2P >= beta * (1 - 1e-3))  # generous: vertices are filtered by cost below
    active = np.union1d(active, used)
    n_active = len(active)
    if n_active == 0:
        return WeightDecaySolution(value, recovery.empty_network(x_NxD.shape[1]), 0, 0, 0, ((),), solver, float(c_2P.max() / beta))
    unit = Blocks(dirs_2PxD[active], np.where(active < p, 1.0, -1.0), active % p, np.ones(n_active))
    g_NxK = unit.columns(x_NxD, d_PxN)
    try:
        verts = vertex_supports(g_NxK, yhat)
    except ValueError:
        verts = []
    # a vertex is optimal iff its penalty Σα equals the optimum's (λ*ᵀG_k = β on the true active set)
    verts = [(sup, a) for sup, a in verts if abs(a.sum() - norms.sum()) <= 1e-5 * norms.sum()]
    if verts:
        support, alpha = min(verts, key=lambda sa: len(sa[0]))
        m_star, big_m = len(support), max(len(s) for s, _ in verts)
    else:  # too many bases (or none found numerically): one basic solution by LP, M* unknown
        alpha = recovery.basic_solution(g_NxK, yhat, np.ones(n_active))
        m_star, big_m = int((alpha > 0).sum()), None
    network = recovery.weight_decay_network(unit, alpha)
    return WeightDecaySolution(value, network, m_star, big_m, n_active, tuple(s for s, _ in verts), solver,
                               float(c_2P.max() / beta))


def staircase_width(m_star: int, big_m: int | None, n: int) -> int:
    """Width from which the optimal set is connected: ``min(m* + M*, n + 1)`` (Kim, Mishkin &
    Pilanci 2025) [S]; ``n + 1`` when ``M*`` is unknown."""
    return n + 1 if big_m is None else min(m_star + big_m, n + 1)


def interpolation_bracket(tau: float, r_w: float, r_a: float, n: int) -> tuple[int, int]:
    """``⌈τ*/(r_W r_a)⌉ ≤ m_int ≤ ⌊τ*/(r_W r_a)⌋ + n`` (module docstring; round-off 1e-9 relative)."""
    q = tau / (r_w * r_a)
    return math.ceil(q * (1 - 1e-9)), math.floor(q * (1 + 1e-9)) + n
