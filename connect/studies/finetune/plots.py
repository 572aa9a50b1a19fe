"""Figures of the finetuning study, drawn only from the run directory on disk: the point files,
``config.json`` and ``summary.json`` that :mod:`connect.studies.finetune.run` writes (PNG and PDF in ``OUT/figures``,
:func:`connect.plotting.save_figure`)."""

from __future__ import annotations

import json
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from connect.errors import UserError
from connect.plotting import save_figure
from connect.studies.finetune.analysis import aggregate, is_same, load_points, pareto_front


def plot(out: str) -> list[str]:
    """Figures of run ``out``, drawn from its point files only (PNG and PDF in ``out/figures``):

    * ``pareto`` — forgetting vs held-out accuracy (top) and loss (bottom), a column per pretraining
      optimizer, each method's points (means over seeds) and Pareto front; the method equal to the
      pretraining optimizer drawn thick with stars;
    * ``learning_curves`` — held-out task loss vs step of each method's best lr (lowest final loss);
    * ``delta_w`` — mean stable rank, spectral norm and top-k alignment of ΔW per method;
    * ``data_sizes`` — held-out accuracy vs train size per task (when the comparison ran).
    """
    matplotlib.use("Agg")
    points = load_points(out)
    if not points:
        raise UserError(f"{out} holds no finished point: run `connect study finetune --out {out}` first")
    main = [p for p in points if (p["task"], p["n_train"]) == _main_key(out, points)]
    files = _plot_pareto(out, aggregate(main))
    files += _plot_curves(out, main)
    files += _plot_delta_w(out, main)
    sized = [p for p in points if p not in main]
    if sized:
        files += _plot_sizes(out, aggregate(sized))
    return files


def _main_key(out: str, points) -> tuple:
    path = os.path.join(out, "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            c = json.load(f)
        return os.path.basename(c["task"]) if os.path.isfile(c["task"]) else c["task"], c["n_train"]
    return points[0]["task"], points[0]["n_train"]


def _columns(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """The pretraining optimizers (a column of panels each), the finetuning methods and a color per method."""
    methods = sorted({r["method"] for r in rows})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return sorted({r["pretraining_optimizer"] for r in rows}), methods, {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


def _plot_pareto(out: str, rows: list[dict]) -> list[str]:
    pre_opts, methods, colors = _columns(rows)
    fig, axes = plt.subplots(2, len(pre_opts), figsize=(4.6 * len(pre_opts), 8), squeeze=False)
    for j, pre in enumerate(pre_opts):
        for i, (y, maximize, label) in enumerate([("task_accuracy", True, "held-out accuracy"), ("task_loss", False, "held-out task loss")]):
            ax = axes[i, j]
            for m in methods:
                mr = [r for r in rows if r["pretraining_optimizer"] == pre and r["method"] == m]
                if not mr:
                    continue
                same = is_same(m, pre)
                ax.scatter([r["forgetting"] for r in mr], [r[y] for r in mr], color=colors[m], marker="*" if same else "o",
                           s=80 if same else 25, alpha=0.6)
                front = [mr[k] for k in pareto_front(mr, y=y, maximize_y=maximize)]
                ax.plot([r["forgetting"] for r in front], [r[y] for r in front], color=colors[m], lw=3 if same else 1.2,
                        label=f"{m} (same)" if same else m)
            ax.set_xlabel("forgetting (Δ val loss, nats)")
            ax.set_ylabel(label)
            ax.axvline(0.0, color="0.8", lw=0.8)
            if i == 0:
                ax.set_title(f"pretrained with {pre}")
            ax.legend(fontsize=7)
    fig.suptitle("learning vs forgetting: Pareto front of each finetuning method (means over seeds)")
    fig.tight_layout()
    return save_figure(fig, out, "pareto")


def _plot_curves(out: str, points: list[dict]) -> list[str]:
    pre_opts, methods, colors = _columns(points)
    fig, axes = plt.subplots(1, len(pre_opts), figsize=(4.2 * len(pre_opts), 3.5), squeeze=False)
    for j, pre in enumerate(pre_opts):
        ax = axes[0, j]
        for m in methods:
            ps = [p for p in points if p["pretraining_optimizer"] == pre and p["method"] == m and p["curve"]]
            if not ps:
                continue
            best = min(ps, key=lambda p: p["task_loss"])
            steps = [0] + [c["step"] for c in best["curve"]]
            ax.plot(steps, [best["task_loss_before"]] + [c["heldout_loss"] for c in best["curve"]], color=colors[m],
                    lw=2.5 if is_same(m, pre) else 1.2, label=f"{m} lr={best['lr']:g}")
        ax.set_xlabel("finetuning step")
        ax.set_ylabel("held-out task loss")
        ax.set_title(f"pretrained with {pre}")
        ax.legend(fontsize=7)
    return save_figure(fig, out, "learning_curves")


def _plot_delta_w(out: str, points: list[dict]) -> list[str]:
    pre_opts, methods, _ = _columns(points)
    stats = ("stable_rank", "spectral_norm", "top_k_alignment")
    fig, axes = plt.subplots(1, len(stats), figsize=(4.2 * len(stats), 3.5), squeeze=False)
    width = 0.8 / max(len(pre_opts), 1)
    for s_i, stat in enumerate(stats):
        ax = axes[0, s_i]
        for j, pre in enumerate(pre_opts):
            vals = []
            for m in methods:
                ps = [p for p in points if p["pretraining_optimizer"] == pre and p["method"] == m]
                vals.append(float(np.mean([np.mean(d[stat]) for p in ps for d in p["delta_w"].values()])) if ps else np.nan)
            ax.bar(np.arange(len(methods)) + j * width, vals, width, label=f"pretrained {pre}")
        ax.set_xticks(np.arange(len(methods)) + width * (len(pre_opts) - 1) / 2, methods, rotation=30)
        ax.set_title(f"ΔW {stat.replace('_', ' ')} (mean over matrices, layers, lrs)", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, out, "delta_w")


def _plot_sizes(out: str, rows: list[dict]) -> list[str]:
    task_names = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(task_names), figsize=(4.2 * len(task_names), 3.5), squeeze=False)
    for j, task in enumerate(task_names):
        ax = axes[0, j]
        for pre in sorted({r["pretraining_optimizer"] for r in rows}):
            rs = sorted((r for r in rows if r["task"] == task and r["pretraining_optimizer"] == pre), key=lambda r: r["n_train"])
            line, = ax.plot([r["n_train"] for r in rs], [r["task_accuracy"] for r in rs], marker="o",
                            label=f"pretrained {pre}, finetuned {rs[0]['method']}: held-out")
            if task != "memorize":  # memorize's held-out split is its train facts
                ax.plot([r["n_train"] for r in rs], [r.get("train_accuracy", np.nan) for r in rs], marker="x", ls="--",
                        color=line.get_color(), label=f"pretrained {pre}: train")
        sizes = sorted({r["n_train"] for r in rows})
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("train examples")
        ax.set_ylabel("exact-match accuracy" + (" (recall of the train facts)" if task == "memorize" else ""))
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, "data_sizes")
