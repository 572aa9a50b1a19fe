"""Alignment by hidden-unit permutation: it keeps B's function, recovers a planted
permutation exactly, and removes the barrier between a network and its permuted copy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import barrier, paths
from connect.models import relu
from connect.twolayer import alignment, losses

D, M, N = 5, 12, 64


def _net(seed: int, bias: bool) -> dict:
    params = relu.init(jax.random.key(seed), relu.ReluConfig(D, M, bias=bias))
    if bias:  # init sets b = 0; use a non-trivial bias so that its permutation matters
        params["b"] = 0.5 * jax.random.normal(jax.random.key(seed + 1000), (M,))
    return jax.tree.map(np.asarray, params)


def _x(seed: int) -> jnp.ndarray:
    return jax.random.normal(jax.random.key(seed + 2000), (N, D))


@jax.jit
def _line_losses(theta_a, theta_b, x, y, ts):
    nodes = paths.stack_nodes(theta_a, paths.init_free(theta_a, theta_b, 0), theta_b)
    return jax.vmap(lambda t: losses.mse(relu.apply(paths.point("linear", nodes, t), x), y))(ts)


def _loss_along_line(theta_a, theta_b, x, y, ts):
    return np.asarray(_line_losses(theta_a, theta_b, x, y, jnp.asarray(ts)))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_aligned_network_computes_the_same_function(seed, bias):
    a, b = _net(seed, bias), _net(seed + 10, bias)
    aligned = alignment.align(a, b)
    assert set(aligned) == set(b)
    for k in b:
        assert aligned[k].shape == b[k].shape
    x = _x(seed)
    f_b, f_al = np.asarray(relu.apply(b, x)), np.asarray(relu.apply(aligned, x))
    assert np.linalg.norm(f_al - f_b) <= 1e-5 * np.linalg.norm(f_b)
    # the hidden units of B were really reordered (two random nets are not already aligned) ...
    assert not np.array_equal(aligned["W"], b["W"])
    # ... consistently across arrays: each slot holds one of B's units, whole
    perm = alignment.match_units(a, b)
    assert sorted(perm.tolist()) == list(range(M))
    for k in b:
        np.testing.assert_array_equal(aligned[k], b[k][perm])
    # and matching does not decrease the summed unit similarity relative to the identity
    fa, fb = alignment.unit_features(a), alignment.unit_features(b)
    assert np.sum(fa * fb[perm]) >= np.sum(fa * fb) - 1e-6


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_permutation_is_recovered_and_barrier_vanishes(seed, bias):
    a = _net(seed, bias)
    perm = np.random.default_rng(seed).permutation(M)
    assert not np.array_equal(perm, np.arange(M))
    b = {k: v[perm] for k, v in a.items()}  # B's unit j is A's unit perm[j]

    found = alignment.match_units(a, b)
    np.testing.assert_array_equal(found, np.argsort(perm))  # the inverse permutation
    aligned = alignment.align(a, b)
    for k in a:
        assert np.array_equal(aligned[k], a[k])

    x = _x(seed)
    y = relu.apply(a, x)  # A (and so B) fits the targets exactly: L_A = L_B = 0
    ts = barrier.grid(11)
    raw = _loss_along_line(a, b, x, y, ts)
    al = _loss_along_line(a, aligned, x, y, ts)
    raw_barrier, aligned_barrier = barrier.barrier(ts, raw), barrier.barrier(ts, al)
    assert raw_barrier > 1e-2
    assert aligned_barrier < 1e-6
    assert aligned_barrier <= raw_barrier
    assert barrier.max_barrier(ts, al) < 1e-6 < barrier.max_barrier(ts, raw)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="different shapes"):
        alignment.match_units(_net(0, True), _net(0, False))
