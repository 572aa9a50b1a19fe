"""How a function is mapped over a leading batch axis (seeds, pairs, path points).

* ``vmap`` — one fused batched program; pays on accelerators;
* ``map`` — ``lax.map``, one compiled loop body applied sequentially; constant memory;
* ``loop`` — a Python loop over the same jitted function (the baseline benchmarks compare to).

``auto`` picks ``vmap`` on GPU/TPU and ``map`` on CPU, where a batched program over many
small problems is compute-bound and measured slower (path fitting at width 256: ``map``
~3× faster than ``vmap`` on 2 cores; see ``benchmarks/README.md``).
"""

from __future__ import annotations

from typing import Callable

import jax

STRATEGIES = ("auto", "vmap", "map", "loop")
#: Strategies usable inside a jitted program (``loop`` is a host-side baseline only).
TRACEABLE = ("auto", "vmap", "map")


def resolve(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown batching strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if strategy == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return strategy


def map_leading(fn: Callable, xs, strategy: str = "auto"):
    """``stack([fn(x) for x in xs])`` over the leading axis of pytree ``xs``, by ``strategy``.

    ``fn`` must be traceable; ``vmap``/``map`` should be called inside ``jit``.
    """
    strategy = resolve(strategy)
    if strategy == "vmap":
        return jax.vmap(fn)(xs)
    if strategy == "map":
        return jax.lax.map(fn, xs)
    jitted = jax.jit(fn)
    n = jax.tree.leaves(xs)[0].shape[0]
    outs = [jitted(jax.tree.map(lambda x: x[i], xs)) for i in range(n)]
    return jax.tree.map(lambda *ys: jax.numpy.stack(ys), *outs)
