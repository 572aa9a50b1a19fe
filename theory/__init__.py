"""Executable claims of the two-layer ReLU theory (``../shared/THEORY.md``).

Each claim is a function that states itself in its docstring and returns a
:class:`theory.claims.ClaimResult` (numbers, PASS/FAIL, tolerance). Work in float64
(``jax.enable_x64(True)``), as THEORY.md asks.

Modules: :mod:`~theory.names` (optimizer → constraint set), :mod:`~theory.patterns` and
:mod:`~theory.convex` (§C programs, ``optimum``), :mod:`~theory.constructive` and
:mod:`~theory.connectivity` (§D, ``connect_pair``), :mod:`~theory.capacity`,
:mod:`~theory.orbits`, :mod:`~theory.optimizer_sets`, :mod:`~theory.membership`,
:mod:`~theory.example` and :mod:`~theory.certificate` (§E); figures (:mod:`~theory.figures`,
:mod:`~theory.staircase`) and ``connect theory verify`` (:mod:`~theory.verify`) import
matplotlib and are imported on use.
"""

from theory import (
    capacity,
    certificate,
    claims,
    connectivity,
    constructive,
    convex,
    example,
    membership,
    names,
    optimizer_sets,
    orbits,
    patterns,
)
from theory.claims import ClaimResult
from theory.connectivity import connect_pair
from theory.convex import optimum

__all__ = [
    "ClaimResult", "capacity", "certificate", "claims", "connect_pair", "connectivity", "constructive", "convex",
    "example", "membership", "names", "optimizer_sets", "optimum", "orbits", "patterns",
]
