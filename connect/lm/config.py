"""The configuration of a GPT-2 training run (``connect train-lm``, TOML table ``[train_lm]``).

Every field's help text becomes the ``--help`` of the CLI flag of the same name (underscores become dashes).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from connect.config import option as _f
from connect.errors import UserError

#: Precisions of ``TrainLMConfig.compute_dtype`` (``auto``: bfloat16 on GPU/TPU, float32 on CPU).
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


@dataclasses.dataclass
class TrainLMConfig:
    """Everything that determines a GPT-2 training run (stored as the run's ``config.json``).

    ``batch_size`` sequences of ``context`` tokens make one optimizer step of one seed; they are
    split into ``grad_accum`` micro-batches whose gradients are averaged. Learning rates peak at
    ``lr`` (hidden matrices) and ``aux_lr`` (embeddings, head, LayerNorm, biases) and follow
    ``schedule`` (:mod:`connect.schedules`).
    """

    TABLE: ClassVar[str] = "train_lm"
    EXAMPLE: ClassVar[str] = "experiments/gpt2_tiny.toml"

    family: str = _f("gpt2", "model family: gpt2, llama (Llama/Qwen2/Mistral) or gpt_neox (Pythia) (connect.models.LM_FAMILIES)")
    model: str = _f("tiny", "named config of the family: tiny for each, seed-paper and gpt2 for GPT-2 (connect.models.<family>.CONFIGS)")
    model_overrides: dict = _f({}, "config fields overriding the named config, e.g. n_layer=1 n_embd=32 (GPT-2)", value_type=None)
    data: str = _f("", "corpus: a text file, a directory of text files or of train.bin/val.bin; empty: the embedded corpus")
    tokenizer: str = _f("", "a Hugging Face tokenizer.json to encode text with (empty: bytes, vocabulary 256)")
    val_fraction: float = _f(0.05, "fraction of the text documents held out as val")
    optimizer: str = _f("adamw", "adamw, muon, lion or momentum (connect.optimizers.LM_OPTIMIZERS)")
    lr: float = _f(4e-3, "peak learning rate of the hidden matrices (attention and MLP kernels)")
    aux_lr: float = _f(0.0, "peak learning rate of embeddings, head, LayerNorm gains and biases (0: same as lr)")
    weight_decay: float = _f(0.1, "decoupled weight decay λ, multiplied by the learning rate; matrices only")
    betas: list = _f([0.9, 0.95], "Adam (β₁, β₂); Lion's (β₁, β₂)")
    momentum: float = _f(0.95, "Muon's Nesterov momentum and SGD's heavy-ball momentum")
    schedule: str = _f("cosine", "learning-rate schedule: constant, cosine or wsd (connect.schedules.NAMES)")
    warmup_frac: float = _f(0.05, "fraction of the steps of linear warmup")
    decay_frac: float = _f(0.2, "fraction of the steps of linear decay at the end (wsd)")
    final_frac: float = _f(0.0, "final learning rate as a fraction of the peak (cosine, wsd)")
    clip_norm: float = _f(1.0, "clip the gradient to this global norm (0: no clipping)")
    steps: int = _f(1000, "optimizer steps")
    batch_size: int = _f(32, "sequences per optimizer step and seed (all micro-batches together)")
    grad_accum: int = _f(1, "micro-batches per step, scanned in one program (batch_size must be divisible by it)")
    context: int = _f(64, "tokens per sequence (at most the model's context: n_positions, max_position_embeddings)")
    eval_every: int = _f(100, "steps between val-loss evaluations (0: only at the end)")
    eval_batches: int = _f(8, "val batches of batch_size sequences per evaluation (0: the whole val split)")
    checkpoint_every: int = _f(250, "steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = _f(2, "checkpoints kept per seed (the oldest are deleted)")
    seeds: list = _f([0], "seeds trained at once in one program (vmap); each has its own init, data order, metrics and checkpoints")
    compute_dtype: str = _f("auto", "matmul precision: float32, bfloat16 (fp32 master weights) or auto (bf16 on GPU, f32 on CPU)")
    log_every: int = _f(10, "steps between metrics.jsonl lines")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self):
        """The model config (of :attr:`family`) this run trains."""
        from connect import models

        return models.family(self.family).config(self.model, **self.model_overrides)

    def validate(self) -> TrainLMConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        from connect import models, schedules
        from connect.optimizers import check_lm_name

        check_lm_name(self.optimizer)

        model_cfg = self.model_config()
        seeds_ok = bool(self.seeds) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds)
        checks = [
            (self.schedule in schedules.NAMES, f"unknown schedule {self.schedule!r}: use one of {', '.join(schedules.NAMES)}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.aux_lr >= 0, f"aux_lr must be ≥ 0 (0: same as lr), got {self.aux_lr}"),
            (self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}"),
            (len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), got {self.betas}"),
            (0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}"),
            (self.clip_norm >= 0, f"clip_norm must be ≥ 0 (0: no clipping), got {self.clip_norm}"),
            (0 < self.val_fraction < 1, f"val_fraction must lie in (0, 1), got {self.val_fraction}"),
            (self.steps >= 1, f"steps must be ≥ 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be ≥ 1, got {self.grad_accum}"),
            (self.batch_size % self.grad_accum == 0, f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}: make it a multiple"),
            (self.context >= 1, f"context must be ≥ 1, got {self.context}"),
            (min(self.eval_every, self.eval_batches, self.checkpoint_every) >= 0, "eval_every, eval_batches and checkpoint_every must be ≥ 0"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be ≥ 1, got {self.keep_checkpoints}"),
            (self.log_every >= 1, f"log_every must be ≥ 1, got {self.log_every}"),
            (seeds_ok, f"seeds must be a non-empty list of non-negative integers, got {self.seeds}"),
            (not seeds_ok or len(set(self.seeds)) == len(self.seeds), f"seeds lists a seed twice: {self.seeds}"),
            (self.compute_dtype in COMPUTE_DTYPES, f"unknown compute_dtype {self.compute_dtype!r}: use one of {', '.join(COMPUTE_DTYPES)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        models.family(model_cfg).check_context(model_cfg, self.context)
        schedules.make(self.schedule, self.lr, self.steps, self.warmup_frac, self.decay_frac, self.final_frac)
        return self
