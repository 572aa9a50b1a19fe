"""Constructive path primitives of THEORY.md §D for two-layer ReLU networks ``θ = (W, a)``,
``ŷ(θ) = (XWᵀ)_+ a``, and the √-schedule claim (§F.7).

Every primitive returns a :class:`Segment`: a function ``s ∈ [0, 1] → params`` whose endpoints
are stored exactly (``seg(0) is seg.start``, ``seg(1) is seg.end``), so segments chain without
round-off (:mod:`theory.connectivity` strings them into CONNECT's path). All keep ŷ on the
training data (P5 interpolates it linearly):

* P1, rescale ``(w_j, a_j) → (s_j w_j, a_j/s_j)``, ``s_j > 0`` (ReLU is positively homogeneous),
  geometrically ``s_j(u) = s_j*^u``. In the box ``|W_jk| ≤ r``, ``|a_j| ≤ r`` the feasible scales
  of neuron j are the interval ``[|a_j|/r, r/‖w_j‖∞]`` (:func:`box_scale_interval`), so the
  segment stays feasible. In the hybrid (``‖W‖₂ ≤ r_W``, ``|a_j| ≤ r``) ``v ↦ log‖diag(e^v)W‖₂``
  is convex (``‖diag(e^v)Wx‖² = Σ_j e^{2v_j}(w_jᵀx)²`` is log-convex in v, and a max of
  log-convex functions is log-convex) and ``log|a_j|e^{−v_j}`` is linear, so the geometric
  segment between two feasible scalings is feasible too [R, derived here].
* P3, fixed-W output move ``a(s) = (1−s) a₀ + s a₁`` inside the convex set
  ``{a : |a_j| ≤ r, (XWᵀ)_+ a = ŷ}``; :func:`sparsest_output` finds a vertex ``a₁`` of the ℓ₁ LP
  ``min ‖a‖₁`` over it (HiGHS dual simplex). A vertex has at most n basic variables strictly
  between their bounds; the others sit at 0 or ``±r`` and each of the latter adds r to
  ``‖a₁‖₁``, so ``nnz(a₁) ≤ n + ⌊‖a₁‖₁/r⌋ = n + ⌊τ/r²⌋`` with ``τ = Σ_j |a_j|‖w_j‖∞`` the
  ℓ∞-path norm once every ``‖w_j‖∞ = r`` (THEORY.md §D, derived here).
* P4, lifted Carathéodory (:func:`caratheodory`): the lifted vectors
  ``z_j = (a_j (Xw_j)_+, upper triangle of w_j w_jᵀ)`` satisfy ``Σ_j z_j = (ŷ, WᵀW)``; scaling
  neuron j by ``√(1 − t c_j)`` (both w_j and a_j) turns this into ``Σ_j (1 − t c_j) z_j``, which
  is unchanged when ``Zc = 0``. Orienting c so that ``Σ_j c_j a_j² ≥ 0`` makes
  ``‖a(t)‖² = ‖a‖² − t Σ_j c_j a_j²`` non-increasing; at ``t* = 1/max_j c_j`` a neuron vanishes.
  Repeating while the ``z_j`` are dependent ends with at most ``n + d(d+1)/2`` neurons
  (``n + 1`` when only ``‖W‖_F² = Σ‖w_j‖²`` is tracked, enough for ℓ₂ balls and weight decay).

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

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from theory.claims import ClaimResult


@dataclasses.dataclass(frozen=True)
class Segment:
    """A path piece ``s ∈ [0, 1] → params`` with exact endpoints ``start`` (s = 0) and ``end``
    (s = 1); ``parts`` lists the sub-segments of a concatenation (empty for a primitive)."""

    name: str
    fn: Callable[[float], dict]
    start: dict
    end: dict
    parts: tuple = ()

    def __call__(self, s) -> dict:
        s = float(s)
        if s <= 0.0:
            return self.start
        if s >= 1.0:
            return self.end
        return self.fn(s)

    def reversed(self) -> Segment:
        """The same piece traversed from ``end`` to ``start``."""
        return Segment(f"{self.name} (reversed)", lambda s: self.fn(1.0 - s), self.end, self.start,
                       tuple(p.reversed() for p in reversed(self.parts)))

    def pieces(self) -> list:
        """The primitive segments, in order (a primitive is its own single piece)."""
        return [q for p in self.parts for q in p.pieces()] if self.parts else [self]


def locate(t, n_pieces: int) -> tuple[int, float]:
    """Piece index and local ``s`` of ``t ∈ [0, 1]`` when n equal-length pieces tile [0, 1]."""
    u = min(max(float(t), 0.0), 1.0) * n_pieces
    i = min(int(np.floor(u)), n_pieces - 1)
    return i, u - i


def concatenate(name: str, segments: Sequence[Segment], start: dict) -> Segment:
    """Segments one after the other on equal shares of [0, 1]; ``start`` when there are none."""
    segments = tuple(segments)
    if not segments:
        return Segment(name, lambda s: start, start, start)

    def fn(s):
        i, u = locate(s, len(segments))
        return segments[i](u)

    return Segment(name, fn, segments[0].start, segments[-1].end, segments)


def as_float64(params: dict) -> dict:
    """``{"W", "a"}`` as float64 numpy arrays (no copy when they already are). The primitives are
    for bias-free networks: a nonzero bias ``b`` is refused (fold it into ``W`` first with
    :func:`theory.connectivity.fold_bias`); an all-zero one is dropped, the function unchanged."""
    if "b" in params and np.any(np.asarray(params["b"]) != 0):
        raise ValueError("the constructive primitives take networks without bias: fold b into W (theory.connectivity.fold_bias)")
    return {"W": np.asarray(params["W"], dtype=np.float64), "a": np.asarray(params["a"], dtype=np.float64)}


def outputs(params: dict, x_NxD) -> np.ndarray:
    """``ŷ = (XWᵀ)_+ a`` in float64 numpy (the same formula as :func:`connect.models.relu.apply`
    without bias)."""
    return np.maximum(np.asarray(x_NxD, dtype=np.float64) @ np.asarray(params["W"]).T, 0.0) @ np.asarray(params["a"])


def _xp(*arrays):
    """jax.numpy when any input is a jax array or tracer, else numpy (keeps float64 numpy inputs in numpy)."""
    return jnp if any(isinstance(x, jax.Array) for x in arrays) else np


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
    xp = _xp(w, a, t)
    keep, move = xp.sqrt(1 - t), xp.sqrt(t)
    slot = xp.arange(a.shape[0])
    a = xp.where(slot == k, move * a[j], xp.where(slot == j, keep * a[j], a))
    w = xp.where((slot == k)[:, None], move * w[j][None, :], xp.where((slot == j)[:, None], keep * w[j][None, :], w))
    return {"W": w, "a": a}


def sqrt_merge(params_a: dict, params_b: dict, t) -> dict:
    """P5: ``(√(1−t) W_A + √t W_B, √(1−t) a_A + √t a_B)``; needs disjoint neuron supports."""
    if np.intersect1d(support(params_a), support(params_b)).size:
        raise ValueError("the √-merge needs disjoint neuron supports: move them apart with P2 first")
    xp = _xp(params_a["W"], params_b["W"], t)
    return {k: xp.sqrt(1 - t) * params_a[k] + xp.sqrt(t) * params_b[k] for k in ("W", "a")}


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


def sqrt_split(params: dict, j: int, slots: Sequence[int]) -> dict:
    """√k-split: neuron ``j`` becomes k copies ``(w_j/√k, a_j/√k)`` in ``j`` and the empty
    ``slots`` (k = 1 + len(slots)); keeps ŷ (``k · (1/√k)² = 1``), ``WᵀW`` and ``‖a‖₂``."""
    p = as_float64(params)
    if np.intersect1d(support(p), slots).size:
        raise ValueError(f"slots {list(slots)} are not all empty")
    w, a = p["W"].copy(), p["a"].copy()
    c = 1.0 / np.sqrt(1 + len(slots))
    for k in [j, *slots]:
        w[k], a[k] = c * p["W"][j], c * p["a"][j]
    return {"W": w, "a": a}


def box_scale_interval(params: dict, r: float) -> tuple[np.ndarray, np.ndarray]:
    """P1 in the box: the scales ``s`` with ``(s w_j, a_j/s)`` inside ``|·| ≤ r`` form the interval
    ``[|a_j|/r, r/‖w_j‖∞]`` (``s‖w_j‖∞ ≤ r`` and ``|a_j|/s ≤ r``; ``∞`` when ``w_j = 0``); it is
    non-empty iff ``|a_j|‖w_j‖∞ ≤ r²`` (THEORY.md §B, orbit membership)."""
    p = as_float64(params)
    row = np.abs(p["W"]).max(axis=1)
    with np.errstate(divide="ignore"):
        return np.abs(p["a"]) / r, np.where(row > 0, r / row, np.inf)


def rescale(params: dict, scales_M, name: str = "P1 rescale") -> Segment:
    """P1: ``(w_j, a_j) → (s_j(u) w_j, a_j/s_j(u))`` with ``s_j(u) = s_j^u``, ``u ∈ [0, 1]``
    (module docstring: stays in the box or hybrid set when both ends are in it)."""
    p = as_float64(params)
    scales_M = np.asarray(scales_M, dtype=np.float64)
    if np.any(scales_M <= 0) or not np.all(np.isfinite(scales_M)):
        raise ValueError("P1 scales must be positive and finite")

    def fn(u):
        s = scales_M**u
        return {"W": s[:, None] * p["W"], "a": p["a"] / s}

    return Segment(name, fn, p, fn(1.0))


def balance_box(params: dict, r: float) -> Segment:
    """P1 for the box: every live neuron to ``‖w_j‖∞ = r`` (the top of its interval), the
    rebalancing before P3's LP. Neurons with ``a_j = 0`` or ``w_j = 0`` keep scale 1."""
    p = as_float64(params)
    _, hi = box_scale_interval(p, r)
    live = (np.abs(p["a"]) > 0) & np.isfinite(hi)
    return rescale(p, np.where(live, hi, 1.0), "P1 balance ‖w_j‖∞ = r")


