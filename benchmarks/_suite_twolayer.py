"""The GPU suite's two-layer sections (``benchmarks/gpu_suite.py``): the width sweep's training over seeds, vmap
against a loop (:func:`width_sweep.bench_train`), and the §E barrier certificate of THEORY.md at grid size N
(:mod:`theory.certificate`, staged as ``benchmarks/theory_certificate.py`` times it). Sections as in
:mod:`_suite_lm`: ``fn(rec, size, timing)``."""

from __future__ import annotations

import time

import numpy as np
from _suite_lm import device
from width_sweep import bench_train, timed_group

from connect.twolayer import data as data_lib
from theory import certificate as ce
from theory import example as ex

#: Agreement of the vmapped seeds' final training loss with the loop's (the width sweep's own check).
LOSS_TOL = 1e-3


def width_sweep(rec, size: dict, timing: tuple) -> None:
    """5. ``training.train`` of ``seeds`` two-layer ReLU networks per width and optimizer, ``vmap`` against ``loop``
    (one jitted call per seed). Widths run in the order given (largest first on the GPU, so the cap cuts the
    small ones); a (width, optimizer) is not started when the slowest one so far would not fit before the deadline."""
    ds = data_lib.synthetic(data_lib.DataConfig())
    seeds, slowest, detail = list(range(size["seeds"])), 0.0, []
    rec.update(device=device(), shapes={"widths": size["widths"], "seeds": size["seeds"], "steps": size["steps"],
                                        "optimizers": size["optimizers"], "n_train": int(ds.x_train.shape[0]), "d_in": ds.d_in})
    for width in size["widths"]:
        for opt in size["optimizers"]:
            if slowest and rec.left() < slowest:
                rec.cut(f"width {width} {opt} not started ({rec.left():.0f} s left, the slowest so far took {slowest:.0f} s)")
                continue
            t0 = time.perf_counter()
            rows, _ = bench_train(ds, width, opt, seeds, size["steps"], 0.1, timing, strategies=("vmap", "loop"))
            slowest = max(slowest, time.perf_counter() - t0)
            detail += rows
            vmap, loop = (next(r for r in rows if r["strategy"] == s) for s in ("vmap", "loop"))
            ok = vmap["max_abs_diff_vs_loop"] <= LOSS_TOL and bool(np.isfinite(vmap["final_train_loss_mean"]))
            rec.add_row({"row": f"m={width} {opt}: vmap (loop {loop['best_s']:.3g} s)",
                         "shapes": f"{len(seeds)} seeds × {size['steps']} steps", "compile_s": vmap["compile_s"],
                         "steady_s": vmap["best_s"], "throughput": vmap["networks_per_s"],
                         "unit": f"networks/s, {vmap['speedup_vs_loop']:.2f}×loop", "mfu": None,
                         "check": f"max|Δ final loss| vs loop {vmap['max_abs_diff_vs_loop']:.1e} ({'ok' if ok else 'FAILED'})"})
            rec.update(train_rows=detail)
    done = [r for r in detail if r["strategy"] == "vmap"]
    rec.update(compile_s=sum(r["compile_s"] or 0.0 for r in detail), steady_s=sum(r["best_s"] for r in done),
               steady_what="s of the vmapped trainings, summed over widths and optimizers",
               check_ok=all(r["max_abs_diff_vs_loop"] <= LOSS_TOL for r in done))


def _once(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _regions() -> tuple[list, list]:
    """The zero-loss configurations of the AdamW box region (A) and of the Muon-full region (B)."""
    zero = ex.zero_loss_configurations()
    reg = ex.regions(zero["configs"])
    return ([k for k, r in zip(zero["configs"], reg) if r["in_box"]],
            [k for k, r in zip(zero["configs"], reg) if r["in_muon_full"]])


def certificate(rec, size: dict, timing: tuple) -> None:
    """6. The certificate at N: ``g_C`` on the N×N grid (JAX float64, the accelerator's part; warm-up and timed
    rounds), then once each the CPU stages: per-cell bound and separation level, minimax path, explicit path."""
    n, c_max, (x, y) = size["n"], ce.covering_c(), ex.data()
    conf_a, conf_b = _regions()
    rec.update(device=device(), shapes={"N": n, "grid_points": n * n, "c_max": c_max})
    outs, timings = timed_group({"grid": lambda: ce.g_grid(n, c_max)}, *timing)
    g, c_grid = outs["grid"]
    t = timings["grid"]
    stages = {"grid_s": t["best_s"]}
    rec.update(compile_s=t["compile_s"], timing_grid=t, stages=stages)
    cells_a, cells_b = ce.region_cells(conf_a, n), ce.region_cells(conf_b, n)
    lower, stages["lb_sep_s"] = _once(lambda: ce.separation_level(ce.lower_bound(g, c_max, len(y)), cells_a, cells_b))
    rec.update(stages=stages, lower=lower)
    if rec.left() < 0:
        return rec.cut("deadline reached after the separation level: minimax and explicit path not run")
    (grid_mm, cells), stages["minimax_s"] = _once(lambda: ce.minimax_path(g, cells_a, cells_b))
    rec.update(stages=stages, grid_minimax=grid_mm)
    end_a = next(k for k in conf_a if tuple(cells[0]) in ce.region_cells([k], n))
    end_b = next(k for k in conf_b if tuple(cells[-1]) in ce.region_cells([k], n))
    loss_T, stages["path_s"] = _once(lambda: ex.path_losses(ex.network(*ce.quotient_path(cells, c_grid, end_a, end_b)), x, y))
    upper = float(loss_T.max() - max(loss_T[0], loss_T[-1]))
    ok = bool(0.0 <= lower <= grid_mm <= upper + 1e-12)
    total = sum(stages.values())
    rec.update(stages=stages, upper=upper, path_points=int(len(loss_T)), steady_s=total, check_ok=ok,
               steady_what="s of the four stages (grid: best timed call; the CPU stages once)")
    rec.add_row({"row": f"N={n}: grid {stages['grid_s']:.3g} s, lb+sep {stages['lb_sep_s']:.3g} s, minimax "
                        f"{stages['minimax_s']:.3g} s, path {stages['path_s']:.3g} s",
                 "shapes": f"{n}×{n} grid", "compile_s": t["compile_s"], "steady_s": total,
                 "throughput": n * n / stages["grid_s"],
                 "unit": "grid points/s", "mfu": None,
                 "check": f"0 ≤ lower {lower:.3e} ≤ minimax {grid_mm:.3e} ≤ upper {upper:.3e} ({'ok' if ok else 'FAILED'})"})
