#!/usr/bin/env python
"""GPT-2 training throughput: tokens/s, achieved FLOP/s and MFU of the training step, in one process.

The step timed is the library's own: ``jax.jit(lm_training.make_step(model, optimizer, dtype),
donate_argnums=(0, 1))`` with ``lm_training.make_optimizer`` of a :class:`connect.TrainLMConfig`
(AdamW by default, cosine schedule, clipping, decay), on one device, exactly as ``connect train-lm``
compiles it. Rows (batch ``B`` sequences of ``T`` tokens per seed and step):

- ``seeds1``       one seed, ``grad_accum`` 1;
- ``seedsN_vmap``  ``N`` seeds in one vmapped step (what ``train-lm --seeds …`` runs);
- ``seedsN_loop``  the same ``N`` seeds one at a time: a Python loop calling the one-seed step on each
  seed's own state (what ``N`` separate runs would do), in the same process;
- ``accumA``       one seed, the ``B`` sequences as ``A`` scanned micro-batches of ``B/A``.

Tokens are uniform random ids below the vocabulary, drawn once per row on the device (throughput does not
depend on the values; no host data pipeline is timed). A call runs ``--steps-per-call`` steps (dispatched
asynchronously, blocked on at the end). Timing as in ``width_sweep.py`` (:func:`width_sweep.timed_group`):
one warm-up call per row (``compile_s`` = its time minus the best), then interleaved rounds, so that load from
other processes hits every row alike; the best call is reported, the median and all times are in the JSON.

Reported per row: tokens/s = ``S·B·T·k / t``; achieved FLOP/s = tokens/s × ``flops.flops_per_token``
(``6N + 12·L·T·D``, PaLM appendix B); MFU = achieved / peak, with the peak of ``flops.peak_flops``
(dense bf16 of H100/H200/A100) or ``--peak-flops``; and, on every platform, achieved / the best FLOP/s of a
dense ``n×n`` matmul in the compute dtype measured in the same process (``of_matmul``: a practical ceiling).
Checks: ``max|Δloss|`` of the vmapped seeds against the loop (same init keys, same batches, same number of
steps) and of ``accumA`` against ``seeds1`` (equal up to float summation order).

Usage (from the repository root)::

    python benchmarks/lm_training.py                                   # tiny on CPU -> results/lm_training_cpu.json
    python benchmarks/lm_training.py --model seed-paper --seeds 10     # on a GPU (bf16, MFU against the data sheet)
    python benchmarks/lm_training.py --model gpt2 --batch-size 16 --seeds 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/jax, as width_sweep.py

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from connect.lm import flops
from connect.lm import training as lm_training
from connect.lm.config import TrainLMConfig
from connect.models import gpt2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from width_sweep import machine, timed_group  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: (batch_size, context) per model: the experiment configs' (experiments/gpt2_tiny.toml, gpt2_seed_paper.toml), and nanoGPT's 124M micro-batch.
DEFAULT_SHAPES = {"tiny": (16, 64), "seed-paper": (64, 256), "gpt2": (16, 1024)}


def _dtype(name: str):
    if name == "auto":
        return jnp.float32 if jax.devices()[0].platform == "cpu" else jnp.bfloat16
    return jnp.dtype(name)


def make_row(step, optimizer, cfg: TrainLMConfig, seeds: list[int], accum: int, steps_per_call: int):
    """A callable running ``steps_per_call`` calls of the jitted vmapped ``step`` over ``seeds`` (own state, own batch)."""
    model_cfg = cfg.model_config()
    init = jax.jit(gpt2.init, static_argnums=1)
    params_S = jax.tree.map(lambda *xs: jnp.stack(xs), *[init(jax.random.key(s), model_cfg) for s in seeds])
    state = {"params": params_S, "opt": jax.jit(jax.vmap(optimizer.init))(params_S)}
    draw = lambda s: jax.random.randint(jax.random.fold_in(jax.random.key(1000), s), (cfg.batch_size, cfg.context + 1), 0,
                                        model_cfg.vocab_size, dtype=jnp.int32)  # seed s's batch, whatever the row
    w_SxAxMxT1 = jnp.stack([draw(s) for s in seeds]).reshape(len(seeds), accum, cfg.batch_size // accum, cfg.context + 1)
    x, y = w_SxAxMxT1[..., :-1], w_SxAxMxT1[..., 1:]

    def run():
        for _ in range(steps_per_call):
            state["params"], state["opt"], m = step(state["params"], state["opt"], x, y)
        return m

    return run


def matmul_flops(n: int, dtype, repeats: int = 5) -> float:
    """Best FLOP/s of an ``n×n @ n×n`` matmul (``2n³`` FLOPs) in ``dtype`` on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", choices=sorted(gpt2.CONFIGS), help="named GPT-2 config (default: tiny)")
    p.add_argument("--optimizer", default="adamw", help="adamw, muon, lion or momentum (default: adamw)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step and seed (default: per model, see DEFAULT_SHAPES)")
    p.add_argument("--context", type=int, default=None, help="tokens per sequence (default: per model)")
    p.add_argument("--seeds", type=int, default=4, help="seeds of the vmapped and looped rows (default: 4)")
    p.add_argument("--accum", type=int, default=4, help="micro-batches of the accumulation row (default: 4)")
    p.add_argument("--compute-dtype", default="auto", help="float32, bfloat16 or auto (f32 on CPU, bf16 elsewhere)")
    p.add_argument("--steps-per-call", type=int, default=None, help="steps per timed call (default: 5 on CPU, 20 elsewhere)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per row at least (default: 5)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed rounds at least (default: 1)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="peak FLOP/s of one device for the MFU (default: flops.peak_flops; none on CPU)")
    p.add_argument("--peak-source", default="", help="where --peak-flops comes from (recorded in the JSON)")
    p.add_argument("--matmul-n", type=int, default=None, help="size of the reference matmul (default: 2048 on CPU, 8192 elsewhere)")
    p.add_argument("--out", default=None, help="JSON path (default: results/lm_training_<platform>[_<model>].json)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    dev = jax.devices()[0]
    plat = dev.platform
    batch, context = DEFAULT_SHAPES[args.model]
    batch, context = args.batch_size or batch, args.context or context
    cfg = TrainLMConfig(model=args.model, optimizer=args.optimizer, batch_size=batch, context=context).validate()
    dtype = _dtype(args.compute_dtype)
    k = args.steps_per_call or (5 if plat == "cpu" else 20)
    model_cfg = cfg.model_config()
    fpt = flops.flops_per_token(model_cfg, context)
    peak = args.peak_flops or flops.peak_flops(dev)
    peak_source = args.peak_source if args.peak_flops else ("flops.PEAK_FLOPS (dense bf16 data sheet)" if peak else None)
    load_before = os.getloadavg()
    n = args.seeds
    print(f"# {args.model} ({flops.n_params(model_cfg):,} matmul params, {fpt:.4g} FLOP/token), {args.optimizer}, "
          f"B={batch} T={context}, {jnp.dtype(dtype).name} on {dev.device_kind}; load {load_before}", flush=True)

    matmul = matmul_flops(args.matmul_n or (2048 if plat == "cpu" else 8192), dtype)
    optimizer = lm_training.make_optimizer(cfg, jax.eval_shape(lambda: gpt2.init(jax.random.key(0), model_cfg)))
    step = jax.jit(lm_training.make_step(model_cfg, optimizer, dtype), donate_argnums=(0, 1))  # one per shape, as in train-lm
    row = lambda seeds, accum: make_row(step, optimizer, cfg, seeds, accum, k)  # noqa: E731
    per_seed = [row([s], 1) for s in range(n)]
    rows = {
        "seeds1": (row([0], 1), 1),
        f"seeds{n}_vmap": (row(list(range(n)), 1), n),
        f"seeds{n}_loop": (lambda: [f() for f in per_seed], n),
        f"accum{args.accum}": (row([0], args.accum), 1),
    }
    outs, timings = timed_group({name: fn for name, (fn, _) in rows.items()}, args.repeats, args.min_time)
    loss_vmap = np.asarray(outs[f"seeds{n}_vmap"]["loss"])
    loss_loop = np.concatenate([np.asarray(m["loss"]) for m in outs[f"seeds{n}_loop"]])
    checks = {
        "max_abs_dloss_vmap_vs_loop": float(np.max(np.abs(loss_vmap - loss_loop))),
        f"max_abs_dloss_accum{args.accum}_vs_seeds1": float(np.max(np.abs(np.asarray(outs[f"accum{args.accum}"]["loss"])
                                                                         - np.asarray(outs["seeds1"]["loss"])))),
    }
    table = []
    for name, (_, seeds) in rows.items():
        t = timings[name]
        tok_s = seeds * batch * context * k / t["best_s"]
        table.append({
            "row": name, "seeds": seeds, "grad_accum": args.accum if name.startswith("accum") else 1,
            "tokens_per_step": seeds * batch * context, "steps_per_call": k,
            "tokens_per_s": tok_s, "tokens_per_s_median": seeds * batch * context * k / t["median_s"],
            "achieved_flops": tok_s * fpt, "mfu": None if peak is None else tok_s * fpt / peak, "of_matmul": tok_s * fpt / matmul,
            **{key: t[key] for key in ("best_s", "median_s", "compile_s", "calls", "times_s")},
        })
    base = table[0]["tokens_per_s"]
    for r in table:
        r["vs_seeds1"] = r["tokens_per_s"] / base
    results = {
        "benchmark": "lm_training", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(), "machine": {**machine(), "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg()},
        "config": {"model": args.model, "model_config": model_cfg.to_dict(), "optimizer": args.optimizer, "batch_size": batch,
                   "context": context, "seeds": n, "accum": args.accum, "compute_dtype": jnp.dtype(dtype).name,
                   "steps_per_call": k, "repeats": args.repeats, "min_time": args.min_time},
        "n_params_matmul": flops.n_params(model_cfg), "flops_per_token": fpt,
        "peak_flops_per_device": peak, "peak_source": peak_source,
        "matmul_reference": {"n": args.matmul_n or (2048 if plat == "cpu" else 8192), "flops": matmul},
        "checks": checks, "rows": table,
    }
    print(markdown(results))
    suffix = "" if args.model == "tiny" else "_" + args.model
    out = Path(args.out) if args.out else RESULTS_DIR / f"lm_training_{plat}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return results


def markdown(results: dict) -> str:
    mfu = results["peak_flops_per_device"] is not None
    lines = [f"| row | seeds × accum | tokens/step | tokens/s | ×seeds1 | GFLOP/s | {'MFU | ' if mfu else ''}of matmul | compile s |",
             f"|---|---|---|---|---|---|{'---|' if mfu else ''}---|---|"]
    for r in results["rows"]:
        cell = f"{100 * r['mfu']:.1f}% | " if mfu else ""
        lines.append(f"| {r['row']} | {r['seeds']} × {r['grad_accum']} | {r['tokens_per_step']} | {r['tokens_per_s']:.4g} | "
                     f"{r['vs_seeds1']:.2f} | {r['achieved_flops'] / 1e9:.3g} | {cell}{100 * r['of_matmul']:.1f}% | {r['compile_s']:.1f} |")
    m = results["matmul_reference"]
    lines.append(f"\nreference matmul {m['n']}² in {results['config']['compute_dtype']}: {m['flops'] / 1e9:.4g} GFLOP/s; "
                 f"checks: {json.dumps(results['checks'])}")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    main()
