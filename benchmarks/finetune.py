#!/usr/bin/env python
"""Finetuning steps per second, full finetuning vs LoRA (:mod:`connect.studies.finetune.run`, :mod:`connect.lm.lora`).

Per model config and method, the jitted step of :func:`connect.studies.finetune.run.trainer` on random task batches
(``batch_size`` examples of ``context`` tokens), float32: the first step (compile) is timed apart,
then ``--steps`` steps, best of ``--repeats``; ``steps_per_s`` and ``tokens_per_s`` count the whole
batch's tokens. LoRA forms ``W + (α/r)AB`` densely (:func:`connect.lm.lora.apply_lora`), so it saves
optimizer state and update work, not matmul FLOPs. Prints a markdown table and writes JSON to ``--out`` (default
``benchmarks/results/finetune_<platform>.json``)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/finetune.py --models tiny --methods adamw muon lion momentum lora lora-muon
    OPENBLAS_NUM_THREADS=1 python benchmarks/finetune.py --models seed-paper --methods adamw lora --batch-size 8 \
        --steps 5 --repeats 2 --append
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from connect.lm import lora
from connect.models import gpt2
from connect.studies.finetune import run as finetune
from connect.studies.finetune.config import FinetuneConfig, method_optimizer


def _one(model: str, method: str, args) -> dict:
    model_cfg = gpt2.config(model)
    params = jax.jit(gpt2.init, static_argnums=1)(jax.random.key(0), model_cfg)
    m = finetune.Pretrained(model, "", params, model_cfg, "adamw")
    cfg = FinetuneConfig(pretrained=["-"], batch_size=args.batch_size, context=args.context,
                         lora_rank=args.lora_rank, lora_alpha=2.0 * args.lora_rank)
    theta, opt_state, step = finetune.trainer(m, method, cfg)
    base = params if method_optimizer(method)[1] else None
    rng = np.random.default_rng(0)
    x_BxT = rng.integers(0, min(256, model_cfg.vocab_size), (args.batch_size, args.context)).astype(np.int32)
    y_BxT = np.roll(x_BxT, -1, axis=1)
    m_BxT = np.ones(x_BxT.shape, np.float32)
    lr = jnp.float32(1e-4)

    def run(n, theta, opt_state):
        for _ in range(n):
            theta, opt_state, loss = step(theta, base, opt_state, lr, x_BxT, y_BxT, m_BxT)
        jax.block_until_ready(loss)
        return theta, opt_state

    t0 = time.perf_counter()
    theta, opt_state = run(1, theta, opt_state)
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        theta, opt_state = run(args.steps, theta, opt_state)
        best = min(best, time.perf_counter() - t0)
    n_trainable = lora.n_params(theta) if base is not None else sum(int(x.size) for x in jax.tree.leaves(theta))
    return {"model": model, "method": method, "batch_size": args.batch_size, "context": args.context, "n_trainable": n_trainable, "compile_s": compile_s, "step_s": best / args.steps,
            "steps_per_s": args.steps / best, "tokens_per_s": args.steps * args.batch_size * args.context / best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny"], choices=sorted(gpt2.CONFIGS))
    ap.add_argument("--methods", nargs="+", default=["adamw", "muon", "lion", "momentum", "lora"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--append", action="store_true", help="add the rows to those already in --out")
    args = ap.parse_args()
    platform = jax.devices()[0].platform
    rows = [_one(model, method, args) for model in args.models for method in args.methods]
    print("| model | method | trainable params | compile s | steps/s | tokens/s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['n_trainable']:,} | {r['compile_s']:.1f} | {r['steps_per_s']:.2f} | {r['tokens_per_s']:,.0f} |")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"finetune_{platform}.json")
    if args.append and os.path.isfile(out):
        with open(out) as f:
            rows = json.load(f)["rows"] + rows
    with open(out, "w") as f:
        json.dump({"platform": platform, "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
                   "batch_size": args.batch_size, "context": args.context, "lora_rank": args.lora_rank,
                   "steps": args.steps, "repeats": args.repeats, "rows": rows}, f, indent=1)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
