"""The ``connect`` command line: ``width-sweep``, ``barrier``, ``plot``, ``train-lm``, ``eval-lm``, ``paths``,
``study …``, ``theory …``; one module per command group, and the only place argparse is used.

User mistakes (:class:`connect.errors.UserError`) print one line on stderr and exit 2;
Ctrl-C exits 130 with a hint that rerunning resumes.
"""

from __future__ import annotations

import argparse
import sys

from connect.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from connect.cli import finetune, lm, studies, theory, width_sweep

    parser = argparse.ArgumentParser(prog="connect", description="Optimizer-induced mode connectivity: train, join by paths, measure barriers and spectra.")
    sub = parser.add_subparsers(dest="command", required=True)
    width_sweep.add_parser(sub)
    lm.add_parser(sub)
    theory.add_parser(sub)
    finetune.add_study(studies.add_parser(sub))
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


