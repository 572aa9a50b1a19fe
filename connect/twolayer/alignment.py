"""Alignment: moving network B to the symmetry-equivalent copy nearest network A.

This package's top level aligns two-layer ReLU networks by permuting hidden units;
:mod:`connect.lm.alignment` aligns GPT-2 models (head and MLP permutations, a rotation of
the residual stream).

Hidden units of ``f(x) = Σ_j a_j relu(w_jᵀx + b_j)`` can be reordered without changing
``f``. Weight matching (Ainsworth et al. 2023, "Git Re-Basin", §3.2) picks the
permutation π of B's units maximising ``Σ_j ⟨θ_A,j, θ_B,π(j)⟩`` where ``θ_·,j`` stacks
every array's slice along its hidden axis (``W`` row, ``b_j``, ``a_j``) — a linear
assignment problem, solved exactly by ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment

from connect.models import relu


def unit_features(params: dict, hidden_axis: dict = relu.HIDDEN_AXIS) -> np.ndarray:
    """One row per hidden unit: every array's slice along its hidden axis, concatenated, ``(m, F)``."""
    cols = [np.moveaxis(np.asarray(params[k]), ax, 0).reshape(np.shape(params[k])[ax], -1) for k, ax in sorted(hidden_axis.items()) if k in params]
    return np.concatenate(cols, axis=1)


def match_units(params_a: dict, params_b: dict, hidden_axis: dict = relu.HIDDEN_AXIS) -> np.ndarray:
    """The permutation ``perm`` (B's unit ``perm[j]`` goes to slot j) maximising the summed
    similarity ``Σ_j ⟨u_A,j, u_B,perm[j]⟩``."""
    fa, fb = unit_features(params_a, hidden_axis), unit_features(params_b, hidden_axis)
    if fa.shape != fb.shape:
        raise ValueError(f"cannot align networks of different shapes {fa.shape} and {fb.shape}")
    rows, cols = linear_sum_assignment(fa @ fb.T, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def permute_units(params: dict, perm: np.ndarray, hidden_axis: dict = relu.HIDDEN_AXIS) -> dict:
    """Reorder hidden units: slot j receives unit ``perm[j]`` in every array."""
    return {k: (np.take(np.asarray(v), perm, axis=hidden_axis[k]) if k in hidden_axis else v) for k, v in params.items()}


def align(params_a: dict, params_b: dict, hidden_axis: dict = relu.HIDDEN_AXIS) -> dict:
    """B with its hidden units permuted to match A; computes the same function as B."""
    params_a, params_b = jax.device_get(params_a), jax.device_get(params_b)
    return permute_units(params_b, match_units(params_a, params_b, hidden_axis), hidden_axis)
