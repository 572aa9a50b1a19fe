"""Convex programs for two-layer ReLU networks (THEORY.md §C): global optima, recovery of a
network, critical widths, and the ℓ∞ sandwich. Float64 numpy throughout; the programs are
solved by cvxpy (Clarabel, SCS as fallback) and the LPs by scipy's HiGHS.

Network ``θ = (W, a)``, ``W ∈ ℝ^{m×d}``, ``ŷ = (XWᵀ)_+ a``; loss ``L = (1/n) Σ ℓ(ŷ_k, y_k)`` with
``ℓ = ½(ŷ − y)²`` ("squared", as :func:`connect.losses.mse`) or ``log(1 + e^{−yŷ})``
("logistic"). Patterns ``D_i`` and cones ``K_i = {u : (2D_i − I)Xu ≥ 0}`` come from
:mod:`theory.patterns`; a *block* is a vector ``v ∈ K_i`` with a sign ``s = ±1`` and computes
``s (Xv)_+ = s D_i X v``. A bias is an extra column of ones in ``x`` (then ``W`` has ``d + 1``
columns and every constraint covers the bias too).

* C1, weight decay (Pilanci & Ergen 2020, arXiv 2002.10553, Thm 1) [S]:
  ``min_θ L(θ) + (β/2)(‖W‖²_F + ‖a‖²) = min_{v_i, u_i ∈ K_i} L(Σ D_i X(v_i − u_i)) + β Σ(‖v_i‖₂ + ‖u_i‖₂)``
  for ``m ≥ m*``; recovery ``(w, a) = (v/√‖v‖, √‖v‖)``, ``(u/√‖u‖, −√‖u‖)`` (AM–GM:
  ``(‖w‖² + a²)/2 = ‖v‖``). Optimal set (Mishkin & Pilanci 2023, arXiv 2306.00119): ŷ* is unique
  (ℓ strictly convex) and each active block has a unique direction ``ρ_k``, so the optimal
  block weights form the polytope ``𝒫 = {α ≥ 0 : Σ_k α_k s_k D_k X ρ_k = ŷ*}`` (the penalty is
  then fixed: ``β Σα = λ*ᵀŷ*`` with the dual ``λ* = −∇L(ŷ*)``). ``m*`` = minimum support over
  𝒫 (attained at a vertex), ``M*`` = maximum vertex support, both by enumerating the basic
  solutions (exact for small instances); the staircase (Kim, Mishkin & Pilanci 2025, arXiv
  2411.07729) makes the optimal set connected for ``m ≥ min(m* + M*, n + 1)``. A vertex has
  ``≤ rank ≤ n`` nonzeros, so in fact ``m* ≤ n`` (THEORY.md states ``n + 1``).
* C2, Muon-full ``‖W‖₂ ≤ r_W, ‖a‖₂ ≤ r_a`` [R]: same loss over ``v_i, u_i ∈ K_i``,
  ``[[S_i, v_i], [v_iᵀ, t_i]] ⪰ 0``, ``[[T_i, u_i], [u_iᵀ, τ_i]] ⪰ 0``, ``Σ(S_i + T_i) ⪯ r_W² I``,
  ``Σ(t_i + τ_i) ≤ r_a²``; recovery ``(v/√t, √t)``, ``(u/√τ, −√τ)`` (Schur:
  ``v vᵀ/t ⪯ S``, so ``WᵀW ⪯ Σ S ⪯ r_W² I`` and ``‖a‖² = Σ t``). Any network maps into the
  program (neurons of one cone add up, ``[[Σ w wᵀ, Σ a w], [·, Σ a²]] ⪰ 0``), so the value is
  the global optimum at any width that holds the recovered network; lifted Carathéodory
  (P4 of §D, :func:`lifted_caratheodory`) brings it to ``≤ n + d(d+1)/2`` neurons.
* C3, ℓ∞ box ``|W_jk| ≤ r_W, |a_j| ≤ r_a`` [R]: ``CVX-∞(B)`` = same loss s.t.
  ``Σ(‖v_i‖∞ + ‖u_i‖∞) ≤ B``. Sandwich ``p_∞(m r_W r_a) ≤ p_box(m)`` (a box neuron has
  ``‖a w‖∞ ≤ r_W r_a``) and ``p_box(m + n) ≤ p_∞(m r_W r_a)`` (:func:`box_network`: a basic LP
  solution keeps ≤ n blocks at no larger budget, then block i splits into
  ``⌈‖v_i‖∞/(r_W r_a)⌉`` box neurons). ``τ*`` = minimal ℓ∞ path norm of an interpolant (an LP,
  :func:`min_linf_path_norm`) brackets the interpolation width:
  ``⌈τ*/(r_W r_a)⌉ ≤ m_int ≤ ⌊τ*/(r_W r_a)⌋ + n`` (``λ²τ*`` when ``r_W = r_a = 1/λ``).

Every program is over the given patterns: with all chambers it is exact, with a subsample
it is restricted, its value an upper bound attained by the recovered network.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
import scipy.sparse

from connect import losses, training
from connect.constraints import ConstraintSet, muon_shape_factor
from connect.errors import UserError
from connect.models import relu
from theory import names
from theory import patterns as pat
from theory.claims import ClaimResult
from theory.constructive import LP_OPTIONS

LOSSES = ("squared", "logistic")
#: A block counts as nonzero when its norm exceeds this fraction of the largest block's.
ZERO_TOL = 1e-6
#: Vertex enumeration of the optimal polytope is skipped above this many candidate bases.
MAX_BASES = 200_000


# ---------------------------------------------------------------- plumbing


def _cvxpy():
    try:
        import cvxpy as cp
    except ImportError:
        raise UserError('the convex programs need cvxpy: pip install "connect[theory]" (cvxpy, clarabel)') from None
    return cp


_SOLVER_OPTIONS = {"CLARABEL": {}, "SCS": {"eps": 1e-9, "max_iters": 200_000}}


def _solve(problem, solver: str | None = None) -> str:
    """Solve with Clarabel, falling back to SCS (or only with ``solver``); the solver name used."""
    cp = _cvxpy()
    for name, opts in _SOLVER_OPTIONS.items():
        if name not in cp.installed_solvers() or solver not in (None, name):
            continue
        try:
            problem.solve(solver=name, **opts)
        except cp.error.SolverError:
            continue
        if problem.status in ("optimal", "optimal_inaccurate"):
            return name + ("" if problem.status == "optimal" else " (inaccurate)")
    raise RuntimeError(f"no convex solver solved the program (status {problem.status})")


def _loss_cvx(pred, y_N: np.ndarray, loss: str):
    cp = _cvxpy()
    if loss == "squared":
        return cp.sum_squares(pred - y_N) / (2 * len(y_N))
    return cp.sum(cp.logistic(-cp.multiply(y_N, pred))) / len(y_N)


def data_loss(pred_N: np.ndarray, y_N: np.ndarray, loss: str = "squared") -> float:
    """``(1/n) Σ ℓ(ŷ_k, y_k)`` in float64 (squared: ``½(ŷ − y)²``; logistic: ``log(1 + e^{−yŷ})``)."""
    if loss == "squared":
        return float(0.5 * np.mean((pred_N - y_N) ** 2))
    return float(np.mean(np.logaddexp(0.0, -y_N * pred_N)))


def forward(network: dict, x_NxD: np.ndarray) -> np.ndarray:
    """``ŷ = (XWᵀ)_+ a`` in float64 numpy."""
    return np.maximum(x_NxD @ np.asarray(network["W"], np.float64).T, 0.0) @ np.asarray(network["a"], np.float64)


def _empty_network(d: int) -> dict:
    return {"W": np.zeros((0, d)), "a": np.zeros(0)}


class Blocks(NamedTuple):
    """Nonzero blocks of a convex solution: ``v_KxD`` (each in its cone), ``sign_K = ±1``,
    ``pattern_K`` (row of ``D_PxN``), ``extra_K`` (``t`` of C2, else the block norm)."""

    v_KxD: np.ndarray
    sign_K: np.ndarray
    pattern_K: np.ndarray
    extra_K: np.ndarray

    def columns(self, x_NxD: np.ndarray, d_PxN: np.ndarray) -> np.ndarray:
        """``s_k D_k X v_k`` as columns ``(N, K)``: the blocks' contributions to ŷ."""
        return (d_PxN[self.pattern_K].T * (x_NxD @ self.v_KxD.T)) * self.sign_K[None, :]


