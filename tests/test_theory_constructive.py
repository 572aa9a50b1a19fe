"""THEORY.md §D primitives P2 (√-transfer), P5 (√-merge) and the §F.7 √-schedule claim, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from connect import barrier
from connect.constraints import ConstraintSet
from connect.models import relu
from connect.twolayer import losses
from theory import constructive

TS = np.linspace(0.0, 1.0, 21)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _net(rng, m, d, slots):
    w, a = np.zeros((m, d)), np.zeros(m)
    w[slots] = rng.normal(size=(len(slots), d))
    a[slots] = rng.normal(size=len(slots))
    return {"W": jnp.asarray(w), "a": jnp.asarray(a)}


def test_sqrt_transfer_keeps_outputs_gram_and_output_norm():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(12, 3)))
    p = _net(rng, 5, 3, [0, 1, 2])
    y0, gram0, an0 = relu.apply(p, x), p["W"].T @ p["W"], jnp.linalg.norm(p["a"])
    for t in TS:
        q = constructive.sqrt_transfer(p, 1, 4, t)
        np.testing.assert_allclose(relu.apply(q, x), y0, atol=1e-12)
        np.testing.assert_allclose(q["W"].T @ q["W"], gram0, atol=1e-12)
        np.testing.assert_allclose(jnp.linalg.norm(q["a"]), an0, atol=1e-12)
    end = constructive.sqrt_transfer(p, 1, 4, 1.0)
    assert np.array_equal(np.asarray(constructive.sqrt_transfer(p, 1, 4, 0.0)["W"]), np.asarray(p["W"]))
    assert np.array_equal(np.asarray(end["W"][4]), np.asarray(p["W"][1])) and not np.any(np.asarray(end["W"][1]))
    with pytest.raises(ValueError, match="not empty"):
        constructive.sqrt_transfer(p, 0, 2, 0.5)


def test_sqrt_merge_interpolates_outputs_and_has_no_barrier():
    rng = np.random.default_rng(2)
    x, y = jnp.asarray(rng.normal(size=(10, 3))), jnp.asarray(rng.normal(size=10))
    pa, pb = _net(rng, 6, 3, [0, 1, 2]), _net(rng, 6, 3, [3, 4, 5])
    ya, yb = relu.apply(pa, x), relu.apply(pb, x)
    loss = []
    for t in TS:
        q = constructive.sqrt_merge(pa, pb, t)
        np.testing.assert_allclose(relu.apply(q, x), (1 - t) * ya + t * yb, atol=1e-12)
        np.testing.assert_allclose(q["W"].T @ q["W"], (1 - t) * pa["W"].T @ pa["W"] + t * pb["W"].T @ pb["W"], atol=1e-12)
        assert float(jnp.linalg.norm(q["W"], ord=2)) ** 2 <= (1 - t) * float(jnp.linalg.norm(pa["W"], ord=2)) ** 2 + t * float(jnp.linalg.norm(pb["W"], ord=2)) ** 2 + 1e-12
        loss.append(float(losses.mse(relu.apply(q, x), y)))
    # the ordinary barrier code: a convex loss along ŷ(t) linear never rises above the chord
    assert barrier.barrier(TS, loss) <= 1e-12
    np.testing.assert_array_equal(np.asarray(constructive.sqrt_merge(pa, pb, 0.0)["W"]), np.asarray(pa["W"]))
    np.testing.assert_array_equal(np.asarray(constructive.sqrt_merge(pa, pb, 1.0)["W"]), np.asarray(pb["W"]))
    with pytest.raises(ValueError, match="disjoint"):
        constructive.sqrt_merge(pa, pa, 0.5)


def test_plain_schedule_keeps_outputs_but_leaves_the_ball():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(8, 3)))
    pa, pb = _net(rng, 4, 3, [0, 1]), _net(rng, 4, 3, [2, 3])
    for t in (0.0, 1 / 3, 0.5, 2 / 3, 1.0):
        q = constructive.plain_merge(pa, pb, t)
        s = min(max(3 * t - 1, 0.0), 1.0)
        np.testing.assert_allclose(relu.apply(q, x), (1 - s) * relu.apply(pa, x) + s * relu.apply(pb, x), atol=1e-12)


@pytest.mark.parametrize("r", [0.5, 1.0, 3.0])
def test_claim_sqrt_schedule_necessity(r):
    result = constructive.claim_sqrt_schedule(r=r)
    assert result.passed, result.line()
    assert result.numbers["plain_max"] == pytest.approx(np.sqrt(2) * r, rel=1e-9)
    assert result.numbers["sqrt_max"] <= r * (1 + 1e-9)
    assert result.line().startswith("PASS F.7")


def test_sqrt_merge_stays_in_the_spectral_ball_of_random_endpoints():
    rng = np.random.default_rng(4)
    for _ in range(5):
        pa, pb = _net(rng, 8, 4, [0, 1, 2, 3]), _net(rng, 8, 4, [4, 5, 6, 7])
        bound = max(float(jnp.linalg.norm(p["W"], ord=2)) for p in (pa, pb))
        assert constructive.max_spectral_norm(constructive.sqrt_merge, pa, pb, n_t=41) <= bound * (1 + 1e-12)


# --------------------------------------------------------------- P1, P3, P4 (THEORY.md §D)

S_GRID = np.linspace(0.0, 1.0, 17)


def _dense(rng, m, d, scale=1.0):
    return {"W": rng.normal(size=(m, d)) * scale, "a": rng.normal(size=m) * scale}


def _rel(kind, lam, p):
    return float(ConstraintSet(kind, lam, ("W",)).relative_norm({"W": jnp.asarray(p["W"]), "a": jnp.asarray(p["a"])}))


def _max_dev(seg, x, ref):
    return max(float(np.abs(relu.apply({k: jnp.asarray(v) for k, v in seg(s).items()}, jnp.asarray(x)) - ref).max()) for s in S_GRID)


def test_segment_endpoints_are_exact_and_reversal_swaps_them():
    rng = np.random.default_rng(10)
    p = _dense(rng, 4, 3)
    seg = constructive.rescale(p, np.array([2.0, 0.5, 1.0, 3.0]))
    assert seg(0.0) is seg.start and seg(1.0) is seg.end
    assert seg.start["W"].tobytes() == np.asarray(p["W"], dtype=np.float64).tobytes()
    rev = seg.reversed()
    assert rev(0.0) is seg.end and rev(1.0) is seg.start
    np.testing.assert_array_equal(rev(0.25)["W"], seg(0.75)["W"])
    both = constructive.concatenate("two", [seg, rev], seg.start)
    assert both(0.0) is seg.start and both(1.0) is seg.start and both(0.5) is seg.end
    assert [q.name for q in both.pieces()] == [seg.name, rev.name]


def test_p1_box_interval_is_exactly_the_feasible_scales_and_the_segment_keeps_outputs():
    rng = np.random.default_rng(11)
    lam, r = 2.0, 0.5
    x = rng.normal(size=(9, 3))
    p = ConstraintSet("linf", lam).project({"W": jnp.asarray(rng.normal(size=(5, 3))), "a": jnp.asarray(0.2 * rng.normal(size=5))})
    p = constructive.as_float64(p)
    lo, hi = constructive.box_scale_interval(p, r)
    for j in range(5):
        for s, inside in ((lo[j], True), (hi[j], True), (np.sqrt(lo[j] * hi[j]), True), (lo[j] * 0.99, False), (hi[j] * 1.01, False)):
            q = {"W": p["W"].copy(), "a": p["a"].copy()}
            q["W"][j] *= s
            q["a"][j] /= s
            assert (_rel("linf", lam, q) <= 1 + 1e-12) == inside, (j, s)
    seg = constructive.balance_box(p, r)
    np.testing.assert_allclose(np.abs(seg.end["W"]).max(axis=1), r, rtol=1e-14)
    y0 = constructive.outputs(p, x)
    assert _max_dev(seg, x, y0) <= 1e-12
    assert max(_rel("linf", lam, seg(s)) for s in S_GRID) <= 1 + 1e-12


def test_p1_geometric_rescaling_between_two_hybrid_points_stays_in_the_hybrid_set():
    """The log-convexity argument of theory.constructive: random per-neuron scalings whose ends
    both lie in {‖W‖₂ ≤ r_W, |a_j| ≤ r} never leave it in between."""
    rng = np.random.default_rng(12)
    lam, d, m = 1.0, 4, 4
    cset = ConstraintSet("muon", lam, ("W",))
    x = rng.normal(size=(6, d))
    tested = 0
    for _ in range(40):
        p = constructive.as_float64(cset.project({"W": jnp.asarray(rng.normal(size=(m, d))), "a": jnp.asarray(rng.normal(size=m))}))
        p = {"W": 0.7 * p["W"], "a": 0.7 * p["a"]}
        seg = constructive.rescale(p, np.exp(0.4 * rng.normal(size=m)))
        if _rel("muon", lam, seg.end) > 1:
            continue
        tested += 1
        assert max(_rel("muon", lam, seg(s)) for s in S_GRID) <= 1 + 1e-12
        assert _max_dev(seg, x, constructive.outputs(p, x)) <= 1e-12
    assert tested >= 5
    bal = constructive.balance_spectral(p, 1.0 / lam)
    assert float(np.linalg.norm(bal.end["W"], ord=2)) == pytest.approx(1.0 / lam, rel=1e-13)


def test_p3_lp_vertex_keeps_outputs_and_obeys_the_nonzero_bound():
    rng = np.random.default_rng(13)
    lam, r, n, m, d = 1.0, 1.0, 5, 24, 3
    x = rng.normal(size=(n, d))
    p = constructive.as_float64(ConstraintSet("linf", lam).project(
        {"W": jnp.asarray(rng.normal(size=(m, d))), "a": jnp.asarray(0.3 * rng.normal(size=m))}))
    bal = constructive.balance_box(p, r).end
    a_new, info = constructive.sparsest_output(bal, x, r)
    # independent bound from the returned vector itself, and the LP value against interior-point HiGHS
    l1 = np.abs(a_new).sum()
    assert np.count_nonzero(a_new) == info["nonzeros"] <= n + int(np.floor(l1 / r + 1e-9)) == info["bound"]
    assert info["nonzeros"] < m and np.abs(a_new).max() <= r * (1 + 1e-12)
    phi = np.maximum(x @ bal["W"].T, 0.0)
    ipm = scipy.optimize.linprog(np.ones(2 * m), A_eq=np.hstack([phi, -phi]), b_eq=phi @ bal["a"], bounds=[(0, r)] * (2 * m),
                                 method="highs-ipm")
    assert l1 == pytest.approx(ipm.fun, rel=1e-7) and l1 <= np.abs(bal["a"]).sum() + 1e-12
    seg = constructive.output_move(bal, a_new)
    y0 = constructive.outputs(p, x)
    assert _max_dev(seg, x, y0) <= 1e-12
    assert max(_rel("linf", lam, seg(s)) for s in S_GRID) <= 1 + 1e-12
    cut = constructive.prune(seg.end)
    assert _max_dev(cut, x, y0) <= 1e-12
    assert constructive.support(cut.end).size == info["nonzeros"]


@pytest.mark.parametrize("track, extra", [("gram", 6), ("frobenius", 1)])
def test_p4_reduces_to_its_width_bound_keeping_outputs_and_gram(track, extra):
    rng = np.random.default_rng(14)
    n, d, m = 4, 3, 20
    x = rng.normal(size=(n, d))
    p = _dense(rng, m, d, 0.5)
    seg = constructive.caratheodory(p, x, track)
    y0, gram0, fro0 = constructive.outputs(p, x), p["W"].T @ p["W"], np.sum(p["W"] ** 2)
    assert constructive.support(seg.end).size <= n + extra
    assert len(seg.pieces()) >= m - n - extra
    assert seg.start["W"].tobytes() == np.asarray(p["W"]).tobytes()
    prev = np.linalg.norm(p["a"])
    for piece in seg.pieces():
        for s in S_GRID:
            q = piece(s)
            np.testing.assert_allclose(constructive.outputs(q, x), y0, atol=1e-12)
            if track == "gram":
                np.testing.assert_allclose(q["W"].T @ q["W"], gram0, atol=1e-12)
            assert np.sum(q["W"] ** 2) == pytest.approx(fro0, abs=1e-12)
            a_norm = np.linalg.norm(q["a"])
            assert a_norm <= prev + 1e-12
            prev = a_norm
    assert _max_dev(seg, x, y0) <= 1e-12  # the ordinary model code agrees


def test_p2_transfer_of_several_neurons_keeps_outputs_gram_and_output_norm():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(8, 3))
    p = constructive.as_float64(_net(rng, 7, 3, [0, 1, 2, 3]))
    seg = constructive.transfer(p, [(1, 5), (3, 6)])
    y0, gram0, an0 = constructive.outputs(p, x), p["W"].T @ p["W"], np.linalg.norm(p["a"])
    for s in S_GRID:
        q = seg(s)
        np.testing.assert_allclose(constructive.outputs(q, x), y0, atol=1e-12)
        np.testing.assert_allclose(q["W"].T @ q["W"], gram0, atol=1e-12)
        assert np.linalg.norm(q["a"]) == pytest.approx(an0, abs=1e-12)
    np.testing.assert_array_equal(constructive.support(seg.end), [0, 2, 5, 6])
    np.testing.assert_array_equal(seg.end["W"][5], p["W"][1])


def test_primitives_refuse_a_nonzero_bias():
    """A bias would be silently dropped (changing the function): refused; a zero bias is harmless."""
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    a = np.array([1.0, -1.0])
    with pytest.raises(ValueError, match="fold"):
        constructive.as_float64({"W": w, "b": np.array([0.5, 0.0]), "a": a})
    assert set(constructive.as_float64({"W": w, "b": np.zeros(2), "a": a})) == {"W", "a"}
