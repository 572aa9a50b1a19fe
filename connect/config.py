"""Run configurations: one typed dataclass per command, filled from defaults < a TOML file < the command line.

:class:`WidthSweepConfig` (``connect width-sweep``, TOML table ``[width_sweep]``) and
:class:`TrainLMConfig` (``connect train-lm``, TOML table ``[train_lm]``). Every field's help
text lives next to it and becomes the ``--help`` of the CLI flag of the same name
(underscores become dashes).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, ClassVar

from connect import batching, optimizers, paths
from connect.data import TASKS, DataConfig
from connect.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass
class WidthSweepConfig:
    """Everything that determines a width sweep's results (stored as the run's ``config.json``)."""

    TABLE: ClassVar[str] = "width_sweep"
    EXAMPLE: ClassVar[str] = "experiments/width_sweep.toml"

    widths: list = _f([2, 4, 8, 16, 32, 64, 128, 256], "hidden widths m to train (positive integers)")
    optimizers: list = _f(["adamw", "muon", "lion", "sgd"], f"optimizers to train with, from: {', '.join(optimizers.names())}")
    seeds: int = _f(3, "seeds per optimizer and width (≥ 2 to form same-optimizer pairs)")
    seed_offset: int = _f(0, "first seed; seeds are seed_offset, seed_offset+1, …")
    weight_decay: float = _f(0.1, "decoupled weight decay λ (ℓ∞ radius 1/λ for AdamW/Lion, spectral s/λ for Muon)")
    weight_decay_by: dict = _f({"sgd": 0.001}, "per-optimizer λ overriding weight_decay, e.g. sgd=0.001: SGD's decay is an L2 penalty (no constraint set), and at λ = 0.1 its minimiser cannot interpolate")
    lr: dict = _f({}, "learning rate per optimizer, e.g. adamw=0.01 muon=0.02 (default: the registry's)")
    steps: int = _f(3000, "full-batch training steps per network")
    bias: bool = _f(True, "first-layer bias b_j in f(x) = Σ a_j relu(w_jᵀx + b_j)")
    task: str = _f("regression", f"synthetic or user task: {', '.join(TASKS)}")
    data: str = _f("", "a user's .npz with X (n, d) and y (n,) (optionally X_test, y_test); empty: synthetic teacher data")
    n_train: int = _f(32, "synthetic training points")
    n_test: int = _f(256, "synthetic held-out points")
    d_in: int = _f(8, "synthetic input dimension")
    teacher_width: int = _f(16, "width of the synthetic teacher network")
    noise: float = _f(0.5, "label noise of the synthetic data (std, relative to the standardised teacher)")
    data_seed: int = _f(0, "seed of the synthetic data and of the train/test split of user data")
    paths: list = _f(["linear", "bezier", "polychain"], f"path kinds, from: {', '.join(paths.KINDS)} (learned: quadratic Bézier, one-bend chain)")
    path_steps: int = _f(300, "optimizer steps to learn a path's free point")
    path_t_samples: int = _f(4, "t ~ U[0,1] samples per path-learning step")
    cross_path_optimizer: str = _f("adamw", "optimizer that learns paths between solutions of two different optimizers")
    t_points: int = _f(11, "evenly spaced t in [0,1] at which paths are measured")
    refine: int = _f(0, "extra t points around each path's peak (0: none)")
    plot_width: int = _f(0, "width shown in the loss-along-t, spectrum and norm figures (0: the median width)")
    strategy: str = _f("auto", f"batching over seeds/pairs/t: {', '.join(batching.TRACEABLE)} (auto: map on CPU, vmap on GPU)")

    def data_config(self) -> DataConfig:
        return DataConfig(
            task=self.task, n_train=self.n_train, n_test=self.n_test, d_in=self.d_in,
            teacher_width=self.teacher_width, noise=self.noise, seed=self.data_seed,
            path=self.data or None,
        )

    def lr_of(self, name: str) -> float:
        return float(self.lr.get(name, optimizers.spec(name).default_lr))

    def decay_of(self, name: str) -> float:
        return float(self.weight_decay_by.get(name, self.weight_decay))

    def seed_list(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.seeds))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> WidthSweepConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        if not self.widths:
            raise UserError("widths is empty: give at least one width, e.g. --widths 8 64")
        for w in self.widths:
            if not isinstance(w, int) or isinstance(w, bool) or w < 1:
                raise UserError(f"width {w!r} is invalid: widths must be positive integers")
        if not self.optimizers:
            raise UserError("optimizers is empty: name at least one, e.g. --optimizers adamw muon")
        for name in [*self.optimizers, self.cross_path_optimizer, *self.lr, *self.weight_decay_by]:
            optimizers.spec(name)
        if len(set(self.optimizers)) != len(self.optimizers):
            raise UserError(f"optimizers lists a name twice: {self.optimizers}")
        if len(set(self.widths)) != len(self.widths):
            raise UserError(f"widths lists a width twice: {self.widths}")
        for name, val in self.lr.items():
            if not (isinstance(val, (int, float)) and val > 0):
                raise UserError(f"learning rate for {name} must be a positive number, got {val!r}")
        for name, val in self.weight_decay_by.items():
            if not (isinstance(val, (int, float)) and val >= 0):
                raise UserError(f"weight decay for {name} must be a non-negative number, got {val!r}")
        checks = [
            (self.seeds >= 2, f"seeds must be ≥ 2 to form pairs, got {self.seeds}"),
            (self.seed_offset >= 0, f"seed_offset must be ≥ 0, got {self.seed_offset}"),
            (self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}"),
            (self.steps >= 1, f"steps must be ≥ 1, got {self.steps}"),
            (self.task in TASKS, f"unknown task {self.task!r}: use one of {', '.join(TASKS)}"),
            (self.n_train >= 2 and self.n_test >= 1, f"n_train must be ≥ 2 and n_test ≥ 1, got {self.n_train}, {self.n_test}"),
            (self.d_in >= 1 and self.teacher_width >= 1, f"d_in and teacher_width must be ≥ 1, got {self.d_in}, {self.teacher_width}"),
            (self.noise >= 0, f"noise must be ≥ 0, got {self.noise}"),
            (bool(self.paths) and all(p in paths.KINDS for p in self.paths), f"paths {self.paths} invalid: choose from {', '.join(paths.KINDS)}"),
            (self.path_steps >= 1 and self.path_t_samples >= 1, "path_steps and path_t_samples must be ≥ 1"),
            (self.t_points >= 2, f"t_points must be ≥ 2, got {self.t_points}"),
            (self.refine >= 0, f"refine must be ≥ 0, got {self.refine}"),
            (self.plot_width == 0 or self.plot_width in self.widths, f"plot_width {self.plot_width} is not one of the widths {self.widths}"),
            (self.strategy in batching.TRACEABLE, f"unknown strategy {self.strategy!r}: use one of {', '.join(batching.TRACEABLE)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self


FIELDS = {f.name: f for f in dataclasses.fields(WidthSweepConfig)}

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

    model: str = _f("tiny", "named GPT-2 config: tiny, seed-paper or gpt2 (connect.models.gpt2.CONFIGS)")
    model_overrides: dict = _f({}, "GPT-2 config fields overriding the named config, e.g. n_layer=1 n_embd=32", value_type=None)
    data: str = _f("", "corpus: a text file, a directory of text files or of train.bin/val.bin; empty: the embedded corpus")
    tokenizer: str = _f("", "a Hugging Face tokenizer.json to encode text with (empty: bytes, vocabulary 256)")
    val_fraction: float = _f(0.05, "fraction of the text documents held out as val")
    optimizer: str = _f("adamw", "adamw, muon, lion or sgd (connect.optimizers.LM_OPTIMIZERS)")
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
    context: int = _f(64, "tokens per sequence (at most the model's n_positions)")
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
        """The :class:`connect.models.gpt2.GPT2Config` this run trains."""
        from connect.models import gpt2

        return gpt2.config(self.model, **self.model_overrides)

    def validate(self) -> TrainLMConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        from connect import schedules
        from connect.optimizers import LM_OPTIMIZERS

        model_cfg = self.model_config()
        seeds_ok = bool(self.seeds) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds)
        checks = [
            (self.optimizer in LM_OPTIMIZERS, f"unknown optimizer {self.optimizer!r}: use one of {', '.join(LM_OPTIMIZERS)}"),
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
            (self.context <= model_cfg.n_positions,
             f"context {self.context} is longer than the model's n_positions={model_cfg.n_positions}: use --context {model_cfg.n_positions} or less"),
            (min(self.eval_every, self.eval_batches, self.checkpoint_every) >= 0, "eval_every, eval_batches and checkpoint_every must be ≥ 0"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be ≥ 1, got {self.keep_checkpoints}"),
            (self.log_every >= 1, f"log_every must be ≥ 1, got {self.log_every}"),
            (seeds_ok, f"seeds must be a non-empty list of non-negative integers, got {self.seeds}"),
            (len(set(self.seeds)) == len(self.seeds), f"seeds lists a seed twice: {self.seeds}"),
            (self.compute_dtype in COMPUTE_DTYPES, f"unknown compute_dtype {self.compute_dtype!r}: use one of {', '.join(COMPUTE_DTYPES)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        schedules.make(self.schedule, self.lr, self.steps, self.warmup_frac, self.decay_frac, self.final_frac)
        return self


def from_dict(values: dict[str, Any], source: str = "config", base=None, cls: type | None = None):
    """``base`` (default: the defaults of ``cls``, itself by default ``type(base)`` or
    :class:`WidthSweepConfig`) overridden by ``values``; unknown keys and wrong types are user
    errors naming ``source``."""
    cls = cls or (type(base) if base is not None else WidthSweepConfig)
    cfg = dataclasses.replace(base) if base is not None else cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, val in values.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise UserError(f"{source}: unknown option {key!r}; valid options: {', '.join(fields)}")
        setattr(cfg, key, _coerce(cls, key, val, source))
    return cfg


def read_toml(path: str, example: str) -> dict:
    """The parsed TOML file ``path``; a missing file (the hint names ``example``) or invalid TOML is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found: pass a TOML file such as {example}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path} is not valid TOML ({e})") from None


