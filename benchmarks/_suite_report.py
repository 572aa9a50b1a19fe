"""The GPU suite's records (:class:`Recorder`, written after every update so a killed section keeps what
it measured), their JSON form and the markdown table (``benchmarks/gpu_suite.py``)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np


class Recorder:
    """One section's record, rewritten atomically to ``path`` on every update.

    ``deadline_epoch`` (``time.time()``) is when the parent kills the section; the section's own deadline
    :attr:`deadline` (a ``time.perf_counter()`` value, as :func:`width_sweep.timed_group` takes it) is
    ``reserve_s`` earlier, so that it stops and writes before it is killed."""

    def __init__(self, path: str | os.PathLike, deadline_epoch: float, reserve_s: float):
        self.path = Path(path)
        self.deadline = time.perf_counter() + (deadline_epoch - time.time()) - reserve_s
        self.record: dict = {"status": "running", "cut": False, "cut_reasons": [], "rows": []}
        self.write()

    def left(self) -> float:
        """Seconds until the section's deadline."""
        return self.deadline - time.perf_counter()

    def update(self, **fields) -> None:
        self.record.update(fields)
        self.write()

    def add_row(self, row: dict) -> None:
        """A row of the markdown table: ``row``, ``shapes``, ``compile_s``, ``steady_s``, ``throughput``, ``unit``,
        ``mfu`` (or None), ``check`` (a short text)."""
        self.record["rows"].append(row)
        self.write()

    def cut(self, reason: str) -> None:
        self.record["cut"] = True
        self.record["cut_reasons"].append(reason)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(dumps(self.record))
        os.replace(tmp, self.path)


def plain(x):
    """``x`` with numpy and jax values turned into JSON's types (arrays into lists)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (str, bool, int, float)) or x is None:
        return x
    if isinstance(x, np.generic) or (hasattr(x, "shape") and np.ndim(x) == 0):
        return np.asarray(x).item()
    if hasattr(x, "shape"):
        return np.asarray(x).tolist()
    return str(x)


def dumps(record) -> str:
    return json.dumps(plain(record), indent=1) + "\n"


def _num(x, fmt: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, fmt)


def _cell(text) -> str:
    """Text for a markdown table cell: ``|`` escaped."""
    return str(text or "").replace("|", "\\|")


def _mfu(x) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.1f} %" if x >= 1e-3 else f"{100 * x:.1e} %"


def markdown(results: dict) -> str:
    """The suite's table: one line per measured row of every section, then what was cut or failed."""
    m = results.get("machine") or {}
    head = [f"# GPU suite{' (dry run: tiny sizes, timings mean nothing)' if results['dry_run'] else ''}", "",
            f"Device: {m.get('device_kind', 'unknown')} ({m.get('platform', '?')}), jax {m.get('jax', '?')}; "
            f"commit {results.get('commit')}; {results['date']}. Wall time {results['wall_s']:.0f} s of a "
            f"{results['budget_s']:.0f} s budget. MFU against {results['peak_flops'] / 1e12:.0f} TFLOP/s (dense bf16, H100 "
            "data sheet). steady = best of interleaved timed calls after one warm-up (training rows: per optimizer step; "
            "path_eval: all t on all tokens; spectra: every matrix at every t; width_sweep: one training of all seeds; "
            "certificate: the four stages), compile = warm-up − steady; ≤ / ≥: no timed call fitted in the cap, the warm-up's "
            "time (compile included) bounds the figure.", "",
            "| section | row | shapes | compile (s) | steady (s) | throughput | MFU | check | status |",
            "|---|---|---|---:|---:|---:|---:|---|---|"]
    notes = []
    for name, sec in results["sections"].items():
        status = sec.get("status", "missing")
        rows = sec.get("rows") or [{"row": "—"}]
        for r in rows:
            bound = r.get("compile_s") is None and r.get("steady_s") is not None  # no timed call: the warm-up bounds it
            tp = f"{_num(r.get('throughput'), '.4g')} {r.get('unit', '')}".strip() if r.get("throughput") is not None else "—"
            head.append(f"| {name} | {_cell(r.get('row'))} | {_cell(r.get('shapes'))} | {_num(r.get('compile_s'), '.1f')} | "
                        f"{'≤ ' * bound}{_num(r.get('steady_s'), '.4g')} | {'≥ ' * bound}{_cell(tp)} | "
                        f"{'≥ ' * bound}{_mfu(r.get('mfu'))} | "
                        f"{_cell(r.get('check'))} | {status} |")
        for reason in sec.get("cut_reasons", []):
            notes.append(f"- {name} cut: {reason}")
        if sec.get("error"):
            notes.append(f"- {name} failed: {sec['error'].strip().splitlines()[-1]}")
        if sec.get("summary"):
            notes.append(f"- {name}: {sec['summary']}")
    return "\n".join(head + ([""] + notes if notes else [])) + "\n"
