"""Planes through three GPT-2s: Gram–Schmidt coordinates against numpy on the flattened vectors, the three
points reproduced at their coordinates, and grid losses equal to lm_training.evaluate at those params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import planes
from connect.errors import UserError
from connect.lm import planes as lm_planes
from connect.lm import training as lm_training
from connect.models import gpt2

CFG = gpt2.config("tiny", vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2, n_inner=32)
CTX, BATCH = 8, 4


def _model(seed):
    params = gpt2.init(jax.random.key(seed), CFG)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + 0.3 * rng.normal(size=a.shape).astype(np.float32)), params)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def three():
    return _model(0), _model(1), _model(2)


def test_coordinates_match_numpy_gram_schmidt_and_points_lie_on_the_plane(three):
    a, b, c = three
    pl = planes.plane(a, b, c)
    xa, xb, xc = _flat(a), _flat(b), _flat(c)
    # independent: numpy QR of the two directions gives an orthonormal basis of the same plane
    q_Nx2, r_2x2 = np.linalg.qr(np.stack([xb - xa, xc - xa], axis=1))
    sign = np.sign(np.diag(r_2x2))
    q_Nx2, r_2x2 = q_Nx2 * sign[None, :], r_2x2 * sign[:, None]
    np.testing.assert_allclose(pl.points_3x2()[1:], r_2x2.T, rtol=1e-9)
    nodes_3 = planes.nodes(a, b, c)
    for (u, v), want in zip(pl.points_3x2(), (xa, xb, xc)):
        np.testing.assert_allclose(_flat(planes.point(pl, nodes_3, (u, v))), want, atol=2e-5)
    # an arbitrary (u, v) is θ_A + u e₁ + v e₂ with numpy's basis
    got = _flat(planes.point(pl, nodes_3, (0.3 * pl.ab_norm, -0.7 * pl.c_v)))
    np.testing.assert_allclose(got, xa + q_Nx2 @ np.array([0.3 * pl.ab_norm, -0.7 * pl.c_v]), atol=2e-5)
    np.testing.assert_allclose(planes.weights(pl, np.random.default_rng(0).normal(size=(5, 2))).sum(1), 1.0, rtol=1e-12)


def test_grid_losses_at_the_three_points_equal_evaluate(three):
    a, b, c = three
    tokens = np.random.default_rng(3).integers(0, CFG.vocab_size, CTX * 6 + 1).astype(np.uint16)
    kw = dict(batch_size=BATCH, context=CTX)
    out = lm_planes.plane_losses(a, b, c, CFG, tokens, n_points=3, margin=0.1, t_chunk=2, **kw)
    want = [lm_training.evaluate(p, CFG, tokens, **kw) for p in (a, b, c)]
    np.testing.assert_allclose(out["point_loss"], want, rtol=1e-5)
    assert np.ptp(want) > 0.05  # distinct models: the comparison can fail
    loss_VxU = np.asarray(out["loss"])
    assert loss_VxU.shape == (3, 3) and np.all(np.isfinite(loss_VxU))
    # the grid's corner (u_0, v_0) equals evaluate at θ(u_0, v_0) built by point()
    pl = planes.plane(a, b, c)
    corner = planes.point(pl, planes.nodes(a, b, c), (out["u"][0], out["v"][0]))
    np.testing.assert_allclose(loss_VxU[0, 0], lm_training.evaluate(corner, CFG, tokens, **kw), rtol=1e-5)
    assert out["u"][0] < 0 < out["u"][-1] and out["v"][0] < 0 < out["v"][-1]


def test_degenerate_planes_are_user_errors(three):
    a, b, _ = three
    with pytest.raises(UserError, match="same point"):
        planes.plane(a, a, b)
    mid = jax.tree.map(lambda x, y: 0.5 * (x + y), a, b)
    with pytest.raises(UserError, match="collinear"):
        planes.plane(a, b, mid)
