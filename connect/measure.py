"""Measure pairs of solutions along paths: fit the path, then loss, error, spectra and
constraint norms at every t — batched over pairs (``vmap``/``lax.map``) and over t (``vmap``).

This is the one place where a path's numbers are produced; the width sweep and
``connect barrier`` both call :func:`measure_pairs`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from connect import barrier as barrier_lib
from connect import batching, constraints, losses, paths, spectra
from connect.data import Dataset
from connect.models import relu


@dataclasses.dataclass(frozen=True)
class PathSettings:
    """How paths are learned and measured."""

    kinds: tuple = ("linear", "bezier", "polychain")
    steps: int = 400
    t_samples: int = 4
    t_points: int = 11
    refine: int = 0


def point_metrics(params: dict, data: Dataset, lam: float) -> dict:
    """Everything measured at one point θ of a path (scalars, plus the singular values)."""
    loss = losses.for_task(data.task)
    f_tr, f_te = relu.apply(params, data.x_train), relu.apply(params, data.x_test)
    out = {
        "loss_train": loss(f_tr, data.y_train),
        "loss_test": loss(f_te, data.y_test),
        "linf_rel": constraints.linf_relative(params, lam),
        "muon_rel": constraints.muon_relative(params, lam, relu.MUON_MATRICES),
    }
    if data.task == "classification":
        out["err_train"] = losses.error_rate(f_tr, data.y_train)
        out["err_test"] = losses.error_rate(f_te, data.y_test)
    out.update(spectra.summarize(params["W"]))
    return out


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _fit_pairs(kind, optimizer, steps, t_samples, strategy, theta_a_P, theta_b_P, keys_P, data):
    loss = losses.for_task(data.task)

    def one(args):
        a, b, key = args
        if kind == "linear":
            return paths.stack_nodes(a, paths.init_free(a, b, 0), b), jnp.zeros((steps,))
        return paths.fit(kind, a, b, lambda p: loss(relu.apply(p, data.x_train), data.y_train),
                         optimizer, jax.random.wrap_key_data(key), n_free=1, steps=steps, t_per_step=t_samples)

    return batching.map_leading(one, (theta_a_P, theta_b_P, keys_P), strategy)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _eval_pairs(kind, strategy, nodes_PK, ts_PT, data, lam):
    def one(args):
        nodes, ts = args
        return jax.vmap(lambda t: point_metrics(paths.point(kind, nodes, t), data, lam))(ts)

    return batching.map_leading(one, (nodes_PK, ts_PT), strategy)


def measure_pairs(
    theta_a_P: dict,
    theta_b_P: dict,
    data: Dataset,
    path_optimizer: optax.GradientTransformation,
    lam: float,
    key: jax.Array,
    settings: PathSettings = PathSettings(),
    strategy: str = "auto",
) -> dict:
    """Fit and measure every path kind of ``settings`` for P pairs (params stacked on axis P).

    Returns ``{kind: {"t": (P, T), "nodes": stacked nodes (P, K, …), "objective": (P, steps),
    metric: (P, T) or (P, T, R)}}`` as numpy arrays, t sorted ascending and containing 0 and 1.
    """
    strategy = batching.resolve(strategy)
    n_pairs = jax.tree.leaves(theta_a_P)[0].shape[0]
    grid_T = barrier_lib.grid(settings.t_points)
    out = {}
    for i, kind in enumerate(settings.kinds):
        keys_P = jax.random.key_data(jax.random.split(jax.random.fold_in(key, i), n_pairs))
        nodes, objective = _fit_pairs(kind, path_optimizer, settings.steps, settings.t_samples, strategy,
                                      theta_a_P, theta_b_P, keys_P, data)
        ts_PT = np.broadcast_to(grid_T, (n_pairs, len(grid_T)))
        metrics = jax.device_get(_eval_pairs(kind, strategy, nodes, jnp.asarray(ts_PT), data, lam))
        if settings.refine > 0:
            extra_PE = np.stack([barrier_lib.refine(grid_T, m, settings.refine) for m in metrics["loss_train"]])
            more = jax.device_get(_eval_pairs(kind, strategy, nodes, jnp.asarray(extra_PE), data, lam))
            ts_PT = np.concatenate([ts_PT, extra_PE], axis=1)
            metrics = jax.tree.map(lambda a, b: np.concatenate([a, b], axis=1), metrics, more)
            order = np.argsort(ts_PT, axis=1, kind="stable")
            ts_PT = np.take_along_axis(ts_PT, order, axis=1)
            metrics = {k: np.take_along_axis(v, order.reshape(order.shape + (1,) * (v.ndim - 2)), axis=1) for k, v in metrics.items()}
        out[kind] = {"t": np.asarray(ts_PT), "nodes": jax.device_get(nodes), "objective": np.asarray(objective), **metrics}
    return out


def barriers(curves: dict) -> list[dict]:
    """Per pair: ``barrier_{split}`` and ``max_barrier_{split}`` of the loss curves and, for
    classification, ``err_barrier_{split}``/``err_max_barrier_{split}`` of the error curves."""
    rows = []
    for p, ts in enumerate(curves["t"]):
        row = {}
        for prefix, metric in (("", "loss"), ("err_", "err")):
            for split in ("train", "test"):
                if f"{metric}_{split}" in curves:
                    values = curves[f"{metric}_{split}"][p]
                    row[f"{prefix}barrier_{split}"] = barrier_lib.barrier(ts, values)
                    row[f"{prefix}max_barrier_{split}"] = barrier_lib.max_barrier(ts, values)
        rows.append(row)
    return rows


#: Per-t curves kept in result rows.
CURVES = ("t", "loss_train", "loss_test", "err_train", "err_test", "singular_values", "stable_rank",
          "condition_number", "effective_rank", "spectral_norm", "linf_rel", "muon_rel")


def measure_raw_and_aligned(
    a_list: list[dict],
    b_list: list[dict],
    data: Dataset,
    path_optimizer: optax.GradientTransformation,
    lam: float,
    key: jax.Array,
    settings: PathSettings = PathSettings(),
    strategy: str = "auto",
) -> list[dict]:
    """Measure P pairs ``(a_list[p], b_list[p])`` raw and with B aligned to A (one batch of 2P).

    Returns one row per pair × path kind × alignment: ``pair`` (index p), ``path``,
    ``alignment`` (``raw``/``aligned``), endpoint losses, every barrier of :func:`barriers`
    and the per-t ``curves`` of :data:`CURVES` (as lists).
    """
    from connect import alignment  # scipy, host-side

    n = len(a_list)
    b_aligned = [alignment.align(a, b) for a, b in zip(a_list, b_list)]
    stack = lambda ps: jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]), *ps)  # noqa: E731
    result = measure_pairs(stack(a_list + a_list), stack(list(b_list) + b_aligned), data, path_optimizer, lam, key, settings, strategy)
    rows = []
    for kind, curves in result.items():
        for p, row_barriers in enumerate(barriers(curves)):
            rows.append({
                "pair": p % n, "path": kind, "alignment": "raw" if p < n else "aligned",
                "loss_a_train": float(curves["loss_train"][p][0]), "loss_b_train": float(curves["loss_train"][p][-1]),
                **row_barriers,
                "curves": {c: np.asarray(curves[c][p]).tolist() for c in CURVES if c in curves},
            })
    return rows
