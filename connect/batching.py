"""How a function is mapped over a leading batch axis (seeds, pairs, path points).

* ``vmap`` — one fused batched program; pays on accelerators;
* ``map`` — ``lax.map``, one compiled loop body applied sequentially; constant memory;
* ``loop`` — a Python loop over the same jitted function (the baseline benchmarks compare to).

``auto`` picks ``vmap`` on GPU/TPU. On CPU it picks what ``cpu_default`` says: training over
seeds keeps ``vmap`` (2.6–3.6× a loop at width 16, still ahead at 256), while path fitting
and evaluation use ``map`` (``measure_pairs`` at width 256: 1.6× with ``map``, 0.97× with
``vmap``; see ``benchmarks/README.md``).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

STRATEGIES = ("auto", "vmap", "map", "loop")
#: Strategies usable inside a jitted program (``loop`` is a host-side baseline only).
TRACEABLE = ("auto", "vmap", "map")


def resolve(strategy: str, cpu_default: str = "map") -> str:
    """The concrete strategy for ``strategy`` on the default backend."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown batching strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if strategy == "auto":
        return cpu_default if jax.default_backend() == "cpu" else "vmap"
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
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(xs)):
        raise ValueError("strategy 'loop' runs from the host; inside jit use 'vmap' or 'map'")
    jitted = jax.jit(fn)
    n = jax.tree.leaves(xs)[0].shape[0]
    outs = [jitted(take(xs, i)) for i in range(n)]
    return jax.tree.map(lambda *ys: jax.numpy.stack(ys), *outs)


def take(tree, index):
    """``x[index]`` for every array of a pytree (an int picks one member of a batch, a slice several)."""
    return jax.tree.map(lambda x: x[index], tree)


def stack(trees):
    """The pytrees of a list stacked on a new leading axis (the inverse of :func:`take`), as numpy."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Keep compiled XLA programs on disk (JAX's persistent cache) so that a rerun or a
    resumed sweep skips compilation. ``path`` defaults to ``$CONNECT_JAX_CACHE`` or
    ``~/.cache/connect/jax``; an empty ``$CONNECT_JAX_CACHE`` turns it off."""
    import os

    path = path if path is not None else os.environ.get("CONNECT_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "connect", "jax"))
    if not path:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path
