"""THEORY.md §F.1: the geometry of the constraint sets of §B, checked numerically.

* Projection: for every kind of :class:`connect.constraints.ConstraintSet`, ``project`` lands
  in the set, is idempotent, and is the nearest point: its distance ``‖P_C(θ) − θ‖`` matches a
  brute-force minimisation of ``‖z − θ‖`` over the set written as smooth inequalities
  ``g(z) ≥ 0`` (SLSQP), independently of :mod:`connect.constraints`.
* Inclusions at equal radii r: ``C_op-full(r) ⊂ C_hyb(r) ⊂ C_∞(r)`` (``‖a‖∞ ≤ ‖a‖₂`` and
  ``max|W_jk| ≤ ‖W‖₂``); with Muon's shape factor ``s = √(m/d) > 1`` the hybrid's W-radius is
  ``s·r`` and the second inclusion fails.
* Invariance: P2 (√-transfer) and √k-splits of :mod:`theory.constructive` keep ŷ, ``WᵀW`` and
  ``‖a‖₂``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from connect.constraints import KINDS, ConstraintSet
from theory import constructive
from theory.claims import ClaimResult


def _brute_constraints(cset: ConstraintSet, m: int, d: int) -> Callable:
    """The set of THEORY.md §B written as smooth inequalities ``g(v) ≥ 0`` on the flat ``(W, a)``,
    independently of :mod:`connect.constraints`: box ``r ± θ``; spectral ``r_W − σ_i(W)`` for every
    singular value (smooth where they are distinct); ℓ₂ ``r² − ‖·‖²``. ``r_W = s/λ``, s Muon's shape factor."""
    r, r_w = 1.0 / cset.lam, np.sqrt(max(1.0, m / d)) / cset.lam

    def g(v):
        w, a = v[: m * d].reshape(m, d), v[m * d:]
        if cset.kind == "linf":
            return np.concatenate([r - v, r + v])
        if cset.kind == "l2":
            return np.array([r**2 - np.sum(w**2), r**2 - np.sum(a**2)])
        spec = r_w - np.linalg.svd(w, compute_uv=False)
        out = np.concatenate([r - a, r + a]) if cset.kind == "muon" else np.array([r**2 - np.sum(a**2)])
        return np.concatenate([spec, out])

    return g


def _brute_distance(cset: ConstraintSet, w_MxD: np.ndarray, a_M: np.ndarray, rng) -> float:
    """``min ‖z − θ‖`` over the set by SLSQP from a small random start (:func:`_brute_constraints`)."""
    m, d = w_MxD.shape
    flat = np.concatenate([w_MxD.ravel(), a_M])
    x0 = 0.01 * rng.normal(size=flat.shape) / cset.lam
    res = scipy.optimize.minimize(lambda v: float(np.sum((v - flat) ** 2)), x0, jac=lambda v: 2 * (v - flat),
                                  method="SLSQP", options={"maxiter": 1000, "ftol": 1e-15},
                                  constraints=[{"type": "ineq", "fun": _brute_constraints(cset, m, d)}])
    return float(np.sqrt(res.fun))


