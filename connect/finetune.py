"""Finetuning study: optimizer–model consistency (Liu, Wang & Zhang, arXiv 2605.06654).

A pretrained GPT-2 (a connect ``train-lm`` checkpoint or a Hugging Face directory,
:func:`connect.lm_training.load`) is finetuned on a task (:mod:`connect.tasks`) by every *method*
— full finetuning with an optimizer of :data:`connect.optimizers.LM_OPTIMIZERS` (``adamw``, ``muon``,
``lion``, ``sgd``), or ``lora`` (:mod:`connect.lora`, adapters trained with ``lora_optimizer``; also
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
* the **update** ``ΔW = W_ft − W_pre`` of every hidden matrix and layer (:func:`delta_w_stats`);
* the pretrained network's **activation norms** on the task (:func:`activation_norms`).

The step's learning rate multiplies the whole update, ``θ ← θ − η_k (u + λθ)`` with
``η_k = lr · schedule(k)`` passed as an array: :func:`connect.optimizers.make_lm` built at ``lr = 1``
gives ``−(u + λθ)`` (decay is multiplied by the learning rate there too), so every lr of the grid
reuses one compiled step.

Run directory::

    OUT/config.json              the FinetuneConfig (the settings shared by all points must match on a rerun)
    OUT/points/<id>.json         one finished point, written atomically; a rerun skips it (resume)
    OUT/summary.json             Pareto fronts and "least forgetting at equal task performance" per pretraining optimizer
    OUT/figures/*.png|pdf        drawn from the point files only (:func:`plot`)
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import os
from typing import ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from connect import barrier, config, corpus, lm_training, lora, optimizers, paths, schedules, spectra, tasks
from connect.config import _f
from connect.errors import UserError
from connect.io import claim_directory, write_json_atomic
from connect.models import gpt2

#: Fields of :class:`FinetuneConfig` that do not change a point's numbers (a rerun may change them).
_GRID_FIELDS = ("pretrained", "methods", "lrs", "seeds", "data_sizes", "size_tasks", "size_method", "size_lr")


@dataclasses.dataclass
class FinetuneConfig:
    """Everything that determines a finetuning study (stored as the run's ``config.json``); the defaults
    are the ``[tiny]`` table of ``experiments/finetune_consistency.toml`` without its data-size comparison."""

    TABLE: ClassVar[str] = "finetune"
    EXAMPLE: ClassVar[str] = "experiments/finetune_consistency.toml"

    pretrained: list = _f([], "pretrained checkpoints: connect train-lm run/seed/step directories or Hugging Face directories")
    task: str = _f("arithmetic", f"task: {', '.join(tasks.NAMES)} or a text file of prompt<TAB>answer lines")
    n_train: int = _f(512, "train examples of the task")
    n_heldout: int = _f(128, "held-out examples of the task")
    task_seed: int = _f(0, "seed of the task's examples and split")
    methods: list = _f(["adamw", "muon", "lion", "sgd", "lora"], "finetuning methods: adamw, muon, lion, sgd (full) or lora / lora-<optimizer>")
    lrs: dict = _f({"adamw": [3e-5, 1e-4, 3e-4, 1e-3], "muon": [1e-4, 3e-4, 1e-3, 3e-3], "lion": [3e-6, 1e-5, 3e-5, 1e-4],
                    "sgd": [1e-3, 3e-3, 1e-2, 3e-2], "lora": [3e-4, 1e-3, 3e-3, 1e-2]},
                   "learning-rate grid per method (positive numbers); lora-<optimizer> falls back to lora's", value_type=None)
    steps: int = _f(150, "finetuning steps per point (0: no update, forgetting 0)")
    batch_size: int = _f(32, "task examples per step, also the batch of the corpus evaluation")
    weight_decay: float = _f(0.0, "decoupled weight decay λ on matrices (multiplied by the learning rate)")
    clip_norm: float = _f(1.0, "clip the gradient to this global norm (0: no clipping)")
    schedule: str = _f("cosine", "learning-rate schedule: constant, cosine or wsd")
    warmup_frac: float = _f(0.05, "fraction of the steps of linear warmup")
    lora_rank: int = _f(8, "LoRA rank r (at most min(in, out) of every adapted matrix)")
    lora_alpha: float = _f(16.0, "LoRA scale α (the update is (α/r) A B)")
    lora_optimizer: str = _f("adamw", "optimizer of the adapters for the method 'lora'")
    lora_targets: list = _f(["attn", "mlp"], "adapted matrices: attn, mlp, attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj")
    seeds: list = _f([0], "finetuning seeds (batch order and LoRA init)")
    context: int = _f(32, "tokens per example and per corpus window (at most the model's n_positions)")
    corpus: str = _f("", "pretraining corpus whose val loss measures forgetting (empty: the embedded corpus)")
    second_corpus: str = _f("", "a second corpus for forgetting (empty: none)")
    val_fraction: float = _f(0.05, "val fraction of the corpora's documents")
    eval_batches: int = _f(16, "val batches (of batch_size windows) per forgetting evaluation (0: the whole split)")
    eval_every: int = _f(25, "steps between learning-curve evaluations of the held-out task loss")
    path_points: int = _f(5, "t points of the linear path back to the pretrained model (≥ 2)")
    top_k: int = _f(8, "top singular directions of W_pre that ΔW's alignment is measured against")
    data_sizes: list = _f([], "train sizes of the memorisation-vs-pattern comparison (empty: skip it)")
    size_tasks: list = _f(["memorize", "modadd"], "tasks of the data-size comparison")
    size_method: str = _f("same", "method of the data-size comparison ('same': each model's pretraining optimizer)")
    size_lr: float = _f(0.0, "learning rate of the data-size comparison (0: the middle of the method's grid)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lr_grid(self, method: str) -> list[float]:
        grid = self.lrs.get(method, self.lrs.get("lora") if method.startswith("lora") else None)
        if grid is None:
            raise UserError(f"no learning rates for method {method!r}: add lrs.{method} = [...] to the config")
        return [float(x) for x in (grid if isinstance(grid, (list, tuple)) else [grid])]

    def validate(self) -> FinetuneConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        if not self.pretrained:
            raise UserError("no pretrained checkpoint: pass --pretrained RUN [RUN ...] (connect train-lm runs or Hugging Face directories)")
        for m in self.methods:
            method_optimizer(m, self.lora_optimizer)
            for lr in self.lr_grid(m):
                if not (math.isfinite(lr) and lr > 0):
                    raise UserError(f"learning rate {lr} of method {m} is not positive: use a grid of positive learning rates")
        checks = [
            (self.n_train >= 1 and self.n_heldout >= 1, "n_train and n_heldout must be ≥ 1"),
            (self.steps >= 0, f"steps must be ≥ 0, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}"),
            (self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}"),
            (self.clip_norm >= 0, f"clip_norm must be ≥ 0 (0: no clipping), got {self.clip_norm}"),
            (self.schedule in schedules.NAMES, f"unknown schedule {self.schedule!r}: use one of {', '.join(schedules.NAMES)}"),
            (self.path_points >= 2, f"path_points must be ≥ 2, got {self.path_points}"),
            (self.top_k >= 1, f"top_k must be ≥ 1, got {self.top_k}"),
            (self.eval_every >= 1, f"eval_every must be ≥ 1, got {self.eval_every}"),
            (self.context >= 2, f"context must be ≥ 2, got {self.context}"),
            (bool(self.seeds) and all(isinstance(s, int) and s >= 0 for s in self.seeds), f"seeds must be non-negative integers, got {self.seeds}"),
            (all(isinstance(n, int) and n >= 1 for n in self.data_sizes), f"data_sizes must be positive integers, got {self.data_sizes}"),
            (self.size_lr >= 0, f"size_lr must be ≥ 0 (0: the middle of the grid), got {self.size_lr}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        if self.size_method != "same":
            method_optimizer(self.size_method, self.lora_optimizer)
        return self


def load_config(path: str, table: str = "finetune", **overrides) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of table ``table`` of TOML file ``path`` (e.g. ``tiny`` in
    ``experiments/finetune_consistency.toml``), with fields ``overrides`` on top."""
    doc = config.read_toml(path, FinetuneConfig.EXAMPLE)
    if table not in doc:
        raise UserError(f"config file {path} has no [{table}] table: use one of {', '.join(doc) or '(none)'}")
    return config.from_dict({**doc[table], **overrides}, source=f"{path} [{table}]", cls=FinetuneConfig)


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pretrained model: its label (unique in the study), path, params, config and pretraining optimizer."""

    label: str
    path: str
    params: dict
    model_cfg: gpt2.GPT2Config
    optimizer: str  # "adamw", "muon", …; "unknown" when the checkpoint does not say (e.g. Hugging Face)


def method_optimizer(method: str, lora_optimizer: str = "adamw") -> tuple[str, bool]:
    """``(optimizer, is_lora)`` of a method name: ``adamw`` → ``("adamw", False)``, ``lora`` →
    ``(lora_optimizer, True)``, ``lora-muon`` → ``("muon", True)``."""
    is_lora = method == "lora" or method.startswith("lora-")
    name = (lora_optimizer if method == "lora" else method[5:]) if is_lora else method
    if name not in optimizers.LM_OPTIMIZERS:
        raise UserError(f"unknown finetuning method {method!r}: use {', '.join(optimizers.LM_OPTIMIZERS)}, lora or lora-<optimizer>")
    return name, is_lora


def load_pretrained(paths_: Sequence[str]) -> list[Pretrained]:
    """Each checkpoint with a unique label (its directory name, numbered when repeated)."""
    out, seen = [], {}
    for path in paths_:
        params, model_cfg = lm_training.load(path)
        base = os.path.basename(os.path.normpath(path)) or "model"
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(Pretrained(label, path, jax.tree.map(jnp.asarray, params), model_cfg, _pretraining_optimizer(path)))
    return out


def run(cfg: FinetuneConfig, out: str, *, progress: bool = True, plots: bool = True) -> dict:
    """Finetune every point of ``cfg`` not yet in ``out`` (see the module docstring); returns the summary."""
    cfg.validate()
    _claim_out(out, cfg)
    models = load_pretrained(cfg.pretrained)
    val = corpus.load(cfg.corpus or None, val_fraction=cfg.val_fraction).val
    second = corpus.load(cfg.second_corpus, val_fraction=cfg.val_fraction).val if cfg.second_corpus else None
    for m in models:
        if cfg.context > m.model_cfg.n_positions:
            raise UserError(f"context {cfg.context} exceeds {m.label}'s n_positions={m.model_cfg.n_positions}: use --context {m.model_cfg.n_positions} or less")
    grid = _grid(cfg, models)
    bar = tqdm(grid, desc="finetune", unit="point", disable=not progress)
    baselines: dict = {}
    for m, task_name, n_train, method, lr, seed in bar:
        pid = point_id(m.label, task_name, n_train, method, lr, seed)
        path = os.path.join(out, "points", pid + ".json")
        if _is_done(path):
            continue
        bar.set_postfix_str(pid)
        task = tasks.make(task_name, seed=cfg.task_seed, n_train=n_train, n_heldout=cfg.n_heldout)
        key = (m.label, task_name, n_train)
        if key not in baselines:
            baselines[key] = _baseline(m, task, cfg, val, second)
        result = finetune_point(m, task, method, lr, seed, cfg, val, second, baselines[key])
        write_json_atomic(path, {"id": pid, "pretrained": m.label, "pretrained_path": m.path, "pretraining_optimizer": m.optimizer,
                                 "task": task_name, "n_train": n_train, "method": method, "lr": lr, "seed": seed,
                                 **result, "done": True})
    bar.close()
    points = load_points(out)
    summary = summarize(points)
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    if plots:
        summary["figures"] = plot(out)
    return summary


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
    along, spectra_T = [], []
    for t in ts_T.tolist():
        theta_t = _linear_point(nodes_K, jnp.float32(t))
        along.append(_path_losses(theta_t, model_cfg, held, cfg, val))
        spectra_T.append(jax.device_get(_matrix_spectra(theta_t)))
    corpus_T, task_T = np.array([a[0] for a in along]), np.array([a[1] for a in along])
    result = {
        "n_trainable": n_trainable,
        "forgetting": after["val_loss"] - baseline["val_loss"],
        "val_loss_before": baseline["val_loss"], "val_loss_after": after["val_loss"],
        "task_loss_before": baseline["heldout_loss"], "task_accuracy_before": baseline["heldout_accuracy"],
        "task_loss": after["heldout_loss"], "task_accuracy": after["heldout_accuracy"],
        "train_loss": after["train_loss"], "train_accuracy": after["train_accuracy"],
        "curve": curve,
        "path": {"t": ts_T.tolist(), "corpus_loss": corpus_T.tolist(), "task_loss": task_T.tolist(),
                 "corpus_barrier": barrier.barrier(ts_T, corpus_T), "task_barrier": barrier.barrier(ts_T, task_T),
                 **{stat: {name: [float(np.mean(sp[name][stat])) for sp in spectra_T] for name in spectra_T[0]}
                    for stat in ("spectral_norm", "stable_rank")}},
        "delta_w": delta_w_stats(pre, post, cfg.top_k),
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
        theta = lora.init(jax.random.key(seed), m.params, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    else:
        theta = m.params
    opt, step = _trainer(m, name, is_lora, cfg, theta)
    return theta, opt.init(theta), step


def delta_w_stats(pre: dict, post: dict, top_k: int) -> dict:
    """Per hidden matrix (:data:`connect.models.gpt2.MUON_MATRICES`, the fused q|k|v kernel as one
    ``D × 3D`` matrix) and per layer, the update ``ΔW = W_post − W_pre``:

    * ``stable_rank`` ``‖ΔW‖_F²/‖ΔW‖_2²``, ``spectral_norm`` ``‖ΔW‖_2``, ``max_abs`` ``max|ΔW_ij|``,
      ``frobenius`` ``‖ΔW‖_F`` (:mod:`connect.spectra`);
    * ``top_k_alignment`` ``‖U_kᵀ ΔW V_k‖_F² / ‖ΔW‖_F²`` ∈ [0, 1], with ``U_k, V_k`` the top-``k``
      left/right singular vectors of ``W_pre``: the share of the update's energy inside the pretrained
      weights' dominant subspace; a random ΔW gives ``k²/(m n)`` in expectation (``alignment_baseline``).
    """
    out = {}
    for path in gpt2.MUON_MATRICES:
        w_LxMxN = _get(pre, path)
        d_LxMxN = _get(post, path) - w_LxMxN
        k = min(top_k, *w_LxMxN.shape[1:])
        stats = {key: np.asarray(v).tolist() for key, v in _delta_stats(w_LxMxN, d_LxMxN, k).items()}
        stats["alignment_baseline"] = k * k / (w_LxMxN.shape[1] * w_LxMxN.shape[2])
        out["/".join(path[1:-1])] = stats
    return out


def activation_norms(params: dict, model_cfg: gpt2.GPT2Config, enc: tasks.Encoded) -> dict:
    """The network's activations on the task's tokens (pad positions left out), per layer ``l``:
    ``residual_rms`` ``√mean x²`` and ``residual_max_abs`` ``max|x|`` of the residual stream entering
    block ``l`` (and ``final``: entering ``ln_f``), ``mlp_hidden_rms`` of ``gelu(LN₂(a) W_fc + b_fc)``,
    ``attn_out_rms`` and ``mlp_out_rms`` of the two residual branches — the outputs whose scale the
    pretraining optimizer shapes (the study's explanation of the effect)."""
    valid_NxT = np.arange(enc.x_NxT.shape[1])[None, :] < (enc.prompt_len_N + enc.answer_len_N - 1)[:, None]
    stats = _activations(params, jnp.asarray(enc.x_NxT), jnp.asarray(valid_NxT, jnp.float32), model_cfg)
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


def pareto_front(points: Sequence[dict], x: str = "forgetting", y: str = "task_accuracy", maximize_y: bool = True) -> list[int]:
    """Indices of the points no other point dominates, sorted by ``x``: ``q`` dominates ``p`` when
    ``q[x] ≤ p[x]`` and ``q[y]`` is at least as good (``≥`` when ``maximize_y``, else ``≤``), one of
    the two strictly (minimise forgetting, maximise accuracy or minimise task loss). Of points with equal
    ``(x, y)`` the first is kept; points with a non-finite coordinate (diverged) are left out."""
    sign = -1.0 if maximize_y else 1.0
    xy = [(float(p[x]), sign * float(p[y])) for p in points]
    front = []
    for i, (xi, yi) in enumerate(xy):
        if not (math.isfinite(xi) and math.isfinite(yi)):  # a diverged run is on no front
            continue
        dominated = any((xj <= xi and yj <= yi and (xj < xi or yj < yi)) or ((xj, yj) == (xi, yi) and j < i)
                        for j, (xj, yj) in enumerate(xy) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (xy[i][0], xy[i][1]))


def load_points(out: str) -> list[dict]:
    """Every finished point of run directory ``out``, in file-name order."""
    points = []
    for path in sorted(glob.glob(os.path.join(out, "points", "*.json"))):
        with open(path) as f:
            points.append(json.load(f))
    return points


def aggregate(points: Sequence[dict]) -> list[dict]:
    """Means over seeds (and over pretrained checkpoints with the same pretraining optimizer) per
    ``(pretraining optimizer, task, n_train, method, lr)``, with ``n`` the number of points averaged."""
    groups: dict = {}
    for p in points:
        groups.setdefault((p["pretraining_optimizer"], p["task"], p["n_train"], p["method"], p["lr"]), []).append(p)
    rows = []
    for (pre_opt, task, n_train, method, lr), ps in groups.items():
        row = {"pretraining_optimizer": pre_opt, "task": task, "n_train": n_train, "method": method, "lr": lr, "n": len(ps)}
        for key in ("forgetting", "task_accuracy", "task_loss", "train_accuracy", "second_forgetting"):
            if all(key in p for p in ps):
                row[key] = float(np.mean([p[key] for p in ps]))
        row["same_optimizer"] = _is_same(method, pre_opt)
        rows.append(row)
    return rows


def least_forgetting_at_equal_performance(rows: Sequence[dict], y: str = "task_accuracy", maximize_y: bool = True) -> dict:
    """For one pretraining optimizer's rows: the performance level every method reaches,
    ``y* = min_method max_lr y`` (``max_method min_lr`` for a loss), and per method

    * ``forgetting``: the least forgetting among its rows at least that good (``best``: the method
      forgetting least there) — on a coarse lr grid this favours whichever method has a grid point
      just past ``y*``;
    * ``interpolated``: the forgetting at which its Pareto front reaches ``y*``, linear between the
      two front points around it, ``F = F_{i−1} + (y* − y_{i−1}) (F_i − F_{i−1}) / (y_i − y_{i−1})``
      (``F_0`` when already its least-forgetting point is that good; ``best_interpolated``)."""
    by_method: dict = {}
    for r in rows:
        if math.isfinite(r[y]) and math.isfinite(r["forgetting"]):  # diverged runs left out
            by_method.setdefault(r["method"], []).append(r)
    best_y = {m: (max if maximize_y else min)(r[y] for r in rs) for m, rs in by_method.items()}
    target = (min if maximize_y else max)(best_y.values())
    good = lambda r: r[y] >= target if maximize_y else r[y] <= target  # noqa: E731
    forgetting = {m: min(r["forgetting"] for r in rs if good(r)) for m, rs in by_method.items()}
    interpolated = {}
    for m, rs in by_method.items():
        front = [rs[i] for i in pareto_front(rs, y=y, maximize_y=maximize_y)]
        i = next(i for i, r in enumerate(front) if good(r))
        if i == 0:
            interpolated[m] = front[0]["forgetting"]
        else:
            (f0, y0), (f1, y1) = ((front[j]["forgetting"], front[j][y]) for j in (i - 1, i))
            interpolated[m] = f0 + (target - y0) * (f1 - f0) / (y1 - y0)
    return {"metric": y, "target": target, "forgetting": forgetting, "best": min(forgetting, key=forgetting.get),
            "interpolated": interpolated, "best_interpolated": min(interpolated, key=interpolated.get)}


def summarize(points: Sequence[dict]) -> dict:
    """Per (pretraining optimizer, task, n_train): the aggregated rows, each method's Pareto front
    (forgetting vs accuracy and vs task loss) and the least-forgetting method at equal performance."""
    rows = aggregate(points)
    out: dict = {"n_points": len(points), "studies": []}
    keys = sorted({(r["pretraining_optimizer"], r["task"], r["n_train"]) for r in rows})
    for pre_opt, task, n_train in keys:
        rs = [r for r in rows if (r["pretraining_optimizer"], r["task"], r["n_train"]) == (pre_opt, task, n_train)]
        methods = sorted({r["method"] for r in rs})
        fronts = {}
        for m in methods:
            mr = [r for r in rs if r["method"] == m]
            fronts[m] = {"accuracy": [mr[i]["lr"] for i in pareto_front(mr)],
                         "loss": [mr[i]["lr"] for i in pareto_front(mr, y="task_loss", maximize_y=False)]}
        entry = {"pretraining_optimizer": pre_opt, "task": task, "n_train": n_train, "rows": rs, "pareto_lrs": fronts}
        if len(methods) > 1:
            entry["at_equal_accuracy"] = least_forgetting_at_equal_performance(rs)
            entry["at_equal_loss"] = least_forgetting_at_equal_performance(rs, "task_loss", maximize_y=False)
        out["studies"].append(entry)
    return out


def plot(out: str) -> list[str]:
    """Figures of run ``out``, drawn from its point files only (PNG and PDF in ``out/figures``):

    * ``pareto`` — forgetting vs held-out accuracy (top) and loss (bottom), a column per pretraining
      optimizer, each method's points (means over seeds) and Pareto front; the method equal to the
      pretraining optimizer drawn thick with stars;
    * ``learning_curves`` — held-out task loss vs step of each method's best lr (lowest final loss);
    * ``delta_w`` — mean stable rank, spectral norm and top-k alignment of ΔW per method;
    * ``data_sizes`` — held-out accuracy vs train size per task (when the comparison ran).
    """
    import matplotlib

    matplotlib.use("Agg")
    points = load_points(out)
    if not points:
        raise UserError(f"{out} holds no finished point: run `connect study finetune --out {out}` first")
    main = [p for p in points if (p["task"], p["n_train"]) == _main_key(out, points)]
    files = _plot_pareto(out, aggregate(main))
    files += _plot_curves(out, main)
    files += _plot_delta_w(out, main)
    sized = [p for p in points if p not in main]
    if sized:
        files += _plot_sizes(out, aggregate(sized))
    return files


def _main_key(out: str, points) -> tuple:
    path = os.path.join(out, "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            c = json.load(f)
        return os.path.basename(c["task"]) if os.path.isfile(c["task"]) else c["task"], c["n_train"]
    return points[0]["task"], points[0]["n_train"]


def _colors(methods) -> dict:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


def _plot_pareto(out: str, rows: list[dict]) -> list[str]:
    import matplotlib.pyplot as plt

    from connect.plots import save_figure

    pre_opts = sorted({r["pretraining_optimizer"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    colors = _colors(methods)
    fig, axes = plt.subplots(2, len(pre_opts), figsize=(4.6 * len(pre_opts), 8), squeeze=False)
    for j, pre in enumerate(pre_opts):
        for i, (y, maximize, label) in enumerate([("task_accuracy", True, "held-out accuracy"), ("task_loss", False, "held-out task loss")]):
            ax = axes[i, j]
            for m in methods:
                mr = [r for r in rows if r["pretraining_optimizer"] == pre and r["method"] == m]
                if not mr:
                    continue
                same = _is_same(m, pre)
                ax.scatter([r["forgetting"] for r in mr], [r[y] for r in mr], color=colors[m], marker="*" if same else "o",
                           s=80 if same else 25, alpha=0.6)
                front = [mr[k] for k in pareto_front(mr, y=y, maximize_y=maximize)]
                ax.plot([r["forgetting"] for r in front], [r[y] for r in front], color=colors[m], lw=3 if same else 1.2,
                        label=f"{m} (same)" if same else m)
            ax.set_xlabel("forgetting (Δ val loss, nats)")
            ax.set_ylabel(label)
            ax.axvline(0.0, color="0.8", lw=0.8)
            if i == 0:
                ax.set_title(f"pretrained with {pre}")
            ax.legend(fontsize=7)
    fig.suptitle("learning vs forgetting: Pareto front of each finetuning method (means over seeds)")
    fig.tight_layout()
    return save_figure(fig, out, "pareto")


def _plot_curves(out: str, points: list[dict]) -> list[str]:
    import matplotlib.pyplot as plt

    from connect.plots import save_figure

    pre_opts = sorted({p["pretraining_optimizer"] for p in points})
    methods = sorted({p["method"] for p in points})
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(pre_opts), figsize=(4.2 * len(pre_opts), 3.5), squeeze=False)
    for j, pre in enumerate(pre_opts):
        ax = axes[0, j]
        for m in methods:
            ps = [p for p in points if p["pretraining_optimizer"] == pre and p["method"] == m and p["curve"]]
            if not ps:
                continue
            best = min(ps, key=lambda p: p["task_loss"])
            steps = [0] + [c["step"] for c in best["curve"]]
            ax.plot(steps, [best["task_loss_before"]] + [c["heldout_loss"] for c in best["curve"]], color=colors[m],
                    lw=2.5 if _is_same(m, pre) else 1.2, label=f"{m} lr={best['lr']:g}")
        ax.set_xlabel("finetuning step")
        ax.set_ylabel("held-out task loss")
        ax.set_title(f"pretrained with {pre}")
        ax.legend(fontsize=7)
    return save_figure(fig, out, "learning_curves")


def _plot_delta_w(out: str, points: list[dict]) -> list[str]:
    import matplotlib.pyplot as plt

    from connect.plots import save_figure

    pre_opts = sorted({p["pretraining_optimizer"] for p in points})
    methods = sorted({p["method"] for p in points})
    stats = ("stable_rank", "spectral_norm", "top_k_alignment")
    fig, axes = plt.subplots(1, len(stats), figsize=(4.2 * len(stats), 3.5), squeeze=False)
    width = 0.8 / max(len(pre_opts), 1)
    for s_i, stat in enumerate(stats):
        ax = axes[0, s_i]
        for j, pre in enumerate(pre_opts):
            vals = []
            for m in methods:
                ps = [p for p in points if p["pretraining_optimizer"] == pre and p["method"] == m]
                vals.append(float(np.mean([np.mean(d[stat]) for p in ps for d in p["delta_w"].values()])) if ps else np.nan)
            ax.bar(np.arange(len(methods)) + j * width, vals, width, label=f"pretrained {pre}")
        ax.set_xticks(np.arange(len(methods)) + width * (len(pre_opts) - 1) / 2, methods, rotation=30)
        ax.set_title(f"ΔW {stat.replace('_', ' ')} (mean over matrices, layers, lrs)", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, out, "delta_w")


def _plot_sizes(out: str, rows: list[dict]) -> list[str]:
    import matplotlib.pyplot as plt

    from connect.plots import save_figure

    task_names = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(task_names), figsize=(4.2 * len(task_names), 3.5), squeeze=False)
    for j, task in enumerate(task_names):
        ax = axes[0, j]
        for pre in sorted({r["pretraining_optimizer"] for r in rows}):
            rs = sorted((r for r in rows if r["task"] == task and r["pretraining_optimizer"] == pre), key=lambda r: r["n_train"])
            line, = ax.plot([r["n_train"] for r in rs], [r["task_accuracy"] for r in rs], marker="o",
                            label=f"pretrained {pre}, finetuned {rs[0]['method']}: held-out")
            if task != "memorize":  # memorize's held-out split is its train facts
                ax.plot([r["n_train"] for r in rs], [r.get("train_accuracy", np.nan) for r in rs], marker="x", ls="--",
                        color=line.get_color(), label=f"pretrained {pre}: train")
        sizes = sorted({r["n_train"] for r in rows})
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("train examples")
        ax.set_ylabel("exact-match accuracy" + (" (recall of the train facts)" if task == "memorize" else ""))
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, "data_sizes")


# --- plumbing -------------------------------------------------------------------------------------


def _grid(cfg: FinetuneConfig, models: Sequence[Pretrained]) -> list[tuple]:
    """Every point: the main task over methods × lrs × seeds, then the data-size comparison."""
    grid = [(m, cfg.task, cfg.n_train, method, lr, seed)
            for m in models for method in cfg.methods for lr in cfg.lr_grid(method) for seed in cfg.seeds]
    for m in models:
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
        opt = optimizers.make_lm(name, theta, lr=1.0, weight_decay=cfg.weight_decay, clip_norm=clip)
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
def _grad_fn(model_cfg: gpt2.GPT2Config, is_lora: bool):
    """Jitted ``(θ, base, x, y, mask) -> (loss, ∇_θ loss)`` of the answer-token loss (:func:`connect.tasks.masked_loss`)."""

    def loss_of(theta, base, x_BxT, y_BxT, m_BxT):
        params = lora.apply_lora(base, theta) if is_lora else theta
        return tasks.masked_loss(params, x_BxT, y_BxT, m_BxT, model_cfg)

    return jax.jit(jax.value_and_grad(loss_of))


@jax.jit
def _matrix_spectra(params) -> dict:
    """Per hidden matrix (``attn/c_attn``, …) its spectral norm and stable rank per layer (:mod:`connect.spectra`)."""
    out = {}
    for path in gpt2.MUON_MATRICES:
        s = jax.vmap(spectra.summarize)(_get(params, path))
        out["/".join(path[1:-1])] = {"spectral_norm": s["spectral_norm"], "stable_rank": s["stable_rank"]}
    return out


@functools.partial(jax.jit, static_argnums=2)
def _delta_stats(w_LxMxN, d_LxMxN, k: int) -> dict:
    """:func:`delta_w_stats`'s numbers for one stacked kernel, per layer."""

    def one(w_MxN, d_MxN):
        s = spectra.summarize(d_MxN)
        u_MxR, _, vt_RxN = jnp.linalg.svd(w_MxN, full_matrices=False)
        proj_KxK = u_MxR[:, :k].T @ d_MxN @ vt_RxN[:k, :].T
        fro2 = jnp.sum(jnp.square(d_MxN))
        return {"stable_rank": s["stable_rank"], "spectral_norm": s["spectral_norm"], "max_abs": s["max_abs"],
                "frobenius": jnp.sqrt(fro2), "top_k_alignment": jnp.sum(jnp.square(proj_KxK)) / jnp.maximum(fro2, 1e-30)}

    return jax.vmap(one)(w_LxMxN, d_LxMxN)


@functools.partial(jax.jit, static_argnums=3)
def _activations(params, x_NxT, valid_NxT, model_cfg):
    """:func:`activation_norms`: GPT-2's forward pass (the blocks of :func:`connect.models.gpt2.apply`,
    from the same helpers) with masked statistics of its activations."""
    eps, n_valid = model_cfg.layer_norm_epsilon, jnp.maximum(jnp.sum(valid_NxT), 1.0)
    rms = lambda a_NxTxD: jnp.sqrt(jnp.sum(jnp.mean(jnp.square(a_NxTxD), -1) * valid_NxT) / n_valid)  # noqa: E731
    max_abs = lambda a_NxTxD: jnp.max(jnp.max(jnp.abs(a_NxTxD), -1) * valid_NxT)  # noqa: E731
    T = x_NxT.shape[1]
    x_NxTxD = params["wte"][x_NxT] + params["wpe"][None, :T, :]

    def block(x_NxTxD, layer):
        stats = {"residual_rms": rms(x_NxTxD), "residual_max_abs": max_abs(x_NxTxD)}
        h = gpt2._layer_norm(x_NxTxD, layer["ln_1"], eps)
        attn = gpt2._attention(h, layer["attn"], model_cfg.n_head, jnp.float32)
        a_NxTxD = x_NxTxD + attn
        hidden_NxTxF = jax.nn.gelu(gpt2._dense(gpt2._layer_norm(a_NxTxD, layer["ln_2"], eps), layer["mlp"]["c_fc"], jnp.float32),
                                   approximate=True)
        mlp = gpt2._dense(hidden_NxTxF, layer["mlp"]["c_proj"], jnp.float32)
        stats.update(attn_out_rms=rms(attn), mlp_hidden_rms=rms(hidden_NxTxF), mlp_out_rms=rms(mlp))
        return a_NxTxD + mlp, stats

    x_NxTxD, per_layer = jax.lax.scan(block, x_NxTxD, params["h"])
    return {**per_layer, "final_residual_rms": rms(x_NxTxD), "final_residual_max_abs": max_abs(x_NxTxD)}


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _is_same(method: str, pretraining_optimizer: str) -> bool:
    return method == pretraining_optimizer


def _pretraining_optimizer(path: str) -> str:
    """The ``optimizer`` of the train-lm ``config.json`` in ``path`` or up to three directories above."""
    here = os.path.abspath(path)
    for _ in range(4):
        cfg_path = os.path.join(here, "config.json")
        if os.path.isfile(cfg_path):
            try:
                with open(cfg_path) as f:
                    value = json.load(f).get("optimizer")
            except (OSError, ValueError, AttributeError):
                value = None
            if isinstance(value, str):
                return value
        here = os.path.dirname(here)
    return "unknown"


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
    claim_directory(out, cfg.to_dict(), ignore=_GRID_FIELDS, rewrite=True)
