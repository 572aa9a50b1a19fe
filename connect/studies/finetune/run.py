"""Finetuning study: optimizer–model consistency (Liu, Wang & Zhang, arXiv 2605.06654).

A pretrained language model of any family of :mod:`connect.models` (GPT-2, Llama/Qwen2/Mistral, GPT-NeoX; a
connect ``train-lm`` checkpoint or a Hugging Face directory, :func:`connect.lm.training.load`) is finetuned on a task (:mod:`connect.lm.tasks`) by every *method*
— full finetuning with an optimizer of :data:`connect.optimizers.LM_OPTIMIZERS` (``adamw``, ``muon``,
``lion``, ``momentum``), or ``lora`` (:mod:`connect.lm.lora`, adapters trained with ``lora_optimizer``; also
written ``lora-<optimizer>``) — at each learning rate of a grid, for a fixed step budget. Each
*point* (pretrained, task, data size, method, lr, seed) records:

* **forgetting** ``F = L_val(θ_ft) − L_val(θ_pre)`` on the pretraining corpus's val split (and on a
  second corpus when given) — the study's measure of forgetting, ``F = 0`` when nothing moved;
* **learning**: held-out task loss (answer tokens, nats) and exact-match accuracy (greedy), before and
  after, and a learning curve (train batch loss, held-out loss every ``eval_every`` steps);
* the **linear path** ``θ(t) = (1 − t) θ_pre + t θ_ft`` on a ``path_points`` t-grid: corpus and task
  losses along it and their barriers ``max_t [L(t) − ((1−t)L(0) + tL(1))]``
  (:func:`connect.barrier.barrier`, Zhang et al. arXiv 2605.09991 eq. (1)), and the spectral norm and
  stable rank of each hidden matrix along it (means over layers);
* the **update** ``ΔW = W_ft − W_pre`` of every hidden matrix and layer, named as the family names them
  (:func:`connect.studies.finetune.analysis.delta_w_stats`);
* the pretrained network's **activation norms** on the task (:func:`connect.studies.finetune.analysis.activation_norms`).

The step's learning rate multiplies the whole update, ``θ ← θ − η_k (u + λθ)`` with
``η_k = lr · schedule(k)`` passed as an array: :func:`connect.optimizers.make_lm` built at ``lr = 1``
gives ``−(u + λθ)`` (decay is multiplied by the learning rate there too), so every lr of the grid
reuses one compiled step.

Run directory::

    OUT/config.json              the FinetuneConfig (the settings shared by all points must match on a rerun)
    OUT/points/<id>.json         one finished point, written atomically; a rerun skips it (resume)
    OUT/summary.json             Pareto fronts and "least forgetting at equal task performance" per pretraining optimizer
    OUT/figures/*.png|pdf        drawn from the point files only (:func:`connect.studies.finetune.plots.plot`)

This module computes and writes; :mod:`connect.studies.finetune.config` holds the settings,
:mod:`connect.studies.finetune.analysis` the statistics and the summary, :mod:`connect.studies.finetune.plots` the figures.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from connect import barrier, checkpoints, models, optimizers, paths, schedules
from connect.errors import UserError
from connect.io import check_directory, claim_directory, run_lock, write_json_atomic
from connect.lm import corpus, lora, tasks
from connect.lm import paths as lm_paths
from connect.lm import training as lm_training
from connect.models import LMConfig
from connect.studies.finetune.analysis import activation_norms, delta_w_stats, load_points, summarize
from connect.studies.finetune.config import GRID_FIELDS, FinetuneConfig, method_optimizer


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pretrained model: its label (unique in the study), path, params, config and pretraining optimizer."""

    label: str
    path: str
    params: dict
    model_cfg: LMConfig
    optimizer: str  # "adamw", "muon", …; "unknown" when the checkpoint does not say (e.g. Hugging Face)


