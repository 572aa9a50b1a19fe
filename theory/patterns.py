"""ReLU activation patterns of a data matrix (THEORY.md §C4), for the convex programs of
:mod:`theory.convex`.

A gate ``g ∈ ℝ^d`` induces the pattern ``D = diag(1[Xg ≥ 0])`` and the closed cone
``K_D = {u : (2D − I)Xu ≥ 0}`` on which ``(Xu)_+ = D X u`` (Pilanci & Ergen 2020, arXiv
2002.10553). Patterns are rows of a boolean ``D_PxN``. The convex programs are exact when they
use *every* pattern of a full-dimensional cone (a *chamber* of the hyperplane arrangement
``{u : x_kᵀu = 0}``): every ``u`` lies in the closure of some chamber, and the closed cone of
that chamber contains it with ``D X u = (Xu)_+``, so lower-dimensional cells add nothing.

* :func:`sample`: gates ``G ~ N(0, I)``, unique non-zero patterns; a subsample of the chambers
  gives a feasible (upper-bound) convex program.
* :func:`enumerate_2d`: every chamber when d = 2, exactly, by sorting the 2n critical angles
  ``angle(x_k) ± π/2`` where a gate crosses a hyperplane; the patterns are those of the arc
  midpoints (at most 2n of them).
* :func:`complete`: for d > 2 no enumeration is done; instead 10× more gates are drawn and the
  pattern set counts as complete when they add none (a statistical, not a proof, check).
* :func:`guard`: refuses pattern sets whose convex program would not fit in memory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from connect.errors import UserError

#: Default memory budget of one convex program (bytes) and default cap on the pattern count.
MAX_BYTES = 2e9
MAX_PATTERNS = 20_000
#: Bytes per nonzero of a cvxpy program after canonicalisation (coefficient, two indices, and
#: the copies cvxpy and Clarabel keep): calibrated on the weight-decay program, where peak memory
#: grew by 0.39 GB at n = 50, d = 5, P = 1904 and 0.72 GB at n = 100, d = 5, P = 1996 (estimates
#: 0.39 and 0.81 GB); an order of magnitude, not a bound.
_BYTES_PER_ENTRY = 8 * 24


def program_bytes(n_patterns: int, n: int, d: int) -> float:
    """Estimated memory of the convex program over ``P`` patterns: two blocks ``v_i, u_i ∈ ℝ^d``
    per pattern, each entering ``n`` cone rows and the ``n`` predictions through ``D_i X``
    (``≈ 4·P·n·d`` nonzeros, plus ``P·(n + d)`` vectors), times :data:`_BYTES_PER_ENTRY`."""
    return float(n_patterns) * (4.0 * n * d + n + d) * _BYTES_PER_ENTRY


def guard(n_patterns: int, n: int, d: int, max_bytes: float = MAX_BYTES, max_patterns: int = MAX_PATTERNS) -> None:
    """Raise :class:`UserError` (one line: how many patterns, how much memory, what to do) when
    the convex program over ``n_patterns`` patterns would not fit."""
    need = program_bytes(n_patterns, n, d)
    if n_patterns > max_patterns or need > max_bytes:
        raise UserError(
            f"{n_patterns} activation patterns on n={n}, d={d} need about {need / 1e9:.2g} GB for the convex program "
            f"(limit {max_bytes / 1e9:.2g} GB, {max_patterns} patterns): use fewer gates (--n-gates), fewer data "
            f"points, or a pattern subsample (an upper bound only)"
        )


def _unique_nonzero(d_PxN: np.ndarray) -> np.ndarray:
    """Unique rows in a fixed (lexicographic) order, the all-zero row dropped."""
    d_PxN = np.unique(np.asarray(d_PxN, dtype=bool), axis=0)
    return d_PxN[d_PxN.any(axis=1)]


def sample(x_NxD: np.ndarray, n_gates: int, seed: int = 0, max_bytes: float = MAX_BYTES,
           max_patterns: int = MAX_PATTERNS) -> np.ndarray:
    """Patterns ``1[X g ≥ 0]`` of ``n_gates`` Gaussian gates ``g ~ N(0, I_d)``, unique, all-zero
    dropped; boolean ``(P, N)``. Raises :class:`UserError` via :func:`guard` when too many."""
    x_NxD = np.asarray(x_NxD, dtype=np.float64)
    n, d = x_NxD.shape
    rng = np.random.default_rng(seed)
    found, chunk = [], 4096
    for start in range(0, int(n_gates), chunk):
        g_DxG = rng.normal(size=(d, min(chunk, int(n_gates) - start)))
        found.append(_unique_nonzero((x_NxD @ g_DxG >= 0).T))
    d_PxN = _unique_nonzero(np.concatenate(found)) if found else np.zeros((0, n), bool)
    guard(len(d_PxN), n, d, max_bytes, max_patterns)
    return d_PxN


def enumerate_2d(x_Nx2: np.ndarray, max_bytes: float = MAX_BYTES, max_patterns: int = MAX_PATTERNS) -> np.ndarray:
    """Every chamber pattern of 2-d data, exactly: the gate ``g(φ) = (cos φ, sin φ)`` crosses the
    hyperplane of ``x_k`` at ``φ = angle(x_k) ± π/2``; between consecutive critical angles the
    pattern is constant, so the arc midpoints give every full-dimensional cone (≤ 2n of them).
    Points ``x_k = 0`` are active everywhere (``0 ≥ 0``), as in :func:`sample`."""
    x_Nx2 = np.asarray(x_Nx2, dtype=np.float64)
    if x_Nx2.ndim != 2 or x_Nx2.shape[1] != 2:
        raise ValueError(f"enumerate_2d needs (n, 2) data, got shape {x_Nx2.shape}")
    live = np.abs(x_Nx2).max(axis=1) > 0
    base = np.arctan2(x_Nx2[live, 1], x_Nx2[live, 0])
    crit = np.sort(np.mod(np.concatenate([base + np.pi / 2, base - np.pi / 2]), 2 * np.pi))
    if crit.size == 0:
        mids = np.array([0.0])
    else:
        nxt = np.append(crit[1:], crit[0] + 2 * np.pi)
        gaps = nxt - crit
        mids = (crit + nxt)[gaps > 1e-12] / 2  # arcs of zero length (repeated angles) have no interior
    g_2xG = np.stack([np.cos(mids), np.sin(mids)])
    d_PxN = _unique_nonzero((x_Nx2 @ g_2xG >= 0).T)
    guard(len(d_PxN), len(x_Nx2), 2, max_bytes, max_patterns)
    return d_PxN


class PatternSet(NamedTuple):
    """Patterns with how they were found: ``exact`` when every chamber is known to be present
    (enumerated, d = 2) or when 10× more gates added none (``added == 0``)."""

    d_PxN: np.ndarray
    exact: bool
    method: str
    added: int


def complete(x_NxD: np.ndarray, n_gates: int, seed: int = 0, max_bytes: float = MAX_BYTES,
             max_patterns: int = MAX_PATTERNS) -> PatternSet:
    """All patterns when d = 2 (:func:`enumerate_2d`); otherwise :func:`sample` with ``n_gates``
    and again with ``10·n_gates`` fresh gates: the union is returned, and it is called complete
    (``exact``) when the extra gates added no pattern."""
    x_NxD = np.asarray(x_NxD, dtype=np.float64)
    if x_NxD.shape[1] == 2:
        return PatternSet(enumerate_2d(x_NxD, max_bytes, max_patterns), True, "enumerated (d = 2)", 0)
    first = sample(x_NxD, n_gates, seed, max_bytes, max_patterns)
    more = sample(x_NxD, 10 * int(n_gates), seed + 1, max_bytes, max_patterns)
    union = _unique_nonzero(np.concatenate([first, more]))
    guard(len(union), *x_NxD.shape, max_bytes, max_patterns)
    added = len(union) - len(first)
    return PatternSet(union, added == 0, f"sampled ({n_gates} gates, 10x check)", added)