def load_toml(path: str, cls: type = WidthSweepConfig) -> dict:
    """The options of a TOML config file (top level, or under the ``[cls.TABLE]`` table, e.g. ``[width_sweep]``)."""
    doc = read_toml(path, cls.EXAMPLE)
    doc = doc.get(cls.TABLE, doc)
    dict_fields = {f.name for f in dataclasses.fields(cls) if isinstance(getattr(cls(), f.name), dict)}
    return {k: v for k, v in doc.items() if not isinstance(v, dict) or k in dict_fields}


def _coerce(cls: type, key: str, val: Any, source: str):
    default = getattr(cls(), key)
    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    try:
        if isinstance(default, bool):
            if isinstance(val, str):
                if val.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(val)
                return val.lower() in ("true", "1", "yes")
            return bool(val)
        if isinstance(default, list):
            items = list(val) if isinstance(val, (list, tuple)) else [val]
            if key in ("widths", "seeds", "data_sizes"):
                return [int(x) if not isinstance(x, bool) and float(x) == int(float(x)) else x for x in items]
            if key == "betas":
                return [float(x) for x in items]
            return items
        if isinstance(default, dict):
            if not isinstance(val, dict):
                raise ValueError(val)
            value_type = field.metadata.get("value_type", float)
            return {str(k): value_type(v) if value_type else _number_or_bool(v) for k, v in val.items()}
        if isinstance(default, int):
            if isinstance(val, float) and not val.is_integer():
                raise ValueError(val)
            return int(val)
        if isinstance(default, float):
            return float(val)
        return str(val)
    except (TypeError, ValueError):
        raise UserError(f"{source}: option {key} = {val!r} is not a valid {type(default).__name__}") from None


def _number_or_bool(val: Any):
    """A TOML/CLI value as int, float or bool (strings such as ``"2"``, ``"1e-5"``, ``"true"`` parsed)."""
    if not isinstance(val, str):
        return val
    if val.lower() in ("true", "false"):
        return val.lower() == "true"
    try:
        return int(val)
    except ValueError:
        return float(val)
