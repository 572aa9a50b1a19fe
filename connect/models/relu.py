"""Two-layer ReLU network ``f(x) = Σ_j a_j relu(w_jᵀx + b_j)``.

Parameters are a plain dict pytree::

    {"W": (m, d) first-layer matrix, rows w_j,
     "b": (m,)  first-layer bias (only when ``cfg.bias``),
     "a": (m,)  output weights}

``m`` is the width (number of hidden units). This is the model of the theory in
Zhang et al., "Optimizer-Induced Mode Connectivity" (arXiv 2605.09991), §2, and of
Pilanci & Ergen's convex reformulation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

#: Arrays of the model that Muon treats as matrices (orthogonalised updates). The
#: split is explicit: ``a`` and ``b`` are vectors and go to AdamW.
MUON_MATRICES = ("W",)

#: The family's symmetry (git-re-basin's PermutationSpec, read by :mod:`connect.symmetry`): the hidden units'
#: permutation reorders axis 0 of W, b and a — leaf path -> (axis, copies fused along it).
SYMMETRY = {"units": {"leaves": {("W",): (0, 1), ("b",): (0, 1), ("a",): (0, 1)}, "block": 1, "stacked": False}}
#: No residual stream to rotate.
ROTATES_RESIDUAL = False


@dataclasses.dataclass(frozen=True)
class ReluConfig:
    """Architecture of a two-layer ReLU network; stored in every checkpoint."""

    d_in: int
    width: int
    bias: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def init(key: jax.Array, cfg: ReluConfig) -> dict:
    """He-style init: ``W ~ N(0, 2/d)``, ``b = 0``, ``a ~ N(0, 1/m)``."""
    k_w, k_a = jax.random.split(key)
    params = {
        "W": jax.random.normal(k_w, (cfg.width, cfg.d_in)) * jnp.sqrt(2.0 / cfg.d_in),
        "a": jax.random.normal(k_a, (cfg.width,)) / jnp.sqrt(cfg.width),
    }
    if cfg.bias:
        params["b"] = jnp.zeros((cfg.width,))
    return params


def apply(params: dict, x_NxD: jax.Array) -> jax.Array:
    """Network output ``f(x)`` for a batch, shape ``(N,)``."""
    pre_NxM = x_NxD @ params["W"].T
    if "b" in params:
        pre_NxM = pre_NxM + params["b"][None, :]
    return jax.nn.relu(pre_NxM) @ params["a"]


def matrix_names(cfg: ReluConfig | None = None) -> list[str]:
    """The family's one weight matrix, the first layer ``W`` (``a`` and ``b`` are vectors)."""
    return list(MUON_MATRICES)


def matrices(params: dict, cfg: ReluConfig | None = None, names=None) -> dict:
    """``{"W": W}``, stored ``(m, d)`` = ``(fan_out, fan_in)`` (the convention of every family's ``matrices``)."""
    return {name: params[name] for name in (names or matrix_names(cfg))}


def config_of(params: dict) -> ReluConfig:
    """Recover the architecture from a params pytree (asserting its shapes)."""
    if not isinstance(params, dict) or "W" not in params or "a" not in params:
        raise ValueError("not a two-layer ReLU params dict with keys 'W' and 'a'")
    width, d_in = params["W"].shape
    if params["a"].shape != (width,):
        raise ValueError(f"'a' has shape {params['a'].shape}, expected ({width},)")
    if "b" in params and params["b"].shape != (width,):
        raise ValueError(f"'b' has shape {params['b'].shape}, expected ({width},)")
    return ReluConfig(d_in=int(d_in), width=int(width), bias="b" in params)
