"""Constraint sets of every optimizer (THEORY.md §B): projections, distance, inclusions and
orbit membership up to neuron rescaling, checked in float64 against independent computations
(scipy.optimize, the variational inequality of projections, brute-force rescalings)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from connect.constraints import ConstraintSet
from connect.models import relu

LAM = 0.5
SET_KINDS = ("linf", "muon", "muon_full", "l2")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _cset(kind, lam=LAM):
    return ConstraintSet(kind, lam, relu.MUON_MATRICES)


def _params(rng, m=3, d=4, bias=True, scale=3.0):
    p = {"W": rng.normal(size=(m, d)) * scale, "a": rng.normal(size=(m,)) * scale}
    if bias:
        p["b"] = rng.normal(size=(m,)) * scale
    return {k: jnp.asarray(v) for k, v in p.items()}


def _flat(p):
    return np.concatenate([np.ravel(np.asarray(p[k])) for k in sorted(p)])


def _unflat(x, like):
    out, i = {}, 0
    for k in sorted(like):
        n = like[k].size
        out[k] = jnp.asarray(x[i:i + n].reshape(like[k].shape))
        i += n
    return out


@pytest.mark.parametrize("kind", SET_KINDS)
@pytest.mark.parametrize("shape", [(3, 4), (5, 2)])
def test_projection_lands_in_set_and_is_idempotent(kind, shape):
    rng = np.random.default_rng(0)
    cset = _cset(kind)
    for _ in range(5):
        p = _params(rng, *shape)
        q = cset.project(p)
        assert q["W"].dtype == jnp.float64
        assert float(cset.relative_norm(q)) <= 1 + 1e-12
        assert float(cset.relative_norm(p)) > 1  # the samples start outside
        qq = cset.project(q)
        for k in p:
            np.testing.assert_allclose(qq[k], q[k], atol=1e-12, rtol=0)
        assert float(cset.distance(q)) <= 1e-12
        expect = math.sqrt(sum(float(jnp.sum((p[k] - q[k]) ** 2)) for k in p))
        assert float(cset.distance(p)) == pytest.approx(expect, rel=1e-12)
        assert float(cset.distance(p)) > 0.1


@pytest.mark.parametrize("kind", SET_KINDS)
def test_projection_is_the_nearest_point_variational_inequality(kind):
    """``p = P_C(x)`` ⇔ ``⟨x − p, y − p⟩ ≤ 0`` for every ``y ∈ C`` (C convex); random feasible
    ``y`` (projections of random points, scaled into the set) are never closer than ``p``."""
    rng = np.random.default_rng(1)
    cset = _cset(kind)
    for _ in range(4):
        x = _params(rng)
        p = cset.project(x)
        fx, fp = _flat(x), _flat(p)
        d_p = np.linalg.norm(fx - fp)
        for _ in range(200):
            y = cset.project(_params(rng, scale=float(rng.uniform(0.1, 5))))
            y = {k: v * rng.uniform(0.5, 1.0) for k, v in y.items()} if rng.uniform() < 0.3 else y
            fy = _flat(y)
            assert np.dot(fx - fp, fy - fp) <= 1e-9
            assert np.linalg.norm(fx - fy) >= d_p - 1e-12


def _psd2(m_2x2):
    """A 2×2 symmetric matrix is PSD ⇔ its trace and determinant are ≥ 0 (smooth constraints)."""
    return np.array([np.trace(m_2x2), np.linalg.det(m_2x2)])


def _scipy_projection(cset, x):
    """``argmin ‖y − x‖²`` s.t. ``y ∈ C`` by SLSQP with the set's defining norms written in
    numpy; the spectral ball of a 2×d matrix as ``r²I − YYᵀ ⪰ 0`` (trace and determinant)."""
    r = 1 / cset.lam
    fx = _flat(x)
    cons, bounds = [], None
    if cset.kind == "linf":
        bounds = [(-r, r)] * fx.size
    for k in sorted(x):
        def block(y, k=k):
            return np.asarray(_unflat(y, x)[k])
        if cset.kind in ("muon", "muon_full") and k == "W":
            rw = cset.spectral_radius(x[k].shape)
            cons.append({"type": "ineq", "fun": lambda y, block=block, rw=rw: _psd2(rw**2 * np.eye(2) - block(y) @ block(y).T)})
        elif cset.kind == "muon":
            cons.append({"type": "ineq", "fun": lambda y, block=block: r - np.abs(block(y))})
        elif cset.kind in ("muon_full", "l2"):
            cons.append({"type": "ineq", "fun": lambda y, block=block: r**2 - np.sum(block(y) ** 2)})
    start = _flat(cset.project({k: v * 0.5 for k, v in x.items()}))
    res = optimize.minimize(lambda y: np.sum((y - fx) ** 2), start, jac=lambda y: 2 * (y - fx),
                            bounds=bounds, constraints=cons, method="SLSQP",
                            options={"ftol": 1e-14, "maxiter": 500})
    return res.x


@pytest.mark.parametrize("kind", SET_KINDS)
def test_projection_matches_scipy(kind):
    rng = np.random.default_rng(2)
    cset = _cset(kind)
    for _ in range(2):
        x = _params(rng, m=2, d=3)
        ours = _flat(cset.project(x))
        ref = _scipy_projection(cset, x)
        # scipy's answer, made exactly feasible by a radial shrink (C is a product of balls), is
        # never closer
        ref_p = _unflat(ref, x)
        shrink = max(1.0, float(cset.relative_norm(ref_p)))
        feas = {k: v / shrink for k, v in ref_p.items()}
        assert float(cset.relative_norm(feas)) <= 1 + 1e-12
        d_ours, d_ref = np.linalg.norm(ours - _flat(x)), np.linalg.norm(_flat(feas) - _flat(x))
        assert d_ours <= d_ref + 1e-12
        # SLSQP meets a degenerate constraint (two singular values at the radius) on the spectral ball
        np.testing.assert_allclose(ours, ref, atol=1e-3 if kind.startswith("muon") else 1e-6)


def test_none_and_zero_decay_are_unconstrained():
    p = _params(np.random.default_rng(3))
    for cset in (ConstraintSet("none", LAM), ConstraintSet("linf", 0.0), ConstraintSet("muon_full", 0.0, ("W",))):
        assert float(cset.relative_norm(p)) == 0 and float(cset.distance(p)) == 0
        assert cset.project(p)["W"] is p["W"]
        assert cset.in_orbit(p) and cset.rescale_into(p)["a"] is p["a"]


def test_relative_norms_of_new_kinds():
    p = {"W": jnp.diag(jnp.array([3.0, 1.0])), "a": jnp.array([1.0, 1.0]), "b": jnp.array([0.0, 2.0])}
    assert float(_cset("muon_full", 0.25).relative_norm(p)) == pytest.approx(0.75)  # ‖W‖₂ = 3
    assert float(_cset("muon_full", 0.5).relative_norm(p)) == pytest.approx(1.5)
    assert float(_cset("l2", 0.25).relative_norm(p)) == pytest.approx(0.25 * math.sqrt(10))
    # muon_full with a long vector: ‖a‖₂ = 5 beats ‖W‖₂ = 3
    assert float(_cset("muon_full", 0.1).relative_norm({**p, "a": jnp.array([3.0, 4.0])})) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown constraint kind"):
        ConstraintSet("box", 1.0).relative_norm(p)


def test_inclusions_full_in_hybrid_in_box_with_equal_radii():
    """``C_muon_full(r) ⊂ C_muon(r) ⊂ C_linf(r)`` when ``s = 1`` (fan_out ≤ fan_in), and both
    inclusions are strict."""
    rng = np.random.default_rng(4)
    full, hyb, box = _cset("muon_full"), _cset("muon"), _cset("linf")
    counts = np.zeros(3, int)
    for i in range(90):
        m, d = int(rng.integers(1, 4)), int(rng.integers(3, 6))
        m = min(m, d)
        p = _params(rng, m, d, scale=float(rng.uniform(0.1, 2.5)))
        if i % 3 == 0:
            p = full.project(p)
        elif i % 3 == 1:
            p = hyb.project(p)
        in_f, in_h, in_b = (c.relative_norm(p) <= 1 + 1e-12 for c in (full, hyb, box))
        assert (not in_f or in_h) and (not in_h or in_b)
        counts += [in_f, in_h, in_b]
    assert counts[0] > 15 and counts[1] > counts[0] and counts[2] > counts[1]
    # strictness: a = r·1 is in the hybrid set, not the full one; W = r·ones in the box, not hybrid
    r = 1 / LAM
    p = {"W": jnp.eye(2, 3) * r, "a": jnp.full((2,), r)}
    assert hyb.contains(p, rtol=0) and not full.contains(p)
    q = {"W": jnp.full((2, 3), r), "a": jnp.zeros(2)}
    assert box.contains(q, rtol=0) and not hyb.contains(q)
    # with s > 1 (fan_out > fan_in) the hybrid ball is not inside the box
    wide = {"W": jnp.array([[2 * r], [0.0], [0.0], [0.0]]), "a": jnp.zeros(4)}  # ‖W‖₂ = 2r = s·r
    assert hyb.contains(wide, rtol=0) and not box.contains(wide)


def _rescaled(p, s):
    out = {"W": s[:, None] * p["W"], "a": p["a"] / s}
    if "b" in p:
        out["b"] = s * p["b"]
    return out


def _np_relative(kind, p):
    """The set's relative norm written directly in numpy (independent of the library)."""
    w, a, b = np.asarray(p["W"]), np.asarray(p["a"]), p.get("b")
    if kind == "linf":
        parts = [np.abs(w).max(), np.abs(a).max()] + ([] if b is None else [np.abs(np.asarray(b)).max()])
    elif kind == "muon":
        s = math.sqrt(max(1.0, w.shape[0] / w.shape[1]))
        parts = [np.linalg.svd(w, compute_uv=False)[0] / s, np.abs(a).max()]
        parts += [] if b is None else [np.abs(np.asarray(b)).max()]
    else:  # l2
        parts = [np.linalg.norm(w), np.linalg.norm(a)] + ([] if b is None else [np.linalg.norm(np.asarray(b))])
    return LAM * max(parts)