def _keep(v_2PxD: np.ndarray, size_2P: np.ndarray, extra_2P: np.ndarray, scale: float) -> Blocks:
    """The blocks whose ``size`` exceeds :data:`ZERO_TOL` times the largest and ``10⁻⁸·scale``
    (``scale``: the size of a block that alone fits the largest target, so solver noise around
    the zero network is not read as blocks)."""
    p = len(v_2PxD) // 2
    live = size_2P > max(ZERO_TOL * float(size_2P.max(initial=0.0)), 1e-8 * scale, 1e-300)
    sign = np.concatenate([np.ones(p), -np.ones(p)])
    idx = np.concatenate([np.arange(p), np.arange(p)])
    return Blocks(v_2PxD[live], sign[live], idx[live], extra_2P[live])


def _block_scale(x_NxD: np.ndarray, y_N: np.ndarray) -> float:
    """``max|y| / max‖x‖``: the norm of a block whose output reaches the largest target."""
    return float(np.abs(y_N).max() / max(np.linalg.norm(x_NxD, axis=1).max(), 1e-300))


def _cone_problem(x_NxD, d_PxN):
    """cvxpy variables ``V, U`` (P×d), the cone constraints and the prediction ``Σ D_i X(v_i − u_i)``."""
    cp = _cvxpy()
    p, d = len(d_PxN), x_NxD.shape[1]
    dm_NxP = d_PxN.T.astype(np.float64)
    v, u = cp.Variable((p, d)), cp.Variable((p, d))
    xv, xu = x_NxD @ v.T, x_NxD @ u.T
    cons = [cp.multiply(2 * dm_NxP - 1, xv) >= 0, cp.multiply(2 * dm_NxP - 1, xu) >= 0]
    pred = cp.sum(cp.multiply(dm_NxP, xv - xu), axis=1)
    return v, u, cons, pred


def _check_patterns(x_NxD, d_PxN):
    if len(d_PxN) == 0:
        raise UserError("no activation pattern: the data has no nonzero point")
    pat.guard(len(d_PxN), *x_NxD.shape)


# ---------------------------------------------------------------- C1 weight decay


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


def weight_decay_program(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, beta: float,
                         loss: str = "squared", solver: str | None = None) -> tuple[float, Blocks, str]:
    """Solve C1 (module docstring); ``(value, nonzero blocks, solver)``; ``solver`` forces
    ``"CLARABEL"`` or ``"SCS"``."""
    cp = _cvxpy()
    _check_patterns(x_NxD, d_PxN)
    v, u, cons, pred = _cone_problem(x_NxD, d_PxN)
    obj = _loss_cvx(pred, y_N, loss) + beta * (cp.sum(cp.norm(v, 2, axis=1)) + cp.sum(cp.norm(u, 2, axis=1)))
    prob = cp.Problem(cp.Minimize(obj), cons)
    solver = _solve(prob, solver)
    blocks = np.concatenate([v.value, u.value])
    norms = np.linalg.norm(blocks, axis=1)
    return float(prob.value), _keep(blocks, norms, norms, _block_scale(x_NxD, y_N)), solver


