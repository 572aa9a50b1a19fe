"""Learning-rate schedules: values against the closed forms at warmup end, midpoint and last step
(computed here with ``math``), jit, and errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import schedules
from connect.errors import UserError

PEAK, T = 3e-3, 100


def _at(schedule, t: int) -> float:
    return float(schedule(jnp.int32(t)))


def test_constant_with_warmup():
    s = schedules.make("constant", PEAK, T, warmup_frac=0.1)  # W = 10
    assert _at(s, 0) == pytest.approx(PEAK / 10)
    assert _at(s, 4) == pytest.approx(PEAK / 2)
    for t in (9, 10, 50, 99, 1000):
        assert _at(s, t) == pytest.approx(PEAK)
    no_warmup = schedules.make("constant", PEAK, T, warmup_frac=0.0)
    assert _at(no_warmup, 0) == pytest.approx(PEAK)


def test_cosine_closed_form():
    f = 0.1
    s = schedules.make("cosine", PEAK, T, warmup_frac=0.1, final_frac=f)  # W = 10, cosine over t in [10, 100]
    assert _at(s, 0) == pytest.approx(PEAK * 1 / 10)
    assert _at(s, 9) == pytest.approx(PEAK)  # warmup end
    assert _at(s, 10) == pytest.approx(PEAK)
    assert _at(s, 55) == pytest.approx(PEAK * (f + (1 - f) / 2))  # midpoint of the decay: cos(π/2) = 0
    assert _at(s, 99) == pytest.approx(PEAK * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * 89 / 90))))  # last step
    assert _at(s, 100) == pytest.approx(PEAK * f)
    assert _at(s, 500) == pytest.approx(PEAK * f)
    after = np.array([_at(s, t) for t in range(10, 101)])
    assert np.all(np.diff(after) <= 1e-12)  # non-increasing after warmup


def test_wsd_closed_form():
    f = 0.0
    s = schedules.make("wsd", PEAK, T, warmup_frac=0.05, decay_frac=0.2, final_frac=f)  # W = 5, decay over [80, 100]
    assert _at(s, 0) == pytest.approx(PEAK / 5)
    assert _at(s, 4) == pytest.approx(PEAK)  # warmup end
    assert _at(s, 5) == pytest.approx(PEAK)
    assert _at(s, 79) == pytest.approx(PEAK)  # stable phase end
    assert _at(s, 80) == pytest.approx(PEAK)
    assert _at(s, 90) == pytest.approx(PEAK * 0.5)  # midpoint of the decay
    assert _at(s, 99) == pytest.approx(PEAK / 20)  # last step: one of 20 decay steps left
    assert _at(s, 100) == pytest.approx(0.0, abs=1e-12)
    g = schedules.make("wsd", PEAK, T, warmup_frac=0.0, decay_frac=1.0, final_frac=0.5)  # a pure linear decay to peak/2
    assert _at(g, 0) == pytest.approx(PEAK)
    assert _at(g, 50) == pytest.approx(0.75 * PEAK)


def test_fractions_round_down_and_fit():
    # 0.29·100 is 28.999… in binary; it still means 29 warmup steps
    s = schedules.make("constant", 1.0, 100, warmup_frac=0.29)
    assert _at(s, 27) == pytest.approx(28 / 29)
    assert _at(s, 28) == pytest.approx(1.0)
    # warmup 0.5 and decay 0.5 of 3 steps: 1 + 1 steps, one stable step
    s = schedules.make("wsd", 1.0, 3, warmup_frac=0.5, decay_frac=0.5)
    np.testing.assert_allclose([_at(s, t) for t in range(4)], [1.0, 1.0, 1.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("name", schedules.NAMES)
def test_jit_and_vector_counts(name):
    s = schedules.make(name, PEAK, T, warmup_frac=0.1, decay_frac=0.3)
    ts = jnp.arange(0, 120, 7, dtype=jnp.int32)
    np.testing.assert_allclose(jax.jit(s)(ts), [_at(s, int(t)) for t in ts], rtol=1e-5, atol=1e-6 * PEAK)
    assert float(jnp.min(s(ts))) >= 0.0 and float(jnp.max(s(ts))) <= PEAK * (1 + 1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "linear"}, "unknown learning-rate schedule 'linear'"),
        ({"peak": 0.0}, "peak"),
        ({"peak": -1e-3}, "peak"),
        ({"peak": float("nan")}, "peak"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10.5}, "total_steps"),
        ({"warmup_frac": -0.1}, "warmup_frac"),
        ({"decay_frac": 1.5}, "decay_frac"),
        ({"final_frac": 2.0}, "final_frac"),
        ({"name": "wsd", "warmup_frac": 0.6, "decay_frac": 0.5}, "sum to at most 1"),
    ],
)
def test_bad_values_are_user_errors(kwargs, match):
    args = {"name": "cosine", "peak": 1e-3, "total_steps": 100, **kwargs}
    with pytest.raises(UserError, match=match):
        schedules.make(args.pop("name"), args.pop("peak"), args.pop("total_steps"), **args)


def test_cosine_ignores_decay_frac():
    # decay_frac only shapes wsd: a cosine with a large warmup is valid whatever decay_frac says
    s = schedules.make("cosine", 1.0, 10, warmup_frac=0.9, decay_frac=0.5)
    assert _at(s, 9) == pytest.approx(1.0)
