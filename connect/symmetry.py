"""Permutation symmetries of a model family, declared as data, and weight matching over them.

A family declares which permutation acts on which axis of which array (Ainsworth et al. 2023, "Git
Re-Basin", their ``PermutationSpec``): ``{name: Permutation}``. Reordering the units of a hidden layer
by the same π in every array that indexes them leaves the network's function unchanged — the
two-layer ReLU's hidden units (``W`` rows, ``b``, ``a``), a transformer's MLP units (``c_fc`` columns and
bias, ``mlp.c_proj`` rows) and attention heads (blocks of ``d_head`` columns of each of q, k and v, and
the matching rows of ``attn.c_proj``).

Weight matching (Ainsworth et al. 2023, §3.2) picks for each permutation the π maximising
``⟨θ_A, π(θ_B)⟩``: with one feature row per unit — everything the permutation moves, concatenated — it
is the linear assignment ``max_π Σ_j ⟨f_A[j], f_B[π(j)]⟩`` (:func:`scipy.optimize.linear_sum_assignment`),
exact because each array here is moved by one permutation only.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclasses.dataclass(frozen=True)
class Permutation:
    """One permutation symmetry: ``leaves`` maps a leaf path to ``(axis, fused)`` — the axis whose entries it
    reorders and how many copies are fused along that axis (q | k | v: 3); ``block`` consecutive entries move
    together (a head's ``d_head``); ``stacked``: the leaves carry a leading layer axis and every layer has its
    own permutation. A leaf a model lacks (a ReLU network without bias) is skipped."""

    leaves: Mapping[tuple[str, ...], tuple[int, int]]
    block: int = 1
    stacked: bool = False


def spec(family_symmetry: Mapping[str, Mapping]) -> dict[str, Permutation]:
    """:class:`Permutation` objects from a family's plain declaration (``relu.SYMMETRY``, ``gpt2.symmetry(cfg)``)."""
    return {name: Permutation(dict(s["leaves"]), int(s.get("block", 1)), bool(s.get("stacked", False)))
            for name, s in family_symmetry.items()}


def index(perm_N: np.ndarray, block: int = 1, fused: int = 1) -> np.ndarray:
    """The entries of an axis of ``fused · N · block`` entries in permuted order: slot j takes unit
    ``perm[j]`` (its ``block`` entries) in every fused copy."""
    n = len(perm_N)
    one = (np.asarray(perm_N)[:, None] * block + np.arange(block)[None, :]).ravel()
    return np.concatenate([f * n * block + one for f in range(fused)])


def permute(params: dict, spec: Mapping[str, Permutation], perms: Mapping[str, np.ndarray]) -> dict:
    """``params`` with every permutation of ``perms`` (``(N,)``, or ``(L, N)`` for a stacked one) applied to
    its leaves: slot j receives unit ``perm[j]`` (numpy arrays, dtypes kept)."""
    out = _copy(params)
    for name, p in spec.items():
        for path, (axis, fused) in p.leaves.items():
            x = _get(out, path)
            if x is None:
                continue
            if p.stacked:
                y = np.stack([np.take(x[layer], index(perms[name][layer], p.block, fused), axis=_inner(axis))
                              for layer in range(x.shape[0])])
            else:
                y = np.take(x, index(perms[name], p.block, fused), axis=axis)
            _set(out, path, y)
    return out


def features(params: dict, p: Permutation, layer: int | None = None) -> np.ndarray:
    """One row per unit of permutation ``p``: every entry it moves in every leaf (of ``layer`` when stacked),
    concatenated, float64, shape ``(N, F)``."""
    rows = []
    for path, (axis, fused) in p.leaves.items():
        x = _get(params, path)
        if x is None:
            continue
        x = np.asarray(x, np.float64)
        if p.stacked:
            x, axis = x[layer], _inner(axis)
        x = np.moveaxis(x, axis, 0)
        n = x.shape[0] // (fused * p.block)
        x = x.reshape(fused, n, p.block, -1).transpose(1, 0, 2, 3)
        rows.append(x.reshape(n, -1))
    return np.concatenate(rows, axis=1)


def match(params_a: dict, params_b: dict, spec: Mapping[str, Permutation]) -> dict[str, np.ndarray]:
    """For every permutation (per layer when stacked), the π of B maximising ``⟨θ_A, π(θ_B)⟩`` (exact LAPs)."""
    out = {}
    for name, p in spec.items():
        if p.stacked:
            n_layers = next(np.shape(x)[0] for x in (_get(params_a, path) for path in p.leaves) if x is not None)
            out[name] = np.stack([assign(features(params_a, p, layer), features(params_b, p, layer)) for layer in range(n_layers)])
        else:
            out[name] = assign(features(params_a, p), features(params_b, p))
    return out


def assign(feat_a: np.ndarray, feat_b: np.ndarray) -> np.ndarray:
    """``perm`` maximising ``Σ_j ⟨feat_a[j], feat_b[perm[j]]⟩``."""
    rows, cols = linear_sum_assignment(feat_a @ feat_b.T, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def _inner(axis: int) -> int:
    """A leaf axis counted inside one layer's slice (negative axes are unchanged, 0 is the layer axis)."""
    return axis if axis < 0 else axis - 1


def _copy(tree):
    return {k: _copy(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)


def _get(tree, path: tuple[str, ...]):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _set(tree, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value
