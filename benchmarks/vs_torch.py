#!/usr/bin/env python
"""connect against Hugging Face ``transformers`` on torch CPU, side by side in one process, float32.

Per size, both frameworks do the same work on the same weights (connect's init, ``params_to_hf``) and tokens:

- ``train``: one AdamW step of 16 windows: connect's jitted ``lm_training.make_step`` with ``make_optimizer``
  (``--optimizer adamw``: lr 4e-3 held constant, betas (0.9, 0.95), eps 1e-8, decay 0.1 on matrices only, clipping
  at global norm 1) against ``GPT2LMHeadModel`` (attention eager and sdpa) with ``torch.optim.AdamW`` in the same
  parameter groups, ``clip_grad_norm_`` and ``cross_entropy``; connect's compile (lower + compile) reported apart;
- ``path_eval``: val loss at t = 0, 0.1, …, 1 on the linear path between two inits, ``--eval-batches`` batches of
  16 windows: ``lm_paths.path_losses`` against the seed study's way (per t: interpolate the state dicts,
  ``load_state_dict``, forward every batch under ``no_grad``, cross-entropy);
- ``spectra``: all singular values of 15 matrices at those 11 points: ``lm_paths.spectra_along_path`` against
  ``torch.linalg.svdvals`` of the interpolated matrices (batched over t); the first 15 of ``gpt2.matrix_names``
  (tiny: its 12 hidden matrices, wte, wpe and lm_head; larger sizes: the hidden matrices of layers 0–2).

Checks, all sizes before anything is timed (a failure exits 1 naming the numbers): torch holds exactly the
init; after one step the loss (rel 1e-4), gradients (1e-4 of each tensor's largest) and weights (rel 1e-4, abs
1e-5; see :func:`check_step` for Adam's ill-conditioned elements) agree; path losses to rel 1e-5; singular values
to 1e-4 of each matrix's largest. Timing: the checks' calls are the warm-ups, then ``--rounds`` rounds in which
connect and each torch variant take turns; median and min, ratio = torch median / connect median (> 1: connect
faster). ``--pin [CORE]``: one core (affinity; torch, XLA and BLAS one thread); by default both use every core.

Usage (from the repository root)::

    python benchmarks/vs_torch.py                    # all sizes, every core -> results/vs_torch_<host>.json
    python benchmarks/vs_torch.py --pin              # one core (the last allowed one) for both
    python benchmarks/vs_torch.py --sizes tiny --quick --out /tmp/vs_torch.json   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: size -> (connect's named GPT-2 config, fields overridden, context of the windows)
SIZES = {
    "tiny": ("tiny", {}, 64),
    "mid": ("tiny", {"n_layer": 4, "n_embd": 128, "n_positions": 128, "n_inner": 512}, 128),
    "seed-paper-short": ("seed-paper", {}, 64),
}
BATCH, N_POINTS, N_MATRICES, WORKS = 16, 11, 15, ("train", "path_eval", "spectra")
TOL = {"loss_rel": 1e-4, "grad_rel": 1e-4, "weight_rel": 1e-4, "weight_abs": 1e-5, "path_rel": 1e-5, "sigma_rel": 1e-4}
ADAM_FLAT = 1e-6  # |g| below which the first Adam step is ill-conditioned (see check_step)
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES), help="sizes to run (default: all)")
    p.add_argument("--works", nargs="+", default=list(WORKS), choices=WORKS, help="what to compare (default: all)")
    p.add_argument("--attn", nargs="+", default=["eager", "sdpa"], choices=["eager", "sdpa"], help="torch attention implementations")
    p.add_argument("--eval-batches", type=int, default=4, help="batches of 16 windows in the path evaluation (default: 4)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per work (default: 7; --quick: 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 timed rounds")
    p.add_argument("--pin", type=int, nargs="?", const=-1, default=None, metavar="CORE",
                   help="pin to one core (default core: the last allowed) with one thread in torch, XLA and BLAS")
    p.add_argument("--out", default=None, help="JSON path (default: results/vs_torch_<host>.json)")
    return p.parse_args(argv)


def configure_threads(args: argparse.Namespace) -> int | None:
    """With ``--pin``: affinity to one core, and one-thread settings read when numpy, jax and torch load (so call it
    before they are imported; :func:`main` checks). Returns the core, or None (all cores)."""
    if args.pin is None:
        return None
    core = sorted(os.sched_getaffinity(0))[-1] if args.pin < 0 else args.pin
    os.sched_setaffinity(0, {core})
    os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1"))
    if _XLA_ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_ONE_THREAD}".strip()
    return core


if __name__ == "__main__":  # before numpy, jax and torch size their thread pools
    configure_threads(parse_args())

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

from connect import barrier, paths  # noqa: E402
from connect.lm import corpus  # noqa: E402
from connect.lm import huggingface as hf  # noqa: E402
from connect.lm import paths as lm_paths  # noqa: E402
from connect.lm import training as lm_training  # noqa: E402
from connect.lm.config import TrainLMConfig  # noqa: E402
from connect.models import gpt2  # noqa: E402
from connect.optimizers import NO_DECAY_NAMES  # noqa: E402


class Mismatch(Exception):
    """The two frameworks computed different numbers."""


def train_config(size: str) -> TrainLMConfig:
    model, overrides, context = SIZES[size]
    return TrainLMConfig(model=model, model_overrides=dict(overrides), optimizer="adamw", schedule="constant",
                         warmup_frac=0.0, batch_size=BATCH, context=context).validate()


def torch_model(model_cfg, state: dict, impl: str):
    """``GPT2LMHeadModel`` of ``model_cfg`` with attention ``impl`` holding exactly the tensors ``state``."""
    kw = {k: v for k, v in hf.config_to_hf(model_cfg).items() if k not in ("architectures", "model_type")}
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw, attn_implementation=impl))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    bad = [k for k, v in model.state_dict().items() if not np.array_equal(v.numpy(), state[k])]
    if bad or model.config._attn_implementation != impl:
        raise Mismatch(f"torch model ({impl}) does not hold connect's init: {bad[:3]} differ")
    return model


def check_close(what: str, got, want, rel: float, abs_: float = 0.0, scale=None) -> float:
    """max |got − want| / (abs_ + rel·scale) (scale: |want| elementwise by default); > 1 raises Mismatch."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want) / (abs_ + rel * (np.abs(want) if scale is None else scale))
    worst = float(np.max(err)) if err.size else 0.0
    if not worst <= 1.0:
        i = tuple(int(j) for j in np.unravel_index(int(np.nanargmax(err)), err.shape))
        raise Mismatch(f"{what}: {got[i]:.9g} vs {want[i]:.9g} at {i} (tolerance rel {rel:g} abs {abs_:g}, exceeded {worst:.3g}x)")
    return float(np.max(np.abs(got - want))) if err.size else 0.0


