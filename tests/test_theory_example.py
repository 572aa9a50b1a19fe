"""THEORY.md §E example (§F.8): zero-loss configurations (exact, complete), regions, Muon-full
orbit membership, trained runs; float64 and independent numpy/scipy computations."""

import numpy as np
import pytest
import scipy.optimize

from theory import example as ex


@pytest.fixture(scope="module")
def zero():
    return ex.zero_loss_configurations()


def _numpy_loss(params, x, y):
    f = np.maximum(x @ np.asarray(params["W"]).T, 0.0) @ np.asarray(params["a"])
    return 0.5 * np.mean((f - y) ** 2)


def test_configurations_have_zero_loss(zero):
    x, y = ex.data()
    assert zero["configs"] and not zero["degenerate"]
    for k in zero["configs"]:
        assert _numpy_loss(k["params"], x, y) <= 1e-12
        assert ex.loss(ex.quotient_forward(k["c"], k["phi"], np.deg2rad(ex.ANGLES_DEG)), y) <= 1e-12
        c, phi = ex.quotient(k["params"])
        np.testing.assert_allclose(c, k["c"], atol=1e-13)
        np.testing.assert_allclose(np.cos(phi - k["phi"]), 1.0, atol=1e-13)


def test_configurations_are_distinct_modulo_swap(zero):
    cs = zero["configs"]
    for i in range(len(cs)):
        for j in range(i + 1, len(cs)):
            assert ex.quotient_distance(cs[i]["c"], cs[i]["phi"], cs[j]["c"], cs[j]["phi"]) > 1e-3


def test_configurations_are_complete(zero):
    """Multi-start least squares over (c, φ) from random starts: every zero-loss point found is
    one of the enumerated configurations (modulo swap), and every configuration is found."""
    x, y = ex.data()
    theta = np.deg2rad(ex.ANGLES_DEG)
    rng = np.random.default_rng(0)
    hit = set()
    for _ in range(150):
        v0 = np.concatenate([rng.uniform(-2, 2, 2), rng.uniform(-np.pi, np.pi, 2)])
        res = scipy.optimize.least_squares(lambda v: ex.quotient_forward(v[:2], v[2:], theta) - y, v0, xtol=1e-15, ftol=1e-15,
                                           gtol=1e-15)
        if ex.loss(res.fun + y, y) > 1e-20:
            continue
        dist = [ex.quotient_distance(res.x[:2], res.x[2:], k["c"], k["phi"]) for k in zero["configs"]]
        assert min(dist) < 1e-6, f"zero-loss point {res.x} is not enumerated"
        hit.add(int(np.argmin(dist)))
    assert hit == set(range(len(zero["configs"])))


def test_activation_patterns_match_a_dense_sweep():
    x, _ = ex.data()
    phi = np.linspace(-np.pi, np.pi, 20001)
    swept = np.unique((x @ np.stack([np.cos(phi), np.sin(phi)])).T > 0, axis=0)
    np.testing.assert_array_equal(swept, ex.activation_patterns(x))


def test_quotient_network_round_trip():
    rng = np.random.default_rng(1)
    p = {"W": rng.normal(size=(3, 2)), "a": rng.normal(size=3)}
    q = ex.network(*ex.quotient(p))
    x = rng.normal(size=(7, 2))
    np.testing.assert_allclose(np.maximum(x @ q["W"].T, 0) @ q["a"], np.maximum(x @ p["W"].T, 0) @ p["a"], atol=1e-13)


def test_regions_match_brute_force_box_orbit(zero):
    """Box orbit value λ√(max_j |a_j|‖w_j‖∞) against a per-neuron brute-force rescaling."""
    for k, r in zip(zero["configs"], ex.regions(zero["configs"])):
        s = np.exp(np.linspace(-4, 4, 40001))
        w, a = k["params"]["W"], k["params"]["a"]
        per = [np.min(np.maximum(s * np.abs(w[j]).max(), np.abs(a[j]) / s)) for j in range(2)]
        assert ex.LAM_ADAMW * max(per) == pytest.approx(r["box"], rel=1e-3)
        assert r["in_box"] == (r["box"] <= 1) and r["in_muon_full"] == (r["muon_full"] <= 1)


def test_train_runs_report_consistent_numbers():
    out = ex.train_runs("adamw", [0, 1], steps=200)
    x, y = ex.data()
    for row in out["runs"]:
        assert row["loss"] == pytest.approx(_numpy_loss(row["params"], x, y), rel=1e-10, abs=1e-15)
        theta = np.concatenate([row["params"]["W"].ravel(), row["params"]["a"]])
        assert row["box_relative"] == pytest.approx(ex.LAM_ADAMW * np.abs(theta).max(), rel=1e-12)
        assert row["box_orbit"] <= row["box_relative"] * (1 + 1e-12)
        assert 0 <= row["nearest"] < 2 and row["distance"] >= 0
    assert out["loss_curves"].shape == (2, 200)


def test_muon_full_runs_report_their_norms():
    """Runs of the registry's ``muon_full`` (λ_M by default): the reported Muon-full norm is
    ``λ max(‖W‖₂, ‖a‖₂)`` (numpy), the orbit value is no larger, and the runs stay in the ball."""
    out = ex.train_runs("muon_full", [0, 1], steps=100, lr=0.05)
    lam = ex.LAM_MUON_FULL
    assert out["lam"] == lam
    for row in out["runs"]:
        w, a = row["params"]["W"], row["params"]["a"]
        plain = max(lam * np.linalg.norm(w, 2), lam * np.linalg.norm(a))
        assert row["muon_full_relative"] == pytest.approx(plain, rel=1e-12)
        assert row["muon_full_orbit"] <= plain * (1 + 1e-6)
