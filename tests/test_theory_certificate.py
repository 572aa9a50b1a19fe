"""THEORY.md §E barrier certificate (§F.8): g_C against scipy, the per-cell bound against dense
sampling, separation on hand-made periodic grids and brute force, the path bounds, widths 3/4."""

import collections

import numpy as np
import pytest
import scipy.optimize

from theory import certificate as ce
from theory import example as ex
from theory import example_report as er
from theory import wide_paths as wp

THETA = np.deg2rad(ex.ANGLES_DEG)
Y = np.asarray(ex.TARGETS)


@pytest.fixture(scope="module")
def zero():
    return ex.zero_loss_configurations()


@pytest.fixture(scope="module")
def cert64(zero):
    return ce.certify(64, zero=zero)


def test_covering_c_bounds_both_orbits():
    """|c_j| ≤ C at the extreme networks of each set: box (|a| = r_A, w = r_A(±1, ±1)),
    Muon-full (a = r_M e_1, W = r_M e_1 u ᵀ) and hybrid."""
    c = ce.covering_c()
    assert ex.LAM_ADAMW**-1 * np.sqrt(2) * ex.LAM_ADAMW**-1 <= c
    assert ex.LAM_MUON_FULL**-2 == pytest.approx(c)
    assert ex.LAM_HYBRID**-2 <= c


def test_g_box_against_scipy():
    rng = np.random.default_rng(0)
    phi = rng.uniform(-np.pi, np.pi, size=(25, 2))
    phi[0, 1] = phi[0, 0]  # equal angles: singular normal equations
    for c_max in (0.3, 1.6):
        g, c = map(np.asarray, ce.g_box(phi, c_max, THETA, Y))
        for k in range(len(phi)):
            fun = lambda v, p=phi[k]: ex.loss(ex.quotient_forward(v, p, THETA), Y)  # noqa: E731
            assert np.all(np.abs(c[k]) <= c_max + 1e-15)
            assert fun(c[k]) == pytest.approx(g[k], rel=1e-12, abs=1e-16)
            starts = [np.zeros(2), rng.uniform(-c_max, c_max, 2), np.array([c_max, -c_max])]
            brute = min(scipy.optimize.minimize(fun, s, bounds=[(-c_max, c_max)] * 2, method="L-BFGS-B",
                                                options={"ftol": 1e-15, "gtol": 1e-12}).fun for s in starts)
            grid = np.linspace(-c_max, c_max, 81)
            cc = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
            brute = min(brute, ex.loss(ex.quotient_forward(cc, np.broadcast_to(phi[k], cc.shape), THETA), Y).min())
            assert g[k] <= brute + 1e-12  # exact minimum: no brute-force point is lower
            assert brute <= g[k] + 1e-7  # and scipy finds it


def test_lower_bound_below_dense_cell_minimum():
    n_grid, c_max = 64, ce.covering_c()
    g, _ = ce.g_grid(n_grid, c_max)
    lb = ce.lower_bound(g, c_max, len(Y))
    rng = np.random.default_rng(1)
    h = np.pi / n_grid
    cells = rng.integers(0, n_grid, size=(40, 2))
    sub = np.linspace(-h, h, 15)
    for i, j in cells:
        p1, p2 = np.meshgrid(ce.centres(n_grid)[i] + sub, ce.centres(n_grid)[j] + sub)
        dense = np.asarray(ce.g_box(np.stack([p1.ravel(), p2.ravel()], -1), c_max, THETA, Y)[0])
        assert lb[i, j] <= dense.min() + 1e-15
    assert (lb <= g).all() and lb.max() > 0


def test_random_cell_check_finds_no_violation():
    g, _ = ce.g_grid(32, ce.covering_c())
    out = ce.random_cell_check(g, ce.covering_c(), n_samples=3000, seed=3)
    assert out["violations"] == 0 and out["min_slack"] >= 0


