"""THEORY.md §F.2 at test size: the forward-invariance bound, checked by training."""

import numpy as np
import pytest

from theory import optimizer_sets


@pytest.mark.parametrize("name", ["signsgd", "muon_exact"])
def test_started_inside_stays_inside(name):
    res = optimizer_sets.run(name, steps=800, lr=0.01, seeds=(0, 1))
    key = "spectral" if name.startswith("muon") else "linf"
    # (1 − ηλ)·r + η·s ≤ r: the bound is exact up to float32 round-off, and it binds.
    assert res[key] <= 1 + 1e-5
    assert res[key] > 0.95


def test_block_relative_norms_by_hand():
    w = np.ones((2, 2))  # ‖W‖₂ = 2, max|W| = 1
    params = {"W": w, "a": np.array([0.5, -2.0])}
    muon = optimizer_sets.block_relative_norms("muon", params, 0.5)
    assert muon["W"] == pytest.approx(1.0) and muon["a"] == pytest.approx(1.0)
    adamw = optimizer_sets.block_relative_norms("adamw", params, 0.5)
    assert adamw["W"] == pytest.approx(0.5) and adamw["a"] == pytest.approx(1.0)


def test_adamw_counterexample_to_the_finite_run_bound():
    """The finding recorded in theory.optimizer_sets: AdamW's direction is not bounded by 1, and a
    long constant-rate run ends well outside the 1 + 2e-2 that THEORY.md §F.2 allows."""
    import jax

    with jax.enable_x64(True):
        res = optimizer_sets.run("adamw", seeds=(2,))
    assert res["linf"] > 1.1


def test_verify_reports_adamw_as_its_own_row():
    from theory import verify

    rows = [kw for item, _, fn, kw in verify.CLAIMS if fn == "claim_optimizer_ball"]
    assert rows == [{}, {"names": ("adamw",)}]
    assert "adamw" not in optimizer_sets.claim_optimizer_ball.__defaults__[0]
