"""Constructive path primitives of THEORY.md §D for two-layer ReLU networks ``θ = (W, a)``,
``ŷ(θ) = (XWᵀ)_+ a``, and the √-schedule claim (§F.7).

* P2, √-transfer of neuron j to an empty slot k:
  ``(w_j, a_j) → (√(1−t) w_j, √(1−t) a_j)`` and slot k ``→ (√t w_j, √t a_j)``. Since ReLU is
  positively homogeneous, ``(√s w)_+ √s a = s (w)_+ a``: the two halves sum to the original
  neuron, so ŷ is kept; so are ``WᵀW`` (``(1−t) + t = 1``) and ``‖a‖₂``.
* P5, √-merge of networks with disjoint neuron supports:
  ``θ(t) = (√(1−t) W_A + √t W_B, √(1−t) a_A + √t a_B)`` gives ``ŷ(t) = (1−t) ŷ_A + t ŷ_B``,
  so for a convex loss ``L(t) ≤ (1−t) L_A + t L_B``; ``W(t)ᵀW(t) = (1−t) W_AᵀW_A + t W_BᵀW_B``,
  hence ``‖W(t)‖₂² ≤ (1−t)‖W_A‖₂² + t‖W_B‖₂²`` stays in a spectral ball both endpoints are in.
* The *plain* schedule — write B's rows (outputs 0), swap the outputs linearly, erase A's
  rows — passes through ``W = W_A + W_B``, whose spectral norm reaches ``√2·r`` when the
  top singular vectors of the two blocks align: it leaves the Muon ball, the √-schedule
  does not (§D, "why the two constraints differ").

Parameters are dicts ``{"W": (m, d), "a": (m,)}`` (no bias: a bias is an extra input column).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from theory.claims import ClaimResult


def support(params: dict, tol: float = 0.0) -> np.ndarray:
    """Indices of neurons that are not identically zero (``|a_j| + ‖w_j‖ > tol``)."""
    w, a = np.asarray(params["W"]), np.asarray(params["a"])
    return np.flatnonzero(np.abs(a) + np.abs(w).max(axis=1) > tol)


def sqrt_transfer(params: dict, j: int, k: int, t) -> dict:
    """P2: move neuron ``j`` into the empty slot ``k``; ``t = 0`` is ``params``, ``t = 1`` has
    the neuron in slot k only."""
    if k in support(params):
        raise ValueError(f"slot {k} is not empty")
    w, a = params["W"], params["a"]
    keep, move = jnp.sqrt(1 - t), jnp.sqrt(t)
    w = w.at[k].set(move * w[j]).at[j].set(keep * w[j])
    a = a.at[k].set(move * a[j]).at[j].set(keep * a[j])
    return {"W": w, "a": a}


def sqrt_merge(params_a: dict, params_b: dict, t) -> dict:
    """P5: ``(√(1−t) W_A + √t W_B, √(1−t) a_A + √t a_B)``; needs disjoint neuron supports."""
    if np.intersect1d(support(params_a), support(params_b)).size:
        raise ValueError("the √-merge needs disjoint neuron supports: move them apart with P2 first")
    return {k: jnp.sqrt(1 - t) * params_a[k] + jnp.sqrt(t) * params_b[k] for k in ("W", "a")}


def plain_merge(params_a: dict, params_b: dict, t) -> dict:
    """The plain three-phase schedule on ``t ∈ [0, 1]`` (thirds): write B's rows, swap the
    outputs ``a_A → a_B`` linearly, erase A's rows. Keeps ŷ linear in the middle phase."""
    s1, s2, s3 = (jnp.clip(3 * t - i, 0.0, 1.0) for i in range(3))
    return {"W": (1 - s3) * params_a["W"] + s1 * params_b["W"], "a": (1 - s2) * params_a["a"] + s2 * params_b["a"]}


def max_spectral_norm(path, params_a: dict, params_b: dict, n_t: int = 301) -> float:
    """``max_t ‖W(t)‖₂`` of a path function ``path(params_a, params_b, t)`` on a fine grid."""
    return max(float(jnp.linalg.norm(path(params_a, params_b, t)["W"], ord=2)) for t in np.linspace(0, 1, n_t))


def claim_sqrt_schedule(r: float = 1.0, d: int = 3, block: int = 2, tol: float = 1e-9) -> ClaimResult:
    """THEORY.md §F.7: for two networks on disjoint neuron slots whose W-blocks are identical
    (top singular vectors aligned) with ``‖W_A‖₂ = ‖W_B‖₂ = r``, the plain schedule reaches
    ``max_t ‖W(t)‖₂ = √2·r`` while the √-schedule stays ``≤ r``."""
    rng = np.random.default_rng(0)
    m = 2 * block
    blk = rng.normal(size=(block, d))
    blk *= r / np.linalg.norm(blk, ord=2)
    w_a, w_b, a_a, a_b = np.zeros((m, d)), np.zeros((m, d)), np.zeros(m), np.zeros(m)
    w_a[:block], w_b[block:] = blk, blk  # identical blocks on disjoint slots
    a_a[:block] = rng.normal(size=block)
    a_b[block:] = a_a[:block]
    pa, pb = {"W": jnp.asarray(w_a), "a": jnp.asarray(a_a)}, {"W": jnp.asarray(w_b), "a": jnp.asarray(a_b)}
    plain, root = max_spectral_norm(plain_merge, pa, pb), max_spectral_norm(sqrt_merge, pa, pb)
    passed = abs(plain - np.sqrt(2) * r) <= tol * max(1.0, r) and root <= r * (1 + tol)
    return ClaimResult("F.7", "plain schedule reaches √2·r, √-schedule stays ≤ r", bool(passed),
                       {"r": r, "plain_max": plain, "sqrt_max": root, "sqrt2_r": float(np.sqrt(2) * r)}, tol)
