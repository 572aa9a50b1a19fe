"""Networks from the convex solutions of :mod:`theory.programs` (THEORY.md §C), and their loss,
in float64 numpy. A block ``α ρ`` of pattern D and sign s computes ``s α (Xρ)_+``; each recovery
below is a network ``θ = (W, a)``, ``ŷ = (XWᵀ)_+ a``, with the same prediction.

* C1, weight decay (Pilanci & Ergen 2020, arXiv 2002.10553) [S]: ``(w, a) = (v/√‖v‖, √‖v‖)``,
  ``(u/√‖u‖, −√‖u‖)`` (AM–GM: ``(‖w‖² + a²)/2 = ‖v‖``).
* C2, Muon-full [R]: ``(v/√t, √t)``, ``(u/√τ, −√τ)`` (Schur: ``v vᵀ/t ⪯ S``, so
  ``WᵀW ⪯ Σ S ⪯ r_W² I`` and ``‖a‖² = Σ t``); lifted Carathéodory (P4 of §D,
  :func:`lifted_caratheodory`) brings it to ``≤ n + d(d+1)/2`` neurons.
* C3, ℓ∞ box [R]: :func:`box_network`: a basic LP solution keeps ≤ n blocks at no larger
  budget, then block i splits into ``⌈‖v_i‖∞/(r_W r_a)⌉`` box neurons, so
  ``p_box(m + n) ≤ p_∞(m r_W r_a)``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize

from theory.constructive import LP_OPTIONS
from theory.programs import ZERO_TOL, Blocks


def data_loss(pred_N: np.ndarray, y_N: np.ndarray, loss: str = "squared") -> float:
    """``(1/n) Σ ℓ(ŷ_k, y_k)`` in float64 (squared: ``½(ŷ − y)²``; logistic: ``log(1 + e^{−yŷ})``)."""
    if loss == "squared":
        return float(0.5 * np.mean((pred_N - y_N) ** 2))
    return float(np.mean(np.logaddexp(0.0, -y_N * pred_N)))


def forward(network: dict, x_NxD: np.ndarray) -> np.ndarray:
    """``ŷ = (XWᵀ)_+ a`` in float64 numpy."""
    return np.maximum(x_NxD @ np.asarray(network["W"], np.float64).T, 0.0) @ np.asarray(network["a"], np.float64)


def penalised_loss(network: dict, x_NxD: np.ndarray, y_N: np.ndarray, beta: float, loss: str = "squared") -> float:
    """``L(θ) + (β/2)(‖W‖²_F + ‖a‖²)`` in float64."""
    w, a = np.asarray(network["W"], np.float64), np.asarray(network["a"], np.float64)
    return data_loss(forward(network, x_NxD), y_N, loss) + 0.5 * beta * (float(np.sum(w**2)) + float(np.sum(a**2)))


def empty_network(d: int) -> dict:
    return {"W": np.zeros((0, d)), "a": np.zeros(0)}


def weight_decay_network(blocks: Blocks, alpha_K: np.ndarray | None = None) -> dict:
    """Recovery ``(w, a) = (ρ√α, s√α)`` for block ``α ρ`` (``ρ`` unit): ``a(wᵀx)_+ = s α(ρᵀx)_+``
    and ``(‖w‖² + a²)/2 = α``. ``alpha_K`` overrides the block norms (a vertex of the polytope)."""
    norms = np.linalg.norm(blocks.v_KxD, axis=1)
    alpha = norms if alpha_K is None else np.asarray(alpha_K, np.float64)
    live = alpha > 0
    rho = blocks.v_KxD[live] / norms[live][:, None]
    return {"W": rho * np.sqrt(alpha[live])[:, None], "a": blocks.sign_K[live] * np.sqrt(alpha[live])}


def muon_full_network(blocks: Blocks) -> dict:
    """Recovery ``(w, a) = (v/√t, s√t)``: ``a (wᵀx)_+ = s (vᵀx)_+``, ``w wᵀ = v vᵀ/t ⪯ S``, ``a² = t``."""
    root = np.sqrt(blocks.extra_K)
    return {"W": blocks.v_KxD / root[:, None], "a": blocks.sign_K * root}


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


def basic_solution(g_NxK: np.ndarray, yhat_N: np.ndarray, cost_K: np.ndarray) -> np.ndarray:
    """A basic optimal solution of ``min cᵀα s.t. Gα = ŷ, α ≥ 0`` (HiGHS dual simplex):
    at most ``rank G ≤ n`` nonzeros. Rows of ``G`` are rescaled for conditioning."""
    res = scipy.optimize.linprog(cost_K, A_eq=g_NxK, b_eq=yhat_N, bounds=(0, None), method="highs-ds", options=LP_OPTIONS)
    if res.status != 0:
        raise RuntimeError(f"block reduction LP failed: {res.message}")
    alpha = np.asarray(res.x)
    return np.where(alpha > ZERO_TOL * max(alpha.max(initial=0.0), 1e-300), alpha, 0.0)


def box_network(blocks: Blocks, x_NxD: np.ndarray, d_PxN: np.ndarray, r_w: float, r_a: float) -> dict:
    """A box network (``|W_jk| ≤ r_W``, ``|a_j| ≤ r_a``) computing the blocks' ŷ with width
    ``≤ Σ‖v_i‖∞/(r_W r_a) + n``: first a basic solution of ``min Σ α_k s.t. Σ α_k s_k D_k X ρ_k = ŷ,
    α ≥ 0`` (``ρ_k = v_k/‖v_k‖∞``; ≤ n blocks, no larger ℓ∞ budget), then block ``α ρ`` splits
    into ``q = ⌈α/(r_W r_a)⌉`` neurons ``(r_W ρ, s α/(q r_W))``."""
    if len(blocks.sign_K) == 0:
        return empty_network(x_NxD.shape[1])
    sup = np.abs(blocks.v_KxD).max(axis=1)
    unit = Blocks(blocks.v_KxD / sup[:, None], blocks.sign_K, blocks.pattern_K, np.ones_like(sup))
    g_NxK = unit.columns(x_NxD, d_PxN)
    alpha = basic_solution(g_NxK, g_NxK @ sup, np.ones_like(sup))
    ws, as_ = [], []
    for k in np.flatnonzero(alpha):
        q = max(1, math.ceil(alpha[k] / (r_w * r_a) * (1 - 1e-12)))
        ws += [r_w * unit.v_KxD[k]] * q
        as_ += [unit.sign_K[k] * alpha[k] / (q * r_w)] * q
    return {"W": np.array(ws), "a": np.array(as_)}
