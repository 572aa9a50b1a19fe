"""CONNECT of THEORY.md §D: a constructive path between two solutions inside an optimizer's
constraint set, checked numerically, or an explicit :class:`Inconclusive` — and the claim
§F.6 (CONNECT above the width threshold; §F.1, the sets' geometry, is :mod:`theory.geometry`).

CONNECT(θ_A, θ_B, C) for ``f(x) = Σ_j a_j (w_jᵀx)_+`` (no bias), every piece a primitive of
:mod:`theory.constructive`:

1. reduce each endpoint to a small support, keeping ŷ: box and Muon-hybrid by P1 (rebalance
   ``‖w_j‖∞ = r`` resp. ``‖W‖₂ = r_W``) + P3 (fixed-W move to a vertex of the ℓ₁ LP, at most
   ``n + ⌊τ/r²⌋`` neurons) + zeroing the rows left with ``a_j = 0``; Muon-full by P4 tracking
   ``WᵀW`` (≤ ``n + d(d+1)/2`` neurons); ℓ₂ and weight decay (kind ``none``) by P4 tracking
   ``‖W‖_F²`` (≤ ``n + 1``);
2. if ``k_A + k_B > m`` the supports cannot be made disjoint: :class:`Inconclusive`;
3. P2 moves B's neurons that collide with A's support to free slots;
4. P5 √-merges, ``ŷ(t) = (1 − t) ŷ_A + t ŷ_B``, so a convex loss stays below the chord;
5. B's P2 and reduction are undone backwards.

Every piece keeps ŷ or interpolates it linearly and keeps each set's norms (module docstring
of :mod:`theory.constructive`), so the loss never exceeds ``max(L_A, L_B)`` and the path never
leaves C. That is checked, not assumed: every piece is sampled densely and any excess of loss
or constraint above ``tol`` turns the answer into :class:`Inconclusive` with the numbers.
Widths where CONNECT must succeed (THEORY.md §D): ``m ≥ 2(n + d(d+1)/2)`` for Muon-full,
``m ≥ 2(n + 1)`` for ℓ₂ and weight decay; the box and hybrid whenever ``k_A + k_B ≤ m``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from connect import barrier, optimizers, paths, spectra
from connect.constraints import KINDS, ConstraintSet
from connect.errors import UserError
from connect.models import relu
from connect.twolayer import losses, training
from theory import constructive
from theory.claims import ClaimResult

LOSSES = {"squared": losses.mse, "logistic": losses.logistic}


@dataclasses.dataclass(frozen=True)
class Inconclusive:
    """CONNECT could not certify a path; ``reason`` says why (never a silent pass). ``k_a``, ``k_b``:
    the supports after reduction (−1 when it was not reached); ``numbers``: the failed check's values."""

    reason: str
    k_a: int
    k_b: int
    width: int
    numbers: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ConstructivePath:
    """A chain of :class:`theory.constructive.Segment` pieces on equal shares of ``t ∈ [0, 1]``;
    ``path(0)`` is ``params_a`` and ``path(1)`` is ``params_b`` (float64, bit for bit)."""

    segments: tuple
    numbers: dict = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def __call__(self, t) -> dict:
        i, s = constructive.locate(t, len(self.segments))
        return self.segments[i](s)

    def evaluate(self, fn: Callable, ts_T):
        """``fn(θ(t))`` stacked over the grid (:func:`connect.paths.evaluate_callable`)."""
        return paths.evaluate_callable(self, fn, ts_T)


def _radii(constraint: ConstraintSet, shape: tuple[int, int]) -> tuple[float, float]:
    """``(r_W, r_a)``: box ``1/λ`` on both; hybrid ``s/λ`` (spectral) and ``1/λ``."""
    r_w = constraint.linf_radius if constraint.kind == "linf" else constraint.spectral_radius(shape)
    return float(r_w), 1.0 / constraint.lam


