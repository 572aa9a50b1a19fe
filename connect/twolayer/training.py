"""Full-batch training of many seeds at once: a jitted ``lax.scan`` over steps, mapped over seeds.

Each seed's initial parameters come from ``jax.random.key(seed)``; the same integer
seed gives the same network on every run (and the same init for every optimizer,
so same-seed pairs differ only by the optimizer).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from connect import batching


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """One optimizer step ``(params, opt_state) -> (params, opt_state, loss)`` (pure; jit it)."""

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train(
    init_fn: Callable[[jax.Array], dict],
    loss_fn: Callable[[dict, jax.Array, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    seeds: list[int],
    x: jax.Array,
    y: jax.Array,
    steps: int,
    strategy: str = "auto",
) -> tuple[dict, jax.Array]:
    """Train one network per seed for ``steps`` full-batch steps on ``(x, y)``.

    ``loss_fn(params, x, y)`` is the training objective. Returns the final params
    stacked over seeds (leading axis S) and the training loss before every step,
    shape ``(S, steps)``. ``strategy="loop"`` runs the same jitted program once per
    seed from Python (the benchmark baseline).
    """
    strategy = batching.resolve(strategy, cpu_default="vmap")
    keys_S = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
    args = (init_fn, loss_fn, optimizer, int(steps))
    if strategy == "loop":
        outs = [_train_jit(*args, "map", keys_S[i : i + 1], x, y) for i in range(len(seeds))]
        return jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    return _train_jit(*args, strategy, keys_S, x, y)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _train_jit(init_fn, loss_fn, optimizer, steps, strategy, keydata_S, x, y):
    step = make_step(lambda p: loss_fn(p, x, y), optimizer)

    def one(keydata):
        params = init_fn(jax.random.wrap_key_data(keydata))

        def body(carry, _):
            p, s, loss = step(*carry)
            return (p, s), loss

        (params, _), loss_T = jax.lax.scan(body, (params, optimizer.init(params)), None, length=steps)
        return params, loss_T

    return batching.map_leading(one, keydata_S, strategy)
