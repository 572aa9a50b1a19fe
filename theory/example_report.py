"""The small-width example of THEORY.md §E as a report: claim §F.8 and everything ``connect
theory example`` writes. It runs the parts — the zero-loss configurations and their regions
(:mod:`theory.example`), the certified barrier at width 2 with its upper-bound path
(:mod:`theory.certificate`), the zero-barrier paths at widths 3 and 4
(:mod:`theory.wide_paths`) and trained runs (:func:`theory.example.train_runs`) — and writes
``summary.json`` and the figures of :mod:`theory.figures` (which import matplotlib).
"""

from __future__ import annotations

import os

import numpy as np

from connect.io import write_json_atomic
from theory import example as ex
from theory import figures
from theory.certificate import certify, covering_c, random_cell_check
from theory.claims import ClaimResult
from theory.wide_paths import wide_path


def claim_small_width_example(n_grids=(256, 512), seed: int = 0, tol: float = 1e-12) -> ClaimResult:
    """THEORY.md §E / §F.8: for the §E data at width 2 (i) the zero-loss configurations modulo
    rescaling and swap are finitely many, each of loss ≤ tol by the ordinary forward pass; (ii)
    some lie in the box orbit at λ_A and some in the Muon-full orbit at λ_M, none in both; (iii)
    every path between them with ``|a_j|‖w_j‖₂ ≤ C`` (C covering both orbits) has a loss barrier
    ≥ the certified lower bound > 0 at the largest grid, with lower ≤ grid minimax ≤ upper (an
    explicit path evaluated by the forward pass), and random cell samples never fall below the
    per-cell bound (E.4); (iv) at widths 3 and 4 an explicit path joins the same two points with
    barrier ≤ tol."""
    zero = ex.zero_loss_configurations(tol=tol)
    configs, reg = zero["configs"], ex.regions(zero["configs"])
    nums: dict = {"n_configs": len(configs), "n_degenerate": len(zero["degenerate"]),
                  "max_config_loss": float(max(k["loss"] for k in configs))}
    for i, (k, r) in enumerate(zip(configs, reg)):
        nums.update({f"config{i}_c": str(np.round(k["c"], 6).tolist()), f"config{i}_phi_deg": str(np.round(np.rad2deg(k["phi"]), 4).tolist()),
                     f"config{i}_box": r["box"], f"config{i}_muon_full": r["muon_full"], f"config{i}_hybrid": r["hybrid"]})
    in_a = [r["in_box"] for r in reg]
    in_b = [r["in_muon_full"] for r in reg]
    ok = any(in_a) and any(in_b) and not any(a and b for a, b in zip(in_a, in_b)) and not zero["degenerate"]
    c_max = covering_c()
    nums["C"] = c_max
    ordered = True
    for n_grid in n_grids:
        res = certify(n_grid, c_max, zero)
        nums.update({f"lower_N{n_grid}": res["lower"], f"grid_minimax_N{n_grid}": res["grid_minimax"], f"upper_N{n_grid}": res["upper"]})
        ordered &= res["lower"] <= res["grid_minimax"] <= res["upper"] and res["path_max_abs_c"] <= c_max
    check = random_cell_check(res["g"], c_max, seed=seed)
    nums["lb_violations"], nums["lb_min_slack"] = check["violations"], check["min_slack"]
    conf_a = next(k for k, r in zip(configs, reg) if r["in_box"])
    conf_b = next(k for k, r in zip(configs, reg) if r["in_muon_full"])
    wide = {m: wide_path(conf_a, conf_b, m)["barrier"] for m in (3, 4)}
    nums["barrier_width3"], nums["barrier_width4"] = wide[3], wide[4]
    passed = (ok and nums["max_config_loss"] <= tol and ordered and res["lower"] > 0 and check["violations"] == 0
              and max(wide.values()) <= tol)
    return ClaimResult("F.8", "small-width example: certified barrier between the box and Muon-full regions at width 2, "
                       "none at widths 3-4", bool(passed), nums, tol)


