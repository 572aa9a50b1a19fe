"""Capacity of each constraint set (THEORY.md §B, checked by §F.5): how large ``|f(x)|`` can be
for a two-layer ReLU network ``f(x) = Σ_j a_j (w_jᵀx)_+`` (no bias) inside the set, with
``r_W`` the radius on W and ``r_a`` the radius on a.

* box (AdamW/Lion, ``|W_jk| ≤ r_W``, ``|a_j| ≤ r_a``): ``|f(x)| ≤ m·r_a·r_W·‖x‖₁``
  — each of the m terms is at most ``r_a · r_W‖x‖₁`` (Hölder);
* Muon-hybrid (``‖W‖₂ ≤ r_W``, ``|a_j| ≤ r_a``): ``|f(x)| ≤ √m·r_a·r_W·‖x‖₂``
  — ``Σ_j |a_j||w_jᵀx| ≤ r_a √m ‖Wx‖₂`` (Cauchy–Schwarz);
* Muon-full (``‖W‖₂ ≤ r_W``, ``‖a‖₂ ≤ r_a``): ``|f(x)| ≤ r_a·r_W·‖x‖₂`` at every width
  — ``|aᵀ(Wx)_+| ≤ ‖a‖₂‖Wx‖₂``.

Each bound is attained by an explicit network (:func:`extremal_network`). At a fixed radius
the box's capacity grows like m, the hybrid's like √m and Muon-full's not at all (THEORY.md
§D, "disjoint vs overlapping regions"). With Keller Jordan's shape factor, however, the
Muon radius ``r_W = s/λ = √(max(1, m/d))/λ`` grows with the width m of a tall W, and so
does Muon-full's capacity (like √m): the "never reaches zero loss at any width" argument
needs a width-independent radius (s = 1); the "consistent RMS" factor 0.2·√max(m, d) grows too.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from connect.constraints import ConstraintSet
from connect.models import relu
from theory.claims import ClaimResult

KINDS = ("linf", "muon", "muon_full")


def radii(cset: ConstraintSet, width: int, d_in: int) -> tuple[float, float]:
    """``(r_W, r_a)`` of a set for a width-m network on d inputs."""
    r_a = 1.0 / cset.lam
    r_w = cset.linf_radius if cset.kind == "linf" else cset.spectral_radius((width, d_in))
    return float(r_w), r_a


def bound(cset: ConstraintSet, width: int, x: np.ndarray) -> float:
    """The capacity bound on ``|f(x)|`` (module docstring) for one input x."""
    r_w, r_a = radii(cset, width, len(x))
    if cset.kind == "linf":
        return width * r_a * r_w * float(np.abs(x).sum())
    scale = np.sqrt(width) if cset.kind == "muon" else 1.0
    return float(scale * r_a * r_w * np.linalg.norm(x))


def extremal_network(cset: ConstraintSet, width: int, x: np.ndarray) -> dict:
    """A network inside the set with ``f(x)`` equal to the bound."""
    r_w, r_a = radii(cset, width, len(x))
    m = width
    if cset.kind == "linf":
        w = np.tile(r_w * np.sign(x), (m, 1))
        a = np.full(m, r_a)
    elif cset.kind == "muon":
        w = np.tile(r_w / np.sqrt(m) * x / np.linalg.norm(x), (m, 1))  # rank one, ‖W‖₂ = r_W
        a = np.full(m, r_a)
    else:
        w = np.zeros((m, len(x)))
        w[0] = r_w * x / np.linalg.norm(x)
        a = np.zeros(m)
        a[0] = r_a
    return {"W": jnp.asarray(w), "a": jnp.asarray(a)}


def claim_capacity(kind: str, width: int, d_in: int = 3, lam: float = 0.5, n_random: int = 200, seed: int = 0,
                   tol: float = 1e-9) -> ClaimResult:
    """THEORY.md §F.5 (capacity): no network of the set exceeds the bound on random inputs
    (networks drawn at random and projected onto the set), and :func:`extremal_network` lies
    in the set and attains it."""
    if kind not in KINDS:
        raise ValueError(f"capacity is stated for {', '.join(KINDS)}, not {kind!r}")
    cset = ConstraintSet(kind, lam, ("W",))
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(n_random):
        x = rng.normal(size=d_in)
        raw = {"W": jnp.asarray(rng.normal(size=(width, d_in)) * 3 / lam), "a": jnp.asarray(rng.normal(size=width) * 3 / lam)}
        p = cset.project(raw)
        worst = max(worst, abs(float(relu.apply(p, jnp.asarray(x[None]))[0])) / bound(cset, width, x))
    x = rng.normal(size=d_in)
    ext = extremal_network(cset, width, x)
    attained = float(relu.apply(ext, jnp.asarray(x[None]))[0]) / bound(cset, width, x)
    inside = float(cset.relative_norm(ext))
    passed = worst <= 1 + tol and abs(attained - 1) <= tol and inside <= 1 + tol
    return ClaimResult("F.5", f"{kind} capacity bound holds and is attained at width {width}", bool(passed),
                       {"worst_random_ratio": worst, "extremal_ratio": attained, "extremal_relative_norm": inside}, tol)

