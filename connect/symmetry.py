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
    """One permutation symmetry: ``leaves`` maps a leaf path to ``(axis, fused)`` or ``(axis, fused, block)`` — the
    axis whose entries it reorders, how many copies are fused along that axis (q | k | v: 3) and, optionally, how
    many consecutive entries one unit has on that leaf (default ``block``: a head's ``d_head``); ``stacked``: the
    leaves carry a leading layer axis and every layer has its own permutation; ``groups``: the axis holds ``G``
    consecutive groups of ``N`` units and the permutation, ``(G, N)`` (``(L, G, N)`` stacked), reorders units within
    each group (grouped-query attention's query heads within their key/value group). Along an axis: fused copies
    outermost, then groups, units, block entries. A leaf a model lacks (a ReLU network without bias) is skipped."""

    leaves: Mapping[tuple[str, ...], tuple[int, ...]]
    block: int = 1
    stacked: bool = False
    groups: int = 1

    def leaf(self, path) -> tuple[int, int, int]:
        """``(axis, fused, block)`` of the leaf at ``path``."""
        axis, fused, *block = self.leaves[path]
        return axis, fused, (block[0] if block else self.block)


def spec(family_symmetry: Mapping[str, Mapping]) -> dict[str, Permutation]:
    """:class:`Permutation` objects from a family's plain declaration (``relu.SYMMETRY``, ``gpt2.symmetry(cfg)``), in
    declaration order: :func:`match` and :func:`permute` take them in that order."""
    return {name: Permutation(dict(s["leaves"]), int(s.get("block", 1)), bool(s.get("stacked", False)), int(s.get("groups", 1)))
            for name, s in family_symmetry.items()}


def index(perm, block: int = 1, fused: int = 1) -> np.ndarray:
    """The entries of an axis of ``fused · G · N · block`` entries in permuted order: slot j of group g takes unit
    ``perm[g, j]`` of that group (its ``block`` entries) in every fused copy; ``perm`` is ``(N,)`` (G = 1) or ``(G, N)``."""
    perm_GxN = np.atleast_2d(np.asarray(perm))
    g, n = perm_GxN.shape
    one = (((np.arange(g)[:, None] * n + perm_GxN)[:, :, None] * block) + np.arange(block)).ravel()
    return np.concatenate([f * g * n * block + one for f in range(fused)])


def permute(params: dict, spec: Mapping[str, Permutation], perms: Mapping[str, np.ndarray]) -> dict:
    """``params`` with every permutation of ``perms`` (``(N,)`` or ``(G, N)``, with a leading ``L`` when stacked)
    applied to its leaves in the spec's order: slot j receives unit ``perm[j]`` (numpy arrays, dtypes kept)."""
    out = _copy(params)
    for name, p in spec.items():
        for path in p.leaves:
            x = _get(out, path)
            if x is None:
                continue
            axis, fused, block = p.leaf(path)
            if p.stacked:
                y = np.stack([np.take(x[layer], index(perms[name][layer], block, fused), axis=_inner(axis))
                              for layer in range(x.shape[0])])
            else:
                y = np.take(x, index(perms[name], block, fused), axis=axis)
            _set(out, path, y)
    return out


def features(params: dict, p: Permutation, layer: int | None = None) -> np.ndarray:
    """One row per unit of permutation ``p``: every entry it moves in every leaf (of ``layer`` when stacked),
    concatenated, float64, shape ``(N, F)`` — or ``(G, N, F)``, a block of rows per group, when ``p.groups > 1``."""
    rows = []
    for path in p.leaves:
        x = _get(params, path)
        if x is None:
            continue
        axis, fused, block = p.leaf(path)
        x = np.asarray(x, np.float64)
        if p.stacked:
            x, axis = x[layer], _inner(axis)
        x = np.moveaxis(x, axis, 0)
        n = x.shape[0] // (fused * p.groups * block)
        x = x.reshape(fused, p.groups, n, block, -1).transpose(1, 2, 0, 3, 4)
        rows.append(x.reshape(p.groups, n, -1))
    feats = np.concatenate(rows, axis=-1)
    return feats if p.groups > 1 else feats[0]


def match(params_a: dict, params_b: dict, spec: Mapping[str, Permutation]) -> dict[str, np.ndarray]:
    """For every permutation (per layer when stacked), the π of B maximising ``⟨θ_A, π(θ_B)⟩`` (exact LAPs), taken
    in the spec's order: each is matched on B already moved by those before it (a group's units after the groups)."""
    out = {}
    names = list(spec)
    for name in names:
        p = spec[name]
        if p.stacked:
            n_layers = next(np.shape(x)[0] for x in (_get(params_a, path) for path in p.leaves) if x is not None)
            out[name] = np.stack([_assign(features(params_a, p, layer), features(params_b, p, layer)) for layer in range(n_layers)])
        else:
            out[name] = _assign(features(params_a, p), features(params_b, p))
        if name != names[-1]:
            params_b = permute(params_b, {name: p}, {name: out[name]})
    return out


def _assign(feat_a: np.ndarray, feat_b: np.ndarray) -> np.ndarray:
    """:func:`assign` for ``(N, F)`` features, or per group for ``(G, N, F)``."""
    if feat_a.ndim == 3:
        return np.stack([assign(fa, fb) for fa, fb in zip(feat_a, feat_b)])
    return assign(feat_a, feat_b)


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
