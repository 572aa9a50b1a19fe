"""The report of ``connect theory verify`` (:mod:`theory.verify`): ``report.json`` (every row and
the figures), ``report.md`` (a summary line, the table of claims with their status, each claim's
numbers, the figures) and the lines the command prints.

A row is :meth:`theory.claims.ClaimResult.to_dict` plus ``function``, ``arguments`` and
``seconds``. Its ``status`` is PASS, FINDING or FAIL (:mod:`theory.claims`); the run fails
exactly when some row is FAIL (:func:`failed`), a FINDING does not fail it.
"""

from __future__ import annotations

import json
import os

from connect.io import write_json_atomic, write_text_atomic
from theory.claims import FAIL, STATUSES


def counts(rows: list[dict]) -> dict[str, int]:
    """How many rows have each status, in the order PASS, FINDING, FAIL."""
    return {s: sum(r["status"] == s for r in rows) for s in STATUSES}


def failed(rows: list[dict]) -> bool:
    """Whether any row is FAIL (``connect theory verify`` then exits 1)."""
    return any(r["status"] == FAIL for r in rows)


def summary(rows: list[dict]) -> str:
    """``n/N claims PASS, k FINDING, f FAIL``."""
    c = counts(rows)
    return f"{c['PASS']}/{len(rows)} claims PASS, {c['FINDING']} FINDING, {c['FAIL']} FAIL"


def to_markdown(rows: list[dict], figures: list[str]) -> str:
    """The report: a summary line, a table of claims with their status, then each claim's numbers and the figures."""
    lines = ["# THEORY.md §F: verification report", "",
             f"{summary(rows)}; total {sum(r['seconds'] for r in rows):.1f} s.", "",
             "| item | status | claim | time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['status']} | {r['statement']} | {r['seconds']:.1f} |" for r in rows]
    lines += ["", "## Numbers", ""]
    for r in rows:
        nums = ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}" for k, v in r["numbers"].items())
        lines.append(f"- **{r['claim']}** {r['status']} `{r['function']}` {json.dumps(r['arguments'])}: {nums} "
                     f"(tolerance {r['tolerance']:g})")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{os.path.basename(f)}]({f})" for f in figures if f.endswith(".png")]
    return "\n".join(lines) + "\n"


def write(out_dir: str, rows: list[dict], figures: list[str]) -> None:
    """``out_dir/report.json`` (``{"counts", "claims", "figures"}``) and ``out_dir/report.md``."""
    write_json_atomic(os.path.join(out_dir, "report.json"), {"counts": counts(rows), "claims": rows, "figures": figures})
    write_text_atomic(os.path.join(out_dir, "report.md"), to_markdown(rows, figures))


def console_lines(rows: list[dict], out_dir: str) -> list[str]:
    """What ``connect theory verify`` prints: one line per row (status, item, time, statement) and the summary."""
    lines = [f"{r['status']} {r['claim']:<5}{r['seconds']:7.1f}s  {r['statement']}" for r in rows]
    return lines + [f"{summary(rows)}; wrote {os.path.join(out_dir, 'report.md')} and report.json"]
