"""THEORY.md §E example (§F.8): zero-loss configurations (exact, complete), regions, Muon-full
orbit membership, trained runs; float64 and independent numpy/scipy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from connect.constraints import ConstraintSet
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


def test_muon_full_orbit_brent_sdp_and_brute_force():
    """(E.2) by Brent and by the cvxpy SDP agree; no rescaling on a fine grid beats it; the
    witness attains it, keeps the function and its norms are at the orbit value."""
    rng = np.random.default_rng(2)
    lam = 0.8
    for _ in range(3):
        p = {"W": rng.normal(size=(2, 2)), "a": rng.normal(size=2)}
        v = np.abs(p["a"])[:, None] * p["W"]
        assert ex.muon_full_orbit_mu(v, "brent") == pytest.approx(ex.muon_full_orbit_mu(v, "sdp"), rel=1e-6)
        val = ex.muon_full_orbit_relative(p, lam)
        cset = ConstraintSet("muon_full", lam, ("W",))
        s1, s2 = np.meshgrid(np.exp(np.linspace(-4, 4, 801)), np.exp(np.linspace(-3, 3, 301)))
        scale_Kx2 = np.stack([s1.ravel(), s2.ravel()], 1)
        w_op = np.linalg.norm(scale_Kx2[:, :, None] * p["W"][None], ord=2, axis=(1, 2))
        a_l2 = np.linalg.norm(p["a"][None] / scale_Kx2, axis=1)
        best = lam * np.maximum(w_op, a_l2).min()  # numpy brute force over rescalings (s = 1 for a 2×2 W)
        assert val * (1 - 1e-9) <= best <= val * (1 + 1e-2)  # min over rescalings of max(λ‖W‖₂, λ‖a‖₂) = λμ^{1/4}
        with jax.enable_x64(True):
            wit = ex.muon_full_rescale_into(p, lam)
            rel = float(cset.relative_norm({k: jnp.asarray(wit[k]) for k in wit}))
        assert rel == pytest.approx(val, rel=1e-6)
        assert lam * np.linalg.norm(wit["W"], 2) == pytest.approx(lam * np.linalg.norm(wit["a"]), rel=1e-6)
        x = rng.normal(size=(5, 2))
        np.testing.assert_allclose(np.maximum(x @ wit["W"].T, 0) @ wit["a"], np.maximum(x @ p["W"].T, 0) @ p["a"], atol=1e-12)


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


def test_muon_full_update_and_ball():
    """Muon-full: the first update of a is ``−η(g/‖g‖₂ + λa)`` (msign of a row), and from inside
    the ball ``{‖W‖₂ ≤ 1/λ, ‖a‖₂ ≤ 1/λ}`` the iterates stay inside (ηλ ≤ 1, unit-norm directions)."""
    import optax

    lr, lam = 0.05, ex.LAM_MUON_FULL
    opt = ex._muon_full(lr, lam)
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        p = {"W": jnp.asarray(rng.normal(size=(2, 2)) * 0.3), "a": jnp.asarray(rng.normal(size=2) * 0.3)}
        g = {"W": jnp.asarray(rng.normal(size=(2, 2))), "a": jnp.asarray(rng.normal(size=2))}
        upd, _ = opt.update(g, opt.init(p), p)
        ga = np.asarray(g["a"])
        np.testing.assert_allclose(np.asarray(upd["a"]), -lr * (ga / np.linalg.norm(ga) + lam * np.asarray(p["a"])), atol=1e-12)
        u, _, vt = np.linalg.svd(np.asarray(g["W"]))
        np.testing.assert_allclose(np.asarray(upd["W"]), -lr * (u @ vt + lam * np.asarray(p["W"])), atol=1e-12)
    out = ex.train_runs("muon_full", [0, 1], steps=100, lr=lr)
    for row in out["runs"]:
        w, a = row["params"]["W"], row["params"]["a"]
        assert row["muon_full_relative"] == pytest.approx(max(lam * np.linalg.norm(w, 2), lam * np.linalg.norm(a)), rel=1e-12)
    with jax.enable_x64(True):
        x, y = map(jnp.asarray, ex.data())

        @jax.jit
        def step(q, state):
            upd, state = opt.update(jax.grad(ex._mse)(q, x, y), state, q)
            return optax.apply_updates(q, upd), state

        q = {"W": jnp.asarray(rng.normal(size=(2, 2)) * 0.2), "a": jnp.asarray(rng.normal(size=2) * 0.2)}
        state = opt.init(q)
        worst = 0.0
        for _ in range(300):
            q, state = step(q, state)
            worst = max(worst, lam * np.linalg.norm(np.asarray(q["W"]), 2), lam * np.linalg.norm(np.asarray(q["a"])))
    assert 0.5 < worst <= 1 + 1e-12
