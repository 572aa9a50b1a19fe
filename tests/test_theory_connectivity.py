"""CONNECT of THEORY.md §D (theory.connectivity): exact endpoints, loss along the path by the ordinary
barrier code, the set never left, explicit Inconclusive; claims F.1 and F.6; paths.evaluate_callable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import barrier, paths
from connect.constraints import ConstraintSet
from connect.errors import UserError
from connect.models import relu
from connect.twolayer import losses
from theory import connectivity, constructive, geometry

N, D = 4, 2


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _ordinary_losses(path_fn, x, y, ts):
    """Loss along a path with the model's own forward pass, bias explicitly zero."""
    out = []
    for t in ts:
        p = path_fn(t)
        q = {"W": jnp.asarray(p["W"]), "a": jnp.asarray(p["a"]), "b": jnp.zeros(np.shape(p["a"]))}
        out.append(float(losses.mse(relu.apply(q, jnp.asarray(x)), jnp.asarray(y))))
    return np.array(out)


def test_evaluate_callable_equals_a_python_loop_and_the_jitted_linear_evaluate():
    rng = np.random.default_rng(0)
    nodes = {"W": jnp.asarray(rng.normal(size=(2, 3, 2))), "a": jnp.asarray(rng.normal(size=(2, 3)))}
    ts = np.linspace(0.0, 1.0, 7)

    def path_fn(t):
        return paths.point("linear", nodes, t)

    def fn(p):
        return {"s": jnp.sum(p["W"]) * p["a"][0], "w": p["W"]}

    got = paths.evaluate_callable(path_fn, fn, ts)
    loop = [fn(path_fn(t)) for t in ts]
    np.testing.assert_array_equal(np.asarray(got["s"]), np.array([float(v["s"]) for v in loop]))
    np.testing.assert_array_equal(np.asarray(got["w"]), np.stack([np.asarray(v["w"]) for v in loop]))
    ref = paths.evaluate("linear", fn, nodes, jnp.asarray(ts))
    np.testing.assert_allclose(np.asarray(got["w"]), np.asarray(ref["w"]), rtol=1e-6)


@pytest.mark.parametrize("kind, m, scale", [("muon_full", 2 * (N + 3), 0.8), ("l2", 2 * (N + 1), 0.8),
                                            ("none", 2 * (N + 1), 0.8), ("linf", 4 * N, 0.3), ("muon", 4 * N, 0.3)])
def test_connect_path_is_exact_at_the_ends_flat_in_loss_and_inside_the_set(kind, m, scale):
    cset = ConstraintSet(kind, 1.0, ("W",))
    x, y, pa, pb = connectivity.zero_loss_pair(cset, N, D, m, seed=1, scale=scale)
    path = connectivity.connect_pair(pa, pb, x, y, cset, tol=1e-9)
    assert isinstance(path, connectivity.ConstructivePath), path
    assert path(0.0)["W"].tobytes() == pa["W"].tobytes() and path(0.0)["a"].tobytes() == pa["a"].tobytes()
    assert path(1.0)["W"].tobytes() == pb["W"].tobytes() and path(1.0)["a"].tobytes() == pb["a"].tobytes()
    assert path.numbers["k_a"] + path.numbers["k_b"] <= m and len(path.names) == len(path.segments)
    assert "P5 √-merge" in path.names
    ts = np.linspace(0.0, 1.0, 6 * len(path.segments) + 1)
    loss = _ordinary_losses(path, x, y, ts)
    assert barrier.max_barrier(ts, loss) <= 1e-9 and barrier.barrier(ts, loss) <= 1e-9
    rel = [float(cset.relative_norm({k: jnp.asarray(v) for k, v in path(t).items()})) for t in ts]
    assert max(rel) <= 1 + 1e-9
    # the straight line between the same endpoints: a clear barrier (in % of the zero network's loss)
    line_loss = _ordinary_losses(connectivity.linear_path(pa, pb), x, y, np.linspace(0, 1, 101))
    assert barrier.max_barrier(np.linspace(0, 1, 101), line_loss) > 0.01 * 0.5 * np.mean(y**2)
    rep = connectivity.path_report(path, x, y, cset, ts)
    np.testing.assert_allclose(rep["loss"], loss, atol=1e-14)
    assert rep["max_relative_norm"] == pytest.approx(max(rel), abs=1e-14)
    np.testing.assert_allclose(rep["spectral_norm"], [np.linalg.norm(path(t)["W"], ord=2) for t in ts], rtol=1e-12)


def test_inconclusive_when_supports_cannot_be_separated():
    x, y, pa, pb = connectivity.saturated_box_pair(N, D, 2 * N, 1.0, seed=2)
    out = connectivity.connect_pair(pa, pb, x, y, ConstraintSet("linf", 1.0))
    assert isinstance(out, connectivity.Inconclusive)
    assert (out.k_a, out.k_b, out.width) == (2 * N, 2 * N, 2 * N) and "exceed" in out.reason
    # Muon-full below the threshold: generic networks of width m < n + d(d+1)/2 are not reducible
    cset = ConstraintSet("muon_full", 1.0, ("W",))
    x, y, pa, pb = connectivity.zero_loss_pair(cset, N, D, N + 2, seed=3, scale=0.5)
    out = connectivity.connect_pair(pa, pb, x, y, cset)
    assert isinstance(out, connectivity.Inconclusive) and out.k_a + out.k_b > out.width == N + 2


