#!/usr/bin/env python
"""Width-sweep throughput benchmark: batched strategies against a plain Python loop, in one run.

Four measurements at every width of ``--widths``, on the width sweep's synthetic regression
data (``connect.twolayer.data.DataConfig()`` defaults: 32 train / 256 test points, d = 8, λ = 0.1):

1. **train** — ``connect.twolayer.training.train`` of ``--seeds`` two-layer ReLU networks for
   ``--steps`` full-batch steps, per optimizer of ``--optimizers``, with ``strategy`` =
   ``vmap`` (one fused program over seeds), ``map`` (``lax.map`` over seeds) and ``loop``
   (the library's baseline: a Python loop calling the same jitted program once per seed).
   Reported: networks/s and network·steps/s.
2. **path_eval** — every metric of ``connect.twolayer.measure.point_metrics`` (train/test loss,
   constraint norms, all singular values and their summaries) at ``--t-points`` values of t
   along ``--pairs`` quadratic-Bézier paths θ(t) = ``paths.point(kind, nodes, t)``:
   ``vmap`` = vmap over pairs and over t, ``map`` = ``lax.map`` over pairs and vmap over t
   (both through ``batching.map_leading``, as ``connect.twolayer.measure`` does), ``map_all`` = one
   ``lax.map`` over every (pair, t) point, ``loop`` = a Python loop over every (pair, t)
   point calling one jitted single-point function. Reported: path points/s.
3. **path_fit** — ``paths.fit``: learning the free node of ``--pairs`` Bézier paths for
   ``--fit-steps`` steps (``--t-samples`` t per step) with the first optimizer: ``vmap``/``map``
   over pairs against a Python loop over pairs calling the jitted single-pair fit.
   Reported: pairs/s and pair·steps/s.
4. **measure_pairs** — the whole per-width path stage of the sweep, public API
   ``connect.twolayer.measure.measure_pairs`` (fit Bézier and polychain, evaluate linear, Bézier and
   polychain on the t-grid) with ``strategy`` vmap/map against a Python loop over pairs, one
   pair per call (``strategy="map"`` on a batch of one). Reported: pairs/s.

Every measurement: one warm-up call per strategy (its time minus the steady-state time is
reported as ``compile_s``: tracing + XLA compilation), then rounds calling each strategy
once in turn (interleaved, so that load from other processes hits all strategies alike)
until ``--repeats`` rounds are done and ``--min-time`` seconds have passed;
``time.perf_counter`` around the call and ``jax.block_until_ready``. The best (minimum)
time is reported — the least disturbed by other load — and the median and every time are
in the JSON. ``×loop`` = loop time / strategy time (> 1: the batched strategy is faster).
``max|Δ| vs loop`` checks that each strategy computes what the loop computes (final
training loss; path losses and spectral norm; final path objective; linear-path losses).

Prints markdown tables and writes JSON to ``--out`` (default
``benchmarks/results/width_sweep_<platform>.json``). Runs unchanged on CPU and GPU::

    python benchmarks/width_sweep.py            # full (about 3 minutes on a 2-core CPU)
    python benchmarks/width_sweep.py --quick    # smoke run
"""

from __future__ import annotations

import os

# Before numpy/jax are imported: one BLAS thread avoids rare 30x stalls of CPU SVDs
# (no effect on GPU).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from connect import batching, optimizers, paths
from connect.models import relu
from connect.twolayer import data as data_lib
from connect.twolayer import losses, measure, training

TRAIN_STRATEGIES = ("vmap", "map", "loop")
EVAL_STRATEGIES = ("vmap", "map", "map_all", "loop")
FIT_STRATEGIES = ("vmap", "map", "loop")
MEASURE_STRATEGIES = ("vmap", "map", "loop")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- timing


#: JAX's reports of tracing, lowering and XLA compilation (``jax.monitoring``), summed by :func:`_on_compile_event`.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_s = [0.0]


