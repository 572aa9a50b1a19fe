"""Paths θ(t), t ∈ [0, 1], between two parameter pytrees, with θ(0) = θ_A and θ(1) = θ_B exactly.

A path is its *nodes* stacked on a leading axis K — ``[θ_A, θ_1, …, θ_{K−2}, θ_B]`` —
and a *kind*; ``point(kind, nodes, t) = Σ_k w_k(t) θ_k`` with weights

* ``linear`` (K = 2): ``w = (1 − t, t)``;
* ``bezier`` (degree K − 1): Bernstein ``w_k = C(K−1, k) t^k (1 − t)^{K−1−k}``
  (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs");
* ``polychain``: piecewise-linear through bends at ``t = k/(K − 1)``.

At t = 0 and t = 1 every weight is exactly 0 or 1, so the endpoints are reproduced
bit for bit. A learned path minimises ``E_{t~U[0,1]} L(θ(t))`` over the free nodes
θ_1..θ_{K−2} with any optimizer of :mod:`connect.optimizers` (the endpoints' own
optimizer gives the "optimizer-restricted" path).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import comb

from connect.errors import UserError

KINDS = ("linear", "bezier", "polychain")


def weights(kind: str, n_nodes: int, t: jax.Array) -> jax.Array:
    """The node weights ``w_k(t)``, shape ``(K,)``; they sum to 1. Computed in t's floating dtype
    (float32 for an integer t), so float64 paths (``jax.enable_x64``) are not rounded to float32."""
    t = jnp.asarray(t)
    t = t.astype(t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32)
    if kind == "linear" or n_nodes == 2:
        if n_nodes != 2:
            raise ValueError(f"a linear path has 2 nodes, got {n_nodes}")
        return jnp.stack([1 - t, t])
    if kind == "bezier":
        deg = n_nodes - 1
        k = np.arange(n_nodes)
        binom = jnp.asarray(comb(deg, k), dtype=t.dtype)
        return binom * t ** k * (1 - t) ** (deg - k)
    if kind == "polychain":
        seg = n_nodes - 1
        s = t * seg
        # hat functions centred at k: max(0, 1 − |s − k|)
        return jnp.maximum(0.0, 1.0 - jnp.abs(s - jnp.arange(n_nodes, dtype=t.dtype)))
    raise ValueError(f"unknown path kind {kind!r}: use one of {', '.join(KINDS)}")


def point(kind, nodes_K, t: jax.Array):
    """θ(t) for a path given its stacked nodes (pytree with leading axis K).

    ``kind`` is a path kind of :data:`KINDS`, or a function ``t -> w_K`` giving the weights.
    Evaluated as ``θ_e + Σ_k w_k(t) (θ_k − θ_e)``, ``θ_e`` the nearer endpoint (θ_A for
    t ≤ ½, θ_B otherwise) — equal to ``Σ_k w_k θ_k`` since ``Σ_k w_k = 1``, but exact in
    floating point at t = 0 and t = 1 and on a path whose nodes are all equal (the path
    from a checkpoint to itself, whose barrier is then exactly 0), and made of elementwise
    operations only (no matmul, whose reduced default precision on GPUs would round θ_A; the sum over k is
    written out term by term: XLA:CPU runs a reduction over the nodes' leading axis 15–25× slower than one fused
    elementwise loop: 0.75–1.3 s against 48 ms for the 30 M-parameter seed-paper GPT-2).
    """
    n_nodes = jax.tree.leaves(nodes_K)[0].shape[0]
    w_K = kind(t) if callable(kind) else weights(kind, n_nodes, t)
    return combine(w_K, nodes_K, jnp.asarray(t) > 0.5)


def combine(w_K: jax.Array, nodes_K, near_b: jax.Array):
    """``Σ_k w_k θ_k`` anchored at θ_B if ``near_b`` else θ_A (see :func:`point`)."""
    n_nodes = w_K.shape[0]

    def leaf(x_K):
        anchor = jnp.where(near_b, x_K[-1], x_K[0])
        w_cast_K = w_K.astype(x_K.dtype)  # the nodes' precision
        delta = w_cast_K[0] * (x_K[0] - anchor)
        for k in range(1, n_nodes):  # Σ_k in order, unrolled (K is small and static)
            delta = delta + w_cast_K[k] * (x_K[k] - anchor)
        return anchor + delta

    return jax.tree.map(leaf, nodes_K)


def stack_nodes(theta_a, free_F, theta_b):
    """``[θ_A, *free, θ_B]`` on a leading axis; ``free_F`` has leading axis F (may be 0)."""
    return jax.tree.map(lambda a, f, b: jnp.concatenate([a[None], f, b[None]]), theta_a, free_F, theta_b)


def init_free(theta_a, theta_b, n_free: int):
    """Free nodes on the straight line at ``t = k/(n_free+1)`` — the initial learned path is the linear one."""
    ts = jnp.arange(1, n_free + 1, dtype=jnp.float32) / (n_free + 1)
    line_K = jax.tree.map(lambda a, b: jnp.stack([a, b]), theta_a, theta_b)
    return jax.vmap(lambda t: point("linear", line_K, t))(ts)


def n_free_nodes(kind: str, degree_or_bends: int) -> int:
    """Free nodes of a path: 0 for linear, ``degree − 1`` for Bézier, ``bends`` for a chain."""
    if kind == "linear":
        return 0
    if kind == "bezier":
        return degree_or_bends - 1
    return degree_or_bends


#: The default distribution of t when learning a path: uniform on [0, 1].
T_UNIFORM = ("uniform", 0.0, 1.0)


def fit(
    kind,
    theta_a,
    theta_b,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    n_free: int = 1,
    steps: int = 300,
    t_per_step: int = 4,
    *,
    batches=None,
    batch_fn: Callable | None = None,
    t_dist=T_UNIFORM,
    free=None,
):
    """Learn the free nodes: minimise ``E_{t~D} L(θ(t))`` by ``steps`` optimizer steps, each
    averaging the loss over ``t_per_step`` fresh samples of t (Garipov et al. 2018, eq. (3), with
    ``D = U[0, 1]``; a narrower ``D`` concentrates the effort on the middle of the path).

    ``kind`` as in :func:`point`; ``optimizer`` any optax transformation of the free-node pytree
    (leading axis F). ``t_dist`` is ``("uniform", lo, hi)`` with ``0 ≤ lo < hi ≤ 1`` or a function
    ``(key, n) -> t_n``. The loss and the data:

    * neither ``batches`` nor ``batch_fn``: ``loss_fn(θ)``, the full-data objective (as before);
    * ``batches``: a pytree of arrays with leading axis ``steps``; step k uses ``loss_fn(θ, batch_k)``,
      scanned in one program (pure and traceable: vmap over pairs);
    * ``batch_fn``: a host function ``k -> batch`` (e.g. :func:`connect.lm.corpus.batch` of a seed);
      step k runs one jitted update on ``loss_fn(θ, batch_fn(k))`` from a Python loop (not traceable;
      the endpoints are arguments of that program, never constants baked into it).

    ``free`` starts from given free nodes instead of the straight line (:func:`init_free`).
    Returns ``(nodes_K, objective_per_step)``.
    """
    if batches is not None and batch_fn is not None:
        raise ValueError("pass batches or batch_fn, not both")
    sample_t = _t_sampler(t_dist)
    if batch_fn is not None:  # from the host: one compiled program per setting, reused by later calls
        init, start, step = _host_programs(kind, loss_fn, optimizer, t_per_step, t_dist if callable(t_dist) else tuple(t_dist))
        free = init(theta_a, theta_b, n_free) if free is None else free
        state = start(free)
    else:
        free = init_free(theta_a, theta_b, n_free) if free is None else free
        state = optimizer.init(free)
        step = _update_fn(kind, loss_fn, optimizer, t_per_step, sample_t)

    keys = jax.random.split(key, steps)
    if batch_fn is None:
        def body(carry, xs):
            key, batch = xs
            free, state, val = step(*carry, key, batch, theta_a, theta_b)
            return (free, state), val

        (free, _), obj = jax.lax.scan(body, (free, state), (keys, batches))
        return stack_nodes(theta_a, free, theta_b), obj
    obj = []
    for k in range(steps):
        free, state, val = step(free, state, keys[k], batch_fn(k), theta_a, theta_b)
        obj.append(val)
    return jax.jit(stack_nodes)(theta_a, free, theta_b), jnp.stack(obj) if obj else jnp.zeros((0,), jnp.float32)


def _update_fn(kind, loss_fn: Callable, optimizer: optax.GradientTransformation, t_per_step: int, sample_t: Callable):
    """One optimizer step on the free nodes, ``(free, state, key, batch, θ_A, θ_B) -> (free, state, objective)``."""

    def update(free, state, key, batch, theta_a, theta_b):
        def objective(free):
            ts = sample_t(key, t_per_step)
            nodes = stack_nodes(theta_a, free, theta_b)
            loss_at = (lambda t: loss_fn(point(kind, nodes, t))) if batch is None else (lambda t: loss_fn(point(kind, nodes, t), batch))
            return jnp.mean(jax.vmap(loss_at)(ts))

        val, grads = jax.value_and_grad(objective)(free)
        updates, state = optimizer.update(grads, state, free)
        return optax.apply_updates(free, updates), state, val

    return update


@functools.lru_cache(maxsize=32)
def _host_programs(kind, loss_fn: Callable, optimizer: optax.GradientTransformation, t_per_step: int, t_dist):
    """The jitted start (:func:`init_free`, ``optimizer.init``) and step of :func:`fit`'s ``batch_fn``
    mode, cached on the setting so that fitting many paths with the same loss and optimizer objects
    compiles once (from the host, eager ops would also compile per leaf shape)."""
    step = _update_fn(kind, loss_fn, optimizer, t_per_step, _t_sampler(t_dist))
    return jax.jit(init_free, static_argnums=2), jax.jit(optimizer.init), jax.jit(step)


def _t_sampler(t_dist) -> Callable:
    """``(key, n) -> t_n`` for ``t_dist`` (see :func:`fit`); a bad range is a UserError."""
    if callable(t_dist):
        return t_dist
    name, lo, hi = t_dist
    if name != "uniform":
        raise UserError(f"unknown t distribution {name!r}: use ('uniform', lo, hi) with 0 <= lo < hi <= 1")
    lo, hi = float(lo), float(hi)
    if not 0.0 <= lo < hi <= 1.0:
        raise UserError(f"t distribution uniform({lo}, {hi}) is not inside [0, 1]: use 0 <= lo < hi <= 1")
    if (lo, hi) == (0.0, 1.0):
        return lambda key, n: jax.random.uniform(key, (n,))
    return lambda key, n: jax.random.uniform(key, (n,), minval=lo, maxval=hi)


@functools.partial(jax.jit, static_argnums=(0, 1))
def evaluate(kind: str, fn: Callable, nodes_K, ts_T: jax.Array):
    """``fn(θ(t))`` at every t of the grid, stacked over T (jitted; ``fn`` any pytree-valued metric)."""
    return jax.vmap(lambda t: fn(point(kind, nodes_K, t)))(ts_T)


def evaluate_callable(path_fn: Callable, fn: Callable, ts_T) -> object:
    """``fn(path_fn(t))`` at every t of the grid, stacked over T: :func:`evaluate` for a path given
    as a Python function ``t -> θ(t)`` (e.g. a constructive path of :mod:`theory.connectivity`);
    not jitted, since ``path_fn`` may run arbitrary host code."""
    outs = [fn(path_fn(t)) for t in np.asarray(ts_T).tolist()]
    return jax.tree.map(lambda *v: jnp.stack(v), *outs)
