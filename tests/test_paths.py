"""Paths θ(t): exact endpoints, Bernstein and hat weights against independent formulas,
Bézier with its control point at the midpoint is the line, and learning bends a path
around a bump."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from connect import paths

# (kind, number of free nodes): linear; Bézier of degree 2 and 3; chains with 1 and 2 bends.
PATH_KINDS = [("linear", 0), ("bezier", 1), ("bezier", 2), ("polychain", 1), ("polychain", 2)]


def _params(seed: int) -> dict:
    k_w, k_b, k_a = jax.random.split(jax.random.key(seed), 3)
    return {
        "W": jax.random.normal(k_w, (4, 3)),
        "b": jax.random.normal(k_b, (4,)),
        "a": jax.random.normal(k_a, (4,)),
    }


def _random_nodes(n_free: int) -> dict:
    """Endpoints and free nodes, the free nodes off the straight line (a generic path)."""
    theta_a, theta_b = _params(0), _params(1)
    free = jax.tree.map(lambda x: 3.0 * jax.random.normal(jax.random.key(2), (n_free,) + x.shape), theta_a)
    return theta_a, theta_b, paths.stack_nodes(theta_a, free, theta_b)


def _assert_tree_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        assert np.array_equal(np.asarray(g), np.asarray(w)), "not bitwise equal"


# One compiled program per (kind, shapes); eager mode would compile every primitive per shape.
_point = jax.jit(paths.point, static_argnums=0)


def _identity(p):
    return p


_GRID = jnp.array([0.0, 0.1, 0.2, 0.3, 0.37, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])


def _at(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.mark.parametrize("kind,n_free", PATH_KINDS)
def test_endpoints_are_exact(kind, n_free):
    theta_a, theta_b, nodes = _random_nodes(n_free)
    assert jax.tree.leaves(nodes)[0].shape[0] == n_free + 2
    _assert_tree_equal(_point(kind, nodes, 0.0), theta_a)
    _assert_tree_equal(_point(kind, nodes, 1.0), theta_b)
    # The jitted, vmapped evaluation used for measurements reproduces them as well.
    pts = paths.evaluate(kind, _identity, nodes, _GRID)
    _assert_tree_equal(_at(pts, 0), theta_a)
    _assert_tree_equal(_at(pts, -1), theta_b)
    # ... and a generic interior point is neither endpoint.
    assert not np.allclose(pts["W"][4], theta_a["W"]) and not np.allclose(pts["W"][4], theta_b["W"])


def _check_fitted_endpoints(kind, nodes, theta_a, theta_b, n_free):
    assert jax.tree.leaves(nodes)[0].shape[0] == n_free + 2
    _assert_tree_equal(_at(nodes, 0), theta_a)
    _assert_tree_equal(_at(nodes, -1), theta_b)
    _assert_tree_equal(_point(kind, nodes, 0.0), theta_a)
    _assert_tree_equal(_point(kind, nodes, 1.0), theta_b)
    # the free nodes did move off their initial straight-line positions
    assert not np.allclose(nodes["x"][1:-1], paths.init_free(theta_a, theta_b, n_free)["x"])


@pytest.mark.parametrize("kind,n_free", [("bezier", 2), ("polychain", 2)])
def test_endpoints_are_exact_after_fit(kind, n_free):
    """Two free nodes here; one free node is checked after the longer fit of test_fit_goes_around_a_bump."""
    theta_a, theta_b = {"x": jnp.array([-1.0, 0.3])}, {"x": jnp.array([1.0, -0.7])}
    nodes, obj = paths.fit(kind, theta_a, theta_b, _bump_loss, optax.adam(0.1), jax.random.key(0), n_free=n_free, steps=5)
    assert obj.shape == (5,)
    _check_fitted_endpoints(kind, nodes, theta_a, theta_b, n_free)


def test_path_from_a_point_to_itself_is_constant_exactly():
    theta = _params(3)
    for kind, n_free in PATH_KINDS:
        nodes = paths.stack_nodes(theta, paths.init_free(theta, theta, n_free), theta)
        pts = paths.evaluate(kind, _identity, nodes, _GRID)
        for i in range(len(_GRID)):
            _assert_tree_equal(_at(pts, i), theta)


def test_quadratic_bezier_with_midpoint_control_is_the_line():
    theta_a, theta_b = _params(0), _params(1)
    mid = jax.tree.map(lambda a, b: (0.5 * (a + b))[None], theta_a, theta_b)
    bez = paths.stack_nodes(theta_a, mid, theta_b)
    line = paths.stack_nodes(theta_a, paths.init_free(theta_a, theta_b, 0), theta_b)
    for t in np.linspace(0.0, 1.0, 9):
        got, want = _point("bezier", bez, t), _point("linear", line, t)
        for k in theta_a:
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6)
        # and the line is (1 − t) θ_A + t θ_B, computed independently in float64
        for k in theta_a:
            ref = (1 - t) * np.asarray(theta_a[k], np.float64) + t * np.asarray(theta_b[k], np.float64)
            np.testing.assert_allclose(want[k], ref, rtol=0, atol=1e-6)


def test_init_free_lies_on_the_line():
    theta_a, theta_b = {"x": jnp.array([0.0, 2.0])}, {"x": jnp.array([3.0, -1.0])}
    free = paths.init_free(theta_a, theta_b, 2)["x"]
    np.testing.assert_allclose(free, [[1.0, 1.0], [2.0, 0.0]], atol=1e-6)
    assert paths.init_free(theta_a, theta_b, 0)["x"].shape == (0, 2)


@pytest.mark.parametrize("n_nodes", [2, 3, 4, 6])
def test_bernstein_weights(n_nodes):
    deg = n_nodes - 1
    for t in np.linspace(0.0, 1.0, 13):
        want = np.array([math.comb(deg, k) * t**k * (1 - t) ** (deg - k) for k in range(n_nodes)])
        got = np.asarray(paths.weights("bezier", n_nodes, t))
        assert got.shape == (n_nodes,)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_nodes", [2, 3, 4, 5])
def test_polychain_weights_are_numpy_interp(n_nodes):
    knots = np.linspace(0.0, 1.0, n_nodes)
    for t in np.linspace(0.0, 1.0, 17):
        want = np.array([np.interp(t, knots, np.eye(n_nodes)[k]) for k in range(n_nodes)])
        got = np.asarray(paths.weights("polychain", n_nodes, t))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_weights_sum_to_one_and_are_nonnegative():
    for kind, n_nodes in [("linear", 2), ("bezier", 3), ("bezier", 5), ("polychain", 3), ("polychain", 4)]:
        for t in np.linspace(0.0, 1.0, 21):
            w = np.asarray(paths.weights(kind, n_nodes, t))
            assert abs(w.sum() - 1.0) < 1e-6
            assert (w >= 0).all()


def test_weights_at_endpoints_are_exactly_one_hot():
    for kind, n_nodes in [("linear", 2), ("bezier", 3), ("bezier", 4), ("polychain", 3), ("polychain", 4)]:
        assert np.asarray(paths.weights(kind, n_nodes, 0.0)).tolist() == [1.0] + [0.0] * (n_nodes - 1)
        assert np.asarray(paths.weights(kind, n_nodes, 1.0)).tolist() == [0.0] * (n_nodes - 1) + [1.0]


def test_bad_kinds_raise():
    with pytest.raises(ValueError, match="unknown path kind"):
        paths.weights("spline", 3, 0.5)
    with pytest.raises(ValueError, match="2 nodes"):
        paths.weights("linear", 3, 0.5)


def test_n_free_nodes():
    assert paths.n_free_nodes("linear", 0) == 0
    assert paths.n_free_nodes("bezier", 3) == 2
    assert paths.n_free_nodes("polychain", 1) == 1


# A bump of height 1 just off the straight line between A and B: the line crosses it,
# a learned path can go around.
_BUMP = jnp.array([0.0, 0.15])


def _bump_loss(p):
    return jnp.exp(-jnp.sum((p["x"] - _BUMP) ** 2) / 0.3)


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_fit_goes_around_a_bump(kind):
    theta_a, theta_b = {"x": jnp.array([-1.5, 0.0])}, {"x": jnp.array([1.5, 0.0])}
    ts = jnp.linspace(0.0, 1.0, 101)
    line = paths.stack_nodes(theta_a, paths.init_free(theta_a, theta_b, 0), theta_b)
    linear_max = float(jnp.max(paths.evaluate("linear", _bump_loss, line, ts)))
    assert linear_max > 0.9

    nodes, obj = paths.fit(kind, theta_a, theta_b, _bump_loss, optax.adam(0.05), jax.random.key(1), n_free=1, steps=300)
    _check_fitted_endpoints(kind, nodes, theta_a, theta_b, 1)
    learned = paths.evaluate(kind, _bump_loss, nodes, ts)
    assert float(jnp.max(learned)) < 0.5 * linear_max
    assert float(jnp.mean(learned)) < float(jnp.mean(paths.evaluate("linear", _bump_loss, line, ts)))
    # the sampled objective went down
    assert float(jnp.mean(obj[-30:])) < 0.5 * float(jnp.mean(obj[:30]))


def test_fit_on_minibatches_scanned_equals_host_batches_and_full_data():
    """A loss that reads its bump centre from the batch: stacked batches (scanned), the same batches from a
    host function (jitted steps in a loop), and the full-data loss with that centre fixed agree."""
    theta_a, theta_b = {"x": jnp.array([-1.5, 0.0])}, {"x": jnp.array([1.5, 0.0])}
    centres = jnp.tile(_BUMP[None], (40, 1))
    loss = lambda p, c: jnp.exp(-jnp.sum((p["x"] - c) ** 2) / 0.3)
    kw = dict(n_free=1, steps=40, t_per_step=3)
    scanned, obj_s = paths.fit("polychain", theta_a, theta_b, loss, optax.adam(0.05), jax.random.key(4), batches=centres, **kw)
    host, obj_h = paths.fit("polychain", theta_a, theta_b, loss, optax.adam(0.05), jax.random.key(4),
                            batch_fn=lambda k: centres[k], **kw)
    full, obj_f = paths.fit("polychain", theta_a, theta_b, _bump_loss, optax.adam(0.05), jax.random.key(4), **kw)
    np.testing.assert_allclose(obj_s, obj_f, rtol=1e-6)
    np.testing.assert_allclose(obj_h, obj_f, rtol=1e-5)
    np.testing.assert_allclose(scanned["x"], full["x"], rtol=1e-6)
    np.testing.assert_allclose(host["x"], full["x"], rtol=1e-5, atol=1e-6)
    _check_fitted_endpoints("polychain", host, theta_a, theta_b, 1)
    # a batch that moves the bump changes the result: the batch is really used
    moved, _ = paths.fit("polychain", theta_a, theta_b, loss, optax.adam(0.05), jax.random.key(4), batches=-centres, **kw)
    assert not np.allclose(moved["x"], scanned["x"])


def test_fit_samples_t_from_the_given_distribution():
    seen = []
    theta_a, theta_b = {"x": jnp.zeros(1)}, {"x": jnp.ones(1)}

    def t_dist(key, n):
        ts = jax.random.uniform(key, (n,), minval=0.25, maxval=0.75)
        seen.append(ts)
        return ts

    # the default is U[0, 1] drawn exactly as before; a narrower uniform stays in its range
    ts_default = paths._t_sampler(paths.T_UNIFORM)(jax.random.key(0), 500)
    assert np.array_equal(ts_default, jax.random.uniform(jax.random.key(0), (500,)))
    ts_narrow = np.asarray(paths._t_sampler(("uniform", 0.4, 0.6))(jax.random.key(0), 500))
    assert ts_narrow.min() >= 0.4 and ts_narrow.max() < 0.6 and abs(ts_narrow.mean() - 0.5) < 0.01
    paths.fit("polychain", theta_a, theta_b, lambda p: jnp.sum(p["x"] ** 2), optax.sgd(0.1), jax.random.key(0), steps=3,
              t_per_step=5, t_dist=t_dist)
    assert len(seen) == 1 and seen[0].shape == (5,)  # traced once inside the scan


def test_float64_paths_are_not_rounded_to_float32():
    """Under x64 the weights keep t's precision: θ(0.3) = 0.7 θ_A + 0.3 θ_B to float64 round-off."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
        nodes = {"W": jnp.stack([jnp.asarray(a), jnp.asarray(b)])}
        for kind in paths.KINDS:
            w = paths.point(kind, nodes, 0.3)["W"]
            assert w.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(w), 0.7 * a + 0.3 * b, rtol=0, atol=1e-15)
        f32 = {"W": nodes["W"].astype(jnp.float32)}
        assert paths.point("bezier", f32, 0.3)["W"].dtype == jnp.float32  # float32 nodes stay float32
