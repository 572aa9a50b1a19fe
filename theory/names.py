"""Constraint names of the theory commands: one mapping from what a user types (an optimizer of
:mod:`connect.optimizers` or a set kind of :mod:`connect.constraints`) to the implicit set.

Optimizer names take the set of the registry (:attr:`connect.optimizers.OptimizerSpec.constraint_kind`):
``adamw``/``lion``/``signsgd`` → ``linf`` (box ``‖θ‖∞ ≤ 1/λ``), ``muon``/``muon_exact`` → ``muon``
(Muon-hybrid), ``muon_full`` → ``muon_full``, ``sgd``/``momentum``/``adam`` → ``none`` (decay is the
penalty ``(λ/2)‖θ‖²``, THEORY.md §B, last row, not a ball). Kind names stand for themselves;
``weight_decay`` is another name for ``none``.
"""

from __future__ import annotations

import math
import numbers

from connect import optimizers
from connect.constraints import KINDS, ConstraintSet
from connect.errors import UserError

#: Names that are neither an optimizer nor a kind.
ALIASES = {"weight_decay": "none"}


def names() -> tuple[str, ...]:
    """Every accepted constraint name: the optimizers, then the kinds and aliases not already listed."""
    return tuple(dict.fromkeys((*optimizers.names(), *KINDS, *ALIASES)))


def kind_of(name: str) -> str:
    """The :class:`~connect.constraints.ConstraintSet` kind of ``name``; :class:`UserError` listing
    the valid names when it is none of them."""
    if name in optimizers.REGISTRY:
        return optimizers.spec(name).constraint_kind
    if name in KINDS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise UserError(f"unknown constraint {name!r}: choose from {', '.join(names())}")


def check_lam(lam) -> float:
    """``λ`` as a float; :class:`UserError` unless it is a finite number > 0."""
    if isinstance(lam, bool) or not (isinstance(lam, numbers.Real) and math.isfinite(lam) and lam > 0):
        raise UserError(f"λ must be a finite number > 0, got {lam}: pass the optimizer's weight decay (--lam)")
    return float(lam)


def constraint_set(name: str, lam: float, matrices: tuple[str, ...] = ("W",)) -> ConstraintSet:
    """The implicit set of ``name`` at decay ``λ > 0`` (Muon kinds orthogonalise ``matrices``)."""
    return ConstraintSet(kind_of(name), check_lam(lam), tuple(matrices))
