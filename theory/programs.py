"""The convex programs of THEORY.md §C for two-layer ReLU networks: C1 (weight decay) with its
dual certificate, C2 (Muon-full), C3 (the ℓ∞ box) and the least ℓ∞ path norm τ*. Float64 numpy
throughout; the programs are solved by cvxpy (Clarabel, SCS as fallback) and the LPs by scipy's
HiGHS. Networks are recovered from their solutions by :mod:`theory.recovery`.

Network ``θ = (W, a)``, ``W ∈ ℝ^{m×d}``, ``ŷ = (XWᵀ)_+ a``; loss ``L = (1/n) Σ ℓ(ŷ_k, y_k)`` with
``ℓ = ½(ŷ − y)²`` ("squared", as :func:`connect.twolayer.losses.mse`) or ``log(1 + e^{−yŷ})``
("logistic"). Patterns ``D_i`` and cones ``K_i = {u : (2D_i − I)Xu ≥ 0}`` come from
:mod:`theory.patterns`; a *block* is a vector ``v ∈ K_i`` with a sign ``s = ±1`` and computes
``s (Xv)_+ = s D_i X v``. A bias is an extra column of ones in ``x`` (then ``W`` has ``d + 1``
columns and every constraint covers the bias too).

* C1, weight decay (Pilanci & Ergen 2020, arXiv 2002.10553, Thm 1) [S]:
  ``min_θ L(θ) + (β/2)(‖W‖²_F + ‖a‖²) = min_{v_i, u_i ∈ K_i} L(Σ D_i X(v_i − u_i)) + β Σ(‖v_i‖₂ + ‖u_i‖₂)``
  for ``m ≥ m*``. Dual certificate (Mishkin & Pilanci 2023, arXiv 2306.00119, Lemma 2.1): with
  ``λ* = −∇L(ŷ*)``, optimal ⇔ ``c_k = max_{v ∈ K_k, ‖v‖ ≤ 1} s_k λ*ᵀD_k X v ≤ β`` for every block,
  with equality on the blocks in use.
* C2, Muon-full ``‖W‖₂ ≤ r_W, ‖a‖₂ ≤ r_a`` [R]: same loss over ``v_i, u_i ∈ K_i``,
  ``[[S_i, v_i], [v_iᵀ, t_i]] ⪰ 0``, ``[[T_i, u_i], [u_iᵀ, τ_i]] ⪰ 0``, ``Σ(S_i + T_i) ⪯ r_W² I``,
  ``Σ(t_i + τ_i) ≤ r_a²``. Any network maps into the program (neurons of one cone add up,
  ``[[Σ w wᵀ, Σ a w], [·, Σ a²]] ⪰ 0``), so the value is the global optimum at any width that
  holds the recovered network.
* C3, ℓ∞ box ``|W_jk| ≤ r_W, |a_j| ≤ r_a`` [R]: ``CVX-∞(B)`` = same loss s.t.
  ``Σ(‖v_i‖∞ + ‖u_i‖∞) ≤ B``, value ``p_∞(B)``; ``τ*`` = minimal ℓ∞ path norm of an interpolant
  (an LP, :func:`min_linf_path_norm`).

Every program is over the given patterns: with all chambers it is exact, with a subsample
it is restricted, its value an upper bound attained by the recovered network.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.sparse

from connect.errors import UserError
from theory import patterns as pat

LOSSES = ("squared", "logistic")
#: A block counts as nonzero when its norm exceeds this fraction of the largest block's.
ZERO_TOL = 1e-6


# ---------------------------------------------------------------- plumbing


def _cvxpy():
    try:
        import cvxpy as cp
    except ImportError:
        raise UserError('the convex programs need cvxpy: pip install "connect[theory]" (cvxpy, clarabel)') from None
    return cp


_SOLVER_OPTIONS = {"CLARABEL": {}, "SCS": {"eps": 1e-9, "max_iters": 200_000}}


def solve(problem, solver: str | None = None) -> str:
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


def cone_problem(x_NxD, d_PxN):
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


def weight_decay_program(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, beta: float,
                         loss: str = "squared", solver: str | None = None) -> tuple[float, Blocks, str]:
    """Solve C1 (module docstring); ``(value, nonzero blocks, solver)``; ``solver`` forces
    ``"CLARABEL"`` or ``"SCS"``."""
    cp = _cvxpy()
    _check_patterns(x_NxD, d_PxN)
    v, u, cons, pred = cone_problem(x_NxD, d_PxN)
    obj = _loss_cvx(pred, y_N, loss) + beta * (cp.sum(cp.norm(v, 2, axis=1)) + cp.sum(cp.norm(u, 2, axis=1)))
    prob = cp.Problem(cp.Minimize(obj), cons)
    solver = solve(prob, solver)
    blocks = np.concatenate([v.value, u.value])
    norms = np.linalg.norm(blocks, axis=1)
    return float(prob.value), _keep(blocks, norms, norms, _block_scale(x_NxD, y_N)), solver


def dual(pred_N: np.ndarray, y_N: np.ndarray, loss: str) -> np.ndarray:
    """``λ* = −∇_ŷ L`` at the optimal prediction: ``(y − ŷ)/n`` (squared), ``y σ(−yŷ)/n`` (logistic)."""
    if loss == "squared":
        return (y_N - pred_N) / len(y_N)
    return y_N * 0.5 * (1 - np.tanh(0.5 * y_N * pred_N)) / len(y_N)


def block_duals(x_NxD: np.ndarray, d_PxN: np.ndarray, lam_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``c_k = max_{v ∈ K_k, ‖v‖₂ ≤ 1} s_k λᵀD_k X v`` and the maximisers, for the 2P blocks (v's then u's):
    one separable SOCP. KKT of C1 (Mishkin & Pilanci 2023, Lemma 2.1): optimal ⇔ ``c_k ≤ β`` for every
    block with equality on the blocks in use; the maximiser of a positive linear form over a cone ∩
    ball is unique, which fixes each active block's direction."""
    cp = _cvxpy()
    v, u, cons, _ = cone_problem(x_NxD, d_PxN)
    g_PxD = (d_PxN * lam_N[None, :]) @ x_NxD  # row i: (D_i X)ᵀλ
    cons += [cp.norm(v, 2, axis=1) <= 1, cp.norm(u, 2, axis=1) <= 1]
    prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(g_PxD, v)) - cp.sum(cp.multiply(g_PxD, u))), cons)
    solve(prob)
    dirs = np.concatenate([v.value, u.value])
    return np.concatenate([np.sum(g_PxD * v.value, axis=1), -np.sum(g_PxD * u.value, axis=1)]), dirs