def balance_spectral(params: dict, r_w: float) -> Segment:
    """P1 for the hybrid: one common scale ``s = r_W/‖W‖₂`` (``‖W‖₂ = r_W``, every ``|a_j|``
    shrinks by ``1/s ≤ 1`` when the start is inside), so P3's LP needs less ℓ₁ mass."""
    p = as_float64(params)
    norm = np.linalg.norm(p["W"], ord=2)
    s = r_w / norm if norm > 0 else 1.0
    return rescale(p, np.full(p["a"].shape, s), "P1 balance ‖W‖₂ = r_W")


def output_move(params: dict, a_M, name: str = "P3 output move") -> Segment:
    """P3: ``W`` fixed, ``a(s) = (1 − s) a₀ + s a₁``. When ``(XWᵀ)_+ a₁ = ŷ`` and both ends lie in a
    convex set of outputs (box ``|a_j| ≤ r``), so does every ``a(s)``."""
    p = as_float64(params)
    a_1 = np.asarray(a_M, dtype=np.float64)
    return Segment(name, lambda s: {"W": p["W"], "a": (1 - s) * p["a"] + s * a_1}, p, {"W": p["W"], "a": a_1})


#: HiGHS tolerances for the exact-support LPs: the default primal feasibility 1e-7 lets ŷ drift by
#: ~1e-8, which the polish cannot repair when the support misses a direction of ŷ (seen as a 2.6e-9
#: loss rise on CONNECT paths the theory guarantees); 1e-10 keeps ŷ to round-off.
LP_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def sparsest_output(params: dict, x_NxD, r: float) -> tuple[np.ndarray, dict]:
    """A vertex of ``min ‖a‖₁ s.t. (XWᵀ)_+ a = ŷ(θ), |a_j| ≤ r`` (``a = a⁺ − a⁻``, HiGHS dual
    simplex, ``scipy.optimize.linprog(method="highs-ds")``), polished so that ŷ holds to round-off:
    entries at ``±r`` are pinned there and the strictly-interior ones re-solved by least squares
    on their columns. Returns ``(a, info)`` with ``info`` = nonzeros, the bound
    ``n + ⌊‖a‖₁/r⌋`` (module docstring), ``tau = r‖a‖₁`` (the ℓ∞ path norm once every
    ``‖w_j‖∞ = r``), the number at the bound, and the ŷ residual."""
    p = as_float64(params)
    x = np.asarray(x_NxD, dtype=np.float64)
    phi_NxM = np.maximum(x @ p["W"].T, 0.0)
    y_hat = phi_NxM @ p["a"]
    n, m = phi_NxM.shape
    res = scipy.optimize.linprog(np.ones(2 * m), A_eq=np.hstack([phi_NxM, -phi_NxM]), b_eq=y_hat,
                                 bounds=[(0.0, r)] * (2 * m), method="highs-ds", options=LP_OPTIONS)
    if res.status != 0:
        raise RuntimeError(f"P3 LP failed: {res.message}")
    a = res.x[:m] - res.x[m:]
    a[np.abs(a) <= 1e-10 * r] = 0.0
    at_bound = np.abs(a) >= r * (1 - 1e-9)
    a[at_bound] = r * np.sign(a[at_bound])
    inner = np.flatnonzero((a != 0) & ~at_bound)
    if inner.size:
        rhs = y_hat - phi_NxM[:, at_bound] @ a[at_bound]
        a[inner] = np.linalg.lstsq(phi_NxM[:, inner], rhs, rcond=None)[0]
    l1 = float(np.abs(a).sum())
    info = {"nonzeros": int(np.count_nonzero(a)), "bound": int(n + np.floor(l1 / r + 1e-9)), "tau": r * l1,
            "at_bound": int(at_bound.sum()), "residual": float(np.abs(phi_NxM @ a - y_hat).max()),
            "max_abs_a_over_r": float(np.abs(a).max() / r) if m else 0.0}
    return a, info