def _brute_orbit(kind, p, rng, starts=4):
    """``min_{log s} relative_norm(rescaled)`` by Nelder–Mead from random starts, each restarted
    from its end point (the objective is a non-smooth max)."""
    m = p["a"].shape[0]
    np_p = {k: np.asarray(v) for k, v in p.items()}
    f = lambda z: _np_relative(kind, _rescaled(np_p, np.exp(z)))  # noqa: E731
    best = math.inf
    for _ in range(starts):
        z = rng.normal(size=m)
        for _ in range(4):
            res = optimize.minimize(f, z, method="Nelder-Mead",
                                    options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 3000})
            z = res.x
        best = min(best, res.fun)
    return best


@pytest.mark.parametrize("kind,bias,shape", [
    ("linf", True, (3, 2)), ("linf", False, (3, 4)),
    ("muon", False, (3, 4)), ("muon", True, (3, 4)), ("muon", True, (4, 2)),
    ("l2", False, (3, 4)),
])
def test_orbit_closed_form_agrees_with_brute_force(kind, bias, shape):
    rng = np.random.default_rng(5)
    cset = _cset(kind)
    for target in (0.8, 1.25, 0.97, 1.03):  # the orbit value is 1-homogeneous in a global scale
        p = _params(rng, *shape, bias=bias)
        p = {k: v * target / float(cset.orbit_relative(p)) for k, v in p.items()}
        closed = float(cset.orbit_relative(p))
        assert closed == pytest.approx(target, rel=1e-12)
        brute = _brute_orbit(kind, p, rng)
        assert brute >= closed - 1e-9  # no rescaling beats the closed form
        assert brute <= closed + 1e-5  # and the search gets there
        w = cset.rescale_into(p)  # the witness attains it
        assert float(cset.relative_norm(w)) == pytest.approx(closed, rel=1e-12)
        assert cset.in_orbit(p, rtol=0) == (target < 1) == cset.contains(w, rtol=0)
        x = jnp.asarray(rng.normal(size=(20, shape[1])))
        np.testing.assert_allclose(relu.apply(w, x), relu.apply(p, x), atol=1e-12, rtol=0)