def connect_train(tcfg: TrainLMConfig, params0: dict, x_BxT, y_BxT):
    """``(step_fn, state, compile_s)``: the jitted AdamW step of ``train-lm`` (one seed, one micro-batch)."""
    optimizer = lm_training.make_optimizer(tcfg, params0)
    params_S = jax.tree.map(lambda a: jnp.array(a)[None], params0)
    state = {"params": params_S, "opt": jax.jit(jax.vmap(optimizer.init))(params_S)}
    xs, ys = jnp.asarray(x_BxT)[None, None], jnp.asarray(y_BxT)[None, None]
    t0 = time.perf_counter()
    step = jax.jit(lm_training.make_step(tcfg.model_config(), optimizer, jnp.float32), donate_argnums=(0, 1))
    step = step.lower(state["params"], state["opt"], xs, ys).compile()
    compile_s = time.perf_counter() - t0

    def run():
        state["params"], state["opt"], m = step(state["params"], state["opt"], xs, ys)
        return m["loss"]

    return run, state, compile_s


def torch_train(model_cfg, tcfg: TrainLMConfig, model, x_BxT, y_BxT):
    """One ``torch.optim.AdamW`` step per call, parameter groups, clipping and schedule as connect's."""
    roles = hf.family_module(model_cfg).tensor_names(model_cfg)
    decay = {n: roles[n][0][-1] not in NO_DECAY_NAMES for n, _ in model.named_parameters()}  # connect's groups
    opt = torch.optim.AdamW([{"params": [p for n, p in model.named_parameters() if decay[n] == d], "weight_decay": wd}
                             for d, wd in ((True, tcfg.weight_decay), (False, 0.0))], lr=tcfg.lr, betas=tuple(tcfg.betas), eps=1e-8)
    x, y = torch.from_numpy(np.asarray(x_BxT, np.int64)), torch.from_numpy(np.asarray(y_BxT, np.int64))
    model.train()

    def run():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
        opt.step()
        return loss.detach()

    return run


