"""Orbit membership for the Muon-full set: is some neuron rescaling of θ inside it?

A two-layer ReLU network ``θ = (W, b, a)`` computes the same function after
``(w_j, b_j, a_j) → (s_j w_j, s_j b_j, a_j/s_j)``, ``s_j > 0``. The Muon-full set at decay λ
(:mod:`connect.constraints`, kind ``muon_full``) asks ``‖W‖₂ ≤ r_W = s/λ`` (``s`` Muon's shape
factor), ``‖a‖₂ ≤ r = 1/λ`` and, with a bias, ``‖b‖₂ ≤ r``. The box and hybrid sets have closed
forms (:meth:`connect.constraints.ConstraintSet.orbit_relative`); this one is a small SDP
(THEORY.md §B [R]). With ``t_j = a_j²/s_j²``, ``v_j = |a_j| w_j`` and ``q_j = a_j b_j``:

    ‖a/s‖₂² = Σ t_j,   diag(s)W has Gram Σ_j v_j v_jᵀ / t_j,   ‖s∘b‖₂² = Σ_j q_j² / t_j,

so a rescaling inside the set scaled by ``ρ`` exists iff some ``t ≥ 0`` has ``Σ t ≤ ρ² r²``,
``Σ v_j v_jᵀ/t_j ⪯ ρ² r_W² I`` and ``Σ q_j²/t_j ≤ ρ² r²``. Substituting ``t = ρ² r² τ``:

    ρ⁴ = min_{τ ∈ Δ} max( λ_max(Σ_j v_j v_jᵀ/τ_j) / (r² r_W²),  Σ_j q_j²/τ_j / r⁴ ),

a convex program (Schur complement: ``[[μ I, Vᵀ], [V, diag τ]] ⪰ 0 ⇔ Σ v_j v_jᵀ/τ_j ⪯ μ I``).
The *orbit-relative norm* ``ρ`` is ``≤ 1`` exactly when the closure of the orbit meets the set.
Closed forms used as checks (no bias): rows along orthogonal directions give
``ρ⁴ r² r_W² = Σ_j ‖v_j‖²`` (optimum ``τ_j ∝ ‖v_j‖²``), parallel rows give ``(Σ_j ‖v_j‖)²``
(``τ_j ∝ ‖v_j‖``); in general the value is at least the hybrid set's ``λ_max(Σ v_j v_jᵀ)``,
as the inclusion ``C_op-full ⊂ C_hyb`` requires.
"""

from __future__ import annotations

import numpy as np

from connect.constraints import muon_shape_factor
from connect.errors import UserError


def _cvxpy():
    try:
        import cvxpy as cp
    except ImportError:
        raise UserError('the Muon-full orbit test needs cvxpy: pip install "connect[theory]"') from None
    return cp


def muon_full_orbit_relative(params: dict, lam: float, *, shape_factor: bool = True) -> tuple[float, np.ndarray]:
    """``(ρ, s)``: the smallest ``ρ`` such that a rescaling ``s`` of ``params`` lies in the
    Muon-full set at ``λ/ρ`` (so ``ρ ≤ 1`` ⇔ in the orbit's closure), and the scales ``s_j``
    attaining it (neurons computing zero get ``s_j = 1`` and should be zeroed by the caller).
    ``params = {"W": (m, d), "b": (m,) optional, "a": (m,)}``; float64 throughout."""
    if lam <= 0:
        raise UserError(f"λ must be > 0 for an orbit test, got {lam}: pass the optimizer's weight decay")
    cp = _cvxpy()
    w = np.asarray(params["W"], dtype=np.float64)
    a = np.asarray(params["a"], dtype=np.float64)
    b = np.asarray(params["b"], dtype=np.float64) if "b" in params else np.zeros_like(a)
    live = (np.abs(a) > 0) & (np.abs(w).max(axis=1) + np.abs(b) > 0)
    scales = np.ones_like(a)
    if not live.any():
        return 0.0, scales
    r = 1.0 / lam
    r_w = (muon_shape_factor(w.shape) if shape_factor else 1.0) / lam
    v, q = np.abs(a[live])[:, None] * w[live], a[live] * b[live]
    k, d = v.shape
    # Normalise the data so the solver sees O(1) numbers; ρ⁴ scales with ‖v‖² and q².
    unit = max(np.linalg.norm(v, ord=2) ** 2 / (r * r_w) ** 2, np.sum(q**2) / r**4, 1e-300)
    tau = cp.Variable(k, nonneg=True)
    mu = cp.Variable()
    vs = v / (r * r_w * np.sqrt(unit))
    cons = [cp.sum(tau) <= 1, cp.bmat([[mu * np.eye(d), vs.T], [vs, cp.diag(tau)]]) >> 0]
    if np.any(q != 0):
        qs = q / (r**2 * np.sqrt(unit))
        cons.append(cp.sum([cp.quad_over_lin(qs[j], tau[j]) for j in range(k)]) <= mu)
    prob = cp.Problem(cp.Minimize(mu), cons)
    prob.solve(solver=cp.CLARABEL)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"Muon-full orbit SDP ended with status {prob.status}")
    rho = float(np.sqrt(np.sqrt(max(mu.value, 0.0) * unit)))
    # s_j² = a_j²/t_j with t = ρ² r² τ puts the rescaled network on the set scaled by ρ.
    t = np.maximum(np.asarray(tau.value), 1e-300) * rho**2 * r**2
    scales[live] = np.abs(a[live]) / np.sqrt(t)
    return rho, scales


def rescale(params: dict, scales: np.ndarray) -> dict:
    """``(s_j w_j, s_j b_j, a_j/s_j)``: the same function (ReLU is positively homogeneous)."""
    out = {"W": np.asarray(params["W"]) * scales[:, None], "a": np.asarray(params["a"]) / scales}
    if "b" in params:
        out["b"] = np.asarray(params["b"]) * scales
    return out
