#!/usr/bin/env python
"""GPT-2 paths: path points × tokens evaluated per second, batched over t against a one-point loop, and
the time to compute every matrix's spectrum at 11 points, in one process.

Endpoints and the bend of a one-bend polygonal chain are three independent inits of ``--model``
(throughput does not depend on the values); the data are ``--batches`` batches of ``--batch-size``
windows of ``--context`` uniform random token ids. Rows of the loss evaluation at the 11 points
t = 0, 0.1, …, 1 (all on one device):

- ``vmap``    :func:`connect.lm.paths.path_losses` with ``t_chunk = 11``: the 11 points built once, then each
  data batch evaluated at all of them in one vmapped program (the default on accelerators);
- ``chunk1``  the same with ``t_chunk = 1``: one point at a time through the same code (the CPU default);
- ``loop``  one point at a time: a Python loop over t building ``θ(t)`` (jitted :func:`connect.paths.point`)
  and calling :func:`connect.lm.training.evaluate` on it — what a user without ``lm_paths`` writes.

Reported: point-tokens/s = 11 × tokens / time, and ``max|Δloss|`` against ``loop``. Spectra rows:
:func:`connect.lm.paths.spectra_along_path` of every named matrix at the 11 points with ``lax.map``
and with ``vmap`` over t (accelerators only; SVDs of all q, k, v, attention and MLP matrices, embeddings and head).
Timing as ``width_sweep.py`` (:func:`width_sweep.timed_group`): one warm-up call per row (``compile_s``
= its time minus the best), then interleaved rounds; the best call is reported.

Usage (from the repository root)::

    python benchmarks/lm_paths.py                                  # tiny on CPU -> results/lm_paths_cpu.json
    python benchmarks/lm_paths.py --model seed-paper --skip-eval  # spectra of the study's model on CPU
    python benchmarks/lm_paths.py --model gpt2 --batch-size 8 --context 1024   # 124M on a GPU
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/jax, as width_sweep.py

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from connect import barrier, paths
from connect.lm import paths as lm_paths
from connect.lm import training as lm_training
from connect.models import gpt2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from width_sweep import machine, max_abs_diff, timed_group  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_point = jax.jit(paths.point, static_argnums=0)


def bench_eval(cfg, nodes, tokens, ts, batch_size, context, dtype, timing) -> list[dict]:
    kw = dict(batch_size=batch_size, context=context, compute_dtype=dtype)

    def loop():
        return np.array([lm_training.evaluate(_point("polychain", nodes, jnp.float32(t)), cfg, tokens, **kw) for t in ts])

    fns = {"vmap": lambda: lm_paths.path_losses("polychain", nodes, cfg, tokens, ts, t_chunk=len(ts), **kw),
           "chunk1": lambda: lm_paths.path_losses("polychain", nodes, cfg, tokens, ts, t_chunk=1, **kw),
           "loop": loop}
    outs, timings = timed_group(fns, *timing)
    n_tokens = ((tokens.size - 1) // context) * context
    rows = []
    for name, t in timings.items():
        rows.append({"row": name, "t_points": len(ts), "tokens": n_tokens, **t,
                     "point_tokens_per_s": len(ts) * n_tokens / t["best_s"],
                     "max_abs_diff_vs_loop": max_abs_diff(outs[name], outs["loop"]), "losses": np.asarray(outs[name]).tolist()})
    for r in rows:
        r["speedup_vs_loop"] = timings["loop"]["best_s"] / r["best_s"]
    return rows


def bench_spectra(cfg, nodes, ts, timing) -> list[dict]:
    """``spectra_along_path`` (``map``; ``vmap`` too off CPU) against ``numpy``: LAPACK's ``gesdd`` through
    ``np.linalg.svd(compute_uv=False)`` of the same float32 matrices, the path points built beforehand (not timed)."""
    strategies = ("map",) if jax.default_backend() == "cpu" else ("map", "vmap")  # on CPU spectra_along_path always maps
    fns = {s: (lambda s=s: lm_paths.spectra_along_path("polychain", nodes, cfg, ts, strategy=s)) for s in strategies}
    points = [{n: np.asarray(w) for n, w in gpt2.matrices(jax.device_get(paths.point("polychain", nodes, t)), cfg).items()} for t in ts]
    fns["numpy"] = lambda: {n: np.stack([np.linalg.svd(m[n], compute_uv=False) for m in points]) for n in points[0]}
    outs, timings = timed_group(fns, *timing)
    n_mat = len(gpt2.matrix_names(cfg))
    sv = {s: {n: outs[s]["matrices"][n]["singular_values"] for n in outs[s]["names"]} for s in strategies}
    sv["numpy"] = outs["numpy"]
    return [{"row": f"spectra_{s}", "t_points": len(ts), "matrices": n_mat, **t, "matrix_svds_per_s": n_mat * len(ts) / t["best_s"],
             "speedup_vs_numpy": timings["numpy"]["best_s"] / t["best_s"],
             "max_rel_diff_vs_numpy": max(float(np.max(np.abs(sv[s][n] - sv["numpy"][n]) / np.max(np.abs(sv["numpy"][n])))) for n in sv["numpy"])}
            for s, t in timings.items()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", choices=sorted(gpt2.CONFIGS), help="named GPT-2 config (default: tiny)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per data batch (default: 16)")
    p.add_argument("--context", type=int, default=None, help="tokens per window (default: the model's n_positions)")
    p.add_argument("--batches", type=int, default=4, help="data batches per evaluation (default: 4)")
    p.add_argument("--compute-dtype", default="auto", help="float32, bfloat16 or auto (f32 on CPU, bf16 elsewhere)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row at least (default: 3)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed rounds at least (default: 1)")
    p.add_argument("--skip-spectra", action="store_true", help="time the loss evaluation only")
    p.add_argument("--skip-eval", action="store_true", help="time the spectra only")
    p.add_argument("--out", default=None, help="JSON path (default: results/lm_paths_<platform>[_<model>].json)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = gpt2.config(args.model)
    context = args.context or cfg.n_positions
    plat = jax.devices()[0].platform
    dtype = (jnp.float32 if plat == "cpu" else jnp.bfloat16) if args.compute_dtype == "auto" else jnp.dtype(args.compute_dtype)
    init = jax.jit(gpt2.init, static_argnums=1)
    a, bend, b = (init(jax.random.key(s), cfg) for s in range(3))
    nodes = paths.stack_nodes(a, jax.tree.map(lambda x: x[None], bend), b)
    n_tokens = 0 if args.skip_eval else args.batches * args.batch_size * context + 1
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, n_tokens).astype(np.int32)
    ts = barrier.grid(11)
    timing = (args.repeats, args.min_time)
    load_before = os.getloadavg()
    rows = [] if args.skip_eval else bench_eval(cfg, nodes, tokens, ts, args.batch_size, context, dtype, timing)
    for r in rows:
        print(f"eval {r['row']:6s} {r['point_tokens_per_s']:12.4g} point-tokens/s  {r['speedup_vs_loop']:.2f}x loop  "
              f"compile {r['compile_s']:.1f}s  max|Δ| {r['max_abs_diff_vs_loop']:.2g}")
    spectra_rows = [] if args.skip_spectra else bench_spectra(cfg, nodes, ts, timing)
    for r in spectra_rows:
        print(f"{r['row']:13s} {r['best_s']:.3f}s for {r['matrices']} matrices x {r['t_points']} points  {r['speedup_vs_numpy']:.2f}x numpy  "
              f"compile {r['compile_s']:.1f}s  max rel|Δσ| vs numpy {r['max_rel_diff_vs_numpy']:.2g}")
    results = {
        "benchmark": "lm_paths", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(), "machine": {**machine(), "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg()},
        "settings": {"model": args.model, "model_config": cfg.to_dict(), "batch_size": args.batch_size, "context": context,
                     "batches": args.batches, "compute_dtype": jnp.dtype(dtype).name, "path": "polychain, 1 bend",
                     "repeats": args.repeats, "min_time": args.min_time},
        "eval": rows, "spectra": spectra_rows,
    }
    suffix = "" if args.model == "tiny" else f"_{args.model}"
    out = Path(args.out) if args.out else RESULTS_DIR / f"lm_paths_{plat}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return results


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