def _free(constraint: ConstraintSet) -> bool:
    return constraint.kind == "none" or constraint.lam == 0


def reduce(params: dict, x_NxD, constraint: ConstraintSet) -> tuple[constructive.Segment, dict]:
    """Step 1 of CONNECT (module docstring): a ŷ-keeping segment inside C to a small support, and
    ``{"support", "bound"}``: the support reached and the width bound it must obey (P3's
    ``n + ⌊τ/r²⌋``, P4's ``n + d(d+1)/2`` or ``n + 1``)."""
    p = constructive.as_float64(params)
    n, d = np.shape(x_NxD)
    if constraint.kind in ("linf", "muon") and not _free(constraint):
        r_w, r_a = _radii(constraint, p["W"].shape)
        p1 = constructive.balance_box(p, r_w) if constraint.kind == "linf" else constructive.balance_spectral(p, r_w)
        a_sparse, info = constructive.sparsest_output(p1.end, x_NxD, r_a)
        p3 = constructive.output_move(p1.end, a_sparse)
        cut = constructive.prune(p3.end)
        seg, bound = constructive.concatenate("reduce: P1 + P3", [p1, p3, cut], p), info["bound"]
    else:
        track = "gram" if constraint.kind == "muon_full" and not _free(constraint) else "frobenius"
        seg, bound = constructive.caratheodory(p, x_NxD, track), n + (d * (d + 1) // 2 if track == "gram" else 1)
    return seg, {"support": int(constructive.support(seg.end).size), "bound": int(bound)}


def connect_pair(params_a: dict, params_b: dict, x, y, constraint: ConstraintSet, *, loss: str = "squared",
                 tol: float = 1e-9, n_check: int = 33) -> ConstructivePath | Inconclusive:
    """CONNECT(θ_A, θ_B, C) of THEORY.md §D (module docstring), with its check: each piece sampled
    at ``n_check`` points, ``L ≤ max(L_A, L_B) + tol`` and ``relative_norm ≤ 1 + tol``."""
    _validate(params_a, params_b, x, y, constraint, loss)
    pa, pb = constructive.as_float64(params_a), constructive.as_float64(params_b)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m = pa["a"].shape[0]
    with jax.enable_x64(True):
        loss_fn, rel = _loss_fn(x, y, loss), _relative_fn(constraint)
        for tag, p in (("A", pa), ("B", pb)):
            if rel(p) > 1 + tol:
                return Inconclusive(f"endpoint {tag} lies outside the set (relative norm {rel(p):.6g})", -1, -1, m,
                                    {"relative_norm": rel(p)})
        (red_a, info_a), (red_b, info_b) = reduce(pa, x, constraint), reduce(pb, x, constraint)
        s_a, s_b = constructive.support(red_a.end), constructive.support(red_b.end)
        bounds = {"bound_a": info_a["bound"], "bound_b": info_b["bound"]}
        if s_a.size + s_b.size > m:
            return Inconclusive(f"supports after reduction k_A + k_B = {s_a.size} + {s_b.size} exceed the width {m}",
                                int(s_a.size), int(s_b.size), m, bounds)
        free = np.setdiff1d(np.arange(m), np.union1d(s_a, s_b))
        clash = np.intersect1d(s_a, s_b)
        move = constructive.transfer(red_b.end, list(zip(clash.tolist(), free[: clash.size].tolist())))
        pieces = red_a.pieces() + [constructive.merge(red_a.end, move.end), move.reversed()] + red_b.reversed().pieces()
        path = ConstructivePath(tuple(pieces), {"k_a": int(s_a.size), "k_b": int(s_b.size), "width": m,
                                                "moved": int(clash.size), **bounds})
        return _check(path, loss_fn, rel, max(loss_fn(pa), loss_fn(pb)), tol, n_check)


def _check(path: ConstructivePath, loss_fn, rel, loss_max: float, tol: float, n_check: int):
    """The dense check of CONNECT; the path with its worst numbers, or :class:`Inconclusive`."""
    worst_loss, worst_rel, where = -np.inf, -np.inf, ""
    for seg in path.segments:
        for s in np.linspace(0.0, 1.0, n_check):
            p = seg(s)
            lo, rn = loss_fn(p) - loss_max, rel(p)
            if lo > worst_loss:
                worst_loss, where = lo, f"{seg.name} at s={s:.3f}"
            worst_rel = max(worst_rel, rn)
    nums = {**path.numbers, "loss_excess": float(worst_loss), "max_relative_norm": float(worst_rel),
            "pieces": len(path.segments)}
    if worst_loss > tol:
        return Inconclusive(f"loss rises {worst_loss:.3g} above max(L_A, L_B) on {where}", nums["k_a"], nums["k_b"],
                            nums["width"], nums)
    if worst_rel > 1 + tol:
        return Inconclusive(f"the path leaves the set (relative norm {worst_rel:.9g})", nums["k_a"], nums["k_b"],
                            nums["width"], nums)
    return dataclasses.replace(path, numbers=nums)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _metrics(loss: str, constraint: ConstraintSet, params: dict, x_NxD, y_N) -> dict:
    """Loss (:func:`connect.models.relu.apply`), relative constraint norm and ``‖W‖₂`` of one network."""
    return {"loss": LOSSES[loss](relu.apply(params, x_NxD), y_N), "relative_norm": constraint.relative_norm(params),
            "spectral_norm": spectra.singular_values(params["W"])[0]}


def _loss_fn(x, y, loss: str):
    """``p -> L(p)`` as a float (call it where x64 is on)."""
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    return lambda p: float(_metrics(loss, ConstraintSet("none", 0.0), {"W": p["W"], "a": p["a"]}, xj, yj)["loss"])


def _relative_fn(constraint: ConstraintSet):
    """``p -> relative_norm(p)`` as a float (jitted per constraint; call it where x64 is on)."""
    return lambda p: float(_relative_jit(constraint, {"W": p["W"], "a": p["a"]}))


@functools.partial(jax.jit, static_argnums=0)
def _relative_jit(constraint: ConstraintSet, params: dict):
    return constraint.relative_norm(params)


def _validate(params_a, params_b, x, y, constraint: ConstraintSet, loss: str) -> None:
    """One-line :class:`UserError` for each input a user can get wrong."""
    if constraint.kind not in KINDS:
        raise UserError(f"unknown constraint {constraint.kind!r}: use one of {', '.join(KINDS)}")
    if constraint.lam < 0:
        raise UserError(f"λ = {constraint.lam} must be ≥ 0 (λ = 0 means no constraint)")
    if constraint.kind in ("muon", "muon_full") and "W" not in constraint.matrices:
        raise UserError("a Muon constraint for CONNECT needs matrices=('W',)")
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    for tag, p in (("A", params_a), ("B", params_b)):
        if set(p) != {"W", "a"}:
            raise UserError(f"network {tag} has arrays {sorted(p)}; CONNECT takes bias-free {{'W', 'a'}}: "
                            "append a column of ones to x and the bias to W")
        if np.shape(p["W"]) != np.shape(params_a["W"]) or np.shape(p["a"]) != (np.shape(p["W"])[0],):
            raise UserError(f"network {tag} has shapes W{np.shape(p['W'])}, a{np.shape(p['a'])}; both need W (m, d), a (m,)")
    if np.ndim(x) != 2 or np.shape(x)[1] != np.shape(params_a["W"])[1] or np.shape(y) != (np.shape(x)[0],):
        raise UserError(f"data shapes x{np.shape(x)}, y{np.shape(y)} do not fit W{np.shape(params_a['W'])}: need x (n, d), y (n,)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise UserError("the data contain NaN or inf: clean them first")


def fold_bias(params: dict, x_NxD, constraint: ConstraintSet) -> tuple[dict, np.ndarray]:
    """A network with bias as a bias-free one on inputs with a ones column (THEORY.md §A):
    ``W' = [W | b]``, ``x' = [x | 1]``, the same function. The set is unchanged for the box (b is
    capped like every entry of W) and for weight decay (``‖W'‖_F² = ‖W‖_F² + ‖b‖²``); Muon and ℓ₂
    constrain b as its own vector, which folding would change, so they are refused."""
    if not (_free(constraint) or constraint.kind == "linf"):
        raise UserError(f"CONNECT with a bias is exact only for the box and weight decay, not {constraint.kind!r}: "
                        "train bias-free networks (ReluConfig(bias=False))")
    w = np.hstack([np.asarray(params["W"], dtype=np.float64), np.asarray(params["b"], dtype=np.float64)[:, None]])
    x = np.asarray(x_NxD, dtype=np.float64)
    return {"W": w, "a": np.asarray(params["a"], dtype=np.float64)}, np.hstack([x, np.ones((x.shape[0], 1))])


def path_report(path, x, y, constraint: ConstraintSet, ts, loss: str = "squared") -> dict:
    """Along a path (anything with ``evaluate(fn, ts)``, or a function ``t -> params``): the loss
    curve, both barriers of :mod:`connect.barrier`, the largest relative constraint norm and the
    spectral norm ``‖W(t)‖₂`` (:func:`connect.spectra.singular_values`), in float64."""
    ts = np.asarray(ts, dtype=np.float64)
    with jax.enable_x64(True):
        xj, yj = jnp.asarray(x, dtype=jnp.float64), jnp.asarray(y, dtype=jnp.float64)

        def metrics(p):
            return _metrics(loss, constraint, {"W": p["W"], "a": p["a"]}, xj, yj)

        vals = path.evaluate(metrics, ts) if hasattr(path, "evaluate") else paths.evaluate_callable(path, metrics, ts)
        vals = {k: np.asarray(v, dtype=np.float64) for k, v in vals.items()}
    return {"t": ts, "loss": vals["loss"], "barrier": barrier.barrier(ts, vals["loss"]),
            "max_barrier": barrier.max_barrier(ts, vals["loss"]),
            "max_relative_norm": float(vals["relative_norm"].max()), "spectral_norm": vals["spectral_norm"]}


def linear_path(params_a: dict, params_b: dict) -> Callable:
    """The straight line ``t -> (1 − t) θ_A + t θ_B`` through :func:`connect.paths.point`."""
    nodes = jax.tree.map(lambda u, v: jnp.stack([jnp.asarray(u), jnp.asarray(v)]),
                         constructive.as_float64(params_a), constructive.as_float64(params_b))
    return functools.partial(_linear_point, nodes)


@jax.jit
def _linear_point(nodes, t):
    """One compiled program per shape, shared by every :func:`linear_path`."""
    return paths.point("linear", nodes, t)


# --------------------------------------------------------------------------- claims


def zero_loss_pair(constraint: ConstraintSet, n: int, d: int, m: int, seed: int, scale: float = 0.8):
    """Two width-m networks inside ``constraint`` that both fit the same data exactly: A random
    (scaled to relative norm ``scale``), ``y = f_A(x)``; B with random W and the minimum-norm a
    solving ``(XW_Bᵀ)_+ a = y``, rebalanced by one common scale ``(cW, a/c)``,
    ``c = √(ρ_a/ρ_W)`` (first seed offset where B lands inside). Returns ``(x, y, A, B)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    pa = {"W": rng.normal(size=(m, d)), "a": rng.normal(size=m)}
    with jax.enable_x64(True):
        rel = _relative_fn(constraint)
        if not _free(constraint):
            c = scale / rel(pa)
            pa = {"W": c * pa["W"], "a": c * pa["a"]}
        y = constructive.outputs(pa, x)
        for _ in range(100):
            w = rng.normal(size=(m, d))
            a = np.linalg.lstsq(np.maximum(x @ w.T, 0.0), y, rcond=None)[0]
            if _free(constraint):
                return x, y, pa, {"W": w, "a": a}
            rho_w, rho_a = rel({"W": w, "a": np.zeros(m)}), rel({"W": np.zeros((m, d)), "a": a})
            c = np.sqrt(rho_a / rho_w)
            pb = {"W": c * w, "a": a / c}
            if rel(pb) <= 1.0 and np.abs(constructive.outputs(pb, x) - y).max() <= 1e-12:
                return x, y, pa, pb
    raise RuntimeError("no zero-loss network B inside the set found: lower `scale`")


def trained_pair(optimizer: str, n: int, d: int, m: int, lam: float, seed: int, steps: int = 2000, lr: float = 0.01):
    """Two bias-free networks trained from seeds ``seed`` and ``seed + 1`` by ``optimizer`` of
    :mod:`connect.optimizers` (full batch, float32, squared loss) on random data, moved to float64
    and projected onto the optimizer's set (training ends only near it: THEORY.md §F.2). Returns
    ``(x, y, A, B, cset, projection distances)``."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(size=n)
    cfg = relu.ReluConfig(d_in=d, width=m, bias=False)
    trained, _ = training.train(lambda k: relu.init(k, cfg), lambda p, xx, yy: losses.mse(relu.apply(p, xx), yy),
                                optimizers.make(optimizer, lr, lam, ("W",)), [seed, seed + 1],
                                jnp.asarray(x, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.float32), steps)
    cset = optimizers.constraint(optimizer, lam, ("W",))
    ends, dist = [], []
    with jax.enable_x64(True):
        for i in range(2):
            p = {k: jnp.asarray(np.asarray(v[i], dtype=np.float64)) for k, v in trained.items()}
            dist.append(float(cset.distance(p)))
            ends.append({k: np.asarray(v) for k, v in cset.project(p).items()})
    return x, y, ends[0], ends[1], cset, dist


def saturated_box_pair(n: int, d: int, m: int, lam: float, seed: int):
    """A box instance at full capacity: every ``w_j = r·1``, ``a_j = r`` (``r = 1/λ``) on positive
    inputs gives ``ŷ_i = m r² Σ_k x_ik``, the box's largest value (THEORY.md §B), which no other
    output vector of the same W reaches, so P3 cannot drop a neuron: ``k_A = k_B = m``. B is A with
    its neurons reversed (the same function). Returns ``(x, y, A, B)``."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, d)))
    r = 1.0 / lam
    pa = {"W": np.full((m, d), r), "a": np.full(m, r)}
    pb = {"W": pa["W"][::-1].copy(), "a": pa["a"][::-1].copy()}
    return x, constructive.outputs(pa, x), pa, pb


def claim_connect(n: int = 4, d: int = 2, lam: float = 1.0, seed: int = 0, tol: float = 1e-9) -> ClaimResult:
    """THEORY.md §F.6 (§D CONNECT): at width ``m = 2(n + d(d+1)/2)`` for Muon-full and
    ``m = 2(n + 1)`` for ℓ₂ and weight decay, and for the box and hybrid at ``m = 4n`` where
    ``k_A + k_B ≤ m`` holds, each endpoint reduces within its bound (P3 ``n + ⌊τ/r²⌋``, P4
    ``n + d(d+1)/2`` resp. ``n + 1``) and CONNECT joins two different zero-loss networks of the set by a path
    whose loss barrier (ordinary :mod:`connect.barrier` code on :func:`connect.models.relu.apply`)
    is ≤ tol and that stays in the set, while the straight line between the same endpoints has a
    clear barrier (above 1% of ``L0 = ½ mean y²``, the loss of the zero network). The same for
    two AdamW-trained networks (width 4n, λ = 0.5, projected onto their box; their losses differ,
    so the bound is ``max(L_A, L_B)``). A box instance at full capacity (``k_A + k_B = 2m > m``) is reported
    INCONCLUSIVE."""
    cases = {"muon_full": 2 * (n + d * (d + 1) // 2), "l2": 2 * (n + 1), "none": 2 * (n + 1), "linf": 4 * n, "muon": 4 * n}
    numbers, passed = {}, True
    ts = np.linspace(0.0, 1.0, 101)
    for kind, m in cases.items():
        cset = ConstraintSet(kind, lam, ("W",))
        x, y, pa, pb = zero_loss_pair(cset, n, d, m, seed, scale=0.8 if kind in ("muon_full", "l2", "none") else 0.3)
        out = connect_pair(pa, pb, x, y, cset, tol=tol)
        line = path_report(linear_path(pa, pb), x, y, cset, ts)
        zero_loss = 0.5 * float(np.mean(y**2))
        numbers[f"{kind}_width"] = m
        numbers[f"{kind}_linear_barrier"] = line["max_barrier"]
        if isinstance(out, Inconclusive):
            numbers[f"{kind}_result"] = f"INCONCLUSIVE: {out.reason}"
            passed = False
            continue
        rep = path_report(out, x, y, cset, np.linspace(0.0, 1.0, 8 * len(out.segments) + 1))
        numbers.update({f"{kind}_result": "path", f"{kind}_k_a": out.numbers["k_a"], f"{kind}_k_b": out.numbers["k_b"],
                        f"{kind}_path_barrier": rep["max_barrier"], f"{kind}_path_max_relative_norm": rep["max_relative_norm"],
                        f"{kind}_linear_barrier_over_L0": line["max_barrier"] / zero_loss})
        passed &= rep["max_barrier"] <= tol and rep["max_relative_norm"] <= 1 + tol and line["max_barrier"] > 0.01 * zero_loss
        passed &= out.numbers["k_a"] <= out.numbers["bound_a"] and out.numbers["k_b"] <= out.numbers["bound_b"]
        numbers.update({f"{kind}_bound_a": out.numbers["bound_a"], f"{kind}_bound_b": out.numbers["bound_b"]})
    x, y, pa, pb, cset, dist = trained_pair("adamw", n, d, 4 * n, lam=0.5, seed=seed)
    out = connect_pair(pa, pb, x, y, cset, tol=tol)
    line = path_report(linear_path(pa, pb), x, y, cset, ts)
    numbers.update({"adamw_trained_projection_distance": max(dist), "adamw_trained_linear_barrier": line["max_barrier"],
                    "adamw_trained_result": "path" if isinstance(out, ConstructivePath) else f"INCONCLUSIVE: {out.reason}"})
    if isinstance(out, ConstructivePath):
        rep = path_report(out, x, y, cset, np.linspace(0.0, 1.0, 8 * len(out.segments) + 1))
        numbers.update({"adamw_trained_path_barrier": rep["max_barrier"], "adamw_trained_k_a": out.numbers["k_a"],
                        "adamw_trained_k_b": out.numbers["k_b"]})
        passed &= rep["max_barrier"] <= tol and rep["max_relative_norm"] <= 1 + tol and line["max_barrier"] > 1e3 * tol
    else:
        passed = False
    m_sat = 2 * n
    x, y, pa, pb = saturated_box_pair(n, d, m_sat, lam, seed)
    out = connect_pair(pa, pb, x, y, ConstraintSet("linf", lam), tol=tol)
    sat_ok = isinstance(out, Inconclusive) and out.k_a + out.k_b > m_sat
    numbers.update({"box_saturated_width": m_sat, "box_saturated_result": "INCONCLUSIVE" if sat_ok else "path",
                    "box_saturated_k_a": getattr(out, "k_a", -1), "box_saturated_k_b": getattr(out, "k_b", -1)})
    return ClaimResult("F.6", "CONNECT gives zero-barrier paths inside the set above the width threshold where the "
                       "straight line has a barrier; a saturated box is INCONCLUSIVE", bool(passed and sat_ok), numbers, tol)
