"""Global optimum of a two-layer ReLU network in an optimizer's implicit set (THEORY.md §B–C),
from the convex programs of :mod:`theory.programs`, with networks recovered by
:mod:`theory.recovery` and critical widths from :mod:`theory.critical_widths` (the claims
§F.3–F.5 that check them are in :mod:`theory.convex_claims`).

Which program answers which set, at decay λ (radii ``r_W``, ``r_a`` on W and a):

* weight decay (``sgd``/``momentum``/``adam``, kind ``none``): C1 with ``β = λ`` is exact for
  ``m ≥ m*`` (Pilanci & Ergen 2020, arXiv 2002.10553) [S];
* Muon-full: C2 with ``r_W = s/λ`` (``s`` Muon's shape factor), ``r_a = 1/λ`` is the optimum at
  every width that holds the recovered network (``≤ n + d(d+1)/2`` neurons) [R];
* the box (``adamw``/``lion``/``signsgd``): the sandwich ``p_∞(m r_W r_a) ≤ p_box(m)`` (a box
  neuron has ``‖a w‖∞ ≤ r_W r_a``) and ``p_box(m + n) ≤ p_∞(m r_W r_a)``
  (:func:`theory.recovery.box_network`) [R];
* Muon-hybrid (``muon``/``muon_exact``), no exact program: ``C_op-full ⊂ C_hyb ⊂ C_∞`` at equal
  radii give ``p_∞(m r_W r_a) ≤ p_hyb(m) ≤ p_opfull(m)``.

Every program is over the given patterns: with all chambers it is exact, with a subsample
it is restricted, its value an upper bound attained by the recovered network.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from connect.constraints import muon_shape_factor
from connect.errors import UserError
from theory import critical_widths, names, programs, recovery
from theory import patterns as pat
from theory.programs import LOSSES


@dataclasses.dataclass(frozen=True)
class Optimum:
    """Result of :func:`optimum`. ``value`` is attained by ``network`` (so it is an upper bound
    on the constrained optimum at that width); ``exact`` says it *is* the optimum (all patterns
    present and, for the box and hybrid sets, a bracket that closes). ``bracket`` holds the
    bounds and critical widths of the constraint kind; ``notes`` says what they mean."""

    constraint: str
    lam: float
    loss: str
    value: float
    network: dict
    m_star: int | None
    M_star: int | None
    bracket: dict
    n_patterns: int
    patterns: str
    exact: bool
    solver: str
    notes: str

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["network"] = {k: np.asarray(v).tolist() for k, v in self.network.items()}
        out["width"] = int(len(self.network["a"]))
        return out


def _validate(x_NxD, y_N, constraint: str, lam: float, loss: str) -> tuple[np.ndarray, np.ndarray, str]:
    kind = names.kind_of(constraint)
    if kind == "l2":
        raise UserError("no convex program for the ℓ₂ ball (THEORY.md §C has weight decay, Muon-full, box and hybrid): "
                        "use --constraint weight_decay, muon_full, adamw or muon")
    kind = "weight_decay" if kind == "none" else kind
    names.check_lam(lam)
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}: choose from {', '.join(LOSSES)}")
    x_NxD, y_N = np.asarray(x_NxD, np.float64), np.asarray(y_N, np.float64).reshape(-1)
    if x_NxD.ndim != 2 or len(x_NxD) != len(y_N) or len(y_N) == 0:
        raise UserError(f"data must be x of shape (n, d) and y of shape (n,), got {x_NxD.shape} and {y_N.shape}")
    if not (np.isfinite(x_NxD).all() and np.isfinite(y_N).all()):
        raise UserError("the data contain NaN or infinite values: clean or drop those rows first")
    if loss == "logistic" and not np.isin(y_N, (-1.0, 1.0)).all():
        raise UserError("logistic loss needs labels y in {-1, +1}: map the classes to ±1")
    return x_NxD, y_N, kind


def optimum(x_NxD, y_N, constraint: str, lam: float, *, loss: str = "squared", n_gates: int = 1000, seed: int = 0,
            width: int | None = None, bias: bool = False) -> Optimum:
    """Global optimum of ``L`` over a two-layer ReLU network in the implicit set of ``constraint``
    at decay λ (THEORY.md §B–C), from the convex programs (module docstring).

    ``constraint``: an optimizer name or a kind, mapped by :func:`theory.names.kind_of` (``l2`` has
    no program here). ``sgd``/``momentum``/``adam``/``weight_decay``/``none`` →
    C1 with ``β = λ`` (``m*``, ``M*``, connected width); ``muon_full`` → C2 with
    ``r_W = s/λ``, ``r_a = 1/λ`` (``s`` Muon's shape factor at ``width``, 1 when no width);
    ``adamw``/``lion``/``signsgd``/``linf`` → the box ``r = 1/λ`` at ``width`` (default 2n),
    bracketed by the sandwich ``p_∞(m r²) ≤ p_box(m) ≤ p_∞((m − n) r²)`` and, for squared loss,
    the interpolation width from ``τ*``; ``muon``/``muon_exact`` (Muon-hybrid, no exact program)
    → ``p_∞(m r_W r_a) ≤ p_hyb(m) ≤ p_opfull(m)`` from ``C_op-full ⊂ C_hyb ⊂ C_∞``. Patterns:
    all chambers for d = 2 (after the bias column), else ``n_gates`` Gaussian gates and a 10×
    check (:func:`theory.patterns.complete`); lower bounds hold only with all patterns."""
    x_NxD, y_N, kind = _validate(x_NxD, y_N, constraint, lam, loss)
    if bias:
        x_NxD = np.concatenate([x_NxD, np.ones((len(x_NxD), 1))], axis=1)
    if width is not None and width < 1:
        raise UserError(f"width must be ≥ 1, got {width}")
    pset = pat.complete(x_NxD, n_gates, seed)
    program = _weight_decay if kind == "weight_decay" else _muon_full if kind == "muon_full" else _box_or_hybrid
    fields, closed = program(x_NxD, y_N, pset.d_PxN, kind, lam, loss, width)
    sub = "" if pset.exact else "; patterns are a subsample, so values are upper bounds and 'lower' bounds are not certified"
    return Optimum(**{**fields, "notes": fields["notes"] + sub}, exact=pset.exact and closed, constraint=kind, lam=float(lam),
                   loss=loss, n_patterns=len(pset.d_PxN), patterns=pset.method)


def _weight_decay(x_NxD, y_N, d_PxN, kind, lam, loss, width) -> tuple[dict, bool]:
    """C1 with ``β = λ`` (any width): ``m*``, ``M*`` and the width from which the optimal set is connected."""
    n, _ = x_NxD.shape
    sol = critical_widths.weight_decay_optimum(x_NxD, y_N, d_PxN, lam, loss)
    conn = critical_widths.staircase_width(sol.m_star, sol.M_star, n)
    return dict(value=sol.value, network=sol.network, m_star=sol.m_star, M_star=sol.M_star, solver=sol.solver,
                bracket={"connected_width": conn, "active_blocks": sol.n_active},
                notes=f"C1 with β = λ: optimum for width ≥ m*, optimal set connected for width ≥ min(m* + M*, n + 1) = {conn}"), True


def _muon_full(x_NxD, y_N, d_PxN, kind, lam, loss, width) -> tuple[dict, bool]:
    """C2 with ``r_W = s/λ``, ``r_a = 1/λ``; closed when the recovered network fits ``width``."""
    n, d = x_NxD.shape
    r_a = 1.0 / lam
    r_w = (muon_shape_factor((width, d)) if width else 1.0) / lam
    value, blocks, solver = programs.muon_full_program(x_NxD, y_N, d_PxN, r_w, r_a, loss)
    net = recovery.lifted_caratheodory(recovery.muon_full_network(blocks), x_NxD)
    fits = width is None or len(net["a"]) <= width
    return dict(value=value, network=net, m_star=None, M_star=None, solver=solver,
                bracket={"network_width": len(net["a"]), "exact_width": n + d * (d + 1) // 2, "r_W": r_w, "r_a": r_a},
                notes="C2: optimum at every width ≥ the network's (≤ n + d(d+1)/2 by lifted Carathéodory)"
                + ("" if fits else f"; the optimum needs {len(net['a'])} > {width} neurons: value is a lower bound at this width")
                ), fits


def _box_or_hybrid(x_NxD, y_N, d_PxN, kind, lam, loss, width) -> tuple[dict, bool]:
    """The bracket ``[p_∞(m r_W r_a), upper]`` at width m (default 2n), upper attained by a network
    (module docstring); closed when its ends agree to 10⁻⁶."""
    n, d = x_NxD.shape
    r_a = 1.0 / lam
    m = int(width) if width else 2 * n
    r_w = (muon_shape_factor((m, d)) if kind == "muon" else 1.0) / lam
    low, _, solver = programs.linf_program(x_NxD, y_N, d_PxN, m * r_w * r_a, loss)
    zero = recovery.data_loss(np.zeros(n), y_N, loss)
    bracket = {"width": m, "value_lower": low, "r_W": r_w, "r_a": r_a}
    if kind == "linf":
        up, net = zero, recovery.empty_network(d)
        if m > n:
            up, blocks, _ = programs.linf_program(x_NxD, y_N, d_PxN, (m - n) * r_w * r_a, loss)
            net = recovery.box_network(blocks, x_NxD, d_PxN, r_w, r_a)
            up = recovery.data_loss(recovery.forward(net, x_NxD), y_N, loss)
        if loss == "squared":
            tau, _ = programs.min_linf_path_norm(x_NxD, y_N, d_PxN)
            bracket["tau_star"] = tau
            bracket["interpolation_width"] = list(critical_widths.interpolation_bracket(tau, r_w, r_a, n)) if math.isfinite(tau) else None
        notes = "box: p_∞(m r²) ≤ p_box(m) ≤ p_∞((m − n) r²), the upper value attained by the network"
    else:
        value, blocks, _ = programs.muon_full_program(x_NxD, y_N, d_PxN, r_w, r_a, loss)
        net = recovery.lifted_caratheodory(recovery.muon_full_network(blocks), x_NxD)
        up = value
        if len(net["a"]) > m:
            up, net = zero, recovery.empty_network(d)
        notes = ("Muon-hybrid has no exact program: C_op-full ⊂ C_hyb ⊂ C_∞ at equal radii give "
                 "p_∞(m r_W r_a) ≤ p_hyb(m) ≤ p_opfull(m); the upper value attained by a Muon-full network")
    bracket["value_upper"] = up
    closed = up - low <= 1e-6 * max(1.0, abs(up))
    return dict(value=up, network=net, m_star=None, M_star=None, bracket=bracket, solver=solver, notes=notes), closed