def _on_compile_event(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _compile_s[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_compile_event)


def timed_group(fns: dict, repeats: int, min_time: float, deadline: float | None = None) -> tuple[dict, dict]:
    """Time every callable of ``fns`` (one strategy each) fairly: first one warm-up call of
    each (traces and compiles), then rounds that call every strategy once in turn, until
    ``repeats`` rounds are done and the rounds took ``min_time`` seconds (at most 100 rounds).
    Interleaving keeps the ratios fair when other processes share the CPU.

    ``deadline`` (a ``time.perf_counter()`` value) stops the rounds early: a round is not started
    when it would end after the deadline, estimating each call by its last time (before the first
    round, the warm-up's less the compilation JAX reported during it). Warm-ups always run. A
    strategy left without a timed call reports its warm-up time as ``best_s`` (an upper bound)
    and ``compile_s`` None.

    Returns ``(outputs, timings)`` by strategy; ``best_s`` is the minimum over the timed
    calls (the figure reported), ``median_s`` the median, ``compile_events_s`` the tracing,
    lowering and compilation JAX reported during the warm-up, ``cut`` whether the deadline
    stopped the rounds before ``repeats``."""
    outs, first, compiled, times = {}, {}, {}, {k: [] for k in fns}
    for k, fn in fns.items():
        t0, c0 = time.perf_counter(), _compile_s[0]
        outs[k] = jax.block_until_ready(fn())
        first[k], compiled[k] = time.perf_counter() - t0, _compile_s[0] - c0
    start, rounds = time.perf_counter(), 0
    while rounds < repeats or (time.perf_counter() - start < min_time and rounds < 100):
        est = sum(times[k][-1] if times[k] else max(first[k] - compiled[k], 0.0) for k in fns)
        if deadline is not None and time.perf_counter() + est > deadline:
            break
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    timings = {}
    for k in fns:
        best, med = (min(times[k]), statistics.median(times[k])) if times[k] else (first[k], first[k])
        timings[k] = {"best_s": best, "median_s": med, "first_call_s": first[k],
                      "compile_s": max(0.0, first[k] - best) if times[k] else None, "compile_events_s": compiled[k],
                      "calls": len(times[k]), "times_s": times[k], "cut": rounds < repeats}
    return outs, timings


def max_abs_diff(a, b) -> float:
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
    return max(leaves) if leaves else 0.0


def add_ratios(rows: list[dict]) -> None:
    """``speedup_vs_loop`` = loop time / strategy time (best of the timed calls), within one group."""
    loop = next(r for r in rows if r["strategy"] == "loop")
    for r in rows:
        r["speedup_vs_loop"] = loop["best_s"] / r["best_s"]


def tree_slice(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def show(rows, key, unit) -> str:
    return "  ".join(f"{r['strategy']} {r[key]:.4g} {unit} (x{r['speedup_vs_loop']:.2f})" for r in rows)


def initial_nodes(a_P, b_P, n_free):
    """Stacked nodes of P paths whose free nodes lie on the straight line (as before fitting)."""
    return jax.vmap(lambda a, b: paths.stack_nodes(a, paths.init_free(a, b, n_free), b))(a_P, b_P)


def tree_stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    import optax

    try:
        import jaxlib

        jaxlib_version = jaxlib.__version__
    except ImportError:  # pragma: no cover
        jaxlib_version = None
    dev = jax.devices()[0]
    cpu_model = platform.processor() or platform.machine()
    try:  # the CPU model name on Linux
        with open("/proc/cpuinfo") as f:
            cpu_model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "devices": [str(d) for d in jax.devices()],
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib_version,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS",
                                               "JAX_COMPILATION_CACHE_DIR")},
    }


# --------------------------------------------------------------------------- 1. training