def test_a_failed_check_is_inconclusive_with_its_numbers_and_outside_endpoints_are_refused():
    cset = ConstraintSet("l2", 1.0)
    x, y, pa, pb = connectivity.zero_loss_pair(cset, N, D, 2 * (N + 1), seed=4)
    out = connectivity.connect_pair(pa, pb, x, y, cset, tol=-1e-6)  # no path can beat a negative tolerance
    assert isinstance(out, connectivity.Inconclusive) and "loss rises" in out.reason
    assert out.numbers["loss_excess"] > -1e-6 and out.numbers["pieces"] > 0
    far = {"W": 3 * pa["W"], "a": pa["a"]}
    out = connectivity.connect_pair(far, pb, x, y, cset)
    assert isinstance(out, connectivity.Inconclusive) and "outside the set" in out.reason


def test_bad_inputs_raise_one_line_user_errors():
    cset = ConstraintSet("l2", 1.0)
    x, y, pa, pb = connectivity.zero_loss_pair(cset, N, D, 2 * (N + 1), seed=5)
    with pytest.raises(UserError, match="bias-free"):
        connectivity.connect_pair({**pa, "b": np.zeros(10)}, pb, x, y, cset)
    with pytest.raises(UserError, match="unknown constraint"):
        connectivity.connect_pair(pa, pb, x, y, ConstraintSet("adamw", 1.0))
    with pytest.raises(UserError, match="NaN"):
        connectivity.connect_pair(pa, pb, np.where(x > 0, np.nan, x), y, cset)
    with pytest.raises(UserError, match="λ"):
        connectivity.connect_pair(pa, pb, x, y, ConstraintSet("l2", -1.0))


def test_reduction_keeps_outputs_and_norms_piece_by_piece():
    cset = ConstraintSet("muon_full", 1.0, ("W",))
    x, y, pa, _ = connectivity.zero_loss_pair(cset, N, D, 14, seed=6)
    seg, info = connectivity.reduce(pa, x, cset)
    gram = pa["W"].T @ pa["W"]
    for piece in seg.pieces():
        for s in np.linspace(0, 1, 9):
            q = piece(s)
            np.testing.assert_allclose(constructive.outputs(q, x), y, atol=1e-12)
            np.testing.assert_allclose(q["W"].T @ q["W"], gram, atol=1e-12)
    assert constructive.support(seg.end).size == info["support"] <= info["bound"] == N + 3


def test_box_reduction_obeys_the_lp_bound_and_stays_in_the_box():
    cset = ConstraintSet("linf", 1.0)
    x, y, pa, _ = connectivity.zero_loss_pair(cset, N, D, 20, seed=7, scale=0.4)
    seg, info = connectivity.reduce(pa, x, cset)
    a = seg.end["a"]
    assert constructive.support(seg.end).size == np.count_nonzero(a) == info["support"]
    assert info["support"] <= N + int(np.floor(np.abs(a).sum() + 1e-9)) == info["bound"]  # r = 1: ⌊τ/r²⌋ = ⌊‖a‖₁⌋
    for piece in seg.pieces():
        for s in np.linspace(0, 1, 9):
            q = piece(s)
            np.testing.assert_allclose(constructive.outputs(q, x), y, atol=1e-12)
            assert float(cset.relative_norm({k: jnp.asarray(v) for k, v in q.items()})) <= 1 + 1e-12


def test_claims_f1_and_f6_pass():
    geo = geometry.claim_geometry(n_random=10, n_brute=2)
    assert geo.passed, geo.line()
    res = connectivity.claim_connect()
    assert res.passed, res.line()
    assert res.numbers["box_saturated_result"] == "INCONCLUSIVE"
    assert res.numbers["muon_full_path_barrier"] <= 1e-9 < res.numbers["muon_full_linear_barrier"]


def test_fold_bias_keeps_the_function_and_the_box_and_refuses_muon():
    rng = np.random.default_rng(8)
    p = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=5), "a": rng.normal(size=5)}
    x = rng.normal(size=(7, 3))
    box = ConstraintSet("linf", 0.5)
    folded, x1 = connectivity.fold_bias(p, x, box)
    ref = relu.apply({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(x))
    np.testing.assert_allclose(constructive.outputs(folded, x1), np.asarray(ref), atol=1e-12)
    assert float(box.relative_norm({k: jnp.asarray(v) for k, v in folded.items()})) == pytest.approx(
        float(box.relative_norm({k: jnp.asarray(v) for k, v in p.items()})), rel=1e-15)
    with pytest.raises(UserError, match="bias"):
        connectivity.fold_bias(p, x, ConstraintSet("muon", 0.5, ("W",)))
