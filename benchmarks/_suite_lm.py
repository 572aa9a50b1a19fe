"""The GPU suite's GPT-2 sections (``benchmarks/gpu_suite.py``): training throughput of the 124M model and of
the connectivity study's seeds, path evaluation and spectra along a path. Each section is
``fn(rec, size, timing)``: it writes its record through ``rec`` (:class:`_suite_report.Recorder`), at the sizes of
``size`` (the suite's full or dry-run table), timing with :func:`width_sweep.timed_group` ``(*timing)``.

Throughput figures use the library's accounting (:mod:`connect.lm.flops`): training FLOPs per token
``6N + 12·L·T·D`` (PaLM, appendix B); forward only ``2N + 4·L·T·D``, a third of it. MFU is against
:data:`PEAK_FLOPS` = 989 TFLOP/s (H100 dense bf16) on every device, so that numbers compare across runs.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from lm_paths import bench_eval
from lm_training import make_row
from width_sweep import timed_group

from connect import barrier, config, paths
from connect.lm import flops
from connect.lm import paths as lm_paths
from connect.lm import training as lm_training
from connect.lm.config import TrainLMConfig
from connect.models import gpt2
from connect.studies.gpt2_connectivity.config import StudyConfig

#: The reference peak of every MFU in the suite: an H100's dense bf16 FLOP/s (vendor data sheet).
PEAK_FLOPS = flops.PEAK_FLOPS["H100"]
STUDY_TOML = Path(__file__).resolve().parents[1] / "experiments" / "gpt2_connectivity.toml"
#: The matrix whose singular values are checked against numpy (float64) in the spectra section.
CHECK_MATRIX = "h.0.mlp.c_fc"


def device() -> dict:
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count()}


def compute_dtype():
    """bf16 matmuls (fp32 master weights) on accelerators, float32 on CPU: what ``compute_dtype = "auto"`` picks."""
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def forward_flops_per_token(model_cfg: gpt2.GPT2Config, context: int) -> float:
    """``2N + 4·L·T·D``: the forward third of :func:`connect.lm.flops.flops_per_token`'s ``6N + 12·L·T·D``."""
    return flops.flops_per_token(model_cfg, context) / 3.0


def study_config(size: dict) -> StudyConfig:
    """The connectivity study's config from ``experiments/gpt2_connectivity.toml`` (its ``[tiny]`` variant when
    ``size["variant"]`` says so), read by the library's one loader; ``size["seeds"]`` overrides the seeds."""
    over = {"seeds": size["seeds"]} if size.get("seeds") else None
    return config.load(StudyConfig, str(STUDY_TOML), variant=size.get("variant"), overrides=over)


def _logged(run):
    """``run`` that also keeps the per-seed loss of each call's last step (device arrays, read at the end)."""
    losses = []

    def logged():
        m = run()
        losses.append(m["loss"])
        return m

    return logged, losses


def _train_figures(t: dict, losses: list, tokens_per_call: int, steps_per_call: int, fpt: float) -> dict:
    """Tokens/s, FLOP/s, MFU and the time per step of a timed training row; its check: the loss finite and lower
    after the last call than after the first."""
    loss_CxS = np.stack([np.asarray(x, np.float64) for x in losses])
    ok = bool(np.all(np.isfinite(loss_CxS))) and bool(np.all(loss_CxS[-1] < loss_CxS[0]))
    verdict = ("finite, decreasing" if ok else "NOT finite and decreasing") if len(loss_CxS) > 1 else "unchecked: one call only"
    tok_s = tokens_per_call / t["best_s"]
    return {"tokens_per_s": tok_s, "achieved_flops": tok_s * fpt, "mfu": tok_s * fpt / PEAK_FLOPS, "compile_s": t["compile_s"],
            "steady_s": t["best_s"] / steps_per_call, "steady_what": "s per optimizer step (best call / steps per call)",
            "timing": t, "loss_first": loss_CxS[0].tolist(), "loss_last": loss_CxS[-1].tolist(),
            "check_ok": ok and len(loss_CxS) > 1,
            "check": f"loss {loss_CxS[0].mean():.3f} → {loss_CxS[-1].mean():.3f} ({verdict})"}


def _train_fn(cfg: TrainLMConfig, steps_per_call: int):
    """The library's jitted step for ``cfg`` (as ``connect train-lm`` compiles it) on ``cfg.seeds``, one call =
    ``steps_per_call`` steps (:func:`lm_training.make_row`: random tokens, the same batch each step), logged."""
    model_cfg = cfg.model_config()
    optimizer = lm_training.make_optimizer(cfg, jax.eval_shape(lambda: gpt2.init(jax.random.key(0), model_cfg)))
    step = jax.jit(lm_training.make_step(model_cfg, optimizer, compute_dtype()), donate_argnums=(0, 1))
    return _logged(make_row(step, optimizer, cfg, list(cfg.seeds), cfg.grad_accum, steps_per_call))