def _brute_separation(values, cells_a, cells_b):
    """Smallest threshold v at which a BFS over {values ≤ v} (periodic, 8 neighbours) joins A and B."""
    n = values.shape[0]
    for v in np.unique(values):
        seen = {c for c in cells_a if values[c] <= v}
        queue = collections.deque(seen)
        while queue:
            i, j = queue.popleft()
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    nb = ((i + di) % n, (j + dj) % n)
                    if nb not in seen and values[nb] <= v:
                        seen.add(nb)
                        queue.append(nb)
        if seen & set(cells_b):
            return float(v)
    raise AssertionError("never joined")


def test_separation_toy_grid_with_wrap_around():
    """A wall (9) at column 3 separates A (col 1) from B (col 5) inside the square; the wall at
    column 7 has a gap of height 2, reachable from A only by wrapping over column 0 → 7."""
    v = np.ones((8, 8))
    v[:, 3] = 9.0
    v[:, 7] = 9.0
    v[6, 7] = 2.0
    a, b = [(3, 1)], [(3, 5)]
    assert ce.separation_level(v, a, b) == 2.0
    val, path = ce.minimax_path(v, a, b)
    assert val == 2.0 and (6, 7) in path
    v[6, 7] = 9.0  # close the gap: now a wall must be crossed
    assert ce.separation_level(v, a, b) == 9.0


def test_separation_diagonal_step_counts():
    """Low cells touching only at corners are connected (8-connectivity); a row wall wraps too."""
    v = np.full((6, 6), 5.0)
    for k in range(6):
        v[k, k] = 0.0
    assert ce.separation_level(v, [(0, 0)], [(4, 4)]) == 0.0
    assert ce.separation_level(v, [(5, 5)], [(0, 0)]) == 0.0  # across the corner of the torus


def test_separation_and_minimax_against_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(4, 8))
        v = rng.integers(0, 6, size=(n, n)).astype(float)
        a = [tuple(int(q) for q in rng.integers(0, n, 2))]
        b = [tuple(int(q) for q in rng.integers(0, n, 2)) for _ in range(2)]
        expect = _brute_separation(v, a, b)
        assert ce.separation_level(v, a, b) == expect
        val, path = ce.minimax_path(v, a, b)
        assert val == expect == max(v[c] for c in path)
        assert path[0] in a and path[-1] in b
        for (i1, j1), (i2, j2) in zip(path[:-1], path[1:]):
            assert min((i1 - i2) % n, (i2 - i1) % n) <= 1 and min((j1 - j2) % n, (j2 - j1) % n) <= 1


def test_certificate_bounds_are_ordered(cert64, zero):
    r = cert64
    assert 0 <= r["lower"] <= r["grid_minimax"] <= r["upper"]
    assert r["path_max_abs_c"] <= r["c_max"]
    # endpoints are the two zero-loss configurations exactly (up to the neuron order)
    for end, conf in ((0, r["configs"][0]), (-1, r["configs"][1])):
        got = {k: r["params_T"][k][end] for k in ("W", "a")}
        assert any(np.array_equal(got["W"], conf["params"]["W"][perm]) and np.array_equal(got["a"], conf["params"]["a"][perm])
                   for perm in ([0, 1], [1, 0]))
    step = np.abs(np.diff(r["params_T"]["W"], axis=0)).max()
    assert step < 0.1  # a continuous path sampled densely
    assert r["loss_T"][0] <= 1e-30 and r["loss_T"][-1] <= 1e-30


