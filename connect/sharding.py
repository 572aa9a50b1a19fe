"""Parameters fully sharded over a device mesh (ZeRO-3 / FSDP layout; Rajbhandari et al. 2020, Zhao et al. 2023).

Every array is split along its largest axis that the mesh axis's size ``n`` divides, so each device holds
``1/n`` of it — a path's nodes and points, never a full copy per device; an array with no such axis (a bias of
odd width) stays replicated, which costs little. Inside ``jit``, XLA's SPMD partitioner gathers what a matmul
needs, so the numbers equal the unsharded run's up to summation order. A mesh may span the processes of a
``jax.distributed`` run: every process passes the same whole arrays and keeps only its devices' parts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def spec(shape: tuple[int, ...], n: int, axis_name: str = "data") -> PartitionSpec:
    """The :class:`PartitionSpec` splitting ``shape``'s largest axis divisible by ``n`` over ``axis_name``
    (the last such axis on ties; replicated when none is, or ``n == 1``)."""
    candidates = [i for i, d in enumerate(shape) if n > 1 and d % n == 0 and d >= n]
    if not candidates:
        return PartitionSpec()
    best = max(candidates, key=lambda i: (shape[i], i))
    return PartitionSpec(*[axis_name if i == best else None for i in range(len(shape))])


def shardings(tree, mesh: Mesh, axis_name: str = "data"):
    """A :class:`NamedSharding` per array of ``tree`` (arrays or shape structs), fully sharded by :func:`spec`."""
    n = mesh.shape[axis_name]
    return jax.tree.map(lambda x: NamedSharding(mesh, spec(tuple(np.shape(x)), n, axis_name)), tree)


def put(tree, mesh: Mesh | None, axis_name: str = "data"):
    """``tree`` fully sharded over ``mesh`` (unchanged without a mesh). Each process passes the whole arrays."""
    return tree if mesh is None else put_as(tree, shardings(tree, mesh, axis_name))


def put_as(tree, target):
    """``jax.device_put(tree, target)`` (one :class:`NamedSharding` for every array, or a tree of them) of arrays every
    process holds whole and equal — each device takes its part — without device_put's check across processes (an
    all-gather, waited for, of every array at every call)."""
    if isinstance(target, NamedSharding):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(target, x, np.shape(x)), tree)
    return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, x, np.shape(x)), tree, target)


def fraction_per_device(tree) -> float:
    """The largest share of ``tree``'s bytes any one device holds (1.0: replicated; ``1/n``: fully sharded)."""
    total, per_device = 0, {}
    for x in jax.tree.leaves(tree):
        total += x.nbytes
        for shard in x.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values()) / total
