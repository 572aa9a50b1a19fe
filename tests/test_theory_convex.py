"""Convex programs of THEORY.md §C (C1 weight decay, C2 Muon-full, C3 ℓ∞ sandwich, τ*) against
independent computations: gradient descent from many restarts, a second solver, cvxpy for the
LP, hand-derived polytope vertices, and the invariants of the constructions. Float64."""

import json
import math
import sys

import jax
import numpy as np
import optax
import pytest

from connect.constraints import ConstraintSet, muon_shape_factor
from connect.errors import UserError
from theory import convex, convex_claims, critical_widths, patterns, programs, recovery


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _data(n, seed, d=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng.normal(size=n)


def test_c1_equals_best_of_many_gradient_descent_restarts():
    """n = 2, d = 2: the nonconvex penalised problem by 24 restarts of GD at width 3; the convex
    value is ≤ every trained value and within 1e-4 of the best; the recovered network attains it.
    (With data seed 0 an optimal neuron sits on a ReLU kink, ``w·x₁ = 0``, and GD stalls 1e-3 above.)"""
    x, y = _data(2, 1)
    beta = 0.05
    d_PxN = patterns.enumerate_2d(x)
    sol = critical_widths.weight_decay_optimum(x, y, d_PxN, beta)
    assert recovery.penalised_loss(sol.network, x, y, beta) == pytest.approx(sol.value, rel=1e-6)
    trained = [recovery.penalised_loss(p, x, y, beta)
               for p in convex_claims._trained(x, y, 3, convex_claims._wd_objective(beta), optax.sgd(0.3), range(24), 4000)]
    assert min(trained) >= sol.value * (1 - 1e-6)
    assert min(trained) == pytest.approx(sol.value, rel=1e-4)
    assert 1 <= sol.m_star <= sol.M_star <= len(x)  # a vertex has ≤ rank ≤ n blocks
    assert critical_widths.staircase_width(sol.m_star, sol.M_star, len(x)) == min(sol.m_star + sol.M_star, len(x) + 1)


def test_c1_second_solver_and_logistic_loss():
    x, y = _data(5, 1)
    d_PxN = patterns.enumerate_2d(x)
    clarabel = programs.weight_decay_program(x, y, d_PxN, 0.1, solver="CLARABEL")
    scs = programs.weight_decay_program(x, y, d_PxN, 0.1, solver="SCS")
    assert clarabel[2] == "CLARABEL" and scs[2].startswith("SCS")
    assert scs[0] == pytest.approx(clarabel[0], rel=1e-4)
    # KKT: every block's dual value max_{v ∈ K, ‖v‖ ≤ 1} s λ*ᵀD X v is ≤ β, with equality on the used ones
    sol = critical_widths.weight_decay_optimum(x, y, d_PxN, 0.1)
    assert sol.dual_ratio == pytest.approx(1.0, abs=1e-5)
    labels = np.where(y >= 0, 1.0, -1.0)
    sol = critical_widths.weight_decay_optimum(x, labels, d_PxN, 0.1, loss="logistic")
    assert recovery.penalised_loss(sol.network, x, labels, 0.1, "logistic") == pytest.approx(sol.value, rel=1e-6)
    # the zero network is feasible: value ≤ log 2
    assert sol.value <= math.log(2)


def test_vertex_supports_of_a_hand_polytope():
    """{α ≥ 0 : α₁ + α₃ = 1, α₂ + α₃ = 1} has vertices (1, 1, 0) and (0, 0, 1): m* = 1, M* = 2."""
    g = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    verts = dict(critical_widths.vertex_supports(g, np.array([1.0, 1.0])))
    assert set(verts) == {(0, 1), (2,)}
    np.testing.assert_allclose(verts[(0, 1)], [1, 1, 0], atol=1e-12)
    np.testing.assert_allclose(verts[(2,)], [0, 0, 1], atol=1e-12)


def test_c1_vertices_are_optimal_networks():
    """Every vertex of the optimal polytope is itself an optimal network (same penalised loss)."""
    x, y = _data(4, 2)
    beta = 0.05
    d_PxN = patterns.enumerate_2d(x)
    value, blocks, _ = programs.weight_decay_program(x, y, d_PxN, beta)
    norms = np.linalg.norm(blocks.v_KxD, axis=1)
    unit = programs.Blocks(blocks.v_KxD / norms[:, None], blocks.sign_K, blocks.pattern_K, norms)
    g = unit.columns(x, d_PxN)
    verts = critical_widths.vertex_supports(g, g @ norms)
    assert verts
    for _, alpha in verts:
        net = recovery.weight_decay_network(unit, alpha)
        assert recovery.penalised_loss(net, x, y, beta) == pytest.approx(value, rel=1e-6)


def test_c2_equals_best_projected_gd_and_recovers_inside_the_set():
    """n = 2, d = 2, Muon-full at λ = 2 and width m = 5 = n + d(d+1)/2: the SDP value is ≤ every
    projected-GD network (24 restarts) and within 1e-4 of the best; the recovered, pruned network
    lies in the set and attains the value."""
    x, y = _data(2, 3)
    lam, m = 2.0, 5
    r_w, r_a = muon_shape_factor((m, 2)) / lam, 1 / lam
    d_PxN = patterns.enumerate_2d(x)
    value, blocks, _ = programs.muon_full_program(x, y, d_PxN, r_w, r_a)
    net = recovery.lifted_caratheodory(recovery.muon_full_network(blocks), x)
    assert len(net["a"]) <= len(x) + 3
    assert recovery.data_loss(recovery.forward(net, x), y) == pytest.approx(value, rel=1e-6)
    padded = {"W": np.concatenate([net["W"], np.zeros((m - len(net["a"]), 2))]),
              "a": np.concatenate([net["a"], np.zeros(m - len(net["a"]))])}
    cset = ConstraintSet("muon_full", lam, ("W",))
    assert float(cset.relative_norm(padded)) <= 1 + 1e-6
    trained = [recovery.data_loss(recovery.forward(p, x), y)
               for p in convex_claims._trained(x, y, m, convex_claims._mse_objective, convex_claims._projected_gd(0.3, cset.project), range(24), 3000)]
    assert value > 1e-3  # the constraint binds
    assert min(trained) >= value * (1 - 1e-6)
    assert min(trained) == pytest.approx(value, rel=1e-4)


def test_lifted_caratheodory_keeps_outputs_gram_and_shrinks_a():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 2))
    net = {"W": rng.normal(size=(12, 2)), "a": rng.normal(size=12)}
    out = recovery.lifted_caratheodory(net, x)
    assert len(out["a"]) <= 3 + 3
    np.testing.assert_allclose(recovery.forward(out, x), recovery.forward(net, x), atol=1e-10)
    np.testing.assert_allclose(out["W"].T @ out["W"], net["W"].T @ net["W"], atol=1e-10)
    assert np.sum(out["a"] ** 2) <= np.sum(net["a"] ** 2) + 1e-12