def bench_train(ds, width, opt_name, seeds, steps, lam, timing, strategies=TRAIN_STRATEGIES):
    # Built once and reused: init_fn, loss_fn and the optimizer are static arguments of the
    # jitted trainer, so new objects on every call would recompile every call.
    init_fn = functools.partial(relu.init, cfg=relu.ReluConfig(ds.d_in, width))
    loss = losses.for_task(ds.task)

    def loss_fn(p, x, y):
        return loss(relu.apply(p, x), y)

    opt = optimizers.make(opt_name, optimizers.spec(opt_name).default_lr, lam, relu.MUON_MATRICES)
    final_loss = jax.jit(jax.vmap(lambda p: loss_fn(p, ds.x_train, ds.y_train)))
    fns = {s: functools.partial(training.train, init_fn, loss_fn, opt, seeds, ds.x_train, ds.y_train, steps, s)
           for s in strategies}  # "loop" must be among them: the ratios and differences are against it
    outs, timings = timed_group(fns, *timing)
    rows, params, finals = [], {}, {}
    for strategy, t in timings.items():
        params[strategy], finals[strategy] = outs[strategy][0], final_loss(outs[strategy][0])
        rows.append({"width": width, "optimizer": opt_name, "strategy": strategy, "seeds": len(seeds), "steps": steps, **t,
                     "networks_per_s": len(seeds) / t["best_s"], "network_steps_per_s": len(seeds) * steps / t["best_s"],
                     "final_train_loss_mean": float(jnp.mean(finals[strategy]))})
    for r in rows:
        r["max_abs_diff_vs_loop"] = max_abs_diff(finals[r["strategy"]], finals["loop"])  # final training loss
        r["max_abs_param_diff_vs_loop"] = max_abs_diff(params[r["strategy"]], params["loop"])
    add_ratios(rows)
    return rows, params["vmap"]


# --------------------------------------------------------------------------- 2. path evaluation


def _metrics_at(kind, nodes_K, t, data, lam):
    return measure.point_metrics(paths.point(kind, nodes_K, t), data, lam)


