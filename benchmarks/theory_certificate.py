#!/usr/bin/env python
"""Time of the §E barrier certificate (THEORY.md §E, :mod:`theory.certificate`) against the grid size N.

Per N, each stage once after a warm-up of the JAX grid evaluation at that N (its compile time
is reported separately as ``compile_s``), best of ``--repeats``:

* ``grid`` — ``g_C`` on the N×N torus (closed-form box-constrained least squares, JAX float64,
  blocks of ≤ 2¹⁸ points; the part that runs batched on a GPU);
* ``lb+sep`` — the per-cell bound (E.4) and the certified separation level (bisection over the
  sorted LB values with ``scipy.ndimage.label`` and periodic unions), CPU;
* ``minimax`` — the bottleneck path of ``g_C`` (minimum spanning tree, scipy), CPU;
* ``path`` — mapping the path to parameters and evaluating it densely with ``relu.apply``.

Prints a markdown table (also the certified lower bound, grid minimax and upper bound) and
writes JSON to ``--out`` (default ``benchmarks/results/theory_certificate_<platform>.json``)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/theory_certificate.py --ns 64 128 256 512 1024
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

from theory import certificate as ce
from theory import example as ex


def _best(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _one(n: int, conf_a: list, conf_b: list, repeats: int) -> dict:
    """Every stage of the certificate at grid size n, timed."""
    c_max, (x, y) = ce.covering_c(), ex.data()
    t0 = time.perf_counter()
    ce.g_grid(n, c_max)
    first = time.perf_counter() - t0
    t_grid, (g, c_grid) = _best(lambda: ce.g_grid(n, c_max), repeats)
    cells_a, cells_b = ce.region_cells(conf_a, n), ce.region_cells(conf_b, n)
    t_sep, lower = _best(lambda: ce.separation_level(ce.lower_bound(g, c_max, len(y)), cells_a, cells_b), repeats)
    t_mm, (grid_mm, cells) = _best(lambda: ce.minimax_path(g, cells_a, cells_b), repeats)
    end_a = next(k for k in conf_a if tuple(cells[0]) in ce.region_cells([k], n))
    end_b = next(k for k in conf_b if tuple(cells[-1]) in ce.region_cells([k], n))

    def path():
        c_T, phi_T = ce.quotient_path(cells, c_grid, end_a, end_b)
        return ex.path_losses(ex.network(c_T, phi_T), x, y)

    t_path, loss_T = _best(path, repeats)
    return {"N": n, "compile_s": first - t_grid, "grid_s": t_grid, "lb_sep_s": t_sep, "minimax_s": t_mm, "path_s": t_path,
            "total_s": t_grid + t_sep + t_mm + t_path, "lower": lower, "grid_minimax": grid_mm,
            "upper": float(loss_T.max() - max(loss_T[0], loss_T[-1])), "path_points": int(len(loss_T))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    platform = jax.default_backend()
    zero = ex.zero_loss_configurations()
    reg = ex.regions(zero["configs"])
    conf_a = [k for k, r in zip(zero["configs"], reg) if r["in_box"]]
    conf_b = [k for k, r in zip(zero["configs"], reg) if r["in_muon_full"]]
    rows = []
    for n in args.ns:
        rows.append(_one(n, conf_a, conf_b, args.repeats))
        r = rows[-1]
        print(f"N={n}: total {r['total_s']:.3f}s, lower {r['lower']:.3e}, upper {r['upper']:.3e}", flush=True)
    print(f"\n### certificate time vs N ({platform}, best of {args.repeats})\n")
    print("| N | grid (JAX) s | compile s | LB + separation s | minimax path s | dense path s | total s | lower | grid minimax | upper |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['N']} | {r['grid_s']:.4f} | {r['compile_s']:.2f} | {r['lb_sep_s']:.4f} | {r['minimax_s']:.4f} | {r['path_s']:.4f} | "
              f"{r['total_s']:.3f} | {r['lower']:.4e} | {r['grid_minimax']:.4e} | {r['upper']:.4e} |")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"theory_certificate_{platform}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"platform": platform, "devices": [str(d) for d in jax.devices()], "repeats": args.repeats, "rows": rows}, fh, indent=1)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
