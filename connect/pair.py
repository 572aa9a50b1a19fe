"""One pair of saved checkpoints measured along linear and learned paths (``connect barrier``)."""

from __future__ import annotations

import jax

from connect import checkpoints, data, measure, optimizers, paths
from connect.errors import UserError
from connect.models import relu


def load_pair(ckpt_a: str, ckpt_b: str) -> tuple[dict, dict, dict, dict]:
    """Both checkpoints, checked to be two-layer ReLU networks of one architecture."""
    params_a, meta_a = checkpoints.load_checkpoint(ckpt_a)
    params_b, meta_b = checkpoints.load_checkpoint(ckpt_b)
    cfg_a, cfg_b = relu.config_of(params_a), relu.config_of(params_b)
    if cfg_a != cfg_b:
        raise UserError(f"checkpoints have different architectures ({ckpt_a}: {cfg_a.to_dict()}, {ckpt_b}: {cfg_b.to_dict()}): pair checkpoints of the same width, input size and bias")
    return params_a, meta_a, params_b, meta_b


def dataset_of(ckpt: str, meta: dict, d_in: int, data_path: str | None = None) -> data.Dataset:
    """The data set checkpoint ``ckpt`` was trained on (regenerated from its recorded seed, or
    its ``.npz``), or ``data_path`` when given; checked to have ``d_in`` features."""
    d_cfg = dict(meta.get("data", {}))
    if data_path:
        d_cfg["path"] = data_path
    try:
        dataset = data.make(data.DataConfig(**d_cfg))
    except TypeError:
        raise UserError(f"checkpoint {ckpt} records no usable data description: pass --data file.npz") from None
    if dataset.d_in != d_in:
        raise UserError(f"data have {dataset.d_in} features but the checkpoints expect {d_in}: pass the data they were trained on")
    return dataset


def measure_checkpoints(
    ckpt_a: str,
    ckpt_b: str,
    data_path: str | None = None,
    path_optimizer: str | None = None,
    weight_decay: float | None = None,
    lr: float | None = None,
    kinds: tuple = ("linear", "bezier", "polychain"),
    path_steps: int = 400,
    t_points: int = 11,
    refine: int = 0,
    seed: int = 0,
    strategy: str = "auto",
) -> dict:
    """Measure the paths between two checkpoints, raw and aligned.

    Data default to the data set recorded in checkpoint A (regenerated from its seed,
    or its ``.npz``); λ defaults to A's decay; the path optimizer to the endpoints' own
    if they share one, else ``adamw``. Returns ``{"ckpt_a", "ckpt_b", "path_optimizer",
    "weight_decay", "rows"}`` with rows as :func:`connect.measure.measure_raw_and_aligned`.
    """
    params_a, meta_a, params_b, meta_b = load_pair(ckpt_a, ckpt_b)
    dataset = dataset_of(ckpt_a, meta_a, relu.config_of(params_a).d_in, data_path)
    lam = float(meta_a.get("weight_decay", 0.0) if weight_decay is None else weight_decay)
    if path_optimizer is None:
        path_optimizer = meta_a.get("optimizer") if meta_a.get("optimizer") == meta_b.get("optimizer") else "adamw"
    lr = optimizers.spec(path_optimizer).default_lr if lr is None else lr
    for kind in kinds:
        if kind not in paths.KINDS:
            raise UserError(f"unknown path kind {kind!r}: use one of {', '.join(paths.KINDS)}")
    if path_steps < 1 or t_points < 2 or refine < 0:
        raise UserError("need --path-steps ≥ 1, --t-points ≥ 2 and --refine ≥ 0")
    settings = measure.PathSettings(tuple(kinds), path_steps, 4, t_points, refine)
    rows = measure.measure_raw_and_aligned(
        [params_a], [params_b], dataset, optimizers.make(path_optimizer, lr, lam, relu.MUON_MATRICES),
        lam, jax.random.key(seed), settings, strategy,
    )
    for r in rows:
        r.pop("pair")
        r["path_optimizer"] = "" if r["path"] == "linear" else path_optimizer
    return {"ckpt_a": ckpt_a, "ckpt_b": ckpt_b, "path_optimizer": path_optimizer, "weight_decay": lam, "rows": rows}