#: The single-point function the loop baseline calls, jitted once.
_point_jit = jax.jit(_metrics_at, static_argnums=0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _eval_batched(kind, strategy, nodes_PK, ts_PT, data, lam):
    """``strategy`` over pairs (``batching.map_leading``), vmap over t — as ``connect.twolayer.measure``."""

    def one(args):
        nodes, ts = args
        return jax.vmap(lambda t: _metrics_at(kind, nodes, t, data, lam))(ts)

    return batching.map_leading(one, (nodes_PK, ts_PT), strategy)


@functools.partial(jax.jit, static_argnums=0)
def _eval_map_all(kind, nodes_PK, ts_PT, data, lam):
    """One ``lax.map`` over every (pair, t) point: compiled, fully sequential."""
    n_p, n_t = ts_PT.shape
    flat = (jax.tree.map(lambda x: jnp.repeat(x, n_t, axis=0), nodes_PK), ts_PT.reshape(-1))
    out = jax.lax.map(lambda a: _metrics_at(kind, a[0], a[1], data, lam), flat)
    return jax.tree.map(lambda x: x.reshape((n_p, n_t) + x.shape[1:]), out)


def _eval_loop(kind, nodes_P, ts_PT, data, lam):
    """A Python loop over every (pair, t) point calling the jitted single-point function."""
    return [[_point_jit(kind, nodes, t, data, lam) for t in ts_T] for nodes, ts_T in zip(nodes_P, ts_PT)]


def bench_path_eval(ds, width, kind, nodes_PK, n_t, lam, timing):
    n_p = jax.tree.leaves(nodes_PK)[0].shape[0]
    grid = np.linspace(0.0, 1.0, n_t, dtype=np.float32)
    ts_PT = jnp.asarray(np.broadcast_to(grid, (n_p, n_t)))
    lam = jnp.float32(lam)
    nodes_P = [tree_slice(nodes_PK, p) for p in range(n_p)]  # the loop gets its per-pair inputs ready-made
    ts_loop = [[jnp.float32(t) for t in grid] for _ in range(n_p)]
    fns = {  # in EVAL_STRATEGIES order
        "vmap": lambda: _eval_batched(kind, "vmap", nodes_PK, ts_PT, ds, lam),
        "map": lambda: _eval_batched(kind, "map", nodes_PK, ts_PT, ds, lam),
        "map_all": lambda: _eval_map_all(kind, nodes_PK, ts_PT, ds, lam),
        "loop": lambda: _eval_loop(kind, nodes_P, ts_loop, ds, lam),
    }
    keys = ("loss_train", "loss_test", "spectral_norm")
    raw, timings = timed_group(fns, *timing)
    rows, outs = [], {}
    for strategy, t in timings.items():
        out = tree_stack([tree_stack(row) for row in raw[strategy]]) if strategy == "loop" else raw[strategy]
        outs[strategy] = {k: np.asarray(out[k]) for k in keys}
        rows.append({"width": width, "path": kind, "strategy": strategy, "pairs": n_p, "t_points": n_t,
                     "points": n_p * n_t, **t, "points_per_s": n_p * n_t / t["best_s"]})
    for r in rows:
        r["max_abs_diff_vs_loop"] = max_abs_diff(outs[r["strategy"]], outs["loop"])
    add_ratios(rows)
    return rows


# --------------------------------------------------------------------------- 3. path fitting


def bench_path_fit(ds, width, kind, opt_name, a_P, b_P, fit_steps, t_samples, lam, timing):
    n_p = jax.tree.leaves(a_P)[0].shape[0]
    opt = optimizers.make(opt_name, optimizers.spec(opt_name).default_lr, lam, relu.MUON_MATRICES)
    loss = losses.for_task(ds.task)
    keys_P = jax.random.key_data(jax.random.split(jax.random.key(0), n_p))

    def fit_one(a, b, key, data):
        return paths.fit(kind, a, b, lambda p: loss(relu.apply(p, data.x_train), data.y_train), opt,
                         jax.random.wrap_key_data(key), n_free=1, steps=fit_steps, t_per_step=t_samples)

    single = jax.jit(fit_one)

    def batched_fit(strategy):
        return jax.jit(lambda a, b, k, d: batching.map_leading(lambda x: fit_one(*x, d), (a, b, k), strategy))

    batched = {s: batched_fit(s) for s in ("vmap", "map")}
    a_list, b_list, k_list = [tree_slice(a_P, i) for i in range(n_p)], [tree_slice(b_P, i) for i in range(n_p)], list(keys_P)

    def run(strategy):
        if strategy == "loop":
            return [single(a, b, k, ds) for a, b, k in zip(a_list, b_list, k_list)]
        return batched[strategy](a_P, b_P, keys_P, ds)

    raw, timings = timed_group({s: functools.partial(run, s) for s in FIT_STRATEGIES}, *timing)
    rows, outs = [], {}
    for strategy, t in timings.items():
        outs[strategy] = tree_stack(raw[strategy]) if strategy == "loop" else raw[strategy]
        rows.append({"width": width, "path": kind, "path_optimizer": opt_name, "strategy": strategy, "pairs": n_p,
                     "fit_steps": fit_steps, "t_samples": t_samples, **t,
                     "pairs_per_s": n_p / t["best_s"], "pair_steps_per_s": n_p * fit_steps / t["best_s"],
                     "final_objective_mean": float(jnp.mean(outs[strategy][1][:, -1]))})
    for r in rows:
        r["max_abs_diff_vs_loop"] = max_abs_diff(outs[r["strategy"]][1][:, -1], outs["loop"][1][:, -1])  # final objective
        r["max_abs_param_diff_vs_loop"] = max_abs_diff(outs[r["strategy"]][0], outs["loop"][0])
    add_ratios(rows)
    return rows


# --------------------------------------------------------------------------- 4. measure_pairs


def bench_measure_pairs(ds, width, opt_name, a_P, b_P, fit_steps, t_samples, n_t, lam, timing):
    n_p = jax.tree.leaves(a_P)[0].shape[0]
    opt = optimizers.make(opt_name, optimizers.spec(opt_name).default_lr, lam, relu.MUON_MATRICES)
    settings = measure.PathSettings(kinds=tuple(paths.KINDS), steps=fit_steps, t_samples=t_samples, t_points=n_t)
    key = jax.random.key(0)
    a1 = [tree_slice(a_P, slice(i, i + 1)) for i in range(n_p)]  # batches of one pair
    b1 = [tree_slice(b_P, slice(i, i + 1)) for i in range(n_p)]

    def run(strategy):
        if strategy == "loop":
            return [measure.measure_pairs(a, b, ds, opt, lam, key, settings, "map") for a, b in zip(a1, b1)]
        return measure.measure_pairs(a_P, b_P, ds, opt, lam, key, settings, strategy)

    raw, timings = timed_group({s: functools.partial(run, s) for s in MEASURE_STRATEGIES}, *timing)
    rows, curves = [], {}
    for strategy, t in timings.items():
        out = raw[strategy]
        if strategy == "loop":
            curves[strategy] = {k: np.concatenate([o[k]["loss_train"] for o in out]) for k in settings.kinds}
        else:
            curves[strategy] = {k: np.asarray(out[k]["loss_train"]) for k in settings.kinds}
        rows.append({"width": width, "kinds": list(settings.kinds), "path_optimizer": opt_name, "strategy": strategy,
                     "pairs": n_p, "fit_steps": fit_steps, "t_points": n_t, **t, "pairs_per_s": n_p / t["best_s"]})
    for r in rows:
        # the learned paths' random t-samples depend on the batch (keys are split per call), so
        # only the linear path is comparable point for point
        r["max_abs_diff_vs_loop"] = max_abs_diff(curves[r["strategy"]]["linear"], curves["loop"]["linear"])
    add_ratios(rows)
    return rows


# --------------------------------------------------------------------------- report


def markdown(results: dict) -> str:
    m, c = results["machine"], results["config"]
    lines = [
        (f"Width-sweep throughput on {m['platform']} ({m['device_kind']}; {m['cpu_model']}, {m['cpu_count']} CPUs), "
         f"jax {m['jax']}. Best of ≥ {c['repeats']} interleaved timed calls after one warm-up; "
         "×loop = loop time / strategy time; compile = first call − best."),
        "",
        f"**1. Training** (`training.train`, {c['seeds']} seeds × {c['steps']} full-batch steps)",
        "",
        "| width | optimizer | strategy | time (s) | networks/s | network·steps/s | ×loop | compile (s) | max\\|Δ final loss\\| |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["train"]:
        lines.append(f"| {r['width']} | {r['optimizer']} | {r['strategy']} | {r['best_s']:.4f} | {r['networks_per_s']:.1f} | "
                     f"{r['network_steps_per_s']:.3g} | {r['speedup_vs_loop']:.2f} | {r['compile_s']:.2f} | "
                     f"{r['max_abs_diff_vs_loop']:.0e} |")
    lines += [
        "",
        f"**2. Path evaluation** (`measure.point_metrics` at {c['pairs']} pairs × {c['t_points']} t, {c['path_kind']} path)",
        "",
        "| width | strategy | points | time (s) | points/s | ×loop | compile (s) | max\\|Δ\\| |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["path_eval"]:
        lines.append(f"| {r['width']} | {r['strategy']} | {r['points']} | {r['best_s']:.4f} | {r['points_per_s']:.0f} | "
                     f"{r['speedup_vs_loop']:.2f} | {r['compile_s']:.2f} | {r['max_abs_diff_vs_loop']:.0e} |")
    if results["path_fit"]:
        lines += [
            "",
            (f"**3. Path fitting** (`paths.fit`, {c['pairs']} pairs × {c['fit_steps']} steps × {c['t_samples']} t, "
             f"{c['optimizers'][0]})"),
            "",
            "| width | strategy | time (s) | pairs/s | pair·steps/s | ×loop | compile (s) | max\\|Δ objective\\| |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results["path_fit"]:
            lines.append(f"| {r['width']} | {r['strategy']} | {r['best_s']:.4f} | {r['pairs_per_s']:.1f} | "
                         f"{r['pair_steps_per_s']:.3g} | {r['speedup_vs_loop']:.2f} | {r['compile_s']:.2f} | "
                         f"{r['max_abs_diff_vs_loop']:.0e} |")
    if results["measure_pairs"]:
        lines += [
            "",
            (f"**4. `measure.measure_pairs`** ({c['pairs']} pairs; fit Bézier + polychain {c['fit_steps']} steps, "
             f"evaluate 3 kinds × {c['t_points']} t)"),
            "",
            "| width | strategy | time (s) | pairs/s | ×loop | compile (s) | max\\|Δ linear loss\\| |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in results["measure_pairs"]:
            lines.append(f"| {r['width']} | {r['strategy']} | {r['best_s']:.4f} | {r['pairs_per_s']:.1f} | "
                         f"{r['speedup_vs_loop']:.2f} | {r['compile_s']:.2f} | {r['max_abs_diff_vs_loop']:.0e} |")
    load = [f"{x[0]:.2f}" if x else "n/a" for x in (m.get("loadavg_1_5_15_before"), m.get("loadavg_1_5_15_after"))]
    lines += ["", (f"Total wall time {results['total_s']:.0f} s, of which first calls (compile + one run) "
                   f"{results['first_calls_s']:.0f} s. Load average (1 min) before/after: {load[0]}/{load[1]}.")]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: width 16, 4 seeds, 100 steps, 50 fitting steps, 1 repeat")
    p.add_argument("--widths", type=int, nargs="+", default=None, help="hidden widths m (default 16 256)")
    p.add_argument("--seeds", type=int, default=None, help="networks per (width, optimizer) (default 16)")
    p.add_argument("--steps", type=int, default=None, help="full-batch training steps (default 500)")
    p.add_argument("--optimizers", nargs="+", default=["adamw", "muon"], help="optimizers to train with (default adamw muon)")
    p.add_argument("--pairs", type=int, default=None, help="paths per width for sections 2–4 (default: --seeds)")
    p.add_argument("--t-points", type=int, default=11, help="t values per path (default 11, the sweep's)")
    p.add_argument("--path-kind", default="bezier", choices=paths.KINDS, help="path evaluated in section 2 (default bezier)")
    p.add_argument("--fit-steps", type=int, default=None, help="path-fitting steps (default 200); 0 skips sections 3 and 4")
    p.add_argument("--t-samples", type=int, default=4, help="t samples per fitting step (default 4, the sweep's)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="decoupled weight decay λ (default 0.1, the sweep's)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per strategy after the warm-up, at least (default 5)")
    p.add_argument("--min-time", type=float, default=None, help="keep timing a group of strategies for this many seconds, at least (default 1)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/width_sweep_<platform>.json)")
    a = p.parse_args(argv)
    defaults = ({"widths": [16], "seeds": 4, "steps": 100, "fit_steps": 50, "repeats": 1, "min_time": 0.0} if a.quick else
                {"widths": [16, 256], "seeds": 16, "steps": 500, "fit_steps": 200, "repeats": 5, "min_time": 1.0})
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.pairs is None:
        a.pairs = a.seeds
    for name in a.optimizers:
        optimizers.spec(name)  # an unknown name fails here, clearly
    if a.seeds < 1 or a.steps < 1 or a.t_points < 2 or a.repeats < 1 or a.pairs < 1 or min(a.widths) < 1 or a.fit_steps < 0:
        p.error("need --seeds ≥ 1, --steps ≥ 1, --t-points ≥ 2, --repeats ≥ 1, --pairs ≥ 1, --fit-steps ≥ 0, widths ≥ 1")
    return a


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    plat = jax.devices()[0].platform
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"width_sweep_{plat}.json"
    ds = data_lib.synthetic(data_lib.DataConfig())
    timing = (args.repeats, args.min_time)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    seeds = list(range(args.seeds))
    results = {
        "benchmark": "width_sweep",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "config": {
            "widths": args.widths, "seeds": args.seeds, "steps": args.steps, "optimizers": args.optimizers,
            "pairs": args.pairs, "t_points": args.t_points, "path_kind": args.path_kind, "fit_steps": args.fit_steps,
            "t_samples": args.t_samples, "weight_decay": args.weight_decay, "repeats": args.repeats,
            "min_time": args.min_time,
            "data": {"task": ds.task, "n_train": int(ds.x_train.shape[0]), "n_test": int(ds.x_test.shape[0]), "d_in": ds.d_in},
        },
        "machine": machine(),
        "train": [], "path_eval": [], "path_fit": [], "measure_pairs": [],
    }
    m = results["machine"]
    print(f"# {plat} ({m['device_kind']}; {m['cpu_model']}, {m['cpu_count']} CPUs), jax {m['jax']}", flush=True)
    for width in args.widths:
        trained = {}
        for opt_name in args.optimizers:
            rows, trained[opt_name] = bench_train(ds, width, opt_name, seeds, args.steps, args.weight_decay, timing)
            results["train"] += rows
            print(f"train          m={width:<4d} {opt_name:<6s} {show(rows, 'networks_per_s', 'nets/s')}", flush=True)

        # Pair p: network p of the first optimizer and network p+1 (mod S) of the last one
        # (AdamW→Muon paths with the default optimizers; two distinct networks in any case).
        idx = np.arange(args.pairs)
        a_P = tree_slice(trained[args.optimizers[0]], idx % args.seeds)
        b_P = tree_slice(trained[args.optimizers[-1]], (idx + 1) % args.seeds)
        nodes_PK = initial_nodes(a_P, b_P, 0 if args.path_kind == "linear" else 1)
        rows = bench_path_eval(ds, width, args.path_kind, nodes_PK, args.t_points, args.weight_decay, timing)
        results["path_eval"] += rows
        print(f"path_eval      m={width:<4d} {show(rows, 'points_per_s', 'pts/s')}", flush=True)

        if args.fit_steps > 0:
            fit_kind = "bezier" if args.path_kind == "linear" else args.path_kind
            rows = bench_path_fit(ds, width, fit_kind, args.optimizers[0], a_P, b_P, args.fit_steps, args.t_samples,
                                  args.weight_decay, timing)
            results["path_fit"] += rows
            print(f"path_fit       m={width:<4d} {show(rows, 'pairs_per_s', 'pairs/s')}", flush=True)
            rows = bench_measure_pairs(ds, width, args.optimizers[0], a_P, b_P, args.fit_steps, args.t_samples,
                                       args.t_points, args.weight_decay, timing)
            results["measure_pairs"] += rows
            print(f"measure_pairs  m={width:<4d} {show(rows, 'pairs_per_s', 'pairs/s')}", flush=True)

    results["total_s"] = time.perf_counter() - t_start
    # other processes on the machine distort CPU timings: record how busy it was
    results["machine"]["loadavg_1_5_15_before"] = load_before
    results["machine"]["loadavg_1_5_15_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["first_calls_s"] = sum(r["first_call_s"] for s in ("train", "path_eval", "path_fit", "measure_pairs")
                                   for r in results[s])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    print()
    print(markdown(results))
    print(f"\nwrote {out_path}")
    return results


if __name__ == "__main__":
    main()
