"""The ``connect`` command line: ``width-sweep``, ``barrier``, ``plot``, ``train-lm``, ``eval-lm``, ``theory …``.

User mistakes (:class:`connect.errors.UserError`) print one line on stderr and exit 2;
Ctrl-C exits 130 with a hint that rerunning resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from connect.errors import UserError

DEFAULT_RUN_DIR = os.path.join("runs", "width_sweep")


def add_config_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the config dataclass ``cls`` (underscores become dashes), its help text the field's."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_ = f"{f.metadata['help']} (default: {default})"
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(default, dict):
            p.add_argument(flag, nargs="+", metavar="NAME=VALUE", default=None, help=help_)
        elif isinstance(default, list):
            item = type(default[0]) if default and not isinstance(default[0], bool) else str
            p.add_argument(flag, nargs="+", type=item, default=None, metavar=f.name.rstrip("s").upper(), help=help_)
        else:
            p.add_argument(flag, type=type(default), default=None, help=help_)


def _parse_named(items: list[str], key: str) -> dict:
    """``["adamw=0.01", "muon=0.02"]`` → ``{"adamw": "0.01", "muon": "0.02"}`` (values typed by :func:`connect.config.from_dict`)."""
    flag = "--" + key.replace("_", "-")
    out = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not (sep and name and val):
            raise UserError(f"{flag} {item!r} is not NAME=VALUE, e.g. {flag} adamw=0.01 muon=0.02")
        out[name] = val
    return out


def config_from_args(args: argparse.Namespace, cls: type):
    """The ``cls`` config of a command: defaults < ``--config`` file < command-line flags (a dict flag adds
    to the file's dict), validated."""
    from connect import config

    values = config.load_toml(args.config, cls) if args.config else {}
    source = args.config or "command line"
    cli = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}
    for key, val in cli.items():
        if isinstance(getattr(cls(), key), dict):
            cli[key] = {**values.get(key, {}), **_parse_named(val, key)}
    return config.from_dict(cli, "command line", base=config.from_dict(values, source, cls=cls)).validate()


def sweep_config(args: argparse.Namespace):
    """The :class:`connect.config.WidthSweepConfig` of ``connect width-sweep``."""
    from connect import config

    return config_from_args(args, config.WidthSweepConfig)


def cmd_width_sweep(args: argparse.Namespace) -> int:
    from connect import sweep

    cfg = sweep_config(args)
    rows = sweep.run(cfg, args.run_dir, progress=not args.quiet)
    _print_summary(sweep.summary(rows), cfg.widths)
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
    from connect import pair

    result = pair.measure_checkpoints(
        args.ckpt_a, args.ckpt_b, data_path=args.data, path_optimizer=args.path_optimizer,
        weight_decay=args.weight_decay, lr=args.lr, kinds=args.paths, path_steps=args.path_steps,
        t_points=args.t_points, refine=args.refine, seed=args.seed,
    )
    print(f"{'path':<11}{'alignment':<10}{'barrier_train':>14}{'barrier_test':>14}{'max_barrier_train':>19}")
    for r in result["rows"]:
        print(f"{r['path']:<11}{r['alignment']:<10}{r['barrier_train']:>14.5f}{r['barrier_test']:>14.5f}{r['max_barrier_train']:>19.5f}")
    if args.out:
        from connect.io import write_json_atomic

        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from connect import plots

    if not os.path.isdir(args.run_dir):
        raise UserError(f"run directory {args.run_dir} not found: pass the --run-dir of a finished `connect width-sweep`")
    for path in plots.plot_run(args.run_dir, width=args.width):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connect", description="Optimizer-induced mode connectivity: train, join by paths, measure barriers and spectra.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("width-sweep", help="train two-layer ReLU nets across widths and optimizers; measure every pair's paths",
                       description="Train two-layer ReLU networks at every width × optimizer × seed, join every same-width pair by linear and learned paths (raw and aligned), and write results and figures to the run directory. Rerunning with the same run directory resumes.")
    p.add_argument("--config", help="TOML file of options (keys as below, with underscores); flags override it")
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"output directory, resumed if it exists (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from connect import config

    add_config_flags(p, config.WidthSweepConfig)
    p.set_defaults(func=cmd_width_sweep)

    b = sub.add_parser("barrier", help="measure the paths between two saved checkpoints",
                       description="Barriers, spectra and constraint norms along linear and learned paths between two checkpoints of the same architecture, raw and aligned.")
    b.add_argument("ckpt_a")
    b.add_argument("ckpt_b")
    b.add_argument("--data", default=None, help="an .npz with X, y (default: the data recorded in checkpoint A)")
    b.add_argument("--path-optimizer", default=None, help="optimizer learning the paths (default: the endpoints' own if they share one, else adamw)")
    b.add_argument("--weight-decay", type=float, default=None, help="λ for path learning and constraint norms (default: checkpoint A's)")
    b.add_argument("--lr", type=float, default=None, help="learning rate of the path optimizer (default: the registry's)")
    b.add_argument("--paths", nargs="+", default=["linear", "bezier", "polychain"], help="path kinds (default: linear bezier polychain)")
    b.add_argument("--path-steps", type=int, default=400, help="steps to learn a path's free point (default: 400)")
    b.add_argument("--t-points", type=int, default=11, help="evenly spaced t in [0,1] (default: 11)")
    b.add_argument("--refine", type=int, default=0, help="extra t points around the peak (default: 0)")
    b.add_argument("--seed", type=int, default=0, help="seed of path learning (default: 0)")
    b.add_argument("--out", default=None, help="write the full result (curves included) to this JSON file")
    b.set_defaults(func=cmd_barrier)

    q = sub.add_parser("plot", help="redraw the figures of a width-sweep run from its results.json")
    q.add_argument("run_dir")
    q.add_argument("--width", type=int, default=None, help="width of the along-t figures (default: the run's plot_width)")
    q.set_defaults(func=cmd_plot)

    from connect import finetune_commands, lm_commands, study_commands
    from theory import commands as theory_commands

    lm_commands.add_parser(sub)
    theory_commands.add_parser(sub)
    finetune_commands.add_study(study_commands.add_parser(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no windows
    args = build_parser().parse_args(argv)
    from connect import batching

    batching.enable_compilation_cache()
    try:
        return args.func(args)
    except UserError as e:
        print(f"connect: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("connect: interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
