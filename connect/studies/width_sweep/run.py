"""The width sweep: train two-layer ReLU networks per width × optimizer × seed, join every
same-width pair by paths, measure them, write a self-describing run directory.

Run directory layout::

    RUN/config.json             the full WidthSweepConfig (a rerun must match it)
    RUN/metrics.jsonl           one line per trained network (final loss, loss curve), never twice
    RUN/data.npz                the arrays every network trains and is tested on (float32 X, y, X_test, y_test)
    RUN/checkpoints/w0008_adamw_s0/   orbax params + params.safetensors (W, a, b) + metadata.json
                                (see connect.checkpoints)
    RUN/pairs/w0008.json        every measured pair of one width, curves included
    RUN/results.json|.csv       one row per pair × path × alignment (csv: scalars only)
    RUN/figures/*.png|.pdf      drawn from results.json by connect.studies.width_sweep.plots
    RUN/.lock, RUN/.lock.pid    the one-writer lock and its holder's pid (connect.io.run_lock)

Resuming: each (width, optimizer) group of checkpoints and each width's pair file is
written atomically and skipped when present, so a killed sweep rerun with the same
run directory redoes nothing already saved and yields the same results file.

Checking a run without connect, with numpy and safetensors only::

    z = np.load("RUN/data.npz"); p = safetensors.numpy.load_file("RUN/checkpoints/w0008_adamw_s0/params.safetensors")
    f = np.maximum(z["X"] @ p["W"].T + p["b"], 0) @ p["a"]   # f(x) = relu(Wx + b)·a
    0.5 * np.mean((f - z["y"]) ** 2)                          # = metadata.json's final_train_loss (regression)
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import os
import zipfile

import jax
import numpy as np
from tqdm import tqdm

from connect import batching, checkpoints, optimizers
from connect.errors import UserError
from connect.io import check_directory, claim_directory, run_lock, write_atomic, write_json_atomic, write_text_atomic
from connect.models import relu
from connect.studies.width_sweep.config import WidthSweepConfig
from connect.twolayer import data, losses, measure, training

#: Scalar columns of results.csv, in order (error-rate columns only for classification).
SCALAR_COLUMNS = (
    "width", "pair_type", "opt_a", "seed_a", "opt_b", "seed_b", "same_optimizer", "path",
    "path_optimizer", "alignment", "loss_a_train", "loss_b_train", "barrier_train", "barrier_test",
    "max_barrier_train", "max_barrier_test", "err_barrier_train", "err_barrier_test",
    "err_max_barrier_train", "err_max_barrier_test",
)
PATH_SEED = 202605  # root key of path learning; folded with width and group index
DATA_FILE = "data.npz"


def checkpoint_name(width: int, opt: str, seed: int) -> str:
    return f"w{width:04d}_{opt}_s{seed}"


def run(cfg: WidthSweepConfig, run_dir: str, progress: bool = True, finish=None) -> list[dict]:
    """Run (or resume) the sweep into ``run_dir``; returns the result rows (figures: :mod:`connect.studies.width_sweep.plots`).

    Every input (config, data, the run directory) is checked before anything is written; then ``run_dir`` is
    written holding :func:`connect.io.run_lock`, and ``finish(run_dir)`` (e.g. the figures) runs last under it."""
    cfg.validate()
    dataset = data.make(cfg.data_config())
    check_directory(run_dir, cfg.to_dict(), allowed=(), flag="--run-dir")
    _check_data(run_dir, dataset)
    with run_lock(run_dir):
        claim_directory(run_dir, cfg.to_dict(), allowed=(), flag="--run-dir")
        _write_data(run_dir, dataset)
        rows = _sweep(cfg, dataset, run_dir, progress)
        if finish is not None:
            finish(run_dir)
    return rows


def _sweep(cfg: WidthSweepConfig, dataset: data.Dataset, run_dir: str, progress: bool) -> list[dict]:
    """Train and measure every width not finished yet; write and return the result rows."""
    bar = tqdm(total=len(cfg.widths) * (len(cfg.optimizers) + 1), desc="width sweep", disable=not progress, unit="stage")
    for width in cfg.widths:
        if _stored_pairs(run_dir, width) is not None:  # this width is finished
            bar.update(len(cfg.optimizers) + 1)
            continue
        params = {}
        for opt in cfg.optimizers:
            bar.set_postfix_str(f"train m={width} {opt}")
            params[opt] = trained(cfg, dataset, run_dir, width, opt)
            bar.update()
        bar.set_postfix_str(f"paths m={width}")
        measured(cfg, dataset, run_dir, width, params)
        bar.update()
    bar.close()
    rows = collect(cfg, run_dir)
    write_results(run_dir, rows)
    return rows


def _write_data(run_dir: str, dataset: data.Dataset) -> None:
    """``RUN/data.npz`` (:data:`DATA_FILE`), once: ``X``, ``y``, ``X_test``, ``y_test`` as trained on (float32;
    :func:`connect.twolayer.data.load_npz` reads it back). A rerun whose data differ (a user's file changed) is refused."""
    if not _check_data(run_dir, dataset):
        write_atomic(os.path.join(run_dir, DATA_FILE), lambda f: np.savez(f, **_arrays(dataset)), binary=True)


def _arrays(dataset: data.Dataset) -> dict:
    return {k: np.asarray(v, dtype=np.float32) for k, v in
            (("X", dataset.x_train), ("y", dataset.y_train), ("X_test", dataset.x_test), ("y_test", dataset.y_test))}


def _check_data(run_dir: str, dataset: data.Dataset) -> bool:
    """Whether ``RUN/data.npz`` exists; a UserError if it holds other data than ``dataset`` (writes nothing)."""
    path = os.path.join(run_dir, DATA_FILE)
    if not os.path.isfile(path):
        return False
    arrays = _arrays(dataset)
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is unreadable ({e}): pass a new --run-dir") from None
    if stored.keys() != arrays.keys() or any(stored[k].shape != v.shape or not np.allclose(stored[k], v, rtol=1e-5, atol=1e-6)
                                             for k, v in arrays.items()):
        raise UserError(f"{path} holds other data than the run's configuration gives now (was the data file changed?): "
                        "restore it, or pass a new --run-dir")
    return True


def trained(cfg: WidthSweepConfig, dataset: data.Dataset, run_dir: str, width: int, opt: str) -> dict:
    """Params of every seed of one (width, optimizer), stacked on axis S: loaded if saved, else trained and saved."""
    seeds = cfg.seed_list()
    dirs = [os.path.join(run_dir, "checkpoints", checkpoint_name(width, opt, s)) for s in seeds]
    model_cfg = relu.ReluConfig(dataset.d_in, width, cfg.bias)
    if all(checkpoints.is_complete(d) for d in dirs):
        loaded = [checkpoints.load_checkpoint(d) for d in dirs]
        for d, (_, meta) in zip(dirs, loaded):
            if meta.get("model_config") != model_cfg.to_dict():
                raise UserError(f"checkpoint {d} is for architecture {meta.get('model_config')}, expected {model_cfg.to_dict()}: pass a new --run-dir")
        _log_trained(run_dir, [meta for _, meta in loaded])
        return batching.stack([p for p, _ in loaded])
    objective = _objective(dataset.task)
    params_S, loss_ST = training.train(
        _init_fn(model_cfg), objective,
        optimizers.make(opt, cfg.lr_of(opt), cfg.decay_of(opt), relu.MUON_MATRICES),
        seeds, dataset.x_train, dataset.y_train, cfg.steps, cfg.strategy,
    )
    params_S, loss_ST = jax.device_get(params_S), np.asarray(loss_ST)
    final = np.asarray(jax.vmap(objective, in_axes=(0, None, None))(params_S, dataset.x_train, dataset.y_train))
    if not np.all(np.isfinite(final)):
        raise UserError(f"training {opt} at width {width} diverged (loss {final}): lower its learning rate with --lr {opt}=...")
    every = max(1, cfg.steps // 100)
    metas = []
    for i, (seed, d) in enumerate(zip(seeds, dirs)):
        meta = {
            "model": "relu", "model_config": model_cfg.to_dict(), "optimizer": opt,
            "lr": cfg.lr_of(opt), "weight_decay": cfg.decay_of(opt), "seed": seed, "steps": cfg.steps,
            "task": dataset.task, "data": cfg.data_config().__dict__, "final_train_loss": float(final[i]),
            "loss_every": every, "loss_curve": loss_ST[i, ::every].tolist(),
        }
        if not checkpoints.is_complete(d):  # a seed saved before an interruption is kept (retraining it is bit-identical)
            checkpoints.save_checkpoint(d, batching.take(params_S, i), meta, export_arrays=True)
        metas.append(meta)
    _log_trained(run_dir, metas)
    return params_S


def _log_trained(run_dir: str, metas: list[dict]) -> None:
    """Append a ``trained`` line to ``metrics.jsonl`` for every checkpoint not logged yet, so the
    log is complete and free of duplicates however often the sweep was interrupted."""
    path = os.path.join(run_dir, "metrics.jsonl")
    logged, text = set(), ""
    if os.path.isfile(path):
        with open(path) as f:
            text = f.read()
            for line in text.splitlines():
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                logged.add((e.get("width"), e.get("optimizer"), e.get("seed")))
    lines = [json.dumps({"event": "trained", "width": m["model_config"]["width"], "optimizer": m["optimizer"], "seed": m["seed"],
                         "final_train_loss": m["final_train_loss"], "loss_every": m.get("loss_every"),
                         "loss_curve": m.get("loss_curve")})
             for m in metas if (m["model_config"]["width"], m["optimizer"], m["seed"]) not in logged]
    if lines:
        with open(path, "a") as f:
            f.write(("\n" if text and not text.endswith("\n") else "") + "\n".join(lines) + "\n")


@functools.cache
def _init_fn(model_cfg: relu.ReluConfig):
    """``key -> params`` of one architecture; cached so repeated training reuses its compilation."""
    return functools.partial(relu.init, cfg=model_cfg)


@functools.cache
def _objective(task: str):
    """``(params, x, y) -> training loss`` of a task; cached like :func:`_init_fn`."""
    loss = losses.for_task(task)

    def objective(params, x, y):
        return loss(relu.apply(params, x), y)

    return objective


def pair_list(cfg: WidthSweepConfig) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """Every unordered pair of solutions ``((opt_a, seed_a), (opt_b, seed_b))`` of one width,
    optimizers in config order."""
    sols = [(opt, s) for opt in cfg.optimizers for s in cfg.seed_list()]
    return list(itertools.combinations(sols, 2))


def path_optimizer_of(cfg: WidthSweepConfig, opt_a: str, opt_b: str) -> str:
    """The endpoints' own optimizer for a same-optimizer pair, else ``cross_path_optimizer``."""
    return optimizers.path_optimizer(opt_a, opt_b, cfg.cross_path_optimizer)


def _pairs_path(run_dir: str, width: int) -> str:
    return os.path.join(run_dir, "pairs", f"w{width:04d}.json")


def _stored_pairs(run_dir: str, width: int) -> list[dict] | None:
    """Width ``width``'s rows if its pairs are measured and stored in the current schema (rows with a ``curve``),
    else None (a run directory of an older connect is remeasured from its checkpoints)."""
    try:
        with open(_pairs_path(run_dir, width)) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) and all(isinstance(r, dict) and "curve" in r for r in rows) else None


def measured(cfg: WidthSweepConfig, dataset: data.Dataset, run_dir: str, width: int, params: dict) -> list[dict]:
    """Rows of every pair × path × alignment at one width, from ``params[opt]`` (seeds stacked,
    as :func:`trained` returns them); loaded from ``pairs/`` if already saved."""
    stored = _stored_pairs(run_dir, width)
    if stored is not None:
        return stored
    seeds = cfg.seed_list()
    pick = lambda opt, s: batching.take(params[opt], seeds.index(s))
    groups: dict[str, list] = {}
    for (oa, sa), (ob, sb) in pair_list(cfg):
        groups.setdefault(path_optimizer_of(cfg, oa, ob), []).append(((oa, sa), (ob, sb)))
    settings = measure.PathSettings(tuple(cfg.paths), cfg.path_steps, cfg.path_t_samples, cfg.t_points, cfg.refine)
    rows = []
    for g, (path_opt, pairs) in enumerate(groups.items()):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(PATH_SEED), width), g)
        measured_rows = measure.measure_raw_and_aligned(
            [pick(*a) for a, _ in pairs], [pick(*b) for _, b in pairs], dataset,
            optimizers.make(path_opt, cfg.lr_of(path_opt), cfg.decay_of(path_opt), relu.MUON_MATRICES),
            cfg.weight_decay, key, settings, cfg.strategy,
        )
        for m in measured_rows:
            (oa, sa), (ob, sb) = pairs[m.pop("pair")]
            rows.append({
                "width": width, "pair_type": f"{oa}-{ob}", "opt_a": oa, "seed_a": sa, "opt_b": ob, "seed_b": sb,
                "same_optimizer": oa == ob, "path_optimizer": "" if m["path"] == "linear" else path_opt, **m,
            })
    rows.sort(key=_row_order(cfg))
    write_json_atomic(_pairs_path(run_dir, width), rows)
    return rows


