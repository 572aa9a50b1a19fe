"""The GPT-2 connectivity study's configuration (``connect study gpt2``, TOML table ``[gpt2_study]``): which
seeds are trained and paired, which paths are learned and measured, how."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from connect import config, paths
from connect.config import option as _f
from connect.errors import UserError
from connect.lm.config import TrainLMConfig
from connect.lm.paths import PATH_LR

#: Name of the embedded out-of-distribution corpus (:func:`connect.studies.gpt2_connectivity.run.load_ood`).
EMBEDDED_OOD = "stdlib-prose"


@dataclasses.dataclass
class StudyConfig:
    """Everything that determines the study's pairs and measurements (``OUT/study.json``); the models'
    training is ``train`` (fields of :class:`connect.lm.config.TrainLMConfig`) updated by ``train_by[optimizer]``."""

    TABLE: ClassVar[str] = "gpt2_study"
    EXAMPLE: ClassVar[str] = "experiments/gpt2_connectivity.toml"

    optimizers: list = _f(["adamw", "muon"], "optimizers whose seeds are paired (same- and cross-optimizer pairs)")
    seeds: int = _f(10, "seeds per optimizer (0, 1, …, seeds − 1)")
    pairs_per_type: int = _f(0, "at most this many pairs per pair type (0: every pair)")
    paths: list = _f(["linear", "polychain"], f"path kinds, from {', '.join(paths.KINDS)} (learned: one-bend chain, quadratic Bézier)")
    align: bool = _f(True, "measure aligned pairs too (permutations and residual rotation, LayerNorms folded)")
    t_points: int = _f(11, "evenly spaced t in [0, 1] at which paths are measured")
    path_steps: int = _f(200, "optimizer steps to learn a path's free node")
    path_batch_size: int = _f(16, "training windows per path-learning step")
    path_t_samples: int = _f(1, "t ~ U[0, 1] samples per path-learning step")
    path_lr: dict = _f(dict(PATH_LR), "learning rate of the hidden matrices when learning a path, per optimizer")
    path_aux_lr: dict = _f({}, "learning rate of the other arrays when learning a path, per optimizer (default: path_lr)")
    path_weight_decay: float = _f(0.0, "weight decay while learning a path")
    cross_path_optimizer: str = _f("adamw", "optimizer learning the paths between two optimizers' models")
    eval_batch_size: int = _f(16, "windows per evaluation batch")
    eval_batches: int = _f(16, "evaluation batches per split (0: the whole split)")
    ood_data: str = _f("", f"out-of-distribution corpus (its val split); empty: {EMBEDDED_OOD} for the embedded corpus, none otherwise")
    spectra_matrix: str = _f("", "matrix whose singular values are stored and drawn in the spectral strip "
                                 "(empty: layer 0's MLP input, h.0.mlp.c_fc for GPT-2, layers.0.mlp.gate_proj for Llama)")
    plane_pairs: int = _f(1, "pairs per type whose loss plane (A, B, learned bend) is measured (0: none)")
    plane_points: int = _f(11, "grid points per plane axis")
    plane_margin: float = _f(0.2, "plane grid margin around the three points, relative to their extent")
    t_chunk: int = _f(0, "path points evaluated together under vmap (0: all on an accelerator, 1 on CPU)")
    seed: int = _f(0, "seed of path learning")
    train: dict = _f({}, "connect.lm.config.TrainLMConfig fields shared by every optimizer", value_type="table")
    train_by: dict = _f({}, "per optimizer, TrainLMConfig fields overriding train (e.g. muon's lr and schedule)", value_type="table")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def train_config(self, optimizer: str) -> TrainLMConfig:
        """The validated training config of ``optimizer``'s seeds."""
        source = f"{self.TABLE}.train"
        base = config.from_dict(self.train, source, cls=TrainLMConfig)
        values = {**self.train_by.get(optimizer, {}), "optimizer": optimizer, "seeds": list(range(self.seeds))}
        return config.from_dict(values, f"{self.TABLE}.train_by.{optimizer}", base=base).validate()

    def validate(self) -> StudyConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        from connect.optimizers import check_lm_name

        if not all(isinstance(v, dict) for v in self.train_by.values()):
            raise UserError(f"[{self.TABLE}.train_by] must hold one table of TrainLMConfig fields per optimizer, e.g. [{self.TABLE}.train_by.muon]")
        for name in [*self.optimizers, self.cross_path_optimizer]:
            check_lm_name(name)
        checks = [
            (bool(self.optimizers) and len(set(self.optimizers)) == len(self.optimizers), f"optimizers must be distinct names, got {self.optimizers}"),
            (self.seeds >= 2, f"seeds must be ≥ 2 to form same-optimizer pairs, got {self.seeds}"),
            (self.pairs_per_type >= 0, f"pairs_per_type must be ≥ 0 (0: all), got {self.pairs_per_type}"),
            (bool(self.paths) and all(p in paths.KINDS for p in self.paths), f"paths {self.paths} invalid: choose from {', '.join(paths.KINDS)}"),
            (self.t_points >= 2, f"t_points must be ≥ 2, got {self.t_points}"),
            (min(self.path_steps, self.path_batch_size, self.path_t_samples, self.eval_batch_size) >= 1,
             "path_steps, path_batch_size, path_t_samples and eval_batch_size must be ≥ 1"),
            (self.eval_batches >= 0 and self.plane_pairs >= 0 and self.t_chunk >= 0, "eval_batches, plane_pairs and t_chunk must be ≥ 0"),
            (self.plane_points >= 2 and self.plane_margin >= 0, "plane_points must be ≥ 2 and plane_margin ≥ 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        for opt in self.optimizers:
            self.train_config(opt)
        return self


@dataclasses.dataclass
class PathsConfig:
    """``connect paths A B``: one pair of GPT-2 checkpoints measured the study's way (TOML table ``[paths]``)."""

    TABLE: ClassVar[str] = "paths"
    EXAMPLE: ClassVar[str] = ""

    data: str = _f("", "corpus as for train-lm --data (empty: the embedded corpus)")
    tokenizer: str = _f("", "a Hugging Face tokenizer.json to encode text with (empty: bytes)")
    val_fraction: float = _f(0.05, "val fraction of a text corpus, as in training")
    ood_data: str = _f("", f"an out-of-distribution corpus, its val split evaluated (empty: {EMBEDDED_OOD}, English prose "
                           "of the stdlib, for the embedded corpus; none otherwise)")
    align: bool = _f(False, "also measure the aligned pair")
    path: list = _f(["linear", "polychain"], f"path kinds, from {', '.join(paths.KINDS)}")
    t_grid: list = _f([], "t values in [0, 1], holding 0 and 1 (empty: 0, 0.1, …, 1)", item=float)
    steps: int = _f(200, "steps to learn a path's bend")
    path_optimizer: str = _f("", "optimizer learning the bends (empty: the endpoints' own when their checkpoints record the "
                                 "same one — the optimizer-restricted path — else adamw)")
    lr: float = _f(None, "path-learning learning rate of the hidden matrices (default: 1e-3 adamw, 4e-3 muon)", type=float)
    aux_lr: float = _f(None, "path-learning learning rate of the other arrays (default: lr)", type=float)
    path_batch_size: int = _f(16, "training windows per path step")
    batch_size: int = _f(16, "windows per evaluation batch")
    max_batches: int = _f(16, "evaluation batches per split (0: all)")
    context: int = _f(None, "tokens per window (default: the model's context limit)", type=int)
    spectra_matrix: str = _f("", "matrix whose singular values are kept (empty: layer 0's MLP input matrix)")
    plane: bool = _f(False, "also the loss plane through A, B and each learned bend")
    plane_points: int = _f(11, "plane grid points per axis")
    seed: int = _f(0, "seed of path learning")
    allow_nonfinite: bool = _f(False, "read checkpoints whose weights hold NaN or inf (refused by default)")

    def validate(self) -> PathsConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        checks = [
            (bool(self.path) and all(p in paths.KINDS for p in self.path), f"path {self.path} invalid: choose from {', '.join(paths.KINDS)}"),
            (min(self.steps, self.path_batch_size, self.batch_size, self.plane_points - 1) >= 1 and self.max_batches >= 0,
             "steps, path_batch_size and batch_size must be ≥ 1, plane_points ≥ 2, max_batches ≥ 0"),
            (self.context is None or self.context >= 1, f"context must be ≥ 1, got {self.context}"),
            (0 < self.val_fraction < 1, f"val_fraction must lie in (0, 1), got {self.val_fraction}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self

    def study_config(self, path_optimizer: str) -> StudyConfig:
        """The :class:`StudyConfig` that measures this pair (the study's defaults for everything else)."""
        d = StudyConfig()
        return dataclasses.replace(
            d, paths=list(dict.fromkeys(self.path)), align=self.align, path_steps=self.steps, path_batch_size=self.path_batch_size,
            path_lr={path_optimizer: self.lr} if self.lr is not None else d.path_lr,
            path_aux_lr={path_optimizer: self.aux_lr} if self.aux_lr is not None else {}, eval_batch_size=self.batch_size,
            eval_batches=self.max_batches, spectra_matrix=self.spectra_matrix, plane_points=self.plane_points, seed=self.seed,
            cross_path_optimizer=path_optimizer)