def weight_decay_network(blocks: Blocks, alpha_K: np.ndarray | None = None) -> dict:
    """Recovery ``(w, a) = (ρ√α, s√α)`` for block ``α ρ`` (``ρ`` unit): ``a(wᵀx)_+ = s α(ρᵀx)_+``
    and ``(‖w‖² + a²)/2 = α``. ``alpha_K`` overrides the block norms (a vertex of the polytope)."""
    norms = np.linalg.norm(blocks.v_KxD, axis=1)
    alpha = norms if alpha_K is None else np.asarray(alpha_K, np.float64)
    live = alpha > 0
    rho = blocks.v_KxD[live] / norms[live][:, None]
    return {"W": rho * np.sqrt(alpha[live])[:, None], "a": blocks.sign_K[live] * np.sqrt(alpha[live])}


def penalised_loss(network: dict, x_NxD: np.ndarray, y_N: np.ndarray, beta: float, loss: str = "squared") -> float:
    """``L(θ) + (β/2)(‖W‖²_F + ‖a‖²)`` in float64."""
    w, a = np.asarray(network["W"], np.float64), np.asarray(network["a"], np.float64)
    return data_loss(forward(network, x_NxD), y_N, loss) + 0.5 * beta * (float(np.sum(w**2)) + float(np.sum(a**2)))


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


def _dual(pred_N: np.ndarray, y_N: np.ndarray, loss: str) -> np.ndarray:
    """``λ* = −∇_ŷ L`` at the optimal prediction: ``(y − ŷ)/n`` (squared), ``y σ(−yŷ)/n`` (logistic)."""
    if loss == "squared":
        return (y_N - pred_N) / len(y_N)
    return y_N * 0.5 * (1 - np.tanh(0.5 * y_N * pred_N)) / len(y_N)


def _block_duals(x_NxD: np.ndarray, d_PxN: np.ndarray, lam_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``c_k = max_{v ∈ K_k, ‖v‖₂ ≤ 1} s_k λᵀD_k X v`` and the maximisers, for the 2P blocks (v's then u's):
    one separable SOCP. KKT of C1 (Mishkin & Pilanci 2023, Lemma 2.1): optimal ⇔ ``c_k ≤ β`` for every
    block with equality on the blocks in use; the maximiser of a positive linear form over a cone ∩
    ball is unique, which fixes each active block's direction."""
    cp = _cvxpy()
    v, u, cons, _ = _cone_problem(x_NxD, d_PxN)
    g_PxD = (d_PxN * lam_N[None, :]) @ x_NxD  # row i: (D_i X)ᵀλ
    cons += [cp.norm(v, 2, axis=1) <= 1, cp.norm(u, 2, axis=1) <= 1]
    prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(g_PxD, v)) - cp.sum(cp.multiply(g_PxD, u))), cons)
    _solve(prob)
    dirs = np.concatenate([v.value, u.value])
    return np.concatenate([np.sum(g_PxD * v.value, axis=1), -np.sum(g_PxD * u.value, axis=1)]), dirs


def weight_decay_optimum(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, beta: float,
                         loss: str = "squared") -> WeightDecaySolution:
    """C1 with the optimal polytope's critical widths (module docstring). Candidate blocks are
    those with ``c_k ≥ β(1 − 10⁻³)`` in the dual certificate (:func:`_block_duals`) or used by the
    solver; directions are the solver's where it uses the block, else the certificate's maximiser.
    ``m*`` and ``M*`` are the least and largest supports of the vertices of ``{α ≥ 0 : Gα = ŷ*}``
    whose penalty ``Σα`` equals the optimum's (10⁻⁵ relative), which removes near-active blocks;
    the returned network is a least-support vertex."""
    value, blocks, solver = weight_decay_program(x_NxD, y_N, d_PxN, beta, loss)
    p = len(d_PxN)
    norms = np.linalg.norm(blocks.v_KxD, axis=1)
    yhat = blocks.columns(x_NxD, d_PxN).sum(axis=1)
    c_2P, dirs_2PxD = _block_duals(x_NxD, d_PxN, _dual(yhat, y_N, loss))
    used = blocks.pattern_K + p * (blocks.sign_K < 0)
    dirs_2PxD = dirs_2PxD / np.maximum(np.linalg.norm(dirs_2PxD, axis=1), 1e-300)[:, None]
    dirs_2PxD[used] = blocks.v_KxD / norms[:, None]
    active = np.flatnonzero(c_2P >= beta * (1 - 1e-3))  # generous: vertices are filtered by cost below
    active = np.union1d(active, used)
    n_active = len(active)
    if n_active == 0:
        return WeightDecaySolution(value, _empty_network(x_NxD.shape[1]), 0, 0, 0, ((),), solver, float(c_2P.max() / beta))
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
        alpha = _basic_solution(g_NxK, yhat, np.ones(n_active))
        m_star, big_m = int((alpha > 0).sum()), None
    network = weight_decay_network(unit, alpha)
    return WeightDecaySolution(value, network, m_star, big_m, n_active, tuple(s for s, _ in verts), solver,
                               float(c_2P.max() / beta))


def staircase_width(m_star: int, big_m: int | None, n: int) -> int:
    """Width from which the optimal set is connected: ``min(m* + M*, n + 1)`` (Kim, Mishkin &
    Pilanci 2025) [S]; ``n + 1`` when ``M*`` is unknown."""
    return n + 1 if big_m is None else min(m_star + big_m, n + 1)


def _basic_solution(g_NxK: np.ndarray, yhat_N: np.ndarray, cost_K: np.ndarray) -> np.ndarray:
    """A basic optimal solution of ``min cᵀα s.t. Gα = ŷ, α ≥ 0`` (HiGHS dual simplex):
    at most ``rank G ≤ n`` nonzeros. Rows of ``G`` are rescaled for conditioning."""
    res = scipy.optimize.linprog(cost_K, A_eq=g_NxK, b_eq=yhat_N, bounds=(0, None), method="highs-ds", options=LP_OPTIONS)
    if res.status != 0:
        raise RuntimeError(f"block reduction LP failed: {res.message}")
    alpha = np.asarray(res.x)
    return np.where(alpha > ZERO_TOL * max(alpha.max(initial=0.0), 1e-300), alpha, 0.0)