def connect_grads(tcfg: TrainLMConfig, params0: dict, x_BxT, y_BxT) -> dict:
    """connect's gradient of the step's loss as Hugging Face tensors, clipped as torch's ``clip_grad_norm_`` clips."""
    model_cfg = tcfg.model_config()
    g = jax.tree.map(np.asarray, jax.jit(jax.grad(gpt2.loss), static_argnums=3)(params0, x_BxT, y_BxT, model_cfg))
    norm = np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in jax.tree.leaves(g)))
    return {k: v * min(1.0, tcfg.clip_norm / (norm + 1e-6)) for k, v in hf.params_to_hf(g, model_cfg).items()}


def check_step(what: str, model, after: dict, grads: dict, lr: float) -> dict:
    """Torch's gradients and weights after the step against connect's. Where |g| < ``ADAM_FLAT`` Adam's first step
    ``g/(|g|+ε)`` (ε = 1e-8) turns the gradients' float32 differences into update differences up to the step size:
    there the weights need only agree to 2·lr (those outside the usual tolerance counted as ``ill_conditioned``)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {"max_abs_dgrad": 0.0, "max_abs_dweight": 0.0, "ill_conditioned": 0, "ill_conditioned_max_abs_dweight": 0.0}
    for k, p in model.named_parameters():
        g, ok = p.grad.numpy(), np.abs(p.grad.numpy()) >= ADAM_FLAT
        d = check_close(f"{what}: gradient of {k}", g, grads[k], TOL["grad_rel"], scale=np.max(np.abs(grads[k])))
        w = check_close(f"{what}: weights of {k} after one step", sd[k][ok], after[k][ok], TOL["weight_rel"], TOL["weight_abs"])
        flat = check_close(f"{what}: weights of {k} where |g| < {ADAM_FLAT:g}", sd[k][~ok], after[k][~ok], 0.0, 2 * lr)
        diff, tol = np.abs(sd[k][~ok] - after[k][~ok]), TOL["weight_abs"] + TOL["weight_rel"] * np.abs(after[k][~ok])
        out["ill_conditioned"] += int(np.sum(diff > tol))
        for key, value in (("max_abs_dgrad", d), ("max_abs_dweight", w), ("ill_conditioned_max_abs_dweight", flat)):
            out[key] = max(out[key], value)
    return out


def prepare_train(size: str, tcfg: TrainLMConfig, params0: dict, state0: dict, attn) -> dict:
    """The train work of ``size``, checked: connect's first step against each torch model's first step."""
    model_cfg = tcfg.model_config()
    w = np.random.default_rng(1).integers(0, model_cfg.vocab_size, (BATCH, tcfg.context + 1)).astype(np.int32)
    x, y = w[:, :-1], w[:, 1:]
    grads = connect_grads(tcfg, params0, x, y)
    run, state, compile_s = connect_train(tcfg, params0, x, y)
    fns, (outs, first) = {"connect": run}, first_calls({"connect": run})
    loss = float(outs["connect"][0])  # (S,) = (1,)
    after = hf.params_to_hf(jax.tree.map(lambda a: np.array(a[0]), state["params"]), model_cfg)
    checks = {"compile_s": compile_s, "loss_connect": loss}
    for impl in attn:
        model = torch_model(model_cfg, state0, impl)
        fns[impl] = torch_train(model_cfg, tcfg, model, x, y)
        outs, t = first_calls({impl: fns[impl]})
        first[impl], checks[f"loss_{impl}"] = t[impl], float(outs[impl])
        check_close(f"{size} train loss, torch {impl} vs connect", checks[f"loss_{impl}"], loss, TOL["loss_rel"])
        checks[impl] = check_step(f"{size} train, torch {impl} vs connect", model, after, grads, tcfg.lr)
    return {"fns": fns, "first_s": first, "checks": checks, "per_call": BATCH * tcfg.context, "unit": "tokens/s"}


def torch_path_losses(model, sa: dict, sb: dict, ts, batches) -> np.ndarray:
    """The seed study's way: per t, interpolate the state dicts, load them, mean cross-entropy over the batches."""
    out = []
    with torch.no_grad():
        for t in map(float, ts):
            model.load_state_dict({k: (1 - t) * sa[k] + t * sb[k] for k in sa})
            total, n = 0.0, 0
            for x, y in batches:
                logits = model(input_ids=x, use_cache=False).logits
                total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
                n += y.numel()
            out.append(total / n)
    return np.array(out)