def _row_order(cfg: WidthSweepConfig):
    opt_rank = {o: i for i, o in enumerate(cfg.optimizers)}
    return lambda r: (r["width"], opt_rank[r["opt_a"]], r["seed_a"], opt_rank[r["opt_b"]], r["seed_b"],
                      cfg.paths.index(r["path"]), r["alignment"] != "raw")


def collect(cfg: WidthSweepConfig, run_dir: str) -> list[dict]:
    rows = []
    for width in cfg.widths:
        with open(_pairs_path(run_dir, width)) as f:
            rows.extend(json.load(f))
    return rows


def write_results(run_dir: str, rows: list[dict]) -> None:
    """``results.json`` (every row, curves included) and ``results.csv`` (scalar columns)."""
    write_json_atomic(os.path.join(run_dir, "results.json"), rows)
    columns = [c for c in SCALAR_COLUMNS if any(c in r for r in rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: (f"{r[c]:.8g}" if isinstance(r.get(c), float) else r.get(c, "")) for c in columns})
    write_text_atomic(os.path.join(run_dir, "results.csv"), buf.getvalue())


def summary(rows: list[dict], metric: str = "barrier_train") -> list[dict]:
    """Mean ± std of ``metric`` over pairs per (width, pair type, path, alignment)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["width"], r["pair_type"], r["path"], r["alignment"]), []).append(r[metric])
    return [{"width": k[0], "pair_type": k[1], "path": k[2], "alignment": k[3], "n": len(v),
             "mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in sorted(groups.items())]
