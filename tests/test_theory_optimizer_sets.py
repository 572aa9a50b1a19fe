"""THEORY.md §F.2 at test size: the forward-invariance bound, checked by training; AdamW's
counterexample reported as a FINDING."""

import numpy as np
import pytest

from theory import optimizer_sets
from theory.claims import FAIL, FINDING, PASS, ClaimResult


@pytest.mark.parametrize("name", ["signsgd", "muon_exact"])
def test_started_inside_stays_inside(name):
    res = optimizer_sets.run(name, steps=800, lr=0.01, seeds=(0, 1))
    key = "spectral" if name.startswith("muon") else "linf"
    # (1 − ηλ)·r + η·s ≤ r: the bound is exact up to float32 round-off, and it binds.
    assert res[key] <= 1 + 1e-5
    assert res[key] > 0.95
    assert res["linf"] == max(res["linf_by_seed"]) and res["seeds"] == [0, 1]


def test_block_relative_norms_by_hand():
    w = np.ones((2, 2))  # ‖W‖₂ = 2, max|W| = 1
    params = {"W": w, "a": np.array([0.5, -2.0])}
    muon = optimizer_sets.block_relative_norms("muon", params, 0.5)
    assert muon["W"] == pytest.approx(1.0) and muon["a"] == pytest.approx(1.0)
    adamw = optimizer_sets.block_relative_norms("adamw", params, 0.5)
    assert adamw["W"] == pytest.approx(0.5) and adamw["a"] == pytest.approx(1.0)


def test_adamw_counterexample_is_a_finding():
    """The finding recorded in theory.optimizer_sets: AdamW's direction is not bounded by 1, and a
    long constant-rate run ends well outside the 1 + 2e-2 that THEORY.md §F.2 once allowed; the
    claim reports it as a FINDING with the run's number in its statement."""
    import jax

    with jax.enable_x64(True):
        res = optimizer_sets.claim_optimizer_ball(names=("adamw",), seeds=(2,))
    assert res.status == FINDING and not res.passed and not res.failed
    assert res.numbers["adamw_linf_rel"] > 1.1 and res.numbers["adamw_linf_rel_seed2"] == res.numbers["adamw_linf_rel"]
    assert f"λ‖θ‖∞ = {res.numbers['adamw_linf_rel']:.3f} (seeds 2;" in res.statement
    assert res.line().startswith("FINDING F.2: adamw is not ball-invariant")


def _canned(linf: dict):
    """A stand-in for :func:`optimizer_sets.run`: per optimizer, the final ℓ∞ relative norm per seed."""
    def run(name, *, steps, seeds):
        by_seed = [linf[name]] * len(seeds)
        return {"spectral": None, "linf": max(by_seed), "linf_by_seed": by_seed, "seeds": list(seeds), "final_loss": 0.0,
                "eta_lambda": 0.006}

    return run


@pytest.mark.parametrize("linf, names, status", [
    ({"adamw": 1.255}, ("adamw",), FINDING),  # outside by more than 2e-2: the counterexample
    ({"adamw": 1.01}, ("adamw",), PASS),  # no counterexample on this run
    ({"adamw": 1.255, "lion": 1.0}, ("lion", "adamw"), FINDING),  # the claimed bound holds, AdamW's finding stands
    ({"adamw": 1.255, "lion": 1.5}, ("lion", "adamw"), FAIL),  # a claimed bound fails: FAIL, not FINDING
    ({"lion": 1.5}, ("lion",), FAIL),
])
def test_claim_status(monkeypatch, linf, names, status):
    monkeypatch.setattr(optimizer_sets, "run", _canned(linf))
    res = optimizer_sets.claim_optimizer_ball(names=names)
    assert res.status == status and res.passed == (status == PASS) and res.failed == (status == FAIL)
    assert res.to_dict()["status"] == status
    if status == FINDING:
        assert "adamw is not ball-invariant" in res.statement and "1.255, 1.255, 1.255 (seeds 0, 1, 2;" in res.statement


def test_claim_result_status():
    assert ClaimResult("F.0", "s", True, {}, 0.0).status == PASS
    assert ClaimResult("F.0", "s", False, {}, 0.0).status == FAIL
    finding = ClaimResult.finding("F.0", "s", {"x": 1.5}, 0.0)
    assert finding.status == FINDING and not finding.passed and finding.line().startswith("FINDING F.0: s (x=1.5")
    for passed, status in ((True, FINDING), (False, PASS), (True, "MAYBE")):
        with pytest.raises(ValueError, match="status"):
            ClaimResult("F.0", "s", passed, {}, 0.0, status)


def test_verify_reports_adamw_as_its_own_row():
    from theory import verify

    rows = [kw for item, _, fn, kw in verify.CLAIMS if fn == "claim_optimizer_ball"]
    assert rows == [{}, {"names": ("adamw",)}]
    assert "adamw" not in optimizer_sets.claim_optimizer_ball.__defaults__[0]
    assert set(optimizer_sets.FINDINGS) == {"adamw"} and not set(optimizer_sets.FINDINGS) & set(optimizer_sets.TOLERANCES)
