"""theory.staircase: trained networks never beat the convex optimum, CONNECT's paths start and end
exactly at the checkpoints and never rise above the worse endpoint (hence never above the straight
line), the box connects whenever the reduced supports fit, the linear barrier agrees with a numpy
recomputation, and the figure is a real PNG."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from connect.errors import UserError
from theory import connectivity
from theory import staircase as st

LAM = 1.0
WIDTHS = (2, 8)  # at 8, two AdamW pairs were INCONCLUSIVE under HiGHS default tolerances (see constructive.LP_OPTIONS)
TOL = 1e-9


@pytest.fixture(scope="module")
def result():
    x, y = st.random_data(4, 0)
    return st.staircase(x, y, WIDTHS, ("adamw", "muon"), lam=LAM, seeds=(0, 1, 2), steps=2000, tol=TOL)


def _loss(p, x, y):
    """½ mean (f − y)², f = relu(x Wᵀ) a, written out in numpy."""
    f = np.maximum(x @ p["W"].T, 0.0) @ p["a"]
    return 0.5 * np.mean((f - y) ** 2)


def _radii(kind: str, m: int, d: int) -> tuple[float, float]:
    """(r_W, r_a) of THEORY.md §B: box 1/λ on both; Muon-hybrid √max(1, m/d)/λ (spectral) and 1/λ."""
    return (math.sqrt(max(1.0, m / d)) / LAM if kind == "muon" else 1.0 / LAM), 1.0 / LAM


def test_trained_networks_inside_their_set_and_never_below_the_optimum(result):
    x, y = result.x_NxD, result.y_N
    for row in result.rows:
        m, kind = row["width"], row["constraint"]
        r_w, r_a = _radii(kind, m, x.shape[1])
        assert row["optimum_lower"] <= row["optimum_upper"] + 1e-9 <= row["zero_loss"] + 2e-9
        for p, reported in zip(result.networks[m, row["optimizer"]], row["trained_losses"]):
            # inside the set, checked from the definitions (not through ConstraintSet)
            if kind == "muon":
                assert np.linalg.norm(p["W"], 2) <= r_w * (1 + 1e-12)
            else:
                assert np.abs(p["W"]).max() <= r_w * (1 + 1e-12)
            assert np.abs(p["a"]).max() <= r_a * (1 + 1e-12)
            # so its ℓ∞ path norm is within the budget m r_W r_a of the lower program p_∞ (THEORY.md §C3)
            assert np.sum(np.abs(p["a"]) * np.abs(p["W"]).max(axis=1)) <= m * r_w * r_a * (1 + 1e-12)
            loss = _loss(p, x, y)
            assert abs(loss - reported) <= 1e-14
            assert loss >= row["optimum_lower"] - 1e-7
        assert row["never_below"]


def test_constructive_paths_start_and_end_exactly_at_the_checkpoints(result):
    n_paths = 0
    for (m, name, i, j), out in result.paths.items():
        if isinstance(out, connectivity.ConstructivePath):
            n_paths += 1
            for t, end in ((0.0, result.networks[m, name][i]), (1.0, result.networks[m, name][j])):
                got = out(t)
                assert all(np.array_equal(np.asarray(got[k]), end[k]) for k in ("W", "a"))
    assert n_paths >= 3


def test_connect_never_above_the_line_and_the_box_connects_when_supports_fit(result):
    for row in result.rows:
        for pair in row["pairs"]:
            fits = pair["k_a"] + pair["k_b"] <= row["width"]
            # §D: P1 + P3 leave at most n + ⌊τ/r²⌋ neurons (box and hybrid)
            assert pair["k_a"] <= pair["bound_a"] and pair["k_b"] <= pair["bound_b"]
            if pair["result"] == "path":
                assert fits
                # §D: every piece keeps ŷ or moves it linearly, so L ≤ max(L_A, L_B) along the path
                assert pair["path_max_barrier"] <= TOL
                assert pair["path_max_barrier"] <= pair["linear_max_barrier"] + TOL
                assert pair["path_max_relative_norm"] <= 1 + TOL
            else:
                assert pair["reason"]
                assert math.isnan(pair["path_max_barrier"])
                if row["constraint"] == "linf":  # §D: the box connects whenever k_A + k_B ≤ m
                    assert not fits, pair["reason"]
    wide = result.row(8, "adamw")
    assert wide["connected_fraction"] == 1.0
    assert min(p["linear_max_barrier"] for p in wide["pairs"]) > 1e-3  # the line has a clear barrier there


def test_linear_barrier_matches_a_numpy_recomputation(result):
    # connect.paths.weights computes (1 − t, t) in float32 even under x64, so the line's points are
    # off by ~1e-8 (e.g. 1.5e-8 in W at t = 0.3): the barriers agree to 1e-7, not to float64 round-off
    ts = np.linspace(0.0, 1.0, 101)
    x, y = result.x_NxD, result.y_N
    for row in result.rows:
        nets = result.networks[row["width"], row["optimizer"]]
        for pair in row["pairs"]:
            a, b = (nets[result.seeds.index(s)] for s in pair["seeds"])
            curve = np.array([_loss({k: (1 - t) * a[k] + t * b[k] for k in a}, x, y) for t in ts])
            assert abs(pair["linear_max_barrier"] - (curve.max() - max(curve[0], curve[-1]))) <= 1e-7
            chord = (1 - ts) * curve[0] + ts * curve[-1]
            assert abs(pair["linear_barrier"] - (curve - chord).max()) <= 1e-7


def test_weight_decay_staircase_width(result):
    wd, n = result.weight_decay, len(result.y_N)
    assert 1 <= wd["m_star"] <= wd["M_star"] <= n
    assert wd["staircase_width"] == min(wd["m_star"] + wd["M_star"], n + 1)
    assert all(r["above_staircase"] == (r["width"] >= wd["staircase_width"]) for r in result.rows)


def test_figure_is_a_png_and_the_result_is_strict_json(result, tmp_path):
    paths = st.staircase_figure(result, str(tmp_path))
    png = next(p for p in paths if p.endswith(".png"))
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    img = plt.imread(png)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 800
    with open(next(p for p in paths if p.endswith(".pdf")), "rb") as fh:
        assert fh.read(4) == b"%PDF"
    back = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(back["rows"]) == len(WIDTHS) * 2


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizers": ("sgd",)}, "has no ball"),
    ({"widths": (0, 2)}, "widths must be"),
    ({"seeds": (0,)}, "two seeds"),
    ({"lam": 0.0}, "λ must be"),
    ({"y": np.array([0.1, np.nan, 0.2, 0.3])}, "NaN"),
])
def test_bad_input_is_one_line(kwargs, match):
    x, y = st.random_data(4, 0)
    args = {"y": y, "widths": (2,), "optimizers": ("adamw",), "seeds": (0, 1), **kwargs}
    with pytest.raises(UserError, match=match):
        st.staircase(x, args.pop("y"), args.pop("widths"), **args)
