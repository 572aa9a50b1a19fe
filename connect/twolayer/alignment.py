"""Alignment: moving network B to the symmetry-equivalent copy nearest network A.

This module aligns two-layer ReLU networks by permuting hidden units (the family's declared
symmetry, :data:`connect.models.relu.SYMMETRY`, through :mod:`connect.symmetry`);
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

from connect import symmetry
from connect.models import relu

#: The family's symmetry spec (:data:`connect.models.relu.SYMMETRY`) as :class:`connect.symmetry.Permutation`.
SPEC = symmetry.spec(relu.SYMMETRY)


def unit_features(params: dict) -> np.ndarray:
    """One row per hidden unit: every array's slice along its hidden axis, concatenated, ``(m, F)``."""
    return symmetry.features(params, SPEC["units"])


def match_units(params_a: dict, params_b: dict) -> np.ndarray:
    """The permutation ``perm`` (B's unit ``perm[j]`` goes to slot j) maximising the summed
    similarity ``Σ_j ⟨u_A,j, u_B,perm[j]⟩`` (:func:`connect.symmetry.match`)."""
    if set(params_a) != set(params_b) or any(np.shape(params_a[k]) != np.shape(params_b[k]) for k in params_a):
        shapes = ({k: np.shape(v) for k, v in p.items()} for p in (params_a, params_b))
        raise ValueError(f"cannot align networks of different shapes {next(shapes)} and {next(shapes)}")
    return symmetry.match(params_a, params_b, SPEC)["units"]


def permute_units(params: dict, perm: np.ndarray) -> dict:
    """Reorder hidden units: slot j receives unit ``perm[j]`` in every array."""
    return symmetry.permute(params, SPEC, {"units": perm})


def align(params_a: dict, params_b: dict) -> dict:
    """B with its hidden units permuted to match A; computes the same function as B."""
    params_a, params_b = jax.device_get(params_a), jax.device_get(params_b)
    return permute_units(params_b, match_units(params_a, params_b))