def example_results(n_grids=(64, 128, 256, 512), widths=(2, 3, 4), optimizers=("adamw", "muon_exact", "muon", "muon_full"),
                    seeds=tuple(range(32)), steps: int = 4000) -> dict:
    """Everything §E reports, for the CLI and :mod:`theory.figures`: the zero-loss configurations
    and their regions, :func:`theory.certificate.certify` at each N,
    :func:`theory.wide_paths.wide_path` barriers at each width ≥ 3, and
    :func:`theory.example.train_runs` per optimizer (no runs when ``optimizers`` is empty)."""
    zero = ex.zero_loss_configurations()
    reg = ex.regions(zero["configs"])
    certs = [certify(n, zero=zero) for n in n_grids]
    conf_a, conf_b = certs[-1]["configs"]
    wide = {m: wide_path(conf_a, conf_b, m)["barrier"] for m in widths if m >= 3}
    runs = {opt: ex.train_runs(opt, list(seeds), steps=steps, configs=zero["configs"]) for opt in optimizers}
    return {"zero": zero, "regions": reg, "certs": certs, "wide": wide, "runs": runs}


def example_summary(results: dict) -> dict:
    """The plain-number part of :func:`example_results` (JSON-ready): configurations with their
    regions, the bounds per N, the barrier per width, and per optimizer how many runs end near
    each configuration, with their final losses."""
    configs = [{"c": k["c"].tolist(), "phi_deg": np.rad2deg(k["phi"]).tolist(), "loss": k["loss"],
                **{key: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v)) for key, v in r.items()}}
               for k, r in zip(results["zero"]["configs"], results["regions"])]
    bounds = [{key: float(c[key]) if key != "n_grid" else int(c[key]) for key in ("n_grid", "c_max", "lower", "grid_minimax", "upper")}
              for c in results["certs"]]
    last = results["certs"][-1]
    barrier = {"2": {"lower": float(last["lower"]), "upper": float(last["upper"])}}
    barrier.update({str(m): {"lower": 0.0, "upper": float(b)} for m, b in results["wide"].items()})
    runs = {}
    for opt, res in results["runs"].items():
        near = [int(r.get("nearest", -1)) for r in res["runs"]]
        runs[opt] = {"lam": float(res["lam"]), "lr": float(res["lr"]), "steps": int(res["steps"]),
                     "nearest_counts": {str(k): near.count(k) for k in sorted(set(near))},
                     "final_losses": [float(r["loss"]) for r in res["runs"]],
                     "distances": [float(r.get("distance", np.nan)) for r in res["runs"]]}
    return {"configs": configs, "bounds": bounds, "barrier_by_width": barrier, "runs": runs}


#: Sizes of the §E report in ``connect theory verify`` (the CLI's ``connect theory example`` defaults are larger).
VERIFY_SIZES = {"n_grids": (64, 128, 256), "widths": (2, 3, 4), "optimizers": ("adamw", "muon_exact", "muon", "muon_full"),
                "seeds": tuple(range(8)), "steps": 2000}


def write_report(out_dir: str, **sizes) -> tuple[dict, list[str]]:
    """Compute the §E example (:func:`example_results` with ``sizes``), draw its figures into
    ``out_dir`` (:mod:`theory.figures`: landscape with the certified level, the upper-bound path
    and the runs; bounds vs N and width; where runs land) and write ``out_dir/summary.json``
    (:func:`example_summary`). Returns ``(summary, figure paths)``."""
    results = example_results(**sizes)
    summary = example_summary(results)
    paths = figures.landscape(results["certs"][-1], results["zero"]["configs"], results["regions"], out_dir, runs=results["runs"])
    paths += figures.barrier_bounds(results["certs"], results["wide"], out_dir)
    if results["runs"]:
        paths += figures.runs_summary(results["runs"], out_dir)
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    return summary, paths


def report_figures(out_dir: str) -> list[str]:
    """The §E figures (and ``summary.json``) at :data:`VERIFY_SIZES`, for ``connect theory verify``."""
    return write_report(out_dir, **VERIFY_SIZES)[1]