# ---------------------------------------------------------------- C2 Muon-full


def lifted_caratheodory(network: dict, x_NxD: np.ndarray) -> dict:
    """P4 of THEORY.md §D: while the atoms ``φ_j = (a_j (Xw_j)_+, triu(w_j w_jᵀ))`` are linearly
    dependent, take a null vector ``c`` (``Σ c_j φ_j = 0``) signed so that ``Σ c_j a_j² ≥ 0``, and
    scale neuron j by ``√(1 − t c_j)`` with ``t = 1/max c``: ŷ and ``WᵀW`` stay, ``‖a‖²`` does
    not grow, one neuron vanishes. Ends with ``≤ n + d(d+1)/2`` neurons."""
    w, a = np.asarray(network["W"], np.float64), np.asarray(network["a"], np.float64)
    iu = np.triu_indices(w.shape[1])
    while len(a):
        phi = np.concatenate([(np.maximum(x_NxD @ w.T, 0.0) * a[None, :]),
                              np.stack([np.outer(r, r)[iu] for r in w], axis=1)])
        _, sv, vt = np.linalg.svd(phi)
        if len(a) <= len(sv) and sv[-1] > 1e-10 * sv[0]:
            break
        c = vt[-1]
        if c @ a**2 < 0 or (abs(c @ a**2) <= 1e-14 and c.max() <= 0):
            c = -c
        keep = np.sqrt(np.clip(1 - c / c.max(), 0.0, None))
        w, a = w * keep[:, None], a * keep
        live = keep > 1e-9
        w, a = w[live], a[live]
    return {"W": w, "a": a}


def muon_full_program(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, r_w: float, r_a: float,
                      loss: str = "squared") -> tuple[float, Blocks, str]:
    """Solve C2 (module docstring) with ``Σ(S_i + T_i) ⪯ r_W² I``, ``Σ(t_i + τ_i) ≤ r_a²``;
    ``(value, nonzero blocks with extra = t, solver)``."""
    cp = _cvxpy()
    _check_patterns(x_NxD, d_PxN)
    p, d = len(d_PxN), x_NxD.shape[1]
    pat.guard(p * (d + 1), *x_NxD.shape)  # (d+1)² PSD entries per block
    z = [cp.Variable((d + 1, d + 1), PSD=True) for _ in range(2 * p)]
    dm_NxP = d_PxN.T.astype(np.float64)
    pred, cons = 0, []
    for k, zk in enumerate(z):
        i, s = k % p, (1.0 if k < p else -1.0)
        xv = x_NxD @ zk[:d, d]
        cons.append(cp.multiply(2 * dm_NxP[:, i] - 1, xv) >= 0)
        pred = pred + s * cp.multiply(dm_NxP[:, i], xv)
    cons += [r_w**2 * np.eye(d) - sum(zk[:d, :d] for zk in z) >> 0, sum(zk[d, d] for zk in z) <= r_a**2]
    prob = cp.Problem(cp.Minimize(_loss_cvx(pred, y_N, loss)), cons)
    solver = _solve(prob)
    v = np.stack([zk.value[:d, d] for zk in z])
    t = np.array([max(zk.value[d, d], 0.0) for zk in z])
    return float(prob.value), _keep(v, t, t, r_a**2), solver


def muon_full_network(blocks: Blocks) -> dict:
    """Recovery ``(w, a) = (v/√t, s√t)``: ``a (wᵀx)_+ = s (vᵀx)_+``, ``w wᵀ = v vᵀ/t ⪯ S``, ``a² = t``."""
    root = np.sqrt(blocks.extra_K)
    return {"W": blocks.v_KxD / root[:, None], "a": blocks.sign_K * root}


# ---------------------------------------------------------------- C3 ℓ∞ box


def linf_program(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, budget: float,
                 loss: str = "squared") -> tuple[float, Blocks, str]:
    """``p_∞(B)``: CVX-∞ of the module docstring, ``Σ(‖v_i‖∞ + ‖u_i‖∞) ≤ B``; ``(value, blocks
    with extra = ‖v‖∞, solver)``."""
    cp = _cvxpy()
    _check_patterns(x_NxD, d_PxN)
    v, u, cons, pred = _cone_problem(x_NxD, d_PxN)
    cons.append(cp.sum(cp.max(cp.abs(v), axis=1)) + cp.sum(cp.max(cp.abs(u), axis=1)) <= budget)
    prob = cp.Problem(cp.Minimize(_loss_cvx(pred, y_N, loss)), cons)
    solver = _solve(prob)
    blocks = np.concatenate([v.value, u.value])
    sup = np.abs(blocks).max(axis=1)
    return float(prob.value), _keep(blocks, sup, sup, _block_scale(x_NxD, y_N)), solver