def train_gpt2(rec, size: dict, timing: tuple) -> None:
    """1. GPT-2 (124M on the GPU) training, one seed, AdamW: tokens/s and MFU of the library's step."""
    cfg = TrainLMConfig(model=size["model"], optimizer="adamw", lr=6e-4, aux_lr=6e-4, warmup_frac=0.0, steps=200,
                        batch_size=size["batch_size"], grad_accum=size["grad_accum"], context=size["context"]).validate()
    model_cfg, k = cfg.model_config(), size["steps_per_call"]
    fpt = flops.flops_per_token(model_cfg, cfg.context)
    dtype = jnp.dtype(compute_dtype()).name
    shapes = {"model": cfg.model, "n_params_matmul": flops.n_params(model_cfg), "flops_per_token": fpt, "seeds": 1,
              "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "context": cfg.context, "steps_per_call": k,
              "compute_dtype": dtype}
    rec.update(device=device(), shapes=shapes, train_config=cfg.to_dict())
    run, losses = _train_fn(cfg, k)
    _, timings = timed_group({"train": run}, *timing)
    fig = _train_figures(timings["train"], losses, cfg.batch_size * cfg.context * k, k, fpt)
    rec.update(**fig)
    rec.add_row({"row": f"{cfg.model} adamw, 1 seed",
                 "shapes": f"B={cfg.batch_size} (accum {cfg.grad_accum}) T={cfg.context} {dtype}",
                 "compile_s": fig["compile_s"], "steady_s": fig["steady_s"], "throughput": fig["tokens_per_s"],
                 "unit": "tokens/s", "mfu": fig["mfu"], "check": fig["check"]})


