"""``connect study finetune``: finetune pretrained GPT-2s by every method and measure forgetting.

A thin entry point over :func:`connect.finetune.run`: the :class:`connect.finetune.FinetuneConfig`
comes from its defaults (the ``[tiny]`` recipe), a table of ``--config`` (``--table``, default
``finetune``) and the flags, in that order; the summary printed is the least-forgetting method at
equal held-out task loss and accuracy, per pretraining optimizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from connect.errors import UserError

DEFAULT_OUT = os.path.join("runs", "finetune")


def add_study(studies) -> None:
    """Register ``finetune`` on the ``study`` subparsers of :func:`connect.study_commands.add_parser`."""
    from connect import cli, finetune

    p = studies.add_parser(
        "finetune", help="finetune pretrained GPT-2s with each optimizer and LoRA; forgetting vs learning",
        description="Finetune every --pretrained checkpoint on a task by every method over its learning-rate grid; "
                    "record forgetting (rise of the pretraining corpus's val loss), held-out task loss and accuracy, "
                    "the linear path back, ΔW statistics; write points, summary.json and figures. A rerun resumes.")
    p.add_argument("--config", default=None, help="TOML file, e.g. experiments/finetune_consistency.toml (default: none)")
    p.add_argument("--table", default=None, help="table of --config: finetune (the GPU recipe) or tiny (default: finetune)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"study directory, resumed if it exists (default: {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    cli.add_config_flags(p, finetune.FinetuneConfig)
    p.set_defaults(func=cmd_study_finetune)


def study_config(args: argparse.Namespace):
    """The :class:`connect.finetune.FinetuneConfig` of the command line (validated)."""
    from connect import config, finetune

    if args.table and not args.config:
        raise UserError("--table names a table of --config: pass --config experiments/finetune_consistency.toml too")
    base = finetune.load_config(args.config, args.table or "finetune") if args.config else finetune.FinetuneConfig()
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(finetune.FinetuneConfig) if getattr(args, f.name) is not None}
    if "lrs" in flags:
        flags["lrs"] = {**base.lrs, **_parse_lrs(flags["lrs"])}
    return config.from_dict(flags, "command line", base=base).validate()


def _parse_lrs(items: list[str]) -> dict:
    """``["adamw=1e-4,3e-4", "lora=1e-3"]`` → ``{"adamw": [1e-4, 3e-4], "lora": [1e-3]}``."""
    out = {}
    for item in items:
        name, sep, vals = item.partition("=")
        try:
            out[name] = [float(v) for v in vals.split(",")]
        except ValueError:
            name = ""
        if not (sep and name):
            raise UserError(f"--lrs {item!r} is not METHOD=LR[,LR…], e.g. --lrs adamw=1e-4,3e-4 lora=1e-3")
    return out


def cmd_study_finetune(args: argparse.Namespace) -> int:
    from connect import finetune

    cfg = study_config(args)
    summary = finetune.run(cfg, args.out, progress=not args.quiet)
    print(f"{summary['n_points']} points in {args.out} (points/, summary.json, figures/)")
    for st in summary["studies"]:
        for key in ("at_equal_loss", "at_equal_accuracy"):
            if key not in st:
                continue
            eq = st[key]
            order = sorted(eq["interpolated"], key=eq["interpolated"].get)
            ranked = ", ".join(f"{m} {eq['interpolated'][m]:.3f}" for m in order)
            print(f"pretrained {st['pretraining_optimizer']}, {st['task']} (n={st['n_train']}), forgetting at equal "
                  f"{eq['metric']} {eq['target']:.3f}: {ranked}")
    return 0