def prune(params: dict) -> Segment:
    """Zero the rows of neurons with ``a_j = 0`` linearly, ``w_j(s) = (1 − s) w_j``: ŷ is kept
    exactly and every norm of W (ℓ∞, spectral ``‖DW‖₂ ≤ ‖W‖₂`` for ``0 ⪯ D ⪯ I``) shrinks."""
    p = as_float64(params)
    dead = (p["a"] == 0)[:, None]
    return Segment("prune rows with a_j = 0", lambda s: {"W": np.where(dead, (1 - s) * p["W"], p["W"]), "a": p["a"]},
                   p, {"W": np.where(dead, 0.0, p["W"]), "a": p["a"]})


def lifted_vectors(params: dict, x_NxD, idx, track: str = "gram") -> np.ndarray:
    """P4's ``z_j`` as columns, shape ``(n + D, len(idx))``: ``a_j (Xw_j)_+`` stacked on the upper
    triangle of ``w_j w_jᵀ`` (``track="gram"``, D = d(d+1)/2) or on ``‖w_j‖²`` (``"frobenius"``, D = 1)."""
    p = as_float64(params)
    w = p["W"][idx]
    head = np.maximum(np.asarray(x_NxD, dtype=np.float64) @ w.T, 0.0) * p["a"][idx][None, :]
    if track == "gram":
        iu = np.triu_indices(w.shape[1])
        tail = (w[:, :, None] * w[:, None, :])[:, iu[0], iu[1]].T
    elif track == "frobenius":
        tail = (w**2).sum(axis=1)[None, :]
    else:
        raise ValueError(f"track must be 'gram' or 'frobenius', got {track!r}")
    return np.vstack([head, tail])