def prepare_path(size: str, tcfg: TrainLMConfig, nodes, states: tuple, attn, n_batches: int) -> dict:
    model_cfg, context = tcfg.model_config(), tcfg.context
    tokens = np.random.default_rng(2).integers(0, model_cfg.vocab_size, n_batches * BATCH * context + 1).astype(np.int32)
    batches = [(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
               for x, y in corpus.eval_batches(tokens, BATCH, context)]
    ts = barrier.grid(N_POINTS)
    sa, sb = ({k: torch.from_numpy(v.copy()) for k, v in s.items()} for s in states)
    fns = {"connect": lambda: lm_paths.path_losses("linear", nodes, model_cfg, tokens, ts, batch_size=BATCH, context=context)}
    for impl in attn:
        model = torch_model(model_cfg, states[0], impl).eval()
        fns[impl] = lambda model=model: torch_path_losses(model, sa, sb, ts, batches)
    outs, first = first_calls(fns)
    checks = {"loss_connect": outs["connect"].tolist()}
    for impl in attn:
        checks[f"max_abs_dloss_{impl}"] = check_close(f"{size} path losses, torch {impl} vs connect", outs[impl],
                                                      outs["connect"], TOL["path_rel"])
    return {"fns": fns, "first_s": first, "checks": checks, "per_call": N_POINTS * n_batches * BATCH * context,
            "unit": "point-tokens/s"}


def hf_matrix(state: dict, name: str):
    """Matrix ``name`` (``gpt2.matrix_names``) out of Hugging Face tensors (Conv1D ``(in, out)``: the transpose of
    connect's ``(out, in)``, the same singular values)."""
    if not name.startswith("h."):
        return state["lm_head.weight" if name == "lm_head" else f"transformer.{name}.weight"]
    _, layer, suffix = name.split(".", 2)
    path, block, fused = gpt2.LAYER_MATRICES[suffix]
    w = state[f"transformer.h.{layer}.{'.'.join(path[:-1])}.weight"]
    width = w.shape[-1] // fused
    return w[:, block * width:(block + 1) * width]


def prepare_spectra(size: str, tcfg: TrainLMConfig, nodes, states: tuple) -> dict:
    model_cfg = tcfg.model_config()
    names = gpt2.matrix_names(model_cfg)[:N_MATRICES]
    ts = barrier.grid(N_POINTS)
    pairs = {n: tuple(torch.from_numpy(np.ascontiguousarray(hf_matrix(s, n))) for s in states) for n in names}
    t_Tx1x1 = torch.from_numpy(ts).reshape(-1, 1, 1)

    def torch_spectra():
        return {n: torch.linalg.svdvals((1 - t_Tx1x1) * a + t_Tx1x1 * b) for n, (a, b) in pairs.items()}

    fns = {"connect": lambda: lm_paths.spectra_along_path("linear", nodes, model_cfg, ts, names=names, constraint_optimizers=()),
           "svdvals": torch_spectra}
    outs, first = first_calls(fns)
    diffs = {}
    for n in names:
        want = outs["connect"]["matrices"][n]["singular_values"]
        diffs[n] = check_close(f"{size} singular values of {n}, torch vs connect", outs["svdvals"][n].numpy(), want,
                               TOL["sigma_rel"], scale=np.max(want, axis=-1, keepdims=True))
    worst = max(diffs, key=diffs.get)
    return {"fns": fns, "first_s": first, "checks": {"names": names, "max_abs_dsigma": {"value": diffs[worst], "matrix": worst}},
            "per_call": N_POINTS * len(names), "unit": "matrix SVDs/s"}


def first_calls(fns: dict) -> tuple[dict, dict]:
    outs, first = {}, {}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        outs[k] = jax.block_until_ready(fn())
        first[k] = time.perf_counter() - t0
    return outs, first


def interleave(fns: dict, rounds: int) -> dict:
    """``rounds`` rounds in which every callable runs once in turn (connect, then each torch variant)."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "times_s": v} for k, v in times.items()}


def prepare_size(size: str, args) -> dict:
    """Every work of ``size`` built and checked (weights of two inits, seeds 0 and 1)."""
    tcfg = train_config(size)
    model_cfg = tcfg.model_config()
    init = jax.jit(gpt2.init, static_argnums=1)
    a, b = (jax.tree.map(np.asarray, init(jax.random.key(s), model_cfg)) for s in (0, 1))
    states = (hf.params_to_hf(a, model_cfg), hf.params_to_hf(b, model_cfg))
    nodes = paths.stack_nodes(a, paths.init_free(a, b, 0), b)
    build = {"train": lambda: prepare_train(size, tcfg, a, states[0], args.attn),
             "path_eval": lambda: prepare_path(size, tcfg, nodes, states, args.attn, args.eval_batches),
             "spectra": lambda: prepare_spectra(size, tcfg, nodes, states)}
    works = {work: build[work]() for work in args.works}
    for work, w in works.items():
        print(f"checked {size} {work}: {json.dumps(w['checks'], default=str)[:300]}", flush=True)
    return {"config": {"model_config": model_cfg.to_dict(), "context": tcfg.context, "batch_size": BATCH}, "works": works}


def time_size(size: str, prepared: dict, rounds: int) -> list[dict]:
    rows = []
    for work, w in prepared["works"].items():
        timing = interleave(w["fns"], rounds)
        conn = timing["connect"]
        for impl in (k for k in w["fns"] if k != "connect"):
            t = timing[impl]
            rows.append({"size": size, "work": work, "torch": impl, "connect": {**conn, "first_call_s": w["first_s"]["connect"]},
                         "torch_times": {**t, "first_call_s": w["first_s"][impl]}, "ratio": t["median_s"] / conn["median_s"],
                         "ratio_min": t["min_s"] / conn["min_s"], "unit": w["unit"],
                         "connect_rate": w["per_call"] / conn["median_s"], "torch_rate": w["per_call"] / t["median_s"],
                         "connect_compile_s": w["checks"].get("compile_s", max(0.0, w["first_s"]["connect"] - conn["min_s"]))})
            print(table([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| size | work | torch | connect ms (median / min) | torch ms (median / min) | ratio | connect rate | torch rate "
             "| unit | connect compile s |", "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        c, t = r["connect"], r["torch_times"]
        lines.append(f"| {r['size']} | {r['work']} | {r['torch']} | {1e3 * c['median_s']:.4g} / {1e3 * c['min_s']:.4g} | "
                     f"{1e3 * t['median_s']:.4g} / {1e3 * t['min_s']:.4g} | {r['ratio']:.2f} | {r['connect_rate']:.4g} | "
                     f"{r['torch_rate']:.4g} | {r['unit']} | {r['connect_compile_s']:.2f} |")
    return "\n".join(lines)


def environment(core) -> dict:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)), "pinned_core": core,
            "host": socket.gethostname(), "os": platform.platform(), "python": platform.python_version(), "jax": jax.__version__,
            "numpy": np.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.pin is not None and _XLA_ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        print("warning: --pin after jax and torch were imported: only the affinity applies (run the script)", file=sys.stderr)
    core = configure_threads(args)  # the affinity again when run as a script (harmless)
    if core is not None:
        torch.set_num_threads(1)
    rounds = args.rounds or (2 if args.quick else 7)
    load_before, start = os.getloadavg(), time.perf_counter()
    try:
        prepared = {size: prepare_size(size, args) for size in args.sizes}
    except Mismatch as e:
        print(f"MISMATCH, nothing timed: {e}", file=sys.stderr)
        return 1
    rows = [r for size in args.sizes for r in time_size(size, prepared[size], rounds)]
    results = {
        "benchmark": "vs_torch", "argv": sys.argv if argv is None else argv,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**environment(core), "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg()},
        "settings": {"rounds": rounds, "quick": args.quick, "eval_batches": args.eval_batches, "t_points": N_POINTS,
                     "dtype": "float32", "tolerances": TOL, "train_config": train_config(args.sizes[0]).to_dict()},
        "sizes": {s: {**p["config"], "checks": {w: v["checks"] for w, v in p["works"].items()}} for s, p in prepared.items()},
        "rows": rows, "wall_s": time.perf_counter() - start,
    }
    print(table(rows))
    print(f"load {load_before} -> {results['machine']['loadavg_1_5_15_after']}; {results['wall_s']:.0f} s")
    out = Path(args.out) if args.out else RESULTS_DIR / f"vs_torch_{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
