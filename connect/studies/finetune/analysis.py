"""The finetuning study's analysis: statistics of an update and of activations, and the Pareto fronts
and summary of the point files (:mod:`connect.studies.finetune.run` writes them).

Pure functions of parameter pytrees, arrays and point dicts; nothing here trains or draws.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from connect import models, spectra
from connect.lm import tasks
from connect.models import LMConfig


def delta_w_stats(pre: dict, post: dict, top_k: int, model_cfg: LMConfig) -> dict:
    """Per kind of hidden matrix of the model's family (:func:`connect.models.layer_matrices`, each ``(out, in)``
    as the family's ``matrices`` cuts it: GPT-2's ``attn.q``, ``attn.k``, ``attn.v``, ``attn.c_proj``, ``mlp.c_fc``,
    ``mlp.c_proj``; Llama's ``self_attn.q_proj`` … ``mlp.down_proj``; GPT-NeoX's ``attention.query`` …
    ``mlp.dense_4h_to_h``) and per layer, the update ``ΔW = W_post − W_pre``:

    * ``stable_rank`` ``‖ΔW‖_F²/‖ΔW‖_2²``, ``spectral_norm`` ``‖ΔW‖_2``, ``max_abs`` ``max|ΔW_ij|``,
      ``frobenius`` ``‖ΔW‖_F`` (:func:`connect.spectra.matrix_summaries`);
    * ``top_k_alignment`` ``‖U_kᵀ ΔW V_k‖_F² / ‖ΔW‖_F²`` ∈ [0, 1], with ``U_k, V_k`` the top-``k``
      left/right singular vectors of ``W_pre``: the share of the update's energy inside the pretrained
      weights' dominant subspace; a random ΔW gives ``k²/(m n)`` in expectation (``alignment_baseline``).
    """
    out = {}
    for kind, w_LxMxN, d_LxMxN in _per_kind(pre, post, model_cfg):
        k = min(top_k, *w_LxMxN.shape[1:])
        stats = {key: np.asarray(v).tolist() for key, v in _delta_stats(w_LxMxN, d_LxMxN, k).items()}
        stats["alignment_baseline"] = k * k / (w_LxMxN.shape[1] * w_LxMxN.shape[2])
        out[kind] = stats
    return out


def _per_kind(pre: dict, post: dict, model_cfg: LMConfig):
    """``(kind, W_pre (L, out, in), ΔW (L, out, in))`` for every kind of hidden matrix, layers stacked."""
    per_layer = models.layer_matrices(model_cfg)
    matrices = models.family(model_cfg).matrices
    every = [n for names in per_layer.values() for n in names]
    w_pre, w_post = matrices(pre, model_cfg, every), matrices(post, model_cfg, every)
    for kind, names in per_layer.items():
        w_LxMxN = jnp.stack([w_pre[n] for n in names])
        yield kind, w_LxMxN, jnp.stack([w_post[n] for n in names]) - w_LxMxN


@functools.partial(jax.jit, static_argnums=2)
def _delta_stats(w_LxMxN, d_LxMxN, k: int) -> dict:
    """:func:`delta_w_stats`'s numbers for one stacked kernel, per layer."""

    def one(w_MxN, d_MxN):
        s = spectra.matrix_summaries({"dw": d_MxN})["dw"]
        u_MxR, _, vt_RxN = jnp.linalg.svd(w_MxN, full_matrices=False)
        proj_KxK = u_MxR[:, :k].T @ d_MxN @ vt_RxN[:k, :].T
        fro2 = jnp.sum(jnp.square(d_MxN))
        return {"stable_rank": s["stable_rank"], "spectral_norm": s["spectral_norm"], "max_abs": s["max_abs"],
                "frobenius": jnp.sqrt(fro2), "top_k_alignment": jnp.sum(jnp.square(proj_KxK)) / jnp.maximum(fro2, 1e-30)}

    return jax.vmap(one)(w_LxMxN, d_LxMxN)


def activation_norms(params: dict, model_cfg: LMConfig, enc: tasks.Encoded) -> dict:
    """The network's activations on the task's tokens (pad positions left out), per layer ``l``:
    ``residual_rms`` ``√mean x²`` and ``residual_max_abs`` ``max|x|`` of the residual stream entering
    block ``l`` (and ``final``: entering the final norm), ``mlp_hidden_rms`` of the MLP's hidden layer
    (GPT-2: ``gelu(LN₂(a) W_fc + b_fc)``), ``attn_out_rms`` and ``mlp_out_rms`` of the two residual branches —
    the outputs whose scale the pretraining optimizer shapes (the study's explanation of the effect)."""
    valid_NxT = np.arange(enc.x_NxT.shape[1])[None, :] < (enc.prompt_len_N + enc.answer_len_N - 1)[:, None]
    stats = _activation_stats(params, jnp.asarray(enc.x_NxT), jnp.asarray(valid_NxT, jnp.float32), model_cfg)
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


@functools.partial(jax.jit, static_argnums=3)
def _activation_stats(params, x_NxT, valid_NxT, model_cfg):
    """:func:`activation_norms`: masked statistics of the family's ``activations``, per layer."""
    acts = models.family(model_cfg).activations(params, x_NxT, model_cfg)
    n_valid = jnp.maximum(jnp.sum(valid_NxT), 1.0)
    rms = lambda a_NxTxD: jnp.sqrt(jnp.sum(jnp.mean(jnp.square(a_NxTxD), -1) * valid_NxT) / n_valid)  # noqa: E731
    max_abs = lambda a_NxTxD: jnp.max(jnp.max(jnp.abs(a_NxTxD), -1) * valid_NxT)  # noqa: E731
    per_layer = {f"{name}_rms": jax.vmap(rms)(acts[name]) for name in ("residual", "attn_out", "mlp_hidden", "mlp_out")}
    per_layer["residual_max_abs"] = jax.vmap(max_abs)(acts["residual"])
    final = acts["final_residual"]
    return {**per_layer, "final_residual_rms": rms(final), "final_residual_max_abs": max_abs(final)}


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
        row["same_optimizer"] = is_same(method, pre_opt)
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


def is_same(method: str, pretraining_optimizer: str) -> bool:
    """Whether finetuning ``method`` is the optimizer the model was pretrained with (the study's "same" method)."""
    return method == pretraining_optimizer
