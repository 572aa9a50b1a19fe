"""``theory.membership`` on a hand-built run directory with known norms."""

import json
import os

import numpy as np
import pytest

from connect import checkpoints, config
from connect.errors import UserError
from connect.studies.width_sweep.config import WidthSweepConfig
from theory import membership


@pytest.fixture()
def run_dir(tmp_path):
    cfg = config.from_dict({"optimizers": ["adamw", "muon", "sgd"], "weight_decay": 0.5}, cls=WidthSweepConfig)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg.to_dict(), f)
    # W = 1·ones(2, 2): max|W| = 1, ‖W‖₂ = 2; a = (1, 1): inside the box of radius 2 (λ = 0.5),
    # and for Muon (s = 1, r_W = 2) exactly on the spectral sphere.
    ones = {"W": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32), "a": np.ones(2, np.float32)}
    # Scaling the first layer by 8 and the output by 1/8 keeps the function but leaves both sets.
    big = {"W": 8 * ones["W"], "b": ones["b"], "a": ones["a"] / 8}
    for name, p in (("w0002_adamw_s0", ones), ("w0002_muon_s0", big)):
        checkpoints.save_checkpoint(str(tmp_path / "checkpoints" / name), p, {"optimizer": name.split("_")[1], "seed": 0})
    return str(tmp_path)


def test_rows_match_hand_computed_norms(run_dir):
    rows = membership.analyse(run_dir)
    by = {(r["checkpoint"], r["set_of"]): r for r in rows}
    assert set(membership.run_sets(run_dir)) == {"adamw", "muon"}  # sgd has no set
    r = by[("w0002_adamw_s0", "adamw")]
    assert r["relative_norm"] == pytest.approx(0.5) and r["inside"]
    # orbit: λ·sqrt(max_j |a_j|·‖w_j‖∞) = 0.5
    assert r["orbit_relative"] == pytest.approx(0.5)
    r = by[("w0002_adamw_s0", "muon")]
    assert r["relative_norm"] == pytest.approx(1.0) and r["inside"]
    big = by[("w0002_muon_s0", "adamw")]
    assert big["relative_norm"] == pytest.approx(4.0) and not big["inside"]
    assert big["orbit_relative"] == pytest.approx(0.5) and big["orbit_inside"]  # a rescaling is inside
    # the hybrid orbit value is λ·sqrt(‖diag(a)W‖₂/s): the same network up to rescaling, same value
    assert by[("w0002_muon_s0", "muon")]["orbit_relative"] == pytest.approx(by[("w0002_adamw_s0", "muon")]["orbit_relative"])
    for name in ("constraint_sets.json", "constraint_sets.md"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 100
    summ = membership.summary(rows)
    assert {(s["optimizer"], s["set_of"]): s["inside"] for s in summ}[("muon", "adamw")] == 0.0


def test_muon_full_orbit_column(run_dir):
    pytest.importorskip("cvxpy")
    rows = [r for r in membership.analyse(run_dir, muon_full=True) if r["kind"] == "muon_full"]
    assert len(rows) == 2
    # parallel rows: ρ⁴ = λ⁴ (Σ_j |a_j|‖w_j‖)² / s² with s = 1 → ρ = 0.5·sqrt(2·√2)
    assert rows[0]["orbit_relative"] == pytest.approx(0.5 * np.sqrt(2 * np.sqrt(2)), rel=1e-5)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        membership.analyse(str(tmp_path))


def test_run_trained_with_muon_full(tmp_path):
    """A sweep that trains ``muon_full`` gets its orbit from the SDP (no closed form exists)."""
    pytest.importorskip("cvxpy")
    cfg = config.from_dict({"optimizers": ["muon_full"], "weight_decay": 0.5}, cls=WidthSweepConfig)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg.to_dict(), f)
    p = {"W": np.ones((2, 2), np.float32), "a": np.ones(2, np.float32)}
    checkpoints.save_checkpoint(str(tmp_path / "checkpoints" / "w0002_muon_full_s0"), p, {"optimizer": "muon_full", "seed": 0})
    (row,) = membership.analyse(str(tmp_path))
    assert row["kind"] == "muon_full"
    assert row["orbit_relative"] == pytest.approx(0.5 * np.sqrt(2 * np.sqrt(2)), rel=1e-5)