@pytest.mark.parametrize("seed", [4, 5])
def test_linf_sandwich_and_width_bracket(seed):
    x, y = _data(4, seed)
    n, lam = len(x), 1.0
    r = 1 / lam
    d_PxN = patterns.enumerate_2d(x)
    cset = ConstraintSet("linf", lam)
    m = 2
    low, blocks, _ = programs.linf_program(x, y, d_PxN, m * r * r)
    # p_box(m + n) ≤ p_∞(m r²): an explicit box network of width ≤ m + n with that loss
    net = recovery.box_network(blocks, x, d_PxN, r, r)
    assert len(net["a"]) <= m + n and float(cset.relative_norm(net)) <= 1 + 1e-9
    assert recovery.data_loss(recovery.forward(net, x), y) == pytest.approx(low, rel=1e-5, abs=1e-9)
    # p_∞(m r²) ≤ p_box(m): no box network of width m trained by projected GD goes below it
    trained = convex_claims._trained(x, y, m, convex_claims._mse_objective, convex_claims._projected_gd(0.2, cset.project), range(6), 1500)
    assert min(recovery.data_loss(recovery.forward(p, x), y) for p in trained) >= low - 1e-9
    # interpolation-width bracket
    tau, tblocks = programs.min_linf_path_norm(x, y, d_PxN)
    lo, hi = critical_widths.interpolation_bracket(tau, r, r, n)
    assert lo == math.ceil(tau - 1e-9) and lo <= hi
    interp = recovery.box_network(tblocks, x, d_PxN, r, r)
    assert len(interp["a"]) <= hi and float(cset.relative_norm(interp)) <= 1 + 1e-9
    np.testing.assert_allclose(recovery.forward(interp, x), y, atol=1e-9)
    assert programs.linf_program(x, y, d_PxN, (lo - 1) * r * r)[0] > 1e-7  # narrower box nets cannot interpolate
    assert programs.linf_program(x, y, d_PxN, tau * (1 + 1e-6))[0] <= 1e-8  # budget τ* suffices


