"""``connect train-lm`` and ``connect eval-lm``: language-model training runs and val losses from the command line.

Thin entry points over :func:`connect.lm.training.train`, :func:`connect.lm.training.load` and
:func:`connect.lm.training.evaluate`; every option of ``train-lm`` is a field of
:class:`connect.lm.config.TrainLMConfig`.
"""

from __future__ import annotations

import argparse
import os

from connect.cli.options import add_config_flags, config_from_args
from connect.errors import UserError
from connect.lm.config import TrainLMConfig

DEFAULT_RUNS = "runs"


def add_parser(sub) -> None:
    """Register ``train-lm`` and ``eval-lm`` on the ``connect`` subparsers ``sub``."""
    t = sub.add_parser(
        "train-lm", help="train GPT-2, Llama or GPT-NeoX (tiny GPT-2 on the embedded corpus by default: CPU minutes) with AdamW, Muon, Lion or momentum",
        description="Train seeds of a language model (--family gpt2, llama or gpt_neox; --model a named config of it) at once (vmap over seeds) and write OUT/config.json, OUT/seed-S/metrics.jsonl and "
                    "OUT/seed-S/ckpt/step-K/. Options: defaults < --config file < flags. Rerunning the same command on the same "
                    "--out resumes from the newest checkpoint every seed has and reaches the parameters an uninterrupted run "
                    "would (bit-identical on CPU); every option, steps included, must then equal the stored config.json. "
                    "One command writes an --out at a time (a second is refused, naming the first's pid). A training loss "
                    "that is not finite stops the run (exit code 2; lower --lr), keeping the last finite checkpoint. "
                    "Prints each seed's final train and val loss (nats), the val split's unigram entropy (the loss of the "
                    "best context-free model) and the throughput.")
    t.add_argument("--config", help="TOML file of options (a [train_lm] table, keys as below with underscores); flags override it")
    t.add_argument("--seed", type=int, default=None, help="one seed: --seed S is --seeds S")
    t.add_argument("--out", default=None,
                   help=f"run directory, resumed if it holds checkpoints (default: {DEFAULT_RUNS}/OPTIMIZER-SEED, seeds joined by '-')")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(t, TrainLMConfig)
    t.set_defaults(func=cmd_train_lm)

    e = sub.add_parser(
        "eval-lm", help="val loss (nats) of a GPT-2, Llama/Qwen2/Mistral or GPT-NeoX checkpoint: connect train-lm or Hugging Face save_pretrained",
        description="Mean next-token cross-entropy (nats) of a language-model checkpoint (any supported family) over consecutive windows of a corpus's val "
                    "split, next to the split's unigram entropy. CKPT: a Hugging Face directory (config.json + "
                    "model.safetensors), a connect checkpoint seed-S/ckpt/step-K, its seed-S or seed-S/ckpt directory "
                    "(newest checkpoint), or a run directory with one seed.")
    e.add_argument("ckpt", metavar="CKPT")
    e.add_argument("--data", default="", help="corpus as for train-lm --data (default: the embedded corpus)")
    e.add_argument("--tokenizer", default="", help="a Hugging Face tokenizer.json to encode text with (default: bytes)")
    e.add_argument("--val-fraction", type=float, default=TrainLMConfig.val_fraction,
                   help=f"val fraction of a text corpus, as in training (default: {TrainLMConfig.val_fraction})")
    e.add_argument("--batch-size", type=int, default=16, help="windows per evaluation batch (default: 16)")
    e.add_argument("--context", type=int, default=None, help="tokens per window (default: the model's context limit)")
    e.add_argument("--max-batches", type=int, default=0, help="evaluate at most this many batches (default: 0, the whole split)")
    e.add_argument("--allow-nonfinite", action="store_true", help="read a checkpoint whose weights hold NaN or inf (refused by default)")
    e.set_defaults(func=cmd_eval_lm)


def cmd_train_lm(args: argparse.Namespace) -> int:
    from connect.lm import training as lm_training

    if args.seed is not None:
        if args.seeds is not None:
            raise UserError("pass --seed or --seeds, not both (they mean the same)")
        args.seeds = [args.seed]
    cfg = config_from_args(args, TrainLMConfig)
    out = args.out or os.path.join(DEFAULT_RUNS, f"{cfg.optimizer}-{'-'.join(map(str, cfg.seeds))}")
    summary = lm_training.train(cfg, out, progress=not args.quiet)  # checks every input before it writes anything
    _print_train_summary(summary)
    return 0


def cmd_eval_lm(args: argparse.Namespace) -> int:
    from connect.lm import corpus
    from connect.lm import training as lm_training

    if args.batch_size < 1 or (args.context is not None and args.context < 1) or args.max_batches < 0:
        raise UserError("--batch-size and --context must be ≥ 1 and --max-batches ≥ 0 (0: the whole split)")
    params, model_cfg = lm_training.load(args.ckpt, allow_nonfinite=args.allow_nonfinite)
    data = corpus.load(args.data or None, tokenizer=args.tokenizer or None, val_fraction=args.val_fraction)
    if data.vocab_size > model_cfg.vocab_size:
        raise UserError(f"corpus {data.name} has vocabulary {data.vocab_size} > the model's vocab_size {model_cfg.vocab_size}: "
                        f"pass the corpus (or --tokenizer) the model was trained on")
    context = args.context or model_cfg.context_limit
    loss = lm_training.evaluate(params, model_cfg, data.val, batch_size=args.batch_size, context=context,
                                max_batches=args.max_batches or None)
    part = f"first {args.max_batches * args.batch_size} windows" if args.max_batches else "all windows"
    print(f"val loss {loss:.6f} nats ({data.name} val split, {part} of {context} tokens; "
          f"val unigram entropy {corpus.unigram_entropy(data.val):.6f} nats)")
    return 0


def _print_train_summary(summary: dict) -> None:
    fmt = lambda x, spec=".4f": "-" if x is None else format(x, spec)  # noqa: E731
    print(f"{summary['corpus']}: val unigram entropy {summary['unigram_entropy']:.4f} nats (the best context-free loss)")
    print(f"{'seed':>6}{'train_loss':>12}{'val_loss':>12}   after {summary['steps']} steps")
    for s, row in summary["seeds"].items():
        print(f"{s:>6}{fmt(row['loss']):>12}{fmt(row['val_loss']):>12}")
    mfu = "" if summary["mfu"] is None else f", MFU {100 * summary['mfu']:.1f}%"
    print(f"{fmt(summary['tokens_per_s'], '.4g')} tokens/s in the last logged interval on {summary['n_devices']} device(s){mfu}")
    print(f"wrote {summary['out']}/config.json, seed-S/metrics.jsonl, seed-S/ckpt/")