def claim_geometry(m: int = 3, d: int = 3, lam: float = 0.7, n_random: int = 50, n_brute: int = 3, seed: int = 0,
                   tol: float = 1e-12) -> ClaimResult:
    """THEORY.md §F.1: (i) for every kind, :meth:`ConstraintSet.project` lands in the set and is
    idempotent (``tol``), and its distance matches a brute-force SLSQP minimisation of
    ``‖z − θ‖`` over the set (1e-4 relative, SLSQP's own accuracy; tiny sizes); (ii) the inclusions
    ``C_op-full(r) ⊂ C_hyb(r) ⊂ C_∞(r)`` on random points of each set (``m ≤ d``, so Muon's shape
    factor is 1 and all radii are r; the numbers also show a point at m = 4 > d = 2 that is in the
    hybrid set with the shape factor but not in the box: the inclusion needs s = 1); (iii) P2 (√-transfer) and √k-splits keep ŷ, ``WᵀW`` and
    ``‖a‖₂`` to 1e-12."""
    rng = np.random.default_rng(seed)
    sets = {k: ConstraintSet(k, lam, ("W",)) for k in KINDS}
    worst_out, worst_idem, worst_brute, worst_incl = 0.0, 0.0, 0.0, 0.0
    with jax.enable_x64(True):
        project = {k: jax.jit(c.project) for k, c in sets.items()}
        for i in range(n_random):
            raw = {"W": jnp.asarray(rng.normal(size=(m, d)) * 2 / lam), "a": jnp.asarray(rng.normal(size=m) * 2 / lam)}
            for kind, cset in sets.items():
                proj = project[kind](raw)
                again = project[kind](proj)
                if kind != "none":
                    worst_out = max(worst_out, float(cset.relative_norm(proj)) - 1.0)
                worst_idem = max(worst_idem, max(float(jnp.abs(again[k] - proj[k]).max()) for k in proj))
                if i < n_brute and kind != "none":
                    brute = _brute_distance(cset, np.asarray(raw["W"]), np.asarray(raw["a"]), rng)
                    worst_brute = max(worst_brute, abs(float(cset.distance(raw)) - brute) / brute)
            full, hyb = project["muon_full"](raw), project["muon"](raw)
            worst_incl = max(worst_incl, float(sets["muon"].relative_norm(full)) - 1.0,
                             float(sets["linf"].relative_norm(full)) - 1.0, float(sets["linf"].relative_norm(hyb)) - 1.0)
    worst_keep = _split_invariance(rng)
    # with Keller Jordan's shape factor s = √(m/d) > 1 (m > d) the hybrid's W-radius is s·r, and the inclusion
    # C_hyb ⊂ C_∞ fails: W = (1.3/λ) e₁e₁ᵀ at m = 4, d = 2 has ‖W‖₂ = 1.3/λ ≤ √2/λ but max|W| = 1.3/λ
    tall = {"W": jnp.zeros((4, 2)).at[0, 0].set(1.3 / lam), "a": jnp.zeros(4)}
    numbers = {"shape_factor_hyb_relative": float(sets["muon"].relative_norm(tall)),
               "shape_factor_box_relative": float(sets["linf"].relative_norm(tall)),"max_projection_excess": worst_out, "max_idempotence_error": worst_idem,
               "max_brute_force_gap_rel": worst_brute, "max_inclusion_excess": worst_incl,
               "max_split_transfer_error": worst_keep}
    passed = worst_out <= tol and worst_idem <= tol and worst_brute <= 1e-4 and worst_incl <= tol and worst_keep <= 1e-12
    return ClaimResult("F.1", "projections land in their sets, are idempotent and nearest; C_op-full ⊂ C_hyb ⊂ C_∞; "
                       "P2 and √k-splits keep ŷ, WᵀW, ‖a‖", bool(passed), numbers, tol)


def _split_invariance(rng) -> float:
    """Largest change of ŷ, ``WᵀW``, ``‖a‖₂`` under P2 at several t and √k-splits (float64)."""
    x = rng.normal(size=(7, 3))
    p = {"W": np.vstack([rng.normal(size=(3, 3)), np.zeros((4, 3))]), "a": np.concatenate([rng.normal(size=3), np.zeros(4)])}

    def stats(q):
        return constructive.outputs(q, x), q["W"].T @ q["W"], np.linalg.norm(q["a"])

    ref, worst = stats(p), 0.0
    qs = [constructive.sqrt_transfer(p, 1, 5, t) for t in np.linspace(0, 1, 11)]
    qs += [constructive.sqrt_split(p, 0, [3, 4, 6]), constructive.sqrt_split(p, 2, [6])]
    for q in qs:
        worst = max(worst, *(float(np.abs(np.asarray(u) - v).max()) for u, v in zip(stats(q), ref)))
    return worst