def box_network(blocks: Blocks, x_NxD: np.ndarray, d_PxN: np.ndarray, r_w: float, r_a: float) -> dict:
    """A box network (``|W_jk| ≤ r_W``, ``|a_j| ≤ r_a``) computing the blocks' ŷ with width
    ``≤ Σ‖v_i‖∞/(r_W r_a) + n``: first a basic solution of ``min Σ α_k s.t. Σ α_k s_k D_k X ρ_k = ŷ,
    α ≥ 0`` (``ρ_k = v_k/‖v_k‖∞``; ≤ n blocks, no larger ℓ∞ budget), then block ``α ρ`` splits
    into ``q = ⌈α/(r_W r_a)⌉`` neurons ``(r_W ρ, s α/(q r_W))``."""
    if len(blocks.sign_K) == 0:
        return _empty_network(x_NxD.shape[1])
    sup = np.abs(blocks.v_KxD).max(axis=1)
    unit = Blocks(blocks.v_KxD / sup[:, None], blocks.sign_K, blocks.pattern_K, np.ones_like(sup))
    g_NxK = unit.columns(x_NxD, d_PxN)
    alpha = _basic_solution(g_NxK, g_NxK @ sup, np.ones_like(sup))
    ws, as_ = [], []
    for k in np.flatnonzero(alpha):
        q = max(1, math.ceil(alpha[k] / (r_w * r_a) * (1 - 1e-12)))
        ws += [r_w * unit.v_KxD[k]] * q
        as_ += [unit.sign_K[k] * alpha[k] / (q * r_w)] * q
    return {"W": np.array(ws), "a": np.array(as_)}


def min_linf_path_norm(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray) -> tuple[float, Blocks]:
    """``τ* = min Σ_i (‖v_i‖∞ + ‖u_i‖∞) s.t. Σ D_i X(v_i − u_i) = y, v_i, u_i ∈ K_i``: the least ℓ∞
    path norm ``Σ_j |a_j| ‖w_j‖∞`` of an interpolating network (over the given patterns), as an
    LP in ``(v, u, s)`` with ``−s_k ≤ v_kl ≤ s_k``, solved by HiGHS. ``inf`` when infeasible."""
    _check_patterns(x_NxD, d_PxN)
    n, d = x_NxD.shape
    p = len(d_PxN)
    k = 2 * p
    # variable layout: blocks V (k×d, row-major), then s (k)
    sign = np.concatenate([np.ones(p), -np.ones(p)])
    dm = np.concatenate([d_PxN, d_PxN]).astype(np.float64)  # (k, n)
    eye_k = scipy.sparse.identity(k, format="csr")
    a_eq = scipy.sparse.hstack([scipy.sparse.hstack([scipy.sparse.csr_matrix(sign[j] * dm[j][:, None] * x_NxD)
                                                     for j in range(k)]), scipy.sparse.csr_matrix((n, k))])
    cone = scipy.sparse.block_diag([-(2 * dm[j] - 1)[:, None] * x_NxD for j in range(k)])
    box = scipy.sparse.kron(eye_k, np.ones((d, 1)))
    a_ub = scipy.sparse.vstack([
        scipy.sparse.hstack([cone, scipy.sparse.csr_matrix((k * n, k))]),
        scipy.sparse.hstack([scipy.sparse.identity(k * d), -box]),
        scipy.sparse.hstack([-scipy.sparse.identity(k * d), -box]),
    ]).tocsr()
    cost = np.concatenate([np.zeros(k * d), np.ones(k)])
    bounds = [(None, None)] * (k * d) + [(0, None)] * k
    res = scipy.optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(a_ub.shape[0]), A_eq=a_eq.tocsr(), b_eq=y_N,
                                 bounds=bounds, method="highs")
    if res.status == 2:
        return math.inf, Blocks(np.zeros((0, d)), np.zeros(0), np.zeros(0, int), np.zeros(0))
    if res.status != 0:
        raise RuntimeError(f"τ* LP failed: {res.message}")
    v = res.x[: k * d].reshape(k, d)
    sup = np.abs(v).max(axis=1)
    live = sup > ZERO_TOL * max(sup.max(initial=0.0), 1e-300)
    pattern = np.concatenate([np.arange(p), np.arange(p)])
    return float(res.fun), Blocks(v[live], sign[live], pattern[live], sup[live])


def interpolation_bracket(tau: float, r_w: float, r_a: float, n: int) -> tuple[int, int]:
    """``⌈τ*/(r_W r_a)⌉ ≤ m_int ≤ ⌊τ*/(r_W r_a)⌋ + n`` (module docstring; round-off 1e-9 relative)."""
    q = tau / (r_w * r_a)
    return math.ceil(q * (1 - 1e-9)), math.floor(q * (1 + 1e-9)) + n


# ---------------------------------------------------------------- entry point


@dataclasses.dataclass(frozen=True)
class Optimum:
    """Result of :func:`optimum`. ``value`` is attained by ``network`` (so it is an upper bound
    on the constrained optimum at that width); ``exact`` says it *is* the optimum (all patterns
    present and, for the box and hybrid sets, a bracket that closes). ``bracket`` holds the
    bounds and critical widths of the constraint kind; ``notes`` says what they mean."""

    constraint: str
    lam: float
    loss: str
    value: float
    network: dict
    m_star: int | None
    M_star: int | None
    bracket: dict
    n_patterns: int
    patterns: str
    exact: bool
    solver: str
    notes: str

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["network"] = {k: np.asarray(v).tolist() for k, v in self.network.items()}
        out["width"] = int(len(self.network["a"]))
        return out


def _validate(x_NxD, y_N, constraint: str, lam: float, loss: str) -> tuple[np.ndarray, np.ndarray, str]:
    kind = names.kind_of(constraint)
    if kind == "l2":
        raise UserError("no convex program for the ℓ₂ ball (THEORY.md §C has weight decay, Muon-full, box and hybrid): "
                        "use --constraint weight_decay, muon_full, adamw or muon")
    kind = "weight_decay" if kind == "none" else kind
    names.check_lam(lam)
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}: choose from {', '.join(LOSSES)}")
    x_NxD, y_N = np.asarray(x_NxD, np.float64), np.asarray(y_N, np.float64).reshape(-1)
    if x_NxD.ndim != 2 or len(x_NxD) != len(y_N) or len(y_N) == 0:
        raise UserError(f"data must be x of shape (n, d) and y of shape (n,), got {x_NxD.shape} and {y_N.shape}")
    if not (np.isfinite(x_NxD).all() and np.isfinite(y_N).all()):
        raise UserError("the data contain NaN or infinite values: clean or drop those rows first")
    if loss == "logistic" and not np.isin(y_N, (-1.0, 1.0)).all():
        raise UserError("logistic loss needs labels y in {-1, +1}: map the classes to ±1")
    return x_NxD, y_N, kind


