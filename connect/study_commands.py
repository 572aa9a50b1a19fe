"""``connect paths`` (two GPT-2 checkpoints joined by paths) and ``connect study gpt2`` (the connectivity study).

Thin entry points over :func:`connect.lm_study.measure_pair` and :func:`connect.lm_study.run`. ``study`` has
one subcommand per study; :func:`add_parser` returns its subparsers so that other studies can be added.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from connect.errors import UserError

DEFAULT_STUDY_OUT = os.path.join("runs", "gpt2_study")


def add_parser(sub) -> argparse._SubParsersAction:
    """Register ``paths`` and ``study`` (with ``study gpt2``) on the ``connect`` subparsers ``sub``; returns
    ``study``'s subparsers, to which further studies add themselves."""
    from connect import lm_study, paths

    d = lm_study.StudyConfig()
    p = sub.add_parser(
        "paths", help="barriers, ensembles and spectra along linear and learned paths between two GPT-2 checkpoints",
        description="Join two GPT-2 checkpoints (connect train-lm or Hugging Face directories of the same config) by linear and "
                    "learned paths, raw and with --align aligned (attention heads, MLP units, residual rotation); print the "
                    "barriers on the val split (and --ood-data) and write curves, ensembles and spectra to --out.")
    p.add_argument("ckpt_a", metavar="CKPT_A")
    p.add_argument("ckpt_b", metavar="CKPT_B")
    p.add_argument("--data", default="", help="corpus as for train-lm --data (default: the embedded corpus)")
    p.add_argument("--tokenizer", default="", help="a Hugging Face tokenizer.json to encode text with (default: bytes)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="val fraction of a text corpus, as in training (default: 0.05)")
    p.add_argument("--ood-data", default="", help="an out-of-distribution corpus, its val split evaluated "
                   f"(default: {lm_study.EMBEDDED_OOD}, English prose of the stdlib, for the embedded corpus; none otherwise)")
    p.add_argument("--align", action="store_true", help="also measure the aligned pair")
    p.add_argument("--path", nargs="+", default=["linear", "polychain"], choices=paths.KINDS, help="path kinds (default: linear polychain)")
    p.add_argument("--t-grid", nargs="+", type=float, default=None, help="t values in [0, 1], holding 0 and 1 (default: 0, 0.1, …, 1)")
    p.add_argument("--steps", type=int, default=d.path_steps, help=f"steps to learn a path's bend (default: {d.path_steps})")
    p.add_argument("--path-optimizer", default=None, help="optimizer learning the bends (default: the endpoints' own when their "
                   "checkpoints record the same one — the optimizer-restricted path — else adamw)")
    p.add_argument("--lr", type=float, default=None, help="path-learning learning rate of the hidden matrices (default: 1e-3 adamw, 4e-3 muon)")
    p.add_argument("--aux-lr", type=float, default=None, help="path-learning learning rate of the other arrays (default: --lr)")
    p.add_argument("--path-batch-size", type=int, default=d.path_batch_size, help=f"training windows per path step (default: {d.path_batch_size})")
    p.add_argument("--batch-size", type=int, default=d.eval_batch_size, help=f"windows per evaluation batch (default: {d.eval_batch_size})")
    p.add_argument("--max-batches", type=int, default=d.eval_batches, help=f"evaluation batches per split, 0: all (default: {d.eval_batches})")
    p.add_argument("--context", type=int, default=None, help="tokens per window (default: the model's n_positions)")
    p.add_argument("--spectra-matrix", default=d.spectra_matrix, help=f"matrix whose singular values are kept (default: {d.spectra_matrix})")
    p.add_argument("--plane", action="store_true", help="also the loss plane through A, B and each learned bend")
    p.add_argument("--plane-points", type=int, default=d.plane_points, help=f"plane grid points per axis (default: {d.plane_points})")
    p.add_argument("--seed", type=int, default=0, help="seed of path learning (default: 0)")
    p.add_argument("--out", default=None, help="write the full result (curves, ensembles, spectra) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_paths)

    s = sub.add_parser("study", help="the studies of the seed papers, end to end (training, pairs, tables, figures)",
                       description="Run a study end to end; a rerun on the same --out resumes.")
    studies = s.add_subparsers(dest="study", required=True)
    g = studies.add_parser(
        "gpt2", help="GPT-2 connectivity: seeds per optimizer, all pairs, raw and aligned paths, barriers, spectra, planes, figures",
        description="Train (or reuse) the seeds of every optimizer, join every pair by linear and learned paths, raw and aligned, "
                    "and write OUT/results.json, OUT/tables/ (barriers, ensembles; markdown and JSON) and OUT/figures/. "
                    "A killed study resumes: rerun the same command.")
    g.add_argument("--config", default=lm_study.StudyConfig.EXAMPLE, help=f"TOML study file (default: {lm_study.StudyConfig.EXAMPLE})")
    g.add_argument("--tiny", action="store_true", help="use the file's [tiny] variant (the embedded corpus, 2 CPU cores, minutes)")
    g.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, dotted for tables, values in TOML syntax, e.g. seeds=2 train.steps=50 'paths=[\"linear\"]'")
    g.add_argument("--out", default=DEFAULT_STUDY_OUT, help=f"study directory, resumed if it exists (default: {DEFAULT_STUDY_OUT})")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=cmd_study_gpt2)
    return studies


def cmd_paths(args: argparse.Namespace) -> int:
    import numpy as np

    from connect import barrier, corpus, lm_paths, lm_study, lm_training
    from connect.io import write_json_atomic

    ts_T = lm_paths.check_grid(args.t_grid if args.t_grid is not None else barrier.grid())
    if min(args.steps, args.path_batch_size, args.batch_size, args.plane_points - 1) < 1 or args.max_batches < 0:
        raise UserError("--steps, --path-batch-size and --batch-size must be ≥ 1, --plane-points ≥ 2, --max-batches ≥ 0")
    theta_a, cfg_a = lm_training.load(args.ckpt_a)
    theta_b, cfg_b = lm_training.load(args.ckpt_b)
    model_cfg = lm_paths.check_pair(theta_a, cfg_a, theta_b, cfg_b)
    data = corpus.load(args.data or None, tokenizer=args.tokenizer or None, val_fraction=args.val_fraction)
    if data.vocab_size > model_cfg.vocab_size:
        raise UserError(f"corpus {data.name} has vocabulary {data.vocab_size} > the models' vocab_size {model_cfg.vocab_size}: "
                        "pass the corpus (or --tokenizer) they were trained on")
    ood_name, ood_tokens = lm_study.load_ood(args.ood_data, data, tokenizer=args.tokenizer, val_fraction=args.val_fraction)
    if args.path_optimizer is None:
        recorded = {_recorded_optimizer(args.ckpt_a), _recorded_optimizer(args.ckpt_b)}
        args.path_optimizer = recorded.pop() if len(recorded) == 1 and None not in recorded else "adamw"
    d = lm_study.StudyConfig()
    lr = {args.path_optimizer: args.lr} if args.lr is not None else d.path_lr
    aux = {args.path_optimizer: args.aux_lr} if args.aux_lr is not None else {}
    cfg = dataclasses.replace(d, paths=list(dict.fromkeys(args.path)), align=args.align, path_steps=args.steps,
                              path_batch_size=args.path_batch_size, path_lr=lr, path_aux_lr=aux, eval_batch_size=args.batch_size,
                              eval_batches=args.max_batches, spectra_matrix=args.spectra_matrix, plane_points=args.plane_points,
                              seed=args.seed, cross_path_optimizer=args.path_optimizer)
    if not args.quiet:
        print(f"measuring {', '.join(cfg.paths)} paths ({'raw and aligned' if args.align else 'raw'}) on {data.name}"
              + (f" and {ood_name}" if ood_name else "") + f", bends learned with {args.path_optimizer}", file=sys.stderr)
    rec = lm_study.measure_pair(theta_a, theta_b, model_cfg, data, cfg, path_optimizer=args.path_optimizer, ood_tokens=ood_tokens,
                                context=args.context, plane=args.plane, ts_T=ts_T)
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
                  "path_optimizer": args.path_optimizer,
                  "t": np.asarray(ts_T).tolist(), **rec}
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_study_gpt2(args: argparse.Namespace) -> int:
    from connect import lm_plots, lm_study

    cfg = lm_study.load_config(args.config, tiny=args.tiny, overrides=_parse_set(args.set))
    res = lm_study.run(cfg, args.out, progress=not args.quiet)
    with open(os.path.join(args.out, "tables", "barriers.md")) as f:
        print(f.read())
    print(f"{len(res['pairs'])} pairs; wrote {args.out}/results.json, tables/ ({', '.join(lm_plots.TABLES)}) and figures/")
    return 0


def _recorded_optimizer(path: str) -> str | None:
    """The optimizer a connect checkpoint's ``metadata.json`` records (the newest one under a run or seed
    directory); ``None`` for a Hugging Face directory or when nothing is recorded."""
    import glob
    import json

    found = [os.path.join(path, "metadata.json")] if os.path.isfile(os.path.join(path, "metadata.json")) else sorted(
        glob.glob(os.path.join(path, "**", "step-*", "metadata.json"), recursive=True))
    if not found:
        return None
    with open(found[-1]) as f:
        return json.load(f).get("optimizer")


def _parse_set(items: list[str]) -> dict:
    """``["seeds=2", "train.steps=50"]`` → ``{"seeds": 2, "train.steps": 50}``, values read as TOML (bare words as strings)."""
    from connect.config import tomllib  # tomli on Python 3.10

    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not (sep and key and val):
            raise UserError(f"--set {item!r} is not KEY=VALUE, e.g. --set seeds=2 train.steps=50")
        try:
            out[key] = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = val
    return out
