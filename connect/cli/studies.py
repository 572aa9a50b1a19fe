"""``connect paths`` (two checkpoints of one language-model family joined by paths) and ``connect study gpt2`` (the connectivity study).

Thin entry points over :func:`connect.studies.gpt2_connectivity.run.measure_pair` and :func:`…run.run`. ``study`` has
one subcommand per study; :func:`add_parser` returns its subparsers so that other studies can be added.
"""

from __future__ import annotations

import argparse
import os
import sys

from connect.cli.options import add_config_flags, config_from_args
from connect.errors import UserError

DEFAULT_STUDY_OUT = os.path.join("runs", "gpt2_study")


def add_parser(sub) -> argparse._SubParsersAction:
    """Register ``paths`` and ``study`` (with ``study gpt2``) on the ``connect`` subparsers ``sub``; returns
    ``study``'s subparsers, to which further studies add themselves."""
    from connect.studies.gpt2_connectivity import config as study_config

    p = sub.add_parser(
        "paths", help="barriers, ensembles and spectra along linear and learned paths between two GPT-2, Llama or GPT-NeoX checkpoints",
        description="Join two checkpoints of one family and config (GPT-2, Llama/Qwen2/Mistral or GPT-NeoX; connect train-lm or Hugging Face directories) by linear and "
                    "learned paths, raw and with --align aligned (attention heads, MLP units, residual rotation); print the "
                    "barriers on the val split (and --ood-data) and write curves, ensembles and spectra to --out.")
    p.add_argument("ckpt_a", metavar="CKPT_A")
    p.add_argument("ckpt_b", metavar="CKPT_B")
    p.add_argument("--config", default=None, help="TOML file with a [paths] table of the options below; flags override it")
    p.add_argument("--out", default=None, help="write the full result (curves, ensembles, spectra) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    add_config_flags(p, study_config.PathsConfig)
    p.set_defaults(func=cmd_paths)

    s = sub.add_parser("study", help="the studies of the seed papers, end to end (training, pairs, tables, figures)",
                       description="Run a study end to end; a rerun on the same --out resumes.")
    studies = s.add_subparsers(dest="study", required=True)
    g = studies.add_parser(
        "gpt2", help="GPT-2 connectivity: seeds per optimizer, all pairs, raw and aligned paths, barriers, spectra, planes, figures",
        description="Train (or reuse) the seeds of every optimizer, join every pair by linear and learned paths, raw and aligned, "
                    "and write OUT/results.json, OUT/tables/ (barriers, ensembles; markdown and JSON) and OUT/figures/. "
                    "A killed study resumes: rerun the same command.")
    g.add_argument("--config", default=study_config.StudyConfig.EXAMPLE, help=f"TOML study file (default: {study_config.StudyConfig.EXAMPLE})")
    g.add_argument("--tiny", action="store_true", help="use the file's [tiny] variant (the embedded corpus, 2 CPU cores, minutes)")
    g.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, dotted for tables, values in TOML syntax, e.g. seeds=2 train.steps=50 'paths=[\"linear\"]'")
    g.add_argument("--out", default=DEFAULT_STUDY_OUT, help=f"study directory, resumed if it exists (default: {DEFAULT_STUDY_OUT})")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=cmd_study_gpt2)
    return studies


def cmd_paths(args: argparse.Namespace) -> int:
    import numpy as np

    from connect import barrier, checkpoints, optimizers
    from connect.io import check_output_file, write_json_atomic
    from connect.lm import corpus
    from connect.lm import paths as lm_paths
    from connect.lm import training as lm_training
    from connect.studies.gpt2_connectivity import config as study_config
    from connect.studies.gpt2_connectivity import run as lm_study

    pcfg = config_from_args(args, study_config.PathsConfig)
    ts_T = lm_paths.check_grid(pcfg.t_grid or barrier.grid())
    if args.out:  # before any model is loaded
        check_output_file(args.out)
    theta_a, cfg_a = lm_training.load(args.ckpt_a, allow_nonfinite=pcfg.allow_nonfinite)
    theta_b, cfg_b = lm_training.load(args.ckpt_b, allow_nonfinite=pcfg.allow_nonfinite)
    model_cfg = lm_paths.check_pair(theta_a, cfg_a, theta_b, cfg_b)
    data = corpus.load(pcfg.data or None, tokenizer=pcfg.tokenizer or None, val_fraction=pcfg.val_fraction)
    if data.vocab_size > model_cfg.vocab_size:
        raise UserError(f"corpus {data.name} has vocabulary {data.vocab_size} > the models' vocab_size {model_cfg.vocab_size}: "
                        "pass the corpus (or --tokenizer) they were trained on")
    ood_name, ood_tokens = lm_study.load_ood(pcfg.ood_data, data, tokenizer=pcfg.tokenizer, val_fraction=pcfg.val_fraction)
    path_optimizer = pcfg.path_optimizer
    if not path_optimizer:
        path_optimizer = optimizers.path_optimizer(checkpoints.recorded_optimizer(args.ckpt_a), checkpoints.recorded_optimizer(args.ckpt_b))
    cfg = pcfg.study_config(path_optimizer)
    if not args.quiet:
        print(f"measuring {', '.join(cfg.paths)} paths ({'raw and aligned' if cfg.align else 'raw'}) on {data.name}"
              + (f" and {ood_name}" if ood_name else "") + f", bends learned with {path_optimizer}", file=sys.stderr)
    rec = lm_study.measure_pair(theta_a, theta_b, model_cfg, data, cfg, path_optimizer=path_optimizer, ood_tokens=ood_tokens,
                                context=pcfg.context, plane=pcfg.plane, ts_T=ts_T)
    ood_col = f"barrier_{ood_name}" if ood_name else "barrier_ood"
    print(f"{'path':<11}{'alignment':<10}{'loss_A':>9}{'loss_B':>9}{'barrier_val':>13}{'max_barrier':>13}{ood_col:>{max(14, len(ood_col) + 2)}}"
          f"{'ens_endpoints':>15}")
    for r in rec["paths"]:
        c = r["curve"]
        ood = f"{c['ood']['barrier']:.5f}" if c["ood"] else "-"
        ens = c["ensemble"]
        print(f"{r['path']:<11}{r['alignment']:<10}{ens['loss_a']:>9.4f}{ens['loss_b']:>9.4f}{c['barrier']:>13.5f}{c['max_barrier']:>13.5f}"
              f"{ood:>{max(14, len(ood_col) + 2)}}{ens['endpoints']:>15.4f}")
    if args.out:
        result = {"ckpt_a": args.ckpt_a, "ckpt_b": args.ckpt_b, "corpus": data.name, "ood_corpus": ood_name or None,
                  "path_optimizer": path_optimizer,
                  "t": np.asarray(ts_T).tolist(), **rec}
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_study_gpt2(args: argparse.Namespace) -> int:
    from connect.studies.gpt2_connectivity import config as study_config
    from connect.studies.gpt2_connectivity import plots, run

    cfg = config_from_args(args, study_config.StudyConfig, variant="tiny" if args.tiny else None)
    res = run.run(cfg, args.out, progress=not args.quiet, finish=plots.plot_study)  # tables and figures drawn holding the lock
    with open(os.path.join(args.out, "tables", "barriers.md")) as f:
        print(f.read())
    print(f"{len(res['pairs'])} pairs; wrote {args.out}/results.json, tables/ ({', '.join(plots.TABLES)}) and figures/")
    return 0
