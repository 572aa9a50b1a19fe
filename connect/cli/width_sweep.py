"""``connect width-sweep``, ``connect barrier`` and ``connect plot``: the two-layer ReLU commands."""

from __future__ import annotations

import argparse
import os

from connect.cli.options import add_config_flags, config_from_args
from connect.errors import UserError
from connect.studies.width_sweep.config import WidthSweepConfig
from connect.twolayer.pair import BarrierConfig

DEFAULT_RUN_DIR = os.path.join("runs", "width_sweep")


def add_parser(sub) -> None:
    """Register ``width-sweep``, ``barrier`` and ``plot`` on the ``connect`` subparsers ``sub``."""
    p = sub.add_parser("width-sweep", help="train two-layer ReLU nets across widths and optimizers; measure every pair's paths",
                       description="Train two-layer ReLU networks at every width × optimizer × seed, join every same-width pair by linear and learned paths (raw and aligned), and write results and figures to the run directory. Rerunning with the same run directory resumes.")
    p.add_argument("--config", help="TOML file of options (keys as below, with underscores); flags override it")
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"output directory, resumed if it exists (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p, WidthSweepConfig)
    p.set_defaults(func=cmd_width_sweep)

    b = sub.add_parser("barrier", help="measure the paths between two saved checkpoints",
                       description="Barriers, spectra and constraint norms along linear and learned paths between two checkpoints of the same architecture, raw and aligned.")
    b.add_argument("ckpt_a")
    b.add_argument("ckpt_b")
    b.add_argument("--config", default=None, help="TOML file with a [barrier] table of the options below; flags override it")
    b.add_argument("--out", default=None, help="write the full result (curves included) to this JSON file")
    add_config_flags(b, BarrierConfig)
    b.set_defaults(func=cmd_barrier)

    q = sub.add_parser("plot", help="redraw the figures of a width-sweep run from its results.json")
    q.add_argument("run_dir")
    q.add_argument("--width", type=int, default=None, help="width of the along-t figures (default: the run's plot_width)")
    q.set_defaults(func=cmd_plot)


def sweep_config(args: argparse.Namespace):
    """The :class:`connect.studies.width_sweep.config.WidthSweepConfig` of ``connect width-sweep``."""
    return config_from_args(args, WidthSweepConfig)


def cmd_width_sweep(args: argparse.Namespace) -> int:
    from connect.studies.width_sweep import plots, run

    cfg = sweep_config(args)
    rows = run.run(cfg, args.run_dir, progress=not args.quiet, finish=plots.plot_run)  # figures drawn holding the lock
    _print_summary(run.summary(rows), cfg.widths)
    print(f"wrote {args.run_dir}/results.csv, results.json and figures/")
    return 0


def _print_summary(summary: list[dict], widths: list[int]) -> None:
    lo, hi = min(widths), max(widths)
    print(f"barrier (train), mean ± std over pairs, at widths {lo} and {hi}:")
    print(f"{'pair type':<16}{'path':<11}{'alignment':<10}{'m=' + str(lo):>18}{'m=' + str(hi):>18}")
    by = {(s["pair_type"], s["path"], s["alignment"], s["width"]): s for s in summary}
    for pt, path, al in dict.fromkeys((s["pair_type"], s["path"], s["alignment"]) for s in summary):
        cells = [by.get((pt, path, al, w)) for w in (lo, hi)]
        txt = [f"{c['mean']:.4f} ± {c['std']:.4f}" if c else "-" for c in cells]
        print(f"{pt:<16}{path:<11}{al:<10}{txt[0]:>18}{txt[1]:>18}")


def cmd_barrier(args: argparse.Namespace) -> int:
    from connect.io import check_output_file
    from connect.twolayer import pair

    cfg = config_from_args(args, BarrierConfig)
    if args.out:
        check_output_file(args.out)  # before any work
    result = pair.measure_checkpoints(args.ckpt_a, args.ckpt_b, cfg)
    print(f"{'path':<11}{'alignment':<10}{'barrier_train':>14}{'barrier_test':>14}{'max_barrier_train':>19}")
    for r in result["rows"]:
        print(f"{r['path']:<11}{r['alignment']:<10}{r['barrier_train']:>14.5f}{r['barrier_test']:>14.5f}{r['max_barrier_train']:>19.5f}")
    if args.out:
        from connect.io import write_json_atomic

        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from connect.studies.width_sweep import plots

    if not os.path.isdir(args.run_dir):
        raise UserError(f"run directory {args.run_dir} not found: pass the --run-dir of a finished `connect width-sweep`")
    for path in plots.plot_run(args.run_dir, width=args.width):
        print(path)
    return 0