def test_tau_star_lp_against_cvxpy():
    import cvxpy as cp

    x, y = _data(5, 6, d=3)
    d_PxN = patterns.sample(x, 2000, seed=0)
    tau, blocks = programs.min_linf_path_norm(x, y, d_PxN)
    v, u, cons, pred = programs.cone_problem(x, d_PxN)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.max(cp.abs(v), axis=1)) + cp.sum(cp.max(cp.abs(u), axis=1))), cons + [pred == y])
    prob.solve(solver="CLARABEL")
    assert tau == pytest.approx(prob.value, rel=1e-6)
    np.testing.assert_allclose(blocks.columns(x, d_PxN).sum(axis=1), y, atol=1e-8)


@pytest.mark.parametrize("constraint", ["sgd", "adamw", "muon", "muon_full"])
def test_optimum_entry_point(constraint):
    x, y = _data(3, 8)
    lam = 1.5
    opt = convex.optimum(x, y, constraint, lam, width=4)
    assert opt.exact or constraint in ("adamw", "muon")
    json.dumps(opt.to_dict())
    net = opt.network
    loss = recovery.data_loss(recovery.forward(net, x), y)
    assert len(net["a"]) <= 4
    if constraint == "sgd":
        assert recovery.penalised_loss(net, x, y, lam) == pytest.approx(opt.value, rel=1e-6)
        return
    assert loss == pytest.approx(opt.value, rel=1e-6, abs=1e-12)
    kind = {"adamw": "linf", "muon": "muon", "muon_full": "muon_full"}[constraint]
    pad = 4 - len(net["a"])
    padded = {"W": np.concatenate([net["W"], np.zeros((pad, 2))]), "a": np.concatenate([net["a"], np.zeros(pad)])}
    assert float(ConstraintSet(kind, lam, ("W",)).relative_norm(padded)) <= 1 + 1e-6
    if constraint in ("adamw", "muon"):
        assert opt.bracket["value_lower"] <= opt.value + 1e-9


def test_optimum_with_bias_column_is_exact():
    x = np.array([[-1.0], [0.2], [0.9]])
    y = np.array([0.5, -0.3, 0.8])
    opt = convex.optimum(x, y, "weight_decay", 0.1, bias=True)
    assert opt.exact and opt.network["W"].shape[1] == 2
    xb = np.concatenate([x, np.ones((3, 1))], axis=1)
    assert recovery.penalised_loss(opt.network, xb, y, 0.1) == pytest.approx(opt.value, rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"constraint": "rmsprop"}, "unknown constraint 'rmsprop'"),
    ({"lam": 0.0}, "λ must be"),
    ({"lam": -1.0}, "λ must be"),
    ({"lam": float("nan")}, "λ must be"),
    ({"loss": "hinge"}, "unknown loss"),
])
def test_optimum_errors(kwargs, match):
    x, y = _data(3, 9)
    args = {"constraint": "adamw", "lam": 1.0, **kwargs}
    with pytest.raises(UserError, match=match):
        convex.optimum(x, y, args.pop("constraint"), args.pop("lam"), **args)


def test_optimum_rejects_nans_and_too_many_patterns():
    x, y = _data(3, 10)
    x[1, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        convex.optimum(x, y, "sgd", 1.0)
    big = np.random.default_rng(0).normal(size=(200, 10))
    with pytest.raises(UserError, match="activation patterns .* GB"):
        convex.optimum(big, np.ones(200), "sgd", 1.0, n_gates=5000)


def test_missing_cvxpy_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    x, y = _data(3, 11)
    with pytest.raises(UserError, match=r'pip install "connect\[theory\]"'):
        convex.optimum(x, y, "sgd", 1.0)


def test_claims_pass_at_small_sizes():
    assert (r := convex_claims.claim_convex_exactness(n_seeds=6, steps=3000)).passed, r.line()
    assert (r := convex_claims.claim_linf_sandwich(widths=(2,), n_seeds=4, steps=1500)).passed, r.line()
    assert (r := convex_claims.claim_regions()).passed, r.line()


def test_c1_zero_network_when_decay_dominates():
    """β above every block's dual value at λ = y/n: the zero network is optimal, value ½ mean y²."""
    x, y = _data(6, 12, d=3)
    d_PxN = patterns.sample(x, 3000, seed=0)
    sol = critical_widths.weight_decay_optimum(x, y, d_PxN, 5.0)
    assert sol.value == pytest.approx(0.5 * np.mean(y**2), rel=1e-7)
    assert sol.m_star == 0 and len(sol.network["a"]) == 0 and sol.dual_ratio < 1