def study_train(rec, size: dict, timing: tuple) -> None:
    """2. The connectivity study's seeds (10 × AdamW, 10 × Muon on the GPU) trained with the study's own recipe, one
    vmapped program per optimizer (as ``connect study gpt2`` trains them); projected wall time of its training."""
    study, k = study_config(size), size["steps_per_call"]
    cfgs = {opt: study.train_config(opt) for opt in study.optimizers}
    fns, logs = {}, {}
    for opt, cfg in cfgs.items():
        fns[opt], logs[opt] = _train_fn(cfg, k)
    shapes = {opt: {"model": cfg.model, "seeds": len(cfg.seeds), "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                    "context": cfg.context, "recipe_steps": cfg.steps, "steps_per_call": k} for opt, cfg in cfgs.items()}
    rec.update(device=device(), shapes=shapes, toml=STUDY_TOML.name, variant=size.get("variant"),
               compute_dtype=jnp.dtype(compute_dtype()).name, train_configs={o: c.to_dict() for o, c in cfgs.items()})
    _, timings = timed_group(fns, *timing)
    per_opt, projected = {}, 0.0
    for opt, cfg in cfgs.items():
        model_cfg = cfg.model_config()
        fig = per_opt[opt] = _train_figures(timings[opt], logs[opt], len(cfg.seeds) * cfg.batch_size * cfg.context * k, k,
                                            flops.flops_per_token(model_cfg, cfg.context))
        projected += cfg.steps * fig["steady_s"]
        rec.add_row({"row": f"{cfg.model} {opt}, {len(cfg.seeds)} seeds vmapped",
                     "shapes": f"{len(cfg.seeds)}×B={cfg.batch_size} (accum {cfg.grad_accum}) T={cfg.context} "
                               f"{jnp.dtype(compute_dtype()).name}",
                     "compile_s": fig["compile_s"], "steady_s": fig["steady_s"], "throughput": fig["tokens_per_s"],
                     "unit": "tokens/s", "mfu": fig["mfu"], "check": fig["check"]})
    step_s = sum(f["steady_s"] for f in per_opt.values())
    tok_s = sum(len(c.seeds) * c.batch_size * c.context for c in cfgs.values()) / step_s
    rec.update(per_optimizer=per_opt, projected_train_wall_s=projected,
               compile_s=sum(f["compile_s"] or 0.0 for f in per_opt.values()),
               steady_s=step_s, steady_what="s per step of every optimizer's seeds, summed", tokens_per_s=tok_s,
               mfu=sum(f["achieved_flops"] * f["steady_s"] for f in per_opt.values()) / step_s / PEAK_FLOPS,
               check_ok=all(f["check_ok"] for f in per_opt.values()),
               summary=f"projected training wall time of the recipe "
                       f"({' + '.join(f'{c.steps} {o} steps' for o, c in cfgs.items())}, "
                       f"steps only, no eval or checkpoints): {projected / 60:.1f} min")


def random_chain(model_cfg: gpt2.GPT2Config):
    """Nodes of a one-bend polygonal chain through three random inits (throughput does not depend on the values)."""
    init = jax.jit(gpt2.init, static_argnums=1)
    a, bend, b = (init(jax.random.key(s), model_cfg) for s in range(3))
    return paths.stack_nodes(a, jax.tree.map(lambda x: x[None], bend), b)


def path_eval(rec, size: dict, timing: tuple) -> None:
    """3. Loss of the study's model along a one-bend chain at the study's t-grid (:func:`lm_paths.path_losses`, the
    t-chunk vmapped, as the study evaluates), against one point at a time and a plain loop (``lm_paths.bench_eval``)."""
    study = study_config(size)
    cfg = study.train_config(study.optimizers[0])
    model_cfg, context, batch = cfg.model_config(), cfg.context, study.eval_batch_size
    n_batches, ts = size.get("eval_batches") or study.eval_batches, barrier.grid(study.t_points)
    tokens = np.random.default_rng(0).integers(0, model_cfg.vocab_size, n_batches * batch * context + 1).astype(np.int32)
    dtype = compute_dtype()
    fpt = forward_flops_per_token(model_cfg, context)
    rec.update(device=device(), shapes={"model": cfg.model, "t_points": len(ts), "t_chunk": len(ts), "batch_size": batch,
                                        "batches": n_batches, "context": context, "compute_dtype": jnp.dtype(dtype).name,
                                        "forward_flops_per_token": fpt})
    rows = bench_eval(model_cfg, random_chain(model_cfg), tokens, ts, batch, context, dtype, timing)
    tol = 1e-4 if dtype == jnp.float32 else 2e-2
    for r in rows:
        r["mfu"] = r["point_tokens_per_s"] * fpt / PEAK_FLOPS
        ok = bool(np.all(np.isfinite(r["losses"]))) and r["max_abs_diff_vs_loop"] <= tol
        rec.add_row({"row": {"vmap": f"t-chunk {len(ts)} vmapped", "chunk1": "t-chunk 1", "loop": "loop over t"}[r["row"]],
                     "shapes": f"{len(ts)} t × {n_batches}×{batch}×{context} tokens", "compile_s": r["compile_s"],
                     "steady_s": r["best_s"], "throughput": r["point_tokens_per_s"], "unit": "point·tokens/s", "mfu": r["mfu"],
                     "check": f"max|Δloss| vs loop {r['max_abs_diff_vs_loop']:.1e} ({'ok' if ok else 'FAILED'}, tol {tol:g})"})
    head = rows[0]
    rec.update(eval_rows=rows, compile_s=head["compile_s"], steady_s=head["best_s"],
               steady_what="s per evaluation of all t on all tokens", point_tokens_per_s=head["point_tokens_per_s"],
               mfu=head["mfu"], check_ok=all(r["max_abs_diff_vs_loop"] <= tol for r in rows))


def _svd_check(out: dict, nodes, model_cfg, ts, i: int) -> dict:
    """Singular values of :data:`CHECK_MATRIX` at ``ts[i]`` from the spectra against numpy's float64 SVD."""
    theta = paths.point("polychain", nodes, jnp.float32(ts[i]))
    w = np.asarray(gpt2.matrices(theta, model_cfg, names=[CHECK_MATRIX])[CHECK_MATRIX], np.float64)
    s_np = np.linalg.svd(w, compute_uv=False)
    got = out["matrices"][CHECK_MATRIX]
    rel = float(np.max(np.abs(np.asarray(got["singular_values"][i], np.float64) - s_np)) / s_np[0])
    sr_np = float(np.sum(s_np**2) / s_np[0] ** 2)
    return {"matrix": CHECK_MATRIX, "t": float(ts[i]), "shape": list(w.shape), "max_rel_err_singular_values": rel,
            "stable_rank": float(got["stable_rank"][i]), "stable_rank_numpy": sr_np, "ok": rel < 1e-4}


def spectra(rec, size: dict, timing: tuple) -> None:
    """4. Singular values and summaries of every matrix of the model at 11 points of a chain
    (:func:`lm_paths.spectra_along_path`; vmap over t on accelerators, ``lax.map`` on CPU)."""
    model_cfg, ts = gpt2.config(size["model"]), barrier.grid(size["t_points"])
    nodes, names = random_chain(model_cfg), gpt2.matrix_names(model_cfg)
    strategy = "map" if jax.default_backend() == "cpu" else "vmap"
    rec.update(device=device(), shapes={"model": size["model"], "matrices": len(names), "t_points": len(ts), "strategy": strategy,
                                        "largest": [model_cfg.vocab_size, model_cfg.n_embd]})
    outs, timings = timed_group({"spectra": lambda: lm_paths.spectra_along_path("polychain", nodes, model_cfg, ts)}, *timing)
    t, out = timings["spectra"], outs["spectra"]
    check = _svd_check(out, nodes, model_cfg, ts, len(ts) // 2)
    rec.update(compile_s=t["compile_s"], steady_s=t["best_s"], steady_what="s for every matrix at every t", timing=t,
               check=check, check_ok=check["ok"], median_stable_rank=out["median"]["stable_rank"])
    rec.add_row({"row": f"{size['model']}, all {len(names)} matrices ({strategy} over t)", "shapes": f"{len(ts)} t",
                 "compile_s": t["compile_s"], "steady_s": t["best_s"], "throughput": len(names) * len(ts) / t["best_s"],
                 "unit": "matrix SVDs/s", "mfu": None,
                 "check": f"{CHECK_MATRIX} σ vs numpy: rel err {check['max_rel_err_singular_values']:.1e} "
                          f"({'ok' if check['ok'] else 'FAILED'})"})
