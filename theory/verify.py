"""``connect theory verify``: run every claim of THEORY.md §F and draw the figures; the report
(``report.md``, ``report.json``) is written by :mod:`theory.report`.

Each entry of :data:`CLAIMS` names a claim function (``theory.<module>.claim_*``) and its
arguments; every claim returns a :class:`theory.claims.ClaimResult` with a status (PASS, FAIL
or FINDING). A claim that raises is reported as FAIL with the exception (never skipped), so the
report always has one line per entry. Run time per claim is recorded; the whole set is sized to
finish in minutes on 2 CPU cores. THEORY.md asks for float64: the claims run under
``jax.enable_x64(True)``.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback

import jax
from tqdm import tqdm

from theory import report
from theory.claims import ClaimResult

#: (THEORY.md item, module, function, keyword arguments), in report order.
CLAIMS: list[tuple[str, str, str, dict]] = [
    ("F.1", "theory.geometry", "claim_geometry", {}),
    ("F.2", "theory.optimizer_sets", "claim_optimizer_ball", {}),
    # AdamW is not ball-invariant (THEORY.md §F.2, theory.optimizer_sets): its own row, a FINDING.
    ("F.2", "theory.optimizer_sets", "claim_optimizer_ball", {"names": ("adamw",)}),
    ("F.3", "theory.convex_claims", "claim_convex_exactness", {}),
    ("F.4", "theory.convex_claims", "claim_linf_sandwich", {}),
    *[("F.5", "theory.capacity", "claim_capacity", {"kind": k, "width": w}) for k in ("linf", "muon", "muon_full") for w in (4, 64)],
    ("F.5", "theory.convex_claims", "claim_regions", {}),
    ("F.6", "theory.connectivity", "claim_connect", {}),
    ("F.7", "theory.constructive", "claim_sqrt_schedule", {}),
    ("F.8", "theory.example_report", "claim_small_width_example", {}),
]

#: (module, function) drawing figures into a directory; each returns the paths it wrote.
FIGURES: list[tuple[str, str]] = [
    ("theory.example_report", "report_figures"),  # §E: landscape, bounds vs N and width, runs (+ summary.json)
    ("theory.staircase", "staircase_figure_default"),  # optimum, CONNECT and linear vs constructive barrier vs width
]


def _call(module: str, function: str, kwargs: dict):
    return getattr(importlib.import_module(module), function)(**kwargs)


def _failure(item: str, statement: str, error: Exception) -> ClaimResult:
    """A FAIL result carrying the exception's last line."""
    return ClaimResult(item, statement, False, {"error": traceback.format_exception_only(type(error), error)[-1].strip()}, 0.0)


def run_claim(item: str, module: str, function: str, kwargs: dict) -> tuple[ClaimResult, float]:
    """Run one claim; an exception becomes a FAIL result carrying its message."""
    start = time.perf_counter()
    try:
        with jax.enable_x64(True):
            result = _call(module, function, kwargs)
    except Exception as e:  # noqa: BLE001 - a crashing claim is a failed claim, reported with its cause
        result = _failure(item, f"{module}.{function}({kwargs}) raised", e)
    return result, time.perf_counter() - start


def _row(result: ClaimResult, function: str, kwargs: dict, seconds: float) -> dict:
    return {**result.to_dict(), "function": function, "arguments": kwargs, "seconds": seconds}


def draw_figures(out_dir: str) -> tuple[list[str], list[dict]]:
    """Every figure of :data:`FIGURES` into ``out_dir/figures``: the paths written (relative to
    ``out_dir``) and a FAIL row for each figure function that raised."""
    paths, rows = [], []
    for module, function in FIGURES:
        start = time.perf_counter()
        try:
            with jax.enable_x64(True):
                paths += [os.path.relpath(p, out_dir) for p in _call(module, function, {"out_dir": os.path.join(out_dir, "figures")})]
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is a reported failure, not a crash
            failure = _failure("figure", f"{module}.{function} draws its figures", e)
            rows.append(_row(failure, f"{module}.{function}", {}, time.perf_counter() - start))
    return paths, rows


def verify(out_dir: str, only: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Run the claims (those whose item is in ``only``, default all), draw the figures (all claims
    only; a figure that raises adds a FAIL row), and write ``out_dir/report.json`` and
    ``out_dir/report.md`` (:func:`theory.report.write`). Returns the report rows."""
    os.makedirs(out_dir, exist_ok=True)
    todo = [c for c in CLAIMS if not only or c[0] in only]
    rows = []
    for item, module, function, kwargs in tqdm(todo, desc="theory claims", disable=not progress, unit="claim"):
        result, seconds = run_claim(item, module, function, kwargs)
        rows.append(_row(result, f"{module}.{function}", kwargs, seconds))
    figures = []
    if not only:
        figures, failed = draw_figures(out_dir)
        rows += failed
    report.write(out_dir, rows, figures)
    return rows
