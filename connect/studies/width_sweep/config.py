"""The width sweep's configuration (``connect width-sweep``, TOML table ``[width_sweep]``).

Every field's help text becomes the ``--help`` of the CLI flag of the same name (underscores become dashes).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from connect import batching, optimizers, paths
from connect.config import option as _f
from connect.errors import UserError
from connect.twolayer.data import TASKS, DataConfig


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
