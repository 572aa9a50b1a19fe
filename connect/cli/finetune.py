"""``connect study finetune``: finetune pretrained language models (any family) by every method and measure forgetting.

A thin entry point over :func:`connect.studies.finetune.run.run`, then :func:`connect.studies.finetune.plots.plot`:
the :class:`connect.studies.finetune.config.FinetuneConfig` comes from its defaults (the ``[tiny]`` recipe), a table of
``--config`` (``--table``, default ``finetune``) and the flags, in that order; the summary printed is the
least-forgetting method at equal held-out task loss and accuracy, per pretraining optimizer.
"""

from __future__ import annotations

import argparse
import os

from connect.cli.options import add_config_flags, config_from_args
from connect.errors import UserError

DEFAULT_OUT = os.path.join("runs", "finetune")


def add_study(studies) -> None:
    """Register ``finetune`` on the ``study`` subparsers of :func:`connect.cli.studies.add_parser`."""
    from connect.studies.finetune.config import FinetuneConfig

    p = studies.add_parser(
        "finetune", help="finetune pretrained models (GPT-2, Llama, GPT-NeoX) with each optimizer and LoRA; forgetting vs learning",
        description="Finetune every --pretrained checkpoint on a task by every method over its learning-rate grid; "
                    "record forgetting (rise of the pretraining corpus's val loss), held-out task loss and accuracy, "
                    "the linear path back, ΔW statistics; write points, summary.json and figures. A rerun resumes.")
    p.add_argument("--config", default=None, help="TOML file, e.g. experiments/finetune_consistency.toml (default: none)")
    p.add_argument("--table", default=None, help="table of --config: finetune (the GPU recipe) or tiny (laid over it; default: finetune)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"study directory, resumed if it exists (default: {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p, FinetuneConfig)
    p.set_defaults(func=cmd_study_finetune)


def study_config(args: argparse.Namespace):
    """The :class:`connect.studies.finetune.config.FinetuneConfig` of the command line (validated): defaults <
    ``--config`` (its ``[finetune]`` table, with ``--table tiny`` over it) < flags < ``--set``."""
    from connect.studies.finetune.config import FinetuneConfig

    if args.table and not args.config:
        raise UserError("--table names a table of --config: pass --config experiments/finetune_consistency.toml too")
    return config_from_args(args, FinetuneConfig, variant=None if args.table in (None, FinetuneConfig.TABLE) else args.table)


def cmd_study_finetune(args: argparse.Namespace) -> int:
    from connect.studies.finetune import plots
    from connect.studies.finetune import run as finetune

    cfg = study_config(args)
    summary = finetune.run(cfg, args.out, progress=not args.quiet, finish=plots.plot)  # figures drawn holding the lock
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
