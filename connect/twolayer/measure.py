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
from connect import batching, constraints, paths, spectra
from connect.models import relu
from connect.twolayer import losses
from connect.twolayer.data import Dataset


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
    out.update(spectra.matrix_summaries(relu.matrices(params))["W"])
    return out


#: Nodes of every path as measured: θ_A, one free node, θ_B (a linear path's free node is
#: its midpoint, with weight 0).
N_NODES = 3


def _path_weights(kind: str, t):
    """Weights over the :data:`N_NODES` nodes for any kind (linear: ``(1 − t, 0, t)``)."""
    if kind == "linear":
        w = paths.weights("linear", 2, t)
        return jnp.stack([w[0], jnp.zeros_like(w[0]), w[1]])
    return paths.weights(kind, N_NODES, t)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _fit_pairs(kinds, optimizer, steps, t_samples, strategy, theta_a_P, theta_b_P, keys_PL, data):
    """Learn the free node of every learned kind (L of them) for P pairs: one program, mapped over P × L."""
    loss = losses.for_task(data.task)
    kind_ids = jnp.arange(len(kinds))

    def one(args):
        a, b, key, kind_id = args
        weight_fn = lambda t: jax.lax.switch(kind_id, [functools.partial(_path_weights, k) for k in kinds], t)
        return paths.fit(weight_fn, a, b, lambda p: loss(relu.apply(p, data.x_train), data.y_train),
                         optimizer, jax.random.wrap_key_data(key), n_free=N_NODES - 2, steps=steps, t_per_step=t_samples)

    n_pairs, n_kinds = keys_PL.shape[:2]
    rep = lambda x: jnp.repeat(x, n_kinds, axis=0)  # pair-major: row p·L + l
    flat = (jax.tree.map(rep, theta_a_P), jax.tree.map(rep, theta_b_P), keys_PL.reshape((n_pairs * n_kinds,) + keys_PL.shape[2:]),
            jnp.tile(kind_ids, n_pairs))
    return batching.map_leading(one, flat, strategy)


@functools.partial(jax.jit, static_argnums=(0,))
def _eval_paths(strategy, nodes_QK, w_QTK, ts_QT, data, lam):
    """``point_metrics`` at every (path q, t): nodes (Q, K, …), weights (Q, T, K)."""

    def one(args):
        nodes, w_TK, ts = args
        return jax.vmap(lambda w, t: point_metrics(paths.combine(w, nodes, t > 0.5), data, lam))(w_TK, ts)

    return batching.map_leading(one, (nodes_QK, w_QTK, ts_QT), strategy)


