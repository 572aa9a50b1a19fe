"""The claims of THEORY.md §F.3–F.5 on the convex programs (:mod:`theory.programs`), checked
against trained networks: convex exactness of C1 and C2 (§F.3), the ℓ∞ sandwich and the
interpolation-width bracket (§F.4), and disjoint and overlapping regions of the box and
Muon-full sets (§F.5). Networks are trained by :func:`connect.twolayer.training.train` (He
init, no bias, float64), by gradient descent on the penalised loss or by projected gradient
descent ``θ ← P_C(θ − η∇L)`` into a set of :class:`connect.constraints.ConstraintSet`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from connect.constraints import ConstraintSet, muon_shape_factor
from connect.models import relu
from connect.twolayer import losses, training
from theory import patterns as pat
from theory.claims import ClaimResult
from theory.critical_widths import interpolation_bracket, weight_decay_optimum
from theory.programs import linf_program, min_linf_path_norm, muon_full_program
from theory.recovery import box_network, data_loss, forward, lifted_caratheodory, muon_full_network, penalised_loss


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
    """Final float64 networks of :func:`connect.twolayer.training.train` from each seed (He init, no bias)."""
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
