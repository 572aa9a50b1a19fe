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