def optimum(x_NxD, y_N, constraint: str, lam: float, *, loss: str = "squared", n_gates: int = 1000, seed: int = 0,
            width: int | None = None, bias: bool = False) -> Optimum:
    """Global optimum of ``L`` over a two-layer ReLU network in the implicit set of ``constraint``
    at decay λ (THEORY.md §B–C), from the convex programs of this module.

    ``constraint``: an optimizer name or a kind, mapped by :func:`theory.names.kind_of` (``l2`` has
    no program here). ``sgd``/``momentum``/``adam``/``weight_decay``/``none`` →
    C1 with ``β = λ`` (``m*``, ``M*``, connected width); ``muon_full`` → C2 with
    ``r_W = s/λ``, ``r_a = 1/λ`` (``s`` Muon's shape factor at ``width``, 1 when no width);
    ``adamw``/``lion``/``signsgd``/``linf`` → the box ``r = 1/λ`` at ``width`` (default 2n),
    bracketed by the sandwich ``p_∞(m r²) ≤ p_box(m) ≤ p_∞((m − n) r²)`` and, for squared loss,
    the interpolation width from ``τ*``; ``muon``/``muon_exact`` (Muon-hybrid, no exact program)
    → ``p_∞(m r_W r_a) ≤ p_hyb(m) ≤ p_opfull(m)`` from ``C_op-full ⊂ C_hyb ⊂ C_∞``. Patterns:
    all chambers for d = 2 (after the bias column), else ``n_gates`` Gaussian gates and a 10×
    check (:func:`theory.patterns.complete`); lower bounds hold only with all patterns."""
    x_NxD, y_N, kind = _validate(x_NxD, y_N, constraint, lam, loss)
    if bias:
        x_NxD = np.concatenate([x_NxD, np.ones((len(x_NxD), 1))], axis=1)
    if width is not None and width < 1:
        raise UserError(f"width must be ≥ 1, got {width}")
    n, d = x_NxD.shape
    pset = pat.complete(x_NxD, n_gates, seed)
    d_PxN = pset.d_PxN
    common = dict(constraint=kind, lam=float(lam), loss=loss, n_patterns=len(d_PxN), patterns=pset.method)
    sub = "" if pset.exact else "; patterns are a subsample, so values are upper bounds and 'lower' bounds are not certified"
    if kind == "weight_decay":
        sol = weight_decay_optimum(x_NxD, y_N, d_PxN, lam, loss)
        conn = staircase_width(sol.m_star, sol.M_star, n)
        return Optimum(value=sol.value, network=sol.network, m_star=sol.m_star, M_star=sol.M_star,
                       bracket={"connected_width": conn, "active_blocks": sol.n_active}, exact=pset.exact,
                       solver=sol.solver, notes=f"C1 with β = λ: optimum for width ≥ m*, optimal set connected for "
                       f"width ≥ min(m* + M*, n + 1) = {conn}{sub}", **common)
    r_a = 1.0 / lam
    if kind == "muon_full":
        r_w = (muon_shape_factor((width, d)) if width else 1.0) / lam
        value, blocks, solver = muon_full_program(x_NxD, y_N, d_PxN, r_w, r_a, loss)
        net = lifted_caratheodory(muon_full_network(blocks), x_NxD)
        fits = width is None or len(net["a"]) <= width
        return Optimum(value=value, network=net, m_star=None, M_star=None, exact=pset.exact and fits, solver=solver,
                       bracket={"network_width": len(net["a"]), "exact_width": n + d * (d + 1) // 2, "r_W": r_w, "r_a": r_a},
                       notes="C2: optimum at every width ≥ the network's (≤ n + d(d+1)/2 by lifted Carathéodory)"
                       + ("" if fits else f"; the optimum needs {len(net['a'])} > {width} neurons: value is a lower bound at this width")
                       + sub, **common)
    m = int(width) if width else 2 * n
    r_w = (muon_shape_factor((m, d)) if kind == "muon" else 1.0) / lam
    low, _, solver = linf_program(x_NxD, y_N, d_PxN, m * r_w * r_a, loss)
    zero = data_loss(np.zeros(n), y_N, loss)
    bracket = {"width": m, "value_lower": low, "r_W": r_w, "r_a": r_a}
    if kind == "linf":
        up, net = zero, _empty_network(d)
        if m > n:
            up, blocks, _ = linf_program(x_NxD, y_N, d_PxN, (m - n) * r_w * r_a, loss)
            net = box_network(blocks, x_NxD, d_PxN, r_w, r_a)
            up = data_loss(forward(net, x_NxD), y_N, loss)
        if loss == "squared":
            tau, _ = min_linf_path_norm(x_NxD, y_N, d_PxN)
            bracket["tau_star"] = tau
            bracket["interpolation_width"] = list(interpolation_bracket(tau, r_w, r_a, n)) if math.isfinite(tau) else None
        notes = "box: p_∞(m r²) ≤ p_box(m) ≤ p_∞((m − n) r²), the upper value attained by the network"
    else:
        value, blocks, _ = muon_full_program(x_NxD, y_N, d_PxN, r_w, r_a, loss)
        net = lifted_caratheodory(muon_full_network(blocks), x_NxD)
        up = value
        if len(net["a"]) > m:
            up, net = zero, _empty_network(d)
        notes = ("Muon-hybrid has no exact program: C_op-full ⊂ C_hyb ⊂ C_∞ at equal radii give "
                 "p_∞(m r_W r_a) ≤ p_hyb(m) ≤ p_opfull(m); the upper value attained by a Muon-full network")
    bracket["value_upper"] = up
    closed = up - low <= 1e-6 * max(1.0, abs(up))
    return Optimum(value=up, network=net, m_star=None, M_star=None, bracket=bracket, exact=pset.exact and closed,
                   solver=solver, notes=notes + sub, **common)


# ---------------------------------------------------------------- claims


def _circle_data(n: int, seed: int, y_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """n points on the unit circle at uniform random angles, targets ``N(0, y_scale²)``."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(ang), np.sin(ang)], axis=1), y_scale * rng.normal(size=n)


def _projected_gd(lr: float, project) -> optax.GradientTransformation:
    """Projected gradient descent ``θ ← P_C(θ − η∇L)`` as an optax transformation."""

    def update(grads, state, params):
        new = project(jax.tree.map(lambda p, g: p - lr * g, params, grads))
        return jax.tree.map(lambda q, p: q - p, new, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _trained(x_NxD, y_N, width: int, objective, tx, seeds, steps: int) -> list[dict]:
    """Final float64 networks of :func:`connect.training.train` from each seed (He init, no bias)."""
    with jax.enable_x64(True):
        init = functools.partial(relu.init, cfg=relu.ReluConfig(d_in=x_NxD.shape[1], width=width, bias=False))
        params, _ = training.train(init, objective, tx, list(seeds), jnp.asarray(x_NxD), jnp.asarray(y_N), steps)
        return [{k: np.asarray(v[i], np.float64) for k, v in params.items()} for i in range(len(seeds))]


def _mse_objective(params, x, y):
    return losses.mse(relu.apply(params, x), y)


def _wd_objective(beta: float):
    def objective(params, x, y):
        return losses.mse(relu.apply(params, x), y) + 0.5 * beta * (jnp.sum(params["W"] ** 2) + jnp.sum(params["a"] ** 2))

    return objective


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def claim_convex_exactness(n: int = 3, beta: float = 0.1, lam_muon: float = 2.0, n_seeds: int = 12, steps: int = 4000,
                           seed: int = 0, tol: float = 1e-6) -> ClaimResult:
    """THEORY.md §F.3 (programs C1 and C2 of §C): on d = 2 data with every pattern enumerated,
    (i) the network recovered from each program attains the program's value (``tol`` relative),
    (ii) no trained network beats it — gradient descent on ``L + (β/2)‖θ‖²`` (C1, width n + 1)
    and projected gradient descent into the Muon-full set of :class:`ConstraintSet` at ``λ_M``
    (C2 at width ``m = n + 3``, so ``r_W = s(m)/λ_M`` with Muon's shape factor and ``r_a = 1/λ_M``)
    from ``n_seeds`` seeds — (iii) the widths are as bounded: ``m* ≤ n + 1`` and the C2
    network after lifted Carathéodory has ``≤ n + d(d+1)/2`` neurons; and (iv) the C1 dual
    certificate ``max_k c_k/β`` is 1 (10⁻³: optimal over all patterns, the active blocks at β)."""
    x, y = _circle_data(n, seed)
    d_PxN = pat.enumerate_2d(x)
    wd = weight_decay_optimum(x, y, d_PxN, beta)
    wd_rec = penalised_loss(wd.network, x, y, beta)
    seeds = range(seed, seed + n_seeds)
    wd_trained = [penalised_loss(p, x, y, beta) for p in _trained(x, y, n + 1, _wd_objective(beta), optax.sgd(0.2), seeds, steps)]
    m = n + 3
    r_w, r_a = muon_shape_factor((m, 2)) / lam_muon, 1.0 / lam_muon
    mf_value, blocks, _ = muon_full_program(x, y, d_PxN, r_w, r_a)
    mf_net = lifted_caratheodory(muon_full_network(blocks), x)
    mf_rec = data_loss(forward(mf_net, x), y)
    mf_norm = max(np.linalg.norm(mf_net["W"], 2) / r_w, np.linalg.norm(mf_net["a"]) / r_a) if len(mf_net["a"]) else 0.0
    cset = ConstraintSet("muon_full", lam_muon, ("W",))
    mf_trained = [data_loss(forward(p, x), y) for p in
                  _trained(x, y, m, _mse_objective, _projected_gd(0.2, cset.project), seeds, steps)]
    passed = (_rel(wd_rec, wd.value) <= tol and min(wd_trained) >= wd.value * (1 - tol) and wd.m_star <= n + 1
              and abs(wd.dual_ratio - 1) <= 1e-3
              and _rel(mf_rec, mf_value) <= tol and min(mf_trained) >= mf_value * (1 - tol)
              and mf_norm <= 1 + tol and len(mf_net["a"]) <= n + 3)
    numbers = {"n": n, "patterns": len(d_PxN), "c1_value": wd.value, "c1_recovered": wd_rec, "c1_best_trained": min(wd_trained),
               "m_star": wd.m_star, "M_star": -1 if wd.M_star is None else wd.M_star, "c1_dual_ratio": wd.dual_ratio,
               "c2_value": mf_value, "c2_recovered": mf_rec, "c2_best_trained": min(mf_trained),
               "c2_width": len(mf_net["a"]), "c2_width_bound": n + 3, "c2_relative_norm": float(mf_norm)}
    return ClaimResult("F.3", "recovered networks attain the convex values; no trained network beats them; widths as bounded",
                       bool(passed), numbers, tol)


def claim_linf_sandwich(n: int = 4, widths: tuple[int, ...] = (1, 2, 3), lam: float = 1.0, n_seeds: int = 8, steps: int = 3000,
                        seed: int = 1, tol: float = 1e-6) -> ClaimResult:
    """THEORY.md §F.4 (§C3): on d = 2 data with every pattern, for each width m,
    ``p_∞(m r²) ≤ p_box(m)`` (no box network trained by projected GD at width m goes below it) and
    ``p_box(m + n) ≤ p_∞(m r²)`` (:func:`box_network` builds a box network of width ≤ m + n with
    loss ``p_∞(m r²)``); and the interpolation width bracket ``⌈λ²τ*⌉ ≤ m_int ≤ ⌊λ²τ*⌋ + n``:
    an explicit box interpolant of width ≤ the upper end, and ``p_∞((⌈λ²τ*⌉ − 1) r²) > 0`` so no
    narrower box network interpolates."""
    x, y = _circle_data(n, seed)
    d_PxN = pat.enumerate_2d(x)
    r = 1.0 / lam
    cset = ConstraintSet("linf", lam)
    worst_gap, worst_split, worst_box, worst_width = math.inf, 0.0, 0.0, -math.inf
    for m in widths:
        low, blocks, _ = linf_program(x, y, d_PxN, m * r * r)
        trained = _trained(x, y, m, _mse_objective, _projected_gd(0.2, cset.project), range(seed, seed + n_seeds), steps)
        worst_gap = min(worst_gap, min(data_loss(forward(p, x), y) for p in trained) - low)
        net = box_network(blocks, x, d_PxN, r, r)
        worst_split = max(worst_split, abs(data_loss(forward(net, x), y) - low) / max(low, 1e-12) if low > 1e-12 else
                          data_loss(forward(net, x), y))
        worst_box = max(worst_box, float(cset.relative_norm(net)))
        worst_width = max(worst_width, len(net["a"]) - (m + n))
    tau, blocks = min_linf_path_norm(x, y, d_PxN)
    lo, hi = interpolation_bracket(tau, r, r, n)
    interp = box_network(blocks, x, d_PxN, r, r)
    interp_loss = data_loss(forward(interp, x), y)
    below = linf_program(x, y, d_PxN, (lo - 1) * r * r)[0] if lo >= 1 else math.inf
    passed = (worst_gap >= -tol and worst_split <= tol and worst_box <= 1 + tol and worst_width <= 0
              and interp_loss <= 1e-12 and len(interp["a"]) <= hi and float(cset.relative_norm(interp)) <= 1 + tol and below > tol)
    numbers = {"n": n, "min_trained_minus_p_inf": worst_gap, "split_rel_error": worst_split, "box_relative_norm": worst_box,
               "width_excess_over_m_plus_n": worst_width, "tau_star": tau, "m_int_lower": lo, "m_int_upper": hi,
               "interpolant_width": len(interp["a"]), "interpolant_loss": interp_loss, "p_inf_below_lower": below}
    return ClaimResult("F.4", "ℓ∞ sandwich p_∞(m r²) ≤ p_box(m), p_box(m + n) ≤ p_∞(m r²), and the interpolation-width bracket",
                       bool(passed), numbers, tol)


def claim_regions(lam_adamw: float = 1.0 / math.sqrt(0.9), lam_muon: float = 1.0 / math.sqrt(1.6), n: int = 3, seed: int = 2,
                  tol: float = 1e-8) -> ClaimResult:
    """THEORY.md §F.5, second half (§D, last paragraph), Muon-full with a width-independent radius
    (shape factor 1). Disjoint: targets scaled so that ``max_k |y_k|/‖x_k‖ > r_M²`` (capacity
    ``|f(x)| ≤ r_M²‖x‖``), the C2 value at ``r_M = 1/λ_M`` is positive — no Muon-full network of
    any width reaches zero loss — while an explicit box network at ``1/λ_A`` of width
    ``⌊λ_A²τ*⌋ + n`` interpolates. Overlap: targets scaled down so that C2 at radius
    ``1/max(λ_A, λ_M)`` interpolates; its recovered network lies in the Muon-full set at λ_M and
    in the box at λ_A (``C_op-full(r) ⊂ C_∞(r)``), with zero loss."""
    x, y = _circle_data(n, seed)
    d_PxN = pat.enumerate_2d(x)
    r_m, r_a = 1.0 / lam_muon, 1.0 / lam_adamw
    y_far = y * 1.5 * r_m**2 / np.abs(y).max()  # capacity exceeded at the largest target
    far_value = muon_full_program(x, y_far, d_PxN, r_m, r_m)[0]
    tau, blocks = min_linf_path_norm(x, y_far, d_PxN)
    box = box_network(blocks, x, d_PxN, r_a, r_a)
    box_loss = data_loss(forward(box, x), y_far)
    box_norm = float(ConstraintSet("linf", lam_adamw).relative_norm(box))
    r_both = 1.0 / max(lam_adamw, lam_muon)
    y_near = y * r_both**2 / np.abs(y).max()
    for _ in range(12):  # shrink the targets until C2 at the smaller radius interpolates
        y_near = y_near / 2
        near_value, blocks, _ = muon_full_program(x, y_near, d_PxN, r_both, r_both)
        if near_value <= tol * 1e-2:
            break
    both = lifted_caratheodory(muon_full_network(blocks), x)
    both_loss = data_loss(forward(both, x), y_near)
    in_muon = max(np.linalg.norm(both["W"], 2), np.linalg.norm(both["a"])) * lam_muon
    in_box = float(ConstraintSet("linf", lam_adamw).relative_norm(both))
    passed = (far_value > 1e3 * tol and box_loss <= tol and box_norm <= 1 + 1e-9 and len(box["a"]) <= interpolation_bracket(tau, r_a, r_a, n)[1]
              and both_loss <= tol and in_muon <= 1 + 1e-6 and in_box <= 1 + 1e-6)
    numbers = {"muon_full_value_disjoint": far_value, "box_width": len(box["a"]), "box_loss": box_loss,
               "overlap_loss": both_loss, "overlap_width": len(both["a"]), "overlap_muon_relative": float(in_muon),
               "overlap_box_relative": in_box}
    return ClaimResult("F.5", "disjoint regions (Muon-full cannot interpolate, wide box can) and an overlap case", bool(passed),
                       numbers, tol)
