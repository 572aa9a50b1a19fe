#!/usr/bin/env python
"""Time of the convex programs of THEORY.md §C (:mod:`theory.programs`) against the number of points n.

Per n: data ``x ~ N(0, I_d)``, ``y ~ N(0, 1)`` (seed fixed), activation patterns from
``--gates-per-n · n`` Gaussian gates (:func:`theory.patterns.sample`; P, the number of distinct
patterns, is reported per n), then, each timed as the median of ``--repeats`` wall-clock runs of
the whole call (cvxpy canonicalisation included; one untimed warm-up at n = 4 first):

* ``wd_clarabel`` / ``wd_scs`` — the weight-decay program C1 (:func:`theory.programs.weight_decay_program`,
  β = ``--beta``) with Clarabel and with SCS (eps 1e-9, the module's settings); the two values are
  reported so their agreement can be read off;
* ``tau_highs`` — the τ* LP, the least ℓ∞ path norm of an interpolant
  (:func:`theory.programs.min_linf_path_norm`, scipy's HiGHS).

A solver whose median passes ``--max-seconds`` is not run at larger n (marked ``null``). Prints a
markdown table and writes JSON with the machine description and ``os.getloadavg()`` before and
after (the machine may be shared) to ``--out`` (default ``benchmarks/results/theory_convex_cpu.json``)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/theory_convex.py --ns 4 8 16 32 64 128
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time

import numpy as np

from theory import patterns as pat
from theory import programs


def _median_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    """Where the numbers were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            **{pkg: _version(pkg) for pkg in ("cvxpy", "clarabel", "scs", "scipy", "numpy")}}


def _one(n: int, d: int, gates_per_n: int, beta: float, repeats: int, skip: set) -> dict:
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, d)), rng.normal(size=n)
    d_PxN = pat.sample(x, gates_per_n * n, seed=n)
    row = {"n": n, "d": d, "gates": gates_per_n * n, "P": int(len(d_PxN))}
    for key, solver in (("wd_clarabel", "CLARABEL"), ("wd_scs", "SCS")):
        if key in skip:
            row[f"{key}_s"] = row[f"{key}_value"] = None
            continue
        sec, (value, blocks, used) = _median_time(lambda s=solver: programs.weight_decay_program(x, y, d_PxN, beta, solver=s), repeats)
        row.update({f"{key}_s": sec, f"{key}_value": value, f"{key}_blocks": int(len(blocks.sign_K)), f"{key}_solver": used})
    if "tau_highs" in skip:
        row["tau_highs_s"] = row["tau_star"] = None
    else:
        sec, (tau, _) = _median_time(lambda: programs.min_linf_path_norm(x, y, d_PxN), repeats)
        row.update({"tau_highs_s": sec, "tau_star": tau})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--gates-per-n", type=int, default=4)
    ap.add_argument("--beta", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=5.0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "theory_convex_cpu.json"))
    args = ap.parse_args()
    load_before, start = os.getloadavg(), time.perf_counter()
    _one(4, args.d, args.gates_per_n, args.beta, 1, set())  # warm-up: imports, cvxpy and solver start-up
    rows, skip = [], set()
    for n in args.ns:
        rows.append(_one(n, args.d, args.gates_per_n, args.beta, args.repeats, skip))
        r = rows[-1]
        skip |= {k for k in ("wd_clarabel", "wd_scs", "tau_highs") if (r.get(f"{k}_s") or 0.0) > args.max_seconds}
        print(f"n={n}: P={r['P']}, " + ", ".join(f"{k} {r[f'{k}_s']}" for k in ("wd_clarabel", "wd_scs", "tau_highs")), flush=True)

    def fmt(v, spec=".4f"):
        return "—" if v is None else format(v, spec)

    print(f"\n### convex solve time vs n (CPU, d = {args.d}, {args.gates_per_n}·n gates, median of {args.repeats})\n")
    print("| n | P | C1 Clarabel s | C1 SCS s | τ* LP (HiGHS) s | C1 value Clarabel | C1 value SCS | τ* |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['P']} | {fmt(r['wd_clarabel_s'])} | {fmt(r['wd_scs_s'])} | {fmt(r['tau_highs_s'])} | "
              f"{fmt(r.get('wd_clarabel_value'), '.8g')} | {fmt(r.get('wd_scs_value'), '.8g')} | {fmt(r.get('tau_star'), '.6g')} |")
    out = {"machine": machine(), "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
           "total_s": time.perf_counter() - start, "settings": vars(args), "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"\nwrote {args.out} (load average before {load_before}, after {out['loadavg_after']})")


if __name__ == "__main__":
    main()