def test_hybrid_orbit_with_shape_factor_is_lambda_max_bound():
    """Derived form (THEORY's ``λ_max(Σ v_j v_jᵀ) ≤ r⁴`` with radius ``s/λ`` on ``W``, ``1/λ``
    on ``a``): ``orbit ⇔ λ_max(Σ_j v_j v_jᵀ) ≤ s²/λ⁴`` with ``v_j = |a_j| w_j`` (no bias),
    checked with an eigen-solver on random networks of both shapes."""
    rng = np.random.default_rng(6)
    hyb = _cset("muon")
    seen = set()
    for _ in range(60):
        m, d = (int(rng.integers(1, 7)), int(rng.integers(1, 5)))
        p = _params(rng, m, d, bias=False, scale=float(rng.uniform(0.5, 2.5)))
        v = np.abs(np.asarray(p["a"]))[:, None] * np.asarray(p["W"])
        lam_max = np.linalg.eigvalsh(v.T @ v)[-1]  # = λ_max(Σ v_j v_jᵀ) on the d×d side
        s = math.sqrt(max(1.0, m / d))
        bound = s**2 / LAM**4
        if abs(lam_max / bound - 1) < 1e-6:
            continue
        assert hyb.in_orbit(p, rtol=0) == (lam_max <= bound)
        assert float(hyb.orbit_relative(p)) ** 4 == pytest.approx(lam_max / bound, rel=1e-9)
        seen.add((lam_max <= bound, s > 1))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}


