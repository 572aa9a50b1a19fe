"""THEORY.md §D primitives P2 (√-transfer), P5 (√-merge) and the §F.7 √-schedule claim, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import barrier, losses
from connect.models import relu
from theory import constructive

TS = np.linspace(0.0, 1.0, 21)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _net(rng, m, d, slots):
    w, a = np.zeros((m, d)), np.zeros(m)
    w[slots] = rng.normal(size=(len(slots), d))
    a[slots] = rng.normal(size=len(slots))
    return {"W": jnp.asarray(w), "a": jnp.asarray(a)}


def test_sqrt_transfer_keeps_outputs_gram_and_output_norm():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(12, 3)))
    p = _net(rng, 5, 3, [0, 1, 2])
    y0, gram0, an0 = relu.apply(p, x), p["W"].T @ p["W"], jnp.linalg.norm(p["a"])
    for t in TS:
        q = constructive.sqrt_transfer(p, 1, 4, t)
        np.testing.assert_allclose(relu.apply(q, x), y0, atol=1e-12)
        np.testing.assert_allclose(q["W"].T @ q["W"], gram0, atol=1e-12)
        np.testing.assert_allclose(jnp.linalg.norm(q["a"]), an0, atol=1e-12)
    end = constructive.sqrt_transfer(p, 1, 4, 1.0)
    assert np.array_equal(np.asarray(constructive.sqrt_transfer(p, 1, 4, 0.0)["W"]), np.asarray(p["W"]))
    assert np.array_equal(np.asarray(end["W"][4]), np.asarray(p["W"][1])) and not np.any(np.asarray(end["W"][1]))
    with pytest.raises(ValueError, match="not empty"):
        constructive.sqrt_transfer(p, 0, 2, 0.5)


def test_sqrt_merge_interpolates_outputs_and_has_no_barrier():
    rng = np.random.default_rng(2)
    x, y = jnp.asarray(rng.normal(size=(10, 3))), jnp.asarray(rng.normal(size=10))
    pa, pb = _net(rng, 6, 3, [0, 1, 2]), _net(rng, 6, 3, [3, 4, 5])
    ya, yb = relu.apply(pa, x), relu.apply(pb, x)
    loss = []
    for t in TS:
        q = constructive.sqrt_merge(pa, pb, t)
        np.testing.assert_allclose(relu.apply(q, x), (1 - t) * ya + t * yb, atol=1e-12)
        np.testing.assert_allclose(q["W"].T @ q["W"], (1 - t) * pa["W"].T @ pa["W"] + t * pb["W"].T @ pb["W"], atol=1e-12)
        assert float(jnp.linalg.norm(q["W"], ord=2)) ** 2 <= (1 - t) * float(jnp.linalg.norm(pa["W"], ord=2)) ** 2 + t * float(jnp.linalg.norm(pb["W"], ord=2)) ** 2 + 1e-12
        loss.append(float(losses.mse(relu.apply(q, x), y)))
    # the ordinary barrier code: a convex loss along ŷ(t) linear never rises above the chord
    assert barrier.barrier(TS, loss) <= 1e-12
    np.testing.assert_array_equal(np.asarray(constructive.sqrt_merge(pa, pb, 0.0)["W"]), np.asarray(pa["W"]))
    np.testing.assert_array_equal(np.asarray(constructive.sqrt_merge(pa, pb, 1.0)["W"]), np.asarray(pb["W"]))
    with pytest.raises(ValueError, match="disjoint"):
        constructive.sqrt_merge(pa, pa, 0.5)


def test_plain_schedule_keeps_outputs_but_leaves_the_ball():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(8, 3)))
    pa, pb = _net(rng, 4, 3, [0, 1]), _net(rng, 4, 3, [2, 3])
    for t in (0.0, 1 / 3, 0.5, 2 / 3, 1.0):
        q = constructive.plain_merge(pa, pb, t)
        s = min(max(3 * t - 1, 0.0), 1.0)
        np.testing.assert_allclose(relu.apply(q, x), (1 - s) * relu.apply(pa, x) + s * relu.apply(pb, x), atol=1e-12)


@pytest.mark.parametrize("r", [0.5, 1.0, 3.0])
def test_claim_sqrt_schedule_necessity(r):
    result = constructive.claim_sqrt_schedule(r=r)
    assert result.passed, result.line()
    assert result.numbers["plain_max"] == pytest.approx(np.sqrt(2) * r, rel=1e-9)
    assert result.numbers["sqrt_max"] <= r * (1 + 1e-9)
    assert result.line().startswith("PASS F.7")


def test_sqrt_merge_stays_in_the_spectral_ball_of_random_endpoints():
    rng = np.random.default_rng(4)
    for _ in range(5):
        pa, pb = _net(rng, 8, 4, [0, 1, 2, 3]), _net(rng, 8, 4, [4, 5, 6, 7])
        bound = max(float(jnp.linalg.norm(p["W"], ord=2)) for p in (pa, pb))
        assert constructive.max_spectral_norm(constructive.sqrt_merge, pa, pb, n_t=41) <= bound * (1 + 1e-12)
