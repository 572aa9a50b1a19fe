"""measure_pairs: the numbers along a path against a direct computation; refinement; strategies."""

import jax
import numpy as np
import pytest

from connect import barrier, optimizers
from connect.models import relu
from connect.twolayer import data, losses, measure

DATA = data.make(data.DataConfig(n_train=16, n_test=8, d_in=3))


def _pairs(width=5, n=2):
    a = [relu.init(jax.random.key(2 * i), relu.ReluConfig(3, width)) for i in range(n)]
    b = [relu.init(jax.random.key(2 * i + 1), relu.ReluConfig(3, width)) for i in range(n)]
    stack = lambda ps: jax.tree.map(lambda *x: np.stack(x), *ps)
    return stack(a), stack(b), a, b


@pytest.fixture(scope="module")
def measured():
    a_P, b_P, a, b = _pairs()
    opt = optimizers.make("adamw", 0.01, 0.1)
    settings = measure.PathSettings(("linear", "polychain"), steps=5, t_points=5, refine=3)
    return a, b, measure.measure_pairs(a_P, b_P, DATA, opt, 0.1, jax.random.key(0), settings, "map"), settings, (a_P, b_P, opt)


def test_linear_curve_matches_direct_forward_pass(measured):
    a, b, out, _, _ = measured
    lin = out["linear"]
    for p in range(len(a)):
        for t, loss in zip(lin["t"][p], lin["loss_train"][p]):
            theta = {k: (1 - t) * a[p][k] + t * b[p][k] for k in a[p]}
            direct = float(losses.mse(relu.apply(theta, DATA.x_train), DATA.y_train))
            np.testing.assert_allclose(loss, direct, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(lin["singular_values"][p][0], np.linalg.svd(np.asarray(a[p]["W"]), compute_uv=False), rtol=1e-5)
        np.testing.assert_allclose(lin["linf_rel"][p][-1], 0.1 * max(np.abs(np.asarray(x)).max() for x in b[p].values()), rtol=1e-6)


def test_refinement_adds_sorted_points_and_never_lowers_the_barrier(measured):
    _, _, out, settings, _ = measured
    for curves in out.values():
        ts = curves["t"]
        assert ts.shape[1] == settings.t_points + settings.refine
        assert np.all(np.diff(ts, axis=1) >= 0) and np.all(ts[:, 0] == 0) and np.all(ts[:, -1] == 1)
        for p in range(ts.shape[0]):
            on_grid = np.isclose(ts[p][:, None], barrier.grid(settings.t_points)[None]).any(1)
            assert on_grid.sum() >= settings.t_points
            fine = barrier.barrier(ts[p], curves["loss_train"][p])
            grid_only = barrier.barrier(ts[p][on_grid], curves["loss_train"][p][on_grid])
            assert fine >= grid_only


def test_vmap_and_map_agree(measured):
    _, _, out, settings, (a_P, b_P, opt) = measured
    other = measure.measure_pairs(a_P, b_P, DATA, opt, 0.1, jax.random.key(0), settings, "vmap")
    for kind in out:
        np.testing.assert_allclose(other[kind]["loss_train"], out[kind]["loss_train"], rtol=1e-4, atol=1e-6)


def test_loop_strategy_is_refused_inside_jit(measured):
    _, _, _, settings, (a_P, b_P, opt) = measured
    with pytest.raises(ValueError, match="strategy"):
        measure.measure_pairs(a_P, b_P, DATA, opt, 0.1, jax.random.key(0), settings, "loop")