def test_random_paths_stay_above_the_certified_bound(zero):
    """Random polygonal quotient paths with |c| ≤ C between the box and Muon-full zero-loss
    points (either neuron order), evaluated densely, never have a max loss below the bound."""
    r = ce.certify(256, zero=zero)
    assert r["lower"] > 0
    a, b = r["configs"]
    rng = np.random.default_rng(5)
    c_max = r["c_max"]
    for _ in range(40):
        k = int(rng.integers(1, 4))
        perm = [1, 0] if rng.random() < 0.5 else [0, 1]
        nodes_c = [a["c"]] + [rng.uniform(-c_max, c_max, 2) for _ in range(k)] + [b["c"][perm]]
        nodes_p = [a["phi"]] + [rng.uniform(-np.pi, np.pi, 2) for _ in range(k)] + [b["phi"][perm]]
        s = np.linspace(0, 1, 200)[:, None]
        cs = np.concatenate([c0 + s * (c1 - c0) for c0, c1 in zip(nodes_c[:-1], nodes_c[1:])])
        ps = np.concatenate([p0 + s * np.mod(p1 - p0 + np.pi, 2 * np.pi) - s * np.pi for p0, p1 in zip(nodes_p[:-1], nodes_p[1:])])
        peak = ex.loss(ex.quotient_forward(cs, ps, THETA), Y).max()
        assert peak >= r["lower"]
    assert r["upper"] >= r["lower"]
    # paths that shrink a neuron to zero (w_j = 0, c_j = 0), jump its angle there and regrow it
    for perm in ([0, 1], [1, 0]):
        cb, pb = b["c"][perm], b["phi"][perm]
        s = np.linspace(0, 1, 400)[:, None]
        c1, p1 = a["c"] * (1 - s * np.array([1, 0])), np.broadcast_to(a["phi"], (400, 2))  # c_1 → 0
        c2, p2 = np.stack([s[:, 0] * cb[0], np.full(400, a["c"][1])], 1), np.broadcast_to([pb[0], a["phi"][1]], (400, 2))
        c3 = np.stack([np.full(400, cb[0]), (1 - s[:, 0]) * a["c"][1]], 1)  # c_2 → 0
        c4, p4 = np.stack([np.full(400, cb[0]), s[:, 0] * cb[1]], 1), np.broadcast_to(pb, (400, 2))
        cs, ps = np.concatenate([c1, c2, c3, c4]), np.concatenate([p1, p2, p2, p4])
        assert ex.loss(ex.quotient_forward(cs, ps, THETA), Y).max() >= r["lower"]


@pytest.mark.parametrize("width", [3, 4])
def test_wide_paths_have_no_barrier(zero, width):
    reg = ex.regions(zero["configs"])
    a = next(k for k, q in zip(zero["configs"], reg) if q["in_box"])
    b = next(k for k, q in zip(zero["configs"], reg) if q["in_muon_full"])
    out = wp.wide_path(a, b, width)
    assert out["barrier"] <= 1e-12 and out["loss_T"].max() <= 1e-12
    ends = [wp.embed(a["params"], s, width) for s in ((0, 1), (1, 0))]
    got0 = {k: out["params_T"][k][0] for k in ("W", "a")}
    assert any(np.array_equal(got0["W"], e["W"]) and np.array_equal(got0["a"], e["a"]) for e in ends)
    slots_b = ((2, 3), (3, 2)) if width == 4 else ((1, 2), (2, 1))
    got1 = {k: out["params_T"][k][-1] for k in ("W", "a")}
    assert any(np.allclose(got1["W"], wp.embed(b["params"], s, width)["W"], atol=0) for s in slots_b)
    assert np.abs(np.diff(out["params_T"]["W"], axis=0)).max() < 0.05
    assert out["max_abs_c"] <= ce.covering_c()


def test_claim_small_width_example():
    res = er.claim_small_width_example(n_grids=(256,))
    assert res.passed, res.line()
    assert res.numbers["lower_N256"] > 0


def test_example_summary_is_plain_json():
    import json

    res = er.example_results(n_grids=(64,), widths=(2, 3), optimizers=("adamw",), seeds=(0,), steps=20)
    out = json.loads(json.dumps(er.example_summary(res)))
    assert out["bounds"][0]["n_grid"] == 64 and out["bounds"][0]["lower"] <= out["bounds"][0]["upper"]
    assert set(out["barrier_by_width"]) == {"2", "3"} and out["barrier_by_width"]["3"]["upper"] <= 1e-12
    assert sum(out["runs"]["adamw"]["nearest_counts"].values()) == 1
    assert len(out["configs"]) == len(res["zero"]["configs"])