def test_box_orbit_formula_and_witness():
    """Box: ``orbit ⇔ max_j |a_j|·‖(w_j, b_j)‖∞ ≤ r²``; the balancing rescaling equalises
    ``|a_j|`` and ``‖(w_j, b_j)‖∞``."""
    r = 1 / LAM
    p = {"W": jnp.array([[8.0, -1.0], [0.5, 0.0]]), "b": jnp.array([0.0, 0.25]), "a": jnp.array([0.4, -6.0])}
    box = _cset("linf")
    assert not box.contains(p)
    assert max(0.4 * 8.0, 6.0 * 0.5) <= r**2 and box.in_orbit(p, rtol=0)
    w = box.rescale_into(p)
    np.testing.assert_allclose(jnp.abs(w["a"]), jnp.max(jnp.abs(w["W"]), axis=1), rtol=1e-12)
    assert box.contains(w, rtol=0)
    q = {**p, "a": jnp.array([0.4, -8.1])}  # 8.1 · 0.5 > r²
    assert not box.in_orbit(q, rtol=0)


def test_degenerate_neurons_are_zeroed_and_function_kept():
    p = {"W": jnp.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]), "b": jnp.array([0.5, 0.0, 0.0]),
         "a": jnp.array([0.0, 7.0, 2.0])}
    x = jnp.asarray(np.random.default_rng(7).normal(size=(10, 2)))
    for kind in ("linf", "muon"):
        w = _cset(kind).rescale_into(p)
        assert float(jnp.abs(w["W"][:2]).sum() + jnp.abs(w["a"][:2]).sum() + jnp.abs(w["b"][:2]).sum()) == 0
        np.testing.assert_allclose(relu.apply(w, x), relu.apply(p, x), atol=1e-12, rtol=0)
        assert float(_cset(kind).relative_norm(w)) == pytest.approx(float(_cset(kind).orbit_relative(p)), rel=1e-12)


def test_rescaling_keeps_the_function():
    rng = np.random.default_rng(8)
    p = _params(rng, 5, 3)
    x = jnp.asarray(rng.normal(size=(30, 3)))
    s = jnp.asarray(np.exp(rng.normal(size=5) * 2))
    np.testing.assert_allclose(relu.apply(_rescaled(p, s), x), relu.apply(p, x), atol=1e-12, rtol=1e-12)


def test_orbit_not_implemented_cases():
    p = _params(np.random.default_rng(9))
    with pytest.raises(NotImplementedError, match="SDP"):
        _cset("muon_full").in_orbit(p)
    with pytest.raises(NotImplementedError, match="bias"):
        _cset("l2").rescale_into(p)
    with pytest.raises(ValueError, match="two-layer"):
        _cset("linf").in_orbit({"W": p["W"], "x": p["a"]})


@pytest.mark.parametrize("r", [0.3, 1.0, 100.0])
def test_l1_and_nuclear_projections_match_a_convex_solver(r):
    cp = pytest.importorskip("cvxpy")
    from connect.constraints import project_nuclear, project_simplex_magnitudes

    rng = np.random.default_rng(3)
    x = rng.normal(size=7)
    y = cp.Variable(7)
    cp.Problem(cp.Minimize(cp.sum_squares(y - x)), [cp.norm1(y) <= r]).solve(solver=cp.CLARABEL)
    got = np.asarray(project_simplex_magnitudes(jnp.asarray(x, dtype=jnp.float32), r))
    np.testing.assert_allclose(got, y.value, atol=2e-5)
    assert np.sum(np.abs(got)) <= r * (1 + 1e-5)

    w = rng.normal(size=(4, 3))
    z = cp.Variable((4, 3))
    cp.Problem(cp.Minimize(cp.sum_squares(z - w)), [cp.normNuc(z) <= r]).solve(solver=cp.CLARABEL)
    pw = np.asarray(project_nuclear(jnp.asarray(w, dtype=jnp.float32), r))
    np.testing.assert_allclose(pw, z.value, atol=1e-4)
    # idempotent
    np.testing.assert_allclose(np.asarray(project_nuclear(jnp.asarray(pw), r)), pw, atol=1e-5)
