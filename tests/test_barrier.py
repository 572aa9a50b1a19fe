"""Barriers: hand-computed values, a path to itself has barrier exactly 0, and agreement
with an independent numpy computation of the two-layer network's loss along the line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import barrier, paths
from connect.models import relu
from connect.twolayer import losses

D, M, N = 4, 8, 32


def _net(seed: int) -> dict:
    k_w, k_b, k_a = jax.random.split(jax.random.key(seed), 3)
    return {"W": jax.random.normal(k_w, (M, D)), "b": 0.3 * jax.random.normal(k_b, (M,)), "a": jax.random.normal(k_a, (M,))}


def _data(seed: int):
    k_x, k_y = jax.random.split(jax.random.key(seed + 100))
    return jax.random.normal(k_x, (N, D)), jax.random.normal(k_y, (N,))


@jax.jit
def _losses_along(nodes, x, y, ts):
    return jax.vmap(lambda t: losses.mse(relu.apply(paths.point("linear", nodes, t), x), y))(ts)


def _numpy_loss(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    """½·mean (relu(X Wᵀ + b) a − y)², in float64 numpy."""
    w, b, a = (np.asarray(params[k], np.float64) for k in ("W", "b", "a"))
    h = np.maximum(np.asarray(x, np.float64) @ w.T + b[None, :], 0.0)
    return 0.5 * float(np.mean((h @ a - np.asarray(y, np.float64)) ** 2))


def _numpy_barriers(ts, values):
    ts, values = np.asarray(ts, np.float64), np.asarray(values, np.float64)
    chord = np.array([(1 - t) * values[0] + t * values[-1] for t in ts])
    return max(v - c for v, c in zip(values, chord)), max(values) - max(values[0], values[-1])


def test_hand_computed_examples():
    ts = [0.0, 0.5, 1.0]
    assert barrier.barrier(ts, [1.0, 3.0, 2.0]) == pytest.approx(1.5)  # 3 − (1 + 2)/2
    assert barrier.max_barrier(ts, [1.0, 3.0, 2.0]) == pytest.approx(1.0)  # 3 − max(1, 2)
    # a path below its chord: barrier 0 (attained at the endpoints), max_barrier 0
    assert barrier.barrier(ts, [2.0, 0.5, 1.0]) == 0.0
    assert barrier.max_barrier(ts, [2.0, 0.5, 1.0]) == 0.0
    # above the chord but below the worse endpoint: only the first is positive
    assert barrier.barrier(ts, [0.0, 1.5, 2.0]) == pytest.approx(0.5)
    assert barrier.max_barrier(ts, [0.0, 1.5, 2.0]) == 0.0
    # the peak of the chord-relative curve need not be the peak of the loss
    ts5 = [0.0, 0.25, 0.5, 0.75, 1.0]
    vals5 = [0.0, 1.0, 1.2, 3.0, 4.0]  # chord 0, 1, 2, 3, 4
    assert barrier.barrier(ts5, vals5) == pytest.approx(0.0)
    assert barrier.barrier(ts5, [0.0, 2.0, 1.2, 3.5, 4.0]) == pytest.approx(1.0)  # at t = 0.25
    assert barrier.max_barrier(ts5, [0.0, 2.0, 1.2, 5.5, 4.0]) == pytest.approx(1.5)


def test_unsorted_grid_gives_the_same_barrier():
    ts, vals = [0.0, 0.5, 1.0, 0.25, 0.75], [1.0, 3.0, 2.0, 2.5, 2.0]
    order = np.argsort(ts)
    assert barrier.barrier(ts, vals) == barrier.barrier(np.asarray(ts)[order], np.asarray(vals)[order])
    assert barrier.barrier(ts, vals) == pytest.approx(1.5)
    assert barrier.max_barrier(ts, vals) == pytest.approx(1.0)


def test_grid():
    g = barrier.grid()
    assert g.dtype == np.float32 and g.shape == (11,)
    assert g[0] == 0.0 and g[-1] == 1.0
    np.testing.assert_allclose(g, np.arange(11) / 10, atol=1e-7)
    with pytest.raises(ValueError):
        barrier.grid(1)


def test_grid_must_contain_both_endpoints():
    with pytest.raises(ValueError, match="endpoints"):
        barrier.barrier([0.0, 0.5, 0.9], [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="endpoints"):
        barrier.barrier([0.1, 0.5, 1.0], [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="endpoints"):
        barrier.max_barrier([0.1, 0.5, 1.0], [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="endpoints"):
        barrier.chord([0.0, 0.5], [1.0, 2.0])
    with pytest.raises(ValueError, match="endpoints"):
        barrier.refine([0.0, 0.5, 0.9], [1.0, 2.0, 1.0], 3)
    with pytest.raises(ValueError, match="same length"):
        barrier.barrier([0.0, 0.5, 1.0], [1.0, 2.0])


def test_barrier_of_a_checkpoint_with_itself_is_exactly_zero():
    ts = jnp.asarray(barrier.grid(11))
    for seed in range(5):
        theta = _net(seed)
        nodes = paths.stack_nodes(theta, paths.init_free(theta, theta, 0), theta)
        x, y = _data(seed)
        vals = np.asarray(_losses_along(nodes, x, y, ts))
        assert vals[0] > 0
        assert barrier.barrier(ts, vals) == 0.0
        assert barrier.max_barrier(ts, vals) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_against_numpy_forward_pass(seed):
    # B: A with its hidden units reversed (same function, far in weight space); targets are
    # A's outputs plus noise, so the endpoints fit well and the line between them does not.
    theta_a = _net(seed)
    theta_b = {k: v[::-1] for k, v in theta_a.items()}
    x, noise = _data(seed)
    y = relu.apply(theta_a, x) + 0.1 * noise
    ts = barrier.grid(11)
    nodes = paths.stack_nodes(theta_a, paths.init_free(theta_a, theta_b, 0), theta_b)
    vals = np.asarray(_losses_along(nodes, x, y, jnp.asarray(ts)))

    ref = []
    for t in ts.astype(np.float64):
        theta_t = {k: (1 - t) * np.asarray(theta_a[k], np.float64) + t * np.asarray(theta_b[k], np.float64) for k in theta_a}
        ref.append(_numpy_loss(theta_t, x, y))
    np.testing.assert_allclose(vals, ref, rtol=1e-5)

    want_barrier, want_max = _numpy_barriers(ts, ref)
    assert want_barrier > 0.1  # two random nets: a real barrier, so the comparison means something
    scale = max(abs(r) for r in ref)
    assert barrier.barrier(ts, vals) == pytest.approx(want_barrier, abs=1e-5 * scale)
    assert barrier.max_barrier(ts, vals) == pytest.approx(want_max, abs=1e-5 * scale)
    np.testing.assert_allclose(barrier.chord(ts, vals), [(1 - t) * vals[0] + t * vals[-1] for t in ts.astype(np.float64)], rtol=1e-12)


def test_refine_points_lie_around_the_peak():
    ts = barrier.grid(11)
    vals = np.sin(np.pi * ts) + 0.5 * np.exp(-((ts - 0.62) ** 2) / 0.001)  # chord 0; peak at t = 0.6
    assert int(np.argmax(vals)) == 6
    extra = barrier.refine(ts, vals, 5)
    assert extra.shape == (5,)
    assert np.all(extra > ts[5]) and np.all(extra < ts[7])  # strictly inside (0.5, 0.7)
    assert np.all(np.diff(extra) > 0)
    np.testing.assert_allclose(extra, np.linspace(0.5, 0.7, 7)[1:-1], atol=1e-6)
    # the peak relative to the chord, not the largest loss, decides
    rising = ts * 10.0
    rising[2] += 0.5  # chord is 10 t: only t = 0.2 is above it
    extra = barrier.refine(ts, rising, 3)
    assert np.all(extra > ts[1]) and np.all(extra < ts[3])
    # at an endpoint the interval is one-sided
    extra = barrier.refine(ts, np.where(ts == 0.0, 1.0, 0.0) - 1.0 * ts, 2)
    assert np.all(extra > 0.0) and np.all(extra < ts[1])
