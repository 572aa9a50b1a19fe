"""Losses and error rates of a scalar-output model, by task (see :mod:`connect.twolayer.data`)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def mse(f_N: jax.Array, y_N: jax.Array) -> jax.Array:
    """``L = ½ · mean_i (f_i − y_i)²``."""
    return 0.5 * jnp.mean((f_N - y_N) ** 2)


def logistic(f_N: jax.Array, y_N: jax.Array) -> jax.Array:
    """``L = mean_i log(1 + exp(−y_i f_i))`` for labels ``y ∈ {−1, +1}`` (computed stably)."""
    return jnp.mean(jax.nn.softplus(-y_N * f_N))


def error_rate(f_N: jax.Array, y_N: jax.Array) -> jax.Array:
    """Fraction of sign mistakes ``mean[sign f_i ≠ y_i]`` (``f = 0`` counts as +1)."""
    return jnp.mean(jnp.where(f_N >= 0, 1.0, -1.0) != y_N)


def for_task(task: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The training loss of a task: ``mse`` for regression, ``logistic`` for classification."""
    return {"regression": mse, "classification": logistic}[task]
