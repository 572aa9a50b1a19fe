"""``connect theory verify``: run every claim of THEORY.md §F, write ``report.md``,
``report.json`` and the figures.

Each entry of :data:`CLAIMS` names a claim function (``theory.<module>.claim_*``) and its
arguments; every claim returns a :class:`theory.claims.ClaimResult`. A claim that raises is
reported as FAIL with the exception (never skipped), so the report always has one line per
entry. Run time per claim is recorded; the whole set is sized to finish in minutes on 2 CPU
cores. THEORY.md asks for float64: the claims run under ``jax.enable_x64(True)``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback

import jax
from tqdm import tqdm

from connect.io import write_json_atomic, write_text_atomic
from theory.claims import ClaimResult

#: (THEORY.md item, module, function, keyword arguments), in report order.
CLAIMS: list[tuple[str, str, str, dict]] = [
    ("F.1", "theory.connectivity", "claim_geometry", {}),
    ("F.2", "theory.optimizer_sets", "claim_optimizer_ball", {}),
    # AdamW's 2e-2 bound of §F.2 is false for finite runs (see theory.optimizer_sets): its own row, FAIL.
    ("F.2", "theory.optimizer_sets", "claim_optimizer_ball", {"names": ("adamw",)}),
    ("F.3", "theory.convex", "claim_convex_exactness", {}),
    ("F.4", "theory.convex", "claim_linf_sandwich", {}),
    *[("F.5", "theory.capacity", "claim_capacity", {"kind": k, "width": w}) for k in ("linf", "muon", "muon_full") for w in (4, 64)],
    ("F.5", "theory.convex", "claim_regions", {}),
    ("F.6", "theory.connectivity", "claim_connect", {}),
    ("F.7", "theory.constructive", "claim_sqrt_schedule", {}),
    ("F.8", "theory.certificate", "claim_small_width_example", {}),
]

#: (module, function) drawing figures into a directory; each returns the paths it wrote.
FIGURES: list[tuple[str, str]] = [
    ("theory.example", "report_figures"),  # §E: landscape, bounds vs N and width, runs (+ summary.json)
    ("theory.staircase", "staircase_figure_default"),  # optimum, CONNECT and linear vs constructive barrier vs width
]


def _call(module: str, function: str, kwargs: dict):
    return getattr(importlib.import_module(module), function)(**kwargs)


def run_claim(item: str, module: str, function: str, kwargs: dict) -> tuple[ClaimResult, float]:
    """Run one claim; an exception becomes a FAIL result carrying its message."""
    start = time.perf_counter()
    try:
        with jax.enable_x64(True):
            result = _call(module, function, kwargs)
    except Exception as e:  # noqa: BLE001 - a crashing claim is a failed claim, reported with its cause
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        result = ClaimResult(item, f"{module}.{function}({kwargs}) raised", False, {"error": tb}, 0.0)
    return result, time.perf_counter() - start


def verify(out_dir: str, only: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Run the claims (those whose item is in ``only``, default all), draw the figures (all claims
    only; a figure that raises adds a FAIL row), and write ``out_dir/report.json`` and
    ``out_dir/report.md``. Returns the report rows."""
    os.makedirs(out_dir, exist_ok=True)
    todo = [c for c in CLAIMS if not only or c[0] in only]
    rows = []
    for item, module, function, kwargs in tqdm(todo, desc="theory claims", disable=not progress, unit="claim"):
        result, seconds = run_claim(item, module, function, kwargs)
        rows.append({**result.to_dict(), "function": f"{module}.{function}", "arguments": kwargs, "seconds": seconds})
    figures = []
    if not only:
        for module, function in FIGURES:
            start = time.perf_counter()
            try:
                with jax.enable_x64(True):
                    figures += [os.path.relpath(p, out_dir) for p in _call(module, function, {"out_dir": os.path.join(out_dir, "figures")})]
            except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is a reported failure, not a crash
                err = traceback.format_exception_only(type(e), e)[-1].strip()
                rows.append({**ClaimResult("figure", f"{module}.{function} draws its figures", False, {"error": err}, 0.0).to_dict(),
                             "function": f"{module}.{function}", "arguments": {}, "seconds": time.perf_counter() - start})
    write_json_atomic(os.path.join(out_dir, "report.json"), {"claims": rows, "figures": figures})
    write_text_atomic(os.path.join(out_dir, "report.md"), to_markdown(rows, figures))
    return rows


def to_markdown(rows: list[dict], figures: list[str]) -> str:
    """The report: a summary line, a table of claims, then each claim's numbers and the figures."""
    n_pass = sum(r["passed"] for r in rows)
    lines = ["# THEORY.md §F: verification report", "",
             f"{n_pass}/{len(rows)} claims PASS; total {sum(r['seconds'] for r in rows):.1f} s.", "",
             "| item | result | claim | time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {'PASS' if r['passed'] else 'FAIL'} | {r['statement']} | {r['seconds']:.1f} |" for r in rows]
    lines += ["", "## Numbers", ""]
    for r in rows:
        nums = ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}" for k, v in r["numbers"].items())
        lines.append(f"- **{r['claim']}** `{r['function']}` {json.dumps(r['arguments'])}: {nums} (tolerance {r['tolerance']:g})")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{os.path.basename(f)}]({f})" for f in figures if f.endswith(".png")]
    return "\n".join(lines) + "\n"
