"""One pair of saved checkpoints measured along linear and learned paths (``connect barrier``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from connect import checkpoints, optimizers
from connect import paths as paths_lib
from connect.config import option
from connect.errors import UserError
from connect.models import relu
from connect.twolayer import data, measure


def load_pair(ckpt_a: str, ckpt_b: str, *, allow_nonfinite: bool = False) -> tuple[dict, dict, dict, dict]:
    """Both checkpoints, checked to be two-layer ReLU networks of one architecture: a recorded ``model_config``
    typed and matching the arrays' shapes, else the architecture recovered from them (:func:`relu.config_of`);
    NaN or infinite weights refused unless ``allow_nonfinite``."""
    for ckpt in (ckpt_a, ckpt_b):
        checkpoints.expect_family(ckpt, "relu")
    (params_a, meta_a, cfg_a), (params_b, meta_b, cfg_b) = (_load(c, allow_nonfinite) for c in (ckpt_a, ckpt_b))
    if cfg_a != cfg_b:
        raise UserError(f"checkpoints have different architectures ({ckpt_a}: {cfg_a.to_dict()}, {ckpt_b}: {cfg_b.to_dict()}): pair checkpoints of the same width, input size and bias")
    return params_a, meta_a, params_b, meta_b


def _load(ckpt: str, allow_nonfinite: bool) -> tuple[dict, dict, relu.ReluConfig]:
    params, meta = checkpoints.load_checkpoint(ckpt, allow_nonfinite=allow_nonfinite)
    cfg = checkpoints.model_config(ckpt, meta, relu.ReluConfig, "relu", required=False)
    if cfg is None:
        try:
            cfg = relu.config_of(params)
        except ValueError as e:
            raise UserError(f"checkpoint {ckpt} does not hold a two-layer ReLU network ({e}): pass one written by `connect width-sweep`") from None
    if cfg.d_in < 1 or cfg.width < 1:
        raise UserError(f"checkpoint {ckpt} records model_config {cfg.to_dict()}, no network (d_in and width must be ≥ 1): "
                        "pass one written by `connect width-sweep`")
    checkpoints.check_shapes(ckpt, params, jax.eval_shape(lambda: relu.init(jax.random.key(0), cfg)))
    return params, meta, cfg


def dataset_of(ckpt: str, meta: dict, d_in: int, data_path: str | None = None) -> data.Dataset:
    """The data set checkpoint ``ckpt`` was trained on (regenerated from its recorded seed), or ``data_path`` when
    given; checked to have ``d_in`` features. The recorded ``data`` table is typed
    (:class:`connect.twolayer.data.DataConfig`); a recorded data *file* is a UserError asking for ``--data``:
    checkpoint metadata never chooses a file to open."""
    recorded = meta.get("data", {})
    if not isinstance(recorded, dict):
        raise UserError(f"checkpoint {ckpt} records no usable data description (data = {str(recorded)[:60]!r}): pass --data file.npz")
    d_cfg = checkpoints.typed(ckpt, "data", recorded, data.DataConfig)
    if data_path:
        d_cfg = dataclasses.replace(d_cfg, path=data_path)
    elif d_cfg.path:
        raise UserError(f"checkpoint {ckpt} was trained on the data file {d_cfg.path[:200]!r}, which is opened only when you "
                        "name it: pass --data with that file (or the file holding those data now)")
    dataset = data.make(d_cfg)
    if dataset.d_in != d_in:
        raise UserError(f"data have {dataset.d_in} features but the checkpoints expect {d_in}: pass the data they were trained on")
    return dataset


@dataclasses.dataclass
class BarrierConfig:
    """``connect barrier A B``: how the paths between two two-layer checkpoints are learned and measured
    (TOML table ``[barrier]``)."""

    TABLE: ClassVar[str] = "barrier"
    EXAMPLE: ClassVar[str] = ""

    data: str = option("", "an .npz with X, y (empty: the synthetic data recorded in checkpoint A, regenerated; "
                           "a data file A records is opened only when passed here)")
    path_optimizer: str = option("", "optimizer learning the paths (empty: the endpoints' own if they share one, else adamw)")
    weight_decay: float = option(None, "λ for path learning and constraint norms (default: checkpoint A's)", type=float)
    lr: float = option(None, "learning rate of the path optimizer (default: the registry's)", type=float)
    paths: list = option(["linear", "bezier", "polychain"], f"path kinds, from {', '.join(paths_lib.KINDS)}")
    path_steps: int = option(400, "steps to learn a path's free point")
    t_points: int = option(11, "evenly spaced t in [0, 1]")
    refine: int = option(0, "extra t points around the peak")
    seed: int = option(0, "seed of path learning")
    allow_nonfinite: bool = option(False, "read checkpoints whose weights hold NaN or inf (refused by default)")

    def validate(self) -> BarrierConfig:
        """Raise :class:`UserError` naming the first impossible value."""
        for kind in self.paths:
            if kind not in paths_lib.KINDS:
                raise UserError(f"unknown path kind {kind!r}: use one of {', '.join(paths_lib.KINDS)}")
        if self.path_steps < 1 or self.t_points < 2 or self.refine < 0:
            raise UserError("need --path-steps ≥ 1, --t-points ≥ 2 and --refine ≥ 0")
        if self.path_optimizer:
            optimizers.spec(self.path_optimizer)
        if (self.lr is not None and not self.lr > 0) or (self.weight_decay is not None and not self.weight_decay >= 0):
            raise UserError(f"lr must be > 0 and weight_decay ≥ 0, got {self.lr} and {self.weight_decay}")
        return self


def measure_checkpoints(ckpt_a: str, ckpt_b: str, cfg: BarrierConfig | None = None, strategy: str = "auto") -> dict:
    """Measure the paths between two checkpoints, raw and aligned.

    Data are ``cfg.data``, else the synthetic data set recorded in checkpoint A (regenerated from its
    seed; a data file A records is not opened: pass it as ``cfg.data``); λ defaults to A's decay; the
    path optimizer to the endpoints' own if they share one, else ``adamw``. Returns ``{"ckpt_a", "ckpt_b", "path_optimizer",
    "weight_decay", "rows"}`` with rows as :func:`connect.twolayer.measure.measure_raw_and_aligned`.
    """
    cfg = (cfg or BarrierConfig()).validate()
    params_a, meta_a, params_b, meta_b = load_pair(ckpt_a, ckpt_b, allow_nonfinite=cfg.allow_nonfinite)
    dataset = dataset_of(ckpt_a, meta_a, relu.config_of(params_a).d_in, cfg.data or None)
    lam = float(meta_a.get("weight_decay", 0.0) if cfg.weight_decay is None else cfg.weight_decay)
    path_optimizer = cfg.path_optimizer or optimizers.path_optimizer(meta_a.get("optimizer"), meta_b.get("optimizer"))
    lr = optimizers.spec(path_optimizer).default_lr if cfg.lr is None else cfg.lr
    settings = measure.PathSettings(tuple(cfg.paths), cfg.path_steps, 4, cfg.t_points, cfg.refine)
    rows = measure.measure_raw_and_aligned(
        [params_a], [params_b], dataset, optimizers.make(path_optimizer, lr, lam, relu.MUON_MATRICES),
        lam, jax.random.key(cfg.seed), settings, strategy,
    )
    for r in rows:
        r.pop("pair")
        r["path_optimizer"] = "" if r["path"] == "linear" else path_optimizer
    return {"ckpt_a": ckpt_a, "ckpt_b": ckpt_b, "path_optimizer": path_optimizer, "weight_decay": lam, "rows": rows}
