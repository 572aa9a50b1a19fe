"""The finetuning study's configuration (``connect study finetune``, TOML table ``[finetune]``) and its method names.

Every field's help text becomes the ``--help`` of the CLI flag of the same name (underscores become dashes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from connect import optimizers, schedules
from connect.config import option as _f
from connect.errors import UserError
from connect.lm import tasks

#: Fields of :class:`FinetuneConfig` that do not change a point's numbers (a rerun may change them).
GRID_FIELDS = ("pretrained", "methods", "lrs", "seeds", "data_sizes", "size_tasks", "size_method", "size_lr")


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
    methods: list = _f(["adamw", "muon", "lion", "momentum", "lora"], "finetuning methods: adamw, muon, lion, momentum (full) or lora / lora-<optimizer>")
    lrs: dict = _f({"adamw": [3e-5, 1e-4, 3e-4, 1e-3], "muon": [1e-4, 3e-4, 1e-3, 3e-3], "lion": [3e-6, 1e-5, 3e-5, 1e-4],
                    "momentum": [1e-3, 3e-3, 1e-2, 3e-2], "lora": [3e-4, 1e-3, 3e-3, 1e-2]},
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
    lora_targets: list = _f(["attn", "mlp"], "adapted matrices: attn, mlp or the family's kernels (GPT-2: attn.c_attn, mlp.c_fc, …; "
                                             "Llama: self_attn.q_proj, mlp.down_proj, …; GPT-NeoX: attention.query_key_value, …)")
    seeds: list = _f([0], "finetuning seeds (batch order and LoRA init)")
    context: int = _f(32, "tokens per example and per corpus window (at most the model's context limit, e.g. GPT-2's n_positions)")
    corpus: str = _f("", "pretraining corpus whose val loss measures forgetting (empty: the embedded corpus)")
    second_corpus: str = _f("", "a second corpus for forgetting (empty: none)")
    val_fraction: float = _f(0.05, "val fraction of the corpora's documents")
    eval_batches: int = _f(16, "val batches (of batch_size windows) per forgetting evaluation (0: the whole split)")
    eval_every: int = _f(25, "steps between learning-curve evaluations of the held-out task loss")
    path_points: int = _f(5, "t points of the linear path back to the pretrained model (≥ 2)")
    top_k: int = _f(8, "top singular directions of W_pre that ΔW's alignment is measured against")
    data_sizes: list = _f([], "train sizes of the memorisation-vs-pattern comparison (empty: skip it)", item=int)
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


def method_optimizer(method: str, lora_optimizer: str = "adamw") -> tuple[str, bool]:
    """``(optimizer, is_lora)`` of a method name: ``adamw`` → ``("adamw", False)``, ``lora`` →
    ``(lora_optimizer, True)``, ``lora-muon`` → ``("muon", True)``."""
    is_lora = method == "lora" or method.startswith("lora-")
    name = (lora_optimizer if method == "lora" else method[5:]) if is_lora else method
    if name == "sgd":
        optimizers.check_lm_name(name, "finetuning method")  # names its new spelling, momentum
    if name not in optimizers.LM_OPTIMIZERS:
        raise UserError(f"unknown finetuning method {method!r}: use {', '.join(optimizers.LM_OPTIMIZERS)}, lora or lora-<optimizer>")
    return name, is_lora
