"""The Muon-full orbit SDP against closed forms, its witness, and the hybrid set's bound."""

import numpy as np
import pytest

from connect.constraints import ConstraintSet
from theory import orbits

pytest.importorskip("cvxpy")


def _rho_closed(v_norms, lam, s, parallel):
    val = np.sum(v_norms) ** 2 if parallel else np.sum(v_norms**2)
    return (val * lam**4 / s**2) ** 0.25


@pytest.mark.parametrize("parallel", [False, True])
def test_closed_forms(parallel):
    rng = np.random.default_rng(0)
    d, m, lam = 3, 3, 0.7
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    dirs = np.repeat(q[:1], m, axis=0) if parallel else q[:m]
    w = dirs * rng.uniform(0.5, 2.0, size=(m, 1))
    a = rng.uniform(0.3, 1.5, size=m) * np.array([1, -1, 1])
    rho, scales = orbits.muon_full_orbit_relative({"W": w, "a": a}, lam, shape_factor=False)
    v_norms = np.abs(a) * np.linalg.norm(w, axis=1)
    assert rho == pytest.approx(_rho_closed(v_norms, lam, 1.0, parallel), rel=1e-6)


def test_witness_keeps_function_and_attains_rho():
    rng = np.random.default_rng(1)
    params = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=5), "a": rng.normal(size=5)}
    lam = 0.9
    rho, scales = orbits.muon_full_orbit_relative(params, lam)
    out = orbits.rescale(params, scales)
    x = rng.normal(size=(20, 3))

    def f(p):
        return np.maximum(x @ p["W"].T + p["b"][None, :], 0.0) @ p["a"]

    np.testing.assert_allclose(f(out), f(params), rtol=1e-12, atol=1e-12)
    rel = float(ConstraintSet("muon_full", lam, ("W",)).relative_norm({k: np.asarray(v) for k, v in out.items()}))
    assert rel == pytest.approx(rho, rel=1e-5)
    # No other rescaling does better: random positive scales never beat ρ.
    cset = ConstraintSet("muon_full", lam, ("W",))
    for _ in range(200):
        other = orbits.rescale(params, np.exp(rng.normal(size=5)))
        assert float(cset.relative_norm(other)) >= rho * (1 - 1e-6)


def test_at_least_the_hybrid_value():
    rng = np.random.default_rng(2)
    params = {"W": rng.normal(size=(6, 2)), "a": rng.normal(size=6)}
    lam = 1.3
    rho, _ = orbits.muon_full_orbit_relative(params, lam)
    hybrid = float(ConstraintSet("muon", lam, ("W",)).orbit_relative(params))
    assert rho >= hybrid * (1 - 1e-7)


def test_two_neurons_against_a_grid_of_rescalings():
    """For two neurons (W 2×2, so s = 1) the orbit value is ``min_s λ max(‖diag(s)W‖₂, ‖a/s‖₂)``:
    a numpy grid over ``(s₁, s₂)`` never beats it and comes within 1%."""
    rng = np.random.default_rng(2)
    lam = 0.8
    s1, s2 = np.meshgrid(np.exp(np.linspace(-4, 4, 801)), np.exp(np.linspace(-3, 3, 301)))
    scale_Kx2 = np.stack([s1.ravel(), s2.ravel()], 1)
    for _ in range(3):
        p = {"W": rng.normal(size=(2, 2)), "a": rng.normal(size=2)}
        rho, _ = orbits.muon_full_orbit_relative(p, lam)
        w_op = np.linalg.norm(scale_Kx2[:, :, None] * p["W"][None], ord=2, axis=(1, 2))
        a_l2 = np.linalg.norm(p["a"][None] / scale_Kx2, axis=1)
        best = lam * np.maximum(w_op, a_l2).min()
        assert rho * (1 - 1e-6) <= best <= rho * (1 + 1e-2)