# ---------------------------------------------------------------- C2 Muon-full


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
    solver = solve(prob)
    v = np.stack([zk.value[:d, d] for zk in z])
    t = np.array([max(zk.value[d, d], 0.0) for zk in z])
    return float(prob.value), _keep(v, t, t, r_a**2), solver


# ---------------------------------------------------------------- C3 ℓ∞ box


def linf_program(x_NxD: np.ndarray, y_N: np.ndarray, d_PxN: np.ndarray, budget: float,
                 loss: str = "squared") -> tuple[float, Blocks, str]:
    """``p_∞(B)``: CVX-∞ of the module docstring, ``Σ(‖v_i‖∞ + ‖u_i‖∞) ≤ B``; ``(value, blocks
    with extra = ‖v‖∞, solver)``."""
    cp = _cvxpy()
    _check_patterns(x_NxD, d_PxN)
    v, u, cons, pred = cone_problem(x_NxD, d_PxN)
    cons.append(cp.sum(cp.max(cp.abs(v), axis=1)) + cp.sum(cp.max(cp.abs(u), axis=1)) <= budget)
    prob = cp.Problem(cp.Minimize(_loss_cvx(pred, y_N, loss)), cons)
    solver = solve(prob)
    blocks = np.concatenate([v.value, u.value])
    sup = np.abs(blocks).max(axis=1)
    return float(prob.value), _keep(blocks, sup, sup, _block_scale(x_NxD, y_N)), solver


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