def load_pretrained(paths_: Sequence[str]) -> list[Pretrained]:
    """Each checkpoint with a unique label (its directory name, numbered when repeated)."""
    out, seen = [], {}
    for path in paths_:
        params, model_cfg = lm_training.load(path)
        base = os.path.basename(os.path.normpath(path)) or "model"
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(Pretrained(label, path, jax.tree.map(jnp.asarray, params), model_cfg, checkpoints.recorded_optimizer(path) or "unknown"))
    return out


def run(cfg: FinetuneConfig, out: str, *, progress: bool = True, finish=None) -> dict:
    """Finetune every point of ``cfg`` not yet in ``out`` and write ``summary.json`` (see the module docstring);
    returns the summary. Every input — the config (a seed, method, learning rate, data size or pretrained
    checkpoint given twice is refused), the study directory, the checkpoints, corpora and tasks — is checked
    before anything is written; then ``out`` is written holding :func:`connect.io.run_lock`, and ``finish(out)``
    (the figures, :func:`connect.studies.finetune.plots.plot`) runs last under it."""
    pretrained, val, second, made = _check(cfg, out)
    with run_lock(out):
        _claim_out(out, cfg)
        bar = tqdm(_grid(cfg, pretrained), desc="finetune", unit="point", disable=not progress)
        baselines: dict = {}
        for m, task_name, n_train, method, lr, seed in bar:
            pid = point_id(m.label, task_name, n_train, method, lr, seed)
            path = os.path.join(out, "points", pid + ".json")
            if _is_done(path):
                continue
            bar.set_postfix_str(pid)
            task, key = made[(task_name, n_train)], (m.label, task_name, n_train)
            if key not in baselines:
                baselines[key] = _baseline(m, task, cfg, val, second)
            result = finetune_point(m, task, method, lr, seed, cfg, val, second, baselines[key])
            write_json_atomic(path, {"id": pid, "pretrained": m.label, "pretrained_path": m.path, "pretraining_optimizer": m.optimizer,
                                     "task": task_name, "n_train": n_train, "method": method, "lr": lr, "seed": seed,
                                     **result, "done": True})
        bar.close()
        summary = summarize(load_points(out))
        write_json_atomic(os.path.join(out, "summary.json"), summary)
        if finish is not None:
            finish(out)
    return summary


def _check(cfg: FinetuneConfig, out: str):
    """``(pretrained models, val tokens, second corpus's val tokens or None, {(task, n_train): Task})`` after checking every
    input of :func:`run` (writes nothing)."""
    cfg.validate()
    _check_distinct(cfg)
    check_directory(out, cfg.to_dict(), ignore=GRID_FIELDS)
    pretrained = load_pretrained(cfg.pretrained)
    val = corpus.load(cfg.corpus or None, val_fraction=cfg.val_fraction).val
    second = corpus.load(cfg.second_corpus, val_fraction=cfg.val_fraction).val if cfg.second_corpus else None
    for m in pretrained:
        limit = m.model_cfg.context_limit
        if cfg.context > limit:
            raise UserError(f"context {cfg.context} exceeds {m.label}'s context limit {limit}: use --context {limit} or less")
        models.family(m.model_cfg).check_context(m.model_cfg, cfg.context)
    grid = _grid(cfg, pretrained)
    made = {}
    for _, task_name, n_train, *_ in grid:
        if (task_name, n_train) not in made:
            made[task_name, n_train] = task = tasks.make(task_name, seed=cfg.task_seed, n_train=n_train, n_heldout=cfg.n_heldout)
            for examples in (task.train, task.heldout):  # an example longer than context fails now
                tasks.encode(examples, cfg.context)
    if any(method_optimizer(method, cfg.lora_optimizer)[1] for *_, method, _, _ in grid):
        for m in pretrained:  # the adapters' shapes only: a rank too large fails now
            jax.eval_shape(lambda p, c=m.model_cfg: lora.init(jax.random.key(0), p, c, cfg.lora_rank, cfg.lora_alpha,
                                                              cfg.lora_targets).adapters, m.params)
    return pretrained, val, second, made