def _null_vector(z, rank_tol: float):
    """A unit c with ``Zc ≈ 0`` (last right singular vector), or None when the columns are independent."""
    rows, k = z.shape
    _, sv, vt = np.linalg.svd(z, full_matrices=True)
    if k > rows or sv[-1] <= rank_tol * max(sv[0], 1e-300):
        return vt[-1]
    return None


def caratheodory(params: dict, x_NxD, track: str = "gram", rank_tol: float = 1e-12) -> Segment:
    """P4 (module docstring): repeat the null-vector move until the lifted vectors of the live
    neurons are independent. One part per move; ŷ and ``WᵀW`` (or ``‖W‖_F²``) are kept, ``‖a‖₂``
    never grows, and at most ``n + d(d+1)/2`` (or ``n + 1``) neurons remain."""
    start = as_float64(params)
    cur, steps = start, []
    while True:
        live = support(cur)
        if live.size == 0:
            break
        c = _null_vector(lifted_vectors(cur, x_NxD, live, track), rank_tol)
        if c is None:
            break
        drop = c @ cur["a"][live] ** 2
        if drop < 0 or (drop <= 1e-15 and c.max() <= 0):
            c = -c
        t_star = 1.0 / c.max()
        c_M = np.zeros_like(cur["a"])
        c_M[live] = c
        steps.append(_carath_step(cur, c_M, t_star, len(steps)))
        cur = steps[-1].end
    return concatenate(f"P4 lifted Carathéodory ({track})", steps, start)


def _carath_step(p: dict, c_M: np.ndarray, t_star: float, i: int) -> Segment:
    """One P4 move: neuron j scaled by ``√(1 − s t* c_j)``, ``s ∈ [0, 1]``; at s = 1 the neurons
    with ``1 − t* c_j ≤ 1e-14`` are exactly zero."""
    def fn(s):
        g = np.sqrt(np.maximum(1 - s * t_star * c_M, 0.0))
        return {"W": g[:, None] * p["W"], "a": g * p["a"]}

    end = fn(1.0)
    gone = 1 - t_star * c_M <= 1e-14
    end = {"W": np.where(gone[:, None], 0.0, end["W"]), "a": np.where(gone, 0.0, end["a"])}
    return Segment(f"P4 step {i}", fn, p, end)


def transfer(params: dict, pairs: Sequence[tuple[int, int]]) -> Segment:
    """P2 for several neurons at once: each ``(j, k)`` √-transfers neuron j to empty slot k
    (:func:`sqrt_transfer`), all at the same s."""
    p = as_float64(params)

    def fn(s):
        q = p
        for j, k in pairs:
            q = sqrt_transfer(q, j, k, s)
        return q

    return Segment(f"P2 transfer {list(pairs)}", fn, p, fn(1.0))


def merge(params_a: dict, params_b: dict) -> Segment:
    """P5 :func:`sqrt_merge` of two networks on disjoint neuron supports as a segment."""
    pa, pb = params_a, params_b
    sqrt_merge(pa, pb, 0.5)  # checks the supports
    return Segment("P5 √-merge", lambda s: sqrt_merge(pa, pb, s), pa, pb)
