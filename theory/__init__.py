"""Executable claims of the two-layer ReLU theory (``../shared/THEORY.md``).

Each claim is a function that states itself in its docstring and returns a
:class:`theory.claims.ClaimResult` (numbers, status PASS/FAIL/FINDING, tolerance). Work in float64
(``jax.enable_x64(True)``), as THEORY.md asks.

Modules: :mod:`~theory.names` (optimizer → constraint set), :mod:`~theory.geometry` (§F.1),
:mod:`~theory.optimizer_sets` (§F.2), :mod:`~theory.membership` and :mod:`~theory.orbits`
(which set a network lies in); §C: :mod:`~theory.patterns`, :mod:`~theory.programs`,
:mod:`~theory.recovery`, :mod:`~theory.critical_widths`, :mod:`~theory.convex` (``optimum``),
:mod:`~theory.convex_claims`, :mod:`~theory.capacity`; §D: :mod:`~theory.constructive` and
:mod:`~theory.connectivity` (``connect_pair``); §E: :mod:`~theory.example`,
:mod:`~theory.certificate`, :mod:`~theory.wide_paths`. Those that draw figures
(:mod:`~theory.figures`, :mod:`~theory.example_report`, :mod:`~theory.staircase`) import
matplotlib, and ``connect theory verify`` (:mod:`~theory.verify`, its report
:mod:`~theory.report`) runs them all: they are imported on use.
"""

from theory import (
    capacity,
    certificate,
    claims,
    connectivity,
    constructive,
    convex,
    convex_claims,
    critical_widths,
    example,
    geometry,
    membership,
    names,
    optimizer_sets,
    orbits,
    patterns,
    programs,
    recovery,
    wide_paths,
)
from theory.claims import ClaimResult
from theory.connectivity import connect_pair
from theory.convex import optimum

__all__ = [
    "ClaimResult", "capacity", "certificate", "claims", "connect_pair", "connectivity", "constructive", "convex",
    "convex_claims", "critical_widths", "example", "geometry", "membership", "names", "optimizer_sets", "optimum",
    "orbits", "patterns", "programs", "recovery", "wide_paths",
]
