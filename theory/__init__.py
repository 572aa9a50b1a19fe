"""Executable claims of the two-layer ReLU theory (``../shared/THEORY.md``).

Each claim is a function that states itself in its docstring and returns a
:class:`theory.claims.ClaimResult` (numbers, PASS/FAIL, tolerance). Work in float64
(``jax.enable_x64(True)``), as THEORY.md asks.
"""