def _weights_table(kind: str, ts_T: np.ndarray) -> np.ndarray:
    """Node weights of ``kind`` at every t, shape ``(T, N_NODES)``."""
    return np.asarray(jax.vmap(functools.partial(_path_weights, kind))(jnp.asarray(ts_T, jnp.float32)))


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

    Learned kinds are fitted together (one compiled program for all pairs and kinds), then
    every kind is measured on the t-grid in one batched evaluation. Returns ``{kind: {"t":
    (P, T), "nodes": stacked nodes (P, 3, …), "objective": (P, steps), metric: (P, T) or
    (P, T, R)}}`` as numpy arrays, t sorted ascending and containing 0 and 1.
    """
    if strategy not in batching.TRACEABLE:
        raise ValueError(f"measure_pairs batches inside jit: strategy must be one of {', '.join(batching.TRACEABLE)}, got {strategy!r}")
    strategy = batching.resolve(strategy)
    n_pairs = jax.tree.leaves(theta_a_P)[0].shape[0]
    kinds = tuple(settings.kinds)
    learned = tuple(k for k in kinds if k != "linear")
    nodes, objective = {}, {}
    if "linear" in kinds:
        mid = jax.vmap(lambda a, b: paths.init_free(a, b, 1))(theta_a_P, theta_b_P)
        nodes["linear"] = jax.vmap(paths.stack_nodes)(theta_a_P, mid, theta_b_P)
        objective["linear"] = np.zeros((n_pairs, settings.steps), np.float32)
    if learned:
        keys = jax.random.split(key, n_pairs * len(learned)).reshape(n_pairs, len(learned))
        fitted, obj = _fit_pairs(learned, path_optimizer, settings.steps, settings.t_samples, strategy,
                                 theta_a_P, theta_b_P, jax.random.key_data(keys), data)
        for i, kind in enumerate(learned):
            nodes[kind] = batching.take(fitted, slice(i, None, len(learned)))
            objective[kind] = np.asarray(obj[i :: len(learned)])
    # one evaluation over all kinds × pairs: Q = len(kinds)·P paths
    all_nodes = jax.tree.map(lambda *x: jnp.concatenate(x), *[nodes[k] for k in kinds])
    grid_T = barrier_lib.grid(settings.t_points)
    ts_QT = np.tile(grid_T, (len(kinds) * n_pairs, 1))
    w_QTK = np.concatenate([np.broadcast_to(_weights_table(k, grid_T), (n_pairs, len(grid_T), N_NODES)) for k in kinds])
    metrics = jax.device_get(_eval_paths(strategy, all_nodes, jnp.asarray(w_QTK), jnp.asarray(ts_QT), data, lam))
    if settings.refine > 0:
        extra_QE = np.stack([barrier_lib.refine(grid_T, m, settings.refine) for m in metrics["loss_train"]])
        w_extra = np.concatenate([np.stack([_weights_table(k, e) for e in extra_QE[q * n_pairs : (q + 1) * n_pairs]])
                                  for q, k in enumerate(kinds)])
        more = jax.device_get(_eval_paths(strategy, all_nodes, jnp.asarray(w_extra), jnp.asarray(extra_QE), data, lam))
        ts_QT = np.concatenate([ts_QT, extra_QE], axis=1)
        order = np.argsort(ts_QT, axis=1, kind="stable")
        ts_QT = np.take_along_axis(ts_QT, order, axis=1)
        metrics = {k: np.take_along_axis(np.concatenate([v, more[k]], axis=1), order.reshape(order.shape + (1,) * (v.ndim - 2)), axis=1)
                   for k, v in metrics.items()}
    out = {}
    for q, kind in enumerate(kinds):
        sl = slice(q * n_pairs, (q + 1) * n_pairs)
        out[kind] = {"t": ts_QT[sl], "nodes": jax.device_get(nodes[kind]), "objective": objective[kind],
                     **{m: v[sl] for m, v in metrics.items()}}
    return out


def curve_record(curves: dict, p: int) -> dict:
    """Pair ``p``'s curves in the one schema every study writes (:func:`connect.barrier.curve`): the train loss's
    ``{"t", "loss", "barrier", "max_barrier"}``, with the same record nested for the ``test`` loss and, for
    classification, the error rates ``err_train`` and ``err_test``."""
    ts = curves["t"][p]
    rec = barrier_lib.curve(ts, curves["loss_train"][p])
    for name, key in (("loss_test", "test"), ("err_train", "err_train"), ("err_test", "err_test")):
        if name in curves:
            rec[key] = barrier_lib.curve(ts, curves[name][p])
    return rec


def barrier_columns(rec: dict) -> dict:
    """The scalar columns of a row from its :func:`curve_record`: ``barrier_{split}``, ``max_barrier_{split}``
    and, for classification, ``err_barrier_{split}``, ``err_max_barrier_{split}``."""
    out = {}
    for prefix, train, test in (("", rec, rec.get("test")), ("err_", rec.get("err_train"), rec.get("err_test"))):
        for split, c in (("train", train), ("test", test)):
            if c is not None:
                out[f"{prefix}barrier_{split}"], out[f"{prefix}max_barrier_{split}"] = c["barrier"], c["max_barrier"]
    return out


#: Per-t spectra and constraint norms of the first layer kept in result rows (``spectra``).
SPECTRA = ("t", "singular_values", "stable_rank", "condition_number", "effective_rank", "spectral_norm", "linf_rel", "muon_rel")


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
    ``alignment`` (``raw``/``aligned``), endpoint losses, the barrier columns of :func:`barrier_columns`,
    the ``curve`` (:func:`curve_record`) and the per-t ``spectra`` of :data:`SPECTRA` (as lists).
    """
    from connect.twolayer import alignment  # scipy, host-side

    n = len(a_list)
    b_aligned = [alignment.align(a, b) for a, b in zip(a_list, b_list)]
    result = measure_pairs(batching.stack(a_list + a_list), batching.stack(list(b_list) + b_aligned), data,
                           path_optimizer, lam, key, settings, strategy)
    rows = []
    for kind, curves in result.items():
        for p in range(2 * n):
            rec = curve_record(curves, p)
            rows.append({
                "pair": p % n, "path": kind, "alignment": "raw" if p < n else "aligned",
                "loss_a_train": rec["loss"][0], "loss_b_train": rec["loss"][-1], **barrier_columns(rec), "curve": rec,
                "spectra": {c: np.asarray(curves[c][p]).tolist() for c in SPECTRA},
            })
    return rows