def _check_distinct(cfg: FinetuneConfig) -> None:
    """A value listed twice would run a point twice or merge two into one file: refused in one line."""
    real = [os.path.realpath(p) for p in cfg.pretrained]
    for i, p in enumerate(real):
        if p in real[:i]:
            first = cfg.pretrained[real.index(p)]
            same = "" if first == cfg.pretrained[i] else f" (as {first} and {cfg.pretrained[i]})"
            raise UserError(f"--pretrained lists {first} twice{same}: give each checkpoint once")
    lists = {"seeds": cfg.seeds, "methods": cfg.methods, "data-sizes": cfg.data_sizes, "size-tasks": cfg.size_tasks,
             **{f"lrs.{m}": cfg.lr_grid(m) for m in cfg.methods}}
    for name, values in lists.items():
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise UserError(f"{name} lists {twice[0]} twice: give each once")


def point_id(label: str, task: str, n_train: int, method: str, lr: float, seed: int) -> str:
    """The file name of a point, e.g. ``adamw-0__arithmetic-n512__muon__lr0.001__s0``."""
    task = os.path.basename(task)
    return f"{label}__{task}-n{n_train}__{method}__lr{lr:g}__s{seed}"


def finetune_point(m: Pretrained, task: tasks.Task, method: str, lr: float, seed: int, cfg: FinetuneConfig,
                   val: np.ndarray, second: np.ndarray | None, baseline: dict) -> dict:
    """Finetune ``m`` on ``task`` with ``method`` at ``lr`` (seed ``seed``) and measure it (module docstring)."""
    _, is_lora = method_optimizer(method, cfg.lora_optimizer)
    model_cfg, pre = m.model_cfg, m.params
    train = tasks.encode(task.train, cfg.context)
    held = tasks.encode(task.heldout, cfg.context)
    theta, opt_state, step_fn = trainer(m, method, cfg, seed)
    n_trainable = sum(int(x.size) for x in jax.tree.leaves(theta))
    lrs_K = lr * _schedule_values(cfg)
    curve = []
    effective = (lambda th: lora.apply_lora(pre, th)) if is_lora else (lambda th: th)
    for k in range(cfg.steps):
        idx_B = np.random.default_rng([seed, k]).integers(0, len(task.train), cfg.batch_size)
        theta, opt_state, loss = step_fn(theta, pre if is_lora else None, opt_state, jnp.float32(lrs_K[k]),
                                         train.x_NxT[idx_B], train.y_NxT[idx_B], train.mask_NxT[idx_B])
        if (k + 1) % cfg.eval_every == 0 or k + 1 == cfg.steps:
            curve.append({"step": k + 1, "train_loss": float(loss),
                          "heldout_loss": tasks.answer_loss(effective(theta), model_cfg, held, cfg.batch_size)})
    post = lora.merge(pre, theta) if is_lora else jax.device_get(theta)
    post = jax.tree.map(jnp.asarray, post)
    after = _measures(post, model_cfg, task, cfg, val, second)
    ts_T = barrier.grid(cfg.path_points)
    nodes_K = jax.tree.map(lambda a, b: jnp.stack([a, b]), pre, post)
    along = [_path_losses(_linear_point(nodes_K, jnp.float32(t)), model_cfg, held, cfg, val) for t in ts_T.tolist()]
    corpus, task = (barrier.curve(ts_T, [a[i] for a in along]) for i in (0, 1))
    result = {
        "n_trainable": n_trainable,
        "forgetting": after["val_loss"] - baseline["val_loss"],
        "val_loss_before": baseline["val_loss"], "val_loss_after": after["val_loss"],
        "task_loss_before": baseline["heldout_loss"], "task_accuracy_before": baseline["heldout_accuracy"],
        "task_loss": after["heldout_loss"], "task_accuracy": after["heldout_accuracy"],
        "train_loss": after["train_loss"], "train_accuracy": after["train_accuracy"],
        "curve": curve,
        "path": {"t": corpus["t"], "corpus_loss": corpus["loss"], "task_loss": task["loss"],
                 "corpus_barrier": corpus["barrier"], "task_barrier": task["barrier"], **_path_spectra(nodes_K, model_cfg, ts_T)},
        "delta_w": delta_w_stats(pre, post, cfg.top_k, model_cfg),
        "activation_norms": baseline["activation_norms"],
    }
    if second is not None:
        result["second_val_loss_before"] = baseline["second_val_loss"]
        result["second_val_loss_after"] = after["second_val_loss"]
        result["second_forgetting"] = after["second_val_loss"] - baseline["second_val_loss"]
    return result


def trainer(m: Pretrained, method: str, cfg: FinetuneConfig, seed: int = 0):
    """``(θ, opt_state, step)`` of ``method`` on ``m``: ``θ`` the full params or LoRA adapters (init from
    ``seed``) and ``step(θ, base, opt_state, η, x, y, mask) -> (θ, opt_state, loss)`` with ``base`` the
    pretrained params for LoRA (None for full finetuning) and ``η`` the step's learning rate."""
    name, is_lora = method_optimizer(method, cfg.lora_optimizer)
    if is_lora:
        theta = lora.init(jax.random.key(seed), m.params, m.model_cfg, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    else:
        theta = m.params
    opt, step = _trainer(m, name, is_lora, cfg, theta)
    return theta, opt.init(theta), step


# --- plumbing -------------------------------------------------------------------------------------


def _grid(cfg: FinetuneConfig, pretrained: Sequence[Pretrained]) -> list[tuple]:
    """Every point: the main task over methods × lrs × seeds, then the data-size comparison."""
    grid = [(m, cfg.task, cfg.n_train, method, lr, seed)
            for m in pretrained for method in cfg.methods for lr in cfg.lr_grid(method) for seed in cfg.seeds]
    for m in pretrained:
        method = cfg.size_method if cfg.size_method != "same" else (m.optimizer if m.optimizer in optimizers.LM_OPTIMIZERS else "adamw")
        grid_lrs = cfg.lr_grid(method)
        lr = cfg.size_lr or grid_lrs[len(grid_lrs) // 2]
        grid += [(m, task, n, method, lr, seed) for task in cfg.size_tasks for n in cfg.data_sizes for seed in cfg.seeds]
    return grid


def _baseline(m: Pretrained, task: tasks.Task, cfg: FinetuneConfig, val, second) -> dict:
    """The pretrained model's numbers that every point of ``(m, task)`` compares with."""
    base = _measures(m.params, m.model_cfg, task, cfg, val, second)
    base["activation_norms"] = activation_norms(m.params, m.model_cfg, tasks.encode(task.heldout, cfg.context))
    return base


def _measures(params, model_cfg, task: tasks.Task, cfg: FinetuneConfig, val, second) -> dict:
    held, train = tasks.encode(task.heldout, cfg.context), tasks.encode(task.train[:cfg.n_heldout], cfg.context)
    out = {"val_loss": _corpus_loss(params, model_cfg, val, cfg),
           "heldout_loss": tasks.answer_loss(params, model_cfg, held, cfg.batch_size),
           "heldout_accuracy": tasks.accuracy(params, model_cfg, held, cfg.batch_size),
           "train_loss": tasks.answer_loss(params, model_cfg, train, cfg.batch_size),
           "train_accuracy": tasks.accuracy(params, model_cfg, train, cfg.batch_size)}
    if second is not None:
        out["second_val_loss"] = _corpus_loss(params, model_cfg, second, cfg)
    return out


def _path_spectra(nodes_K, model_cfg: LMConfig, ts_T) -> dict:
    """Spectral norm and stable rank of each kind of hidden matrix (:func:`connect.models.layer_matrices`) along
    the path (mean over layers, per t), by :func:`connect.lm.paths.spectra_along_path` (the core's spectra)."""
    per_layer = models.layer_matrices(model_cfg)
    spec = lm_paths.spectra_along_path("linear", nodes_K, model_cfg, ts_T, names=[n for ns in per_layer.values() for n in ns],
                                       constraint_optimizers=())
    return {stat: {kind: np.mean([spec["matrices"][n][stat] for n in names], axis=0).tolist() for kind, names in per_layer.items()}
            for stat in ("spectral_norm", "stable_rank")}


@jax.jit
def _linear_point(nodes_K, t):
    return paths.point("linear", nodes_K, t)


def _path_losses(params, model_cfg, held, cfg, val) -> tuple[float, float]:
    return _corpus_loss(params, model_cfg, val, cfg), tasks.answer_loss(params, model_cfg, held, cfg.batch_size)


def _corpus_loss(params, model_cfg, tokens, cfg: FinetuneConfig) -> float:
    return lm_training.evaluate(params, model_cfg, tokens, batch_size=cfg.batch_size, context=cfg.context,
                                max_batches=cfg.eval_batches or None)


def _schedule_values(cfg: FinetuneConfig) -> np.ndarray:
    """``schedule(k)`` for k < steps at peak 1."""
    if cfg.steps == 0:
        return np.zeros(0, np.float32)
    sched = schedules.make(cfg.schedule, 1.0, cfg.steps, cfg.warmup_frac)
    return np.asarray(jax.vmap(sched)(jnp.arange(cfg.steps)), np.float32)


_TRAINERS: dict = {}


def _trainer(m: Pretrained, name: str, is_lora: bool, cfg: FinetuneConfig, theta):
    """``(optimizer, step)`` for optimizer ``name`` on the full params or on adapters ``theta``, built at
    ``lr = 1`` and cached per model and optimizer settings, so every lr and seed reuses one compiled
    step ``(θ, base, opt_state, η, x, y, mask) -> (θ, opt_state, loss)`` (``base``: the pretrained
    params under the adapters, None for full finetuning). The gradient and the update are two jitted
    programs: the gradient's (the expensive compilation) is shared by every optimizer."""
    clip = cfg.clip_norm or None
    key = (m.model_cfg, name, is_lora, cfg.weight_decay, clip, jax.tree.structure(theta),
           tuple((x.shape, x.dtype) for x in jax.tree.leaves(theta)))
    if key in _TRAINERS:
        return _TRAINERS[key]
    if is_lora:
        opt = lora.optimizer(name, theta, lr=1.0, weight_decay=cfg.weight_decay, clip_norm=clip)
    else:
        opt = optimizers.make_lm(name, theta, lr=1.0, weight_decay=cfg.weight_decay, clip_norm=clip,
                                 matrices=models.family(m.model_cfg).MUON_MATRICES)
    grad_fn = _grad_fn(m.model_cfg, is_lora)

    @jax.jit
    def update(theta, opt_state, grads, lr):
        updates, opt_state = opt.update(grads, opt_state, theta)
        return optax.apply_updates(theta, jax.tree.map(lambda u: lr * u, updates)), opt_state

    def step(theta, base, opt_state, lr, x_BxT, y_BxT, m_BxT):
        loss, grads = grad_fn(theta, base, x_BxT, y_BxT, m_BxT)
        theta, opt_state = update(theta, opt_state, grads, lr)
        return theta, opt_state, loss

    _TRAINERS[key] = (opt, step)
    return _TRAINERS[key]


@functools.cache
def _grad_fn(model_cfg: LMConfig, is_lora: bool):
    """Jitted ``(θ, base, x, y, mask) -> (loss, ∇_θ loss)`` of the answer-token loss (:func:`connect.lm.tasks.masked_loss`)."""

    def loss_of(theta, base, x_BxT, y_BxT, m_BxT):
        params = lora.apply_lora(base, theta) if is_lora else theta
        return tasks.masked_loss(params, x_BxT, y_BxT, m_BxT, model_cfg)

    return jax.jit(jax.value_and_grad(loss_of))


def _is_done(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return bool(json.load(f).get("done"))
    except (OSError, ValueError):
        return False


def _claim_out(out: str, cfg: FinetuneConfig) -> None:
    """Write ``config.json``, or check that the settings every point depends on match the stored ones
    (the grid of points may grow: its fields are stored anew)."""
    claim_directory(out, cfg.to_dict(), ignore=GRID_FIELDS, rewrite=True)
