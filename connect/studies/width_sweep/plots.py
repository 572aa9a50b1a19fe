"""Figures of a width-sweep run, drawn only from ``RUN/results.json`` (PNG and PDF).

1. ``barrier_vs_width`` — barrier (train) vs width, one line per pair type, mean ± std
   over pairs; columns: path kind, rows: raw / aligned;
2. ``loss_along_t`` — loss along t at one width, mean ± std per pair type;
3. ``spectrum_along_path`` — singular values of the first-layer W vs t, a same-optimizer
   and a cross-optimizer pair;
4. ``constraint_norms`` — ``λ·max|θ|`` and ``λ·‖W‖₂/s`` along the same paths, radius 1 drawn.
"""

from __future__ import annotations

import json
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from connect.errors import UserError
from connect.plotting import ordered, save_figure

FIGURES = ("barrier_vs_width", "loss_along_t", "spectrum_along_path", "constraint_norms")


def load_results(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: run `connect width-sweep --run-dir {run_dir}` first")
    with open(path) as f:
        rows = json.load(f)
    if rows and "curve" not in rows[0]:
        raise UserError(f"{path} was written by an older connect (curves before the one curve schema): rerun "
                        f"`connect width-sweep --run-dir {run_dir}` with its options to remeasure (checkpoints are reused)")
    return rows


def plot_run(run_dir: str, width: int | None = None, metric: str = "barrier_train") -> list[str]:
    """Draw every figure of :data:`FIGURES` for a run; returns the files written."""
    rows = load_results(run_dir)
    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = json.load(f)
    widths = sorted({r["width"] for r in rows})
    width = width or cfg.get("plot_width") or widths[len(widths) // 2]
    files = barrier_vs_width(rows, run_dir, metric)
    files += loss_along_t(rows, run_dir, width)
    chosen = _example_pairs(rows, width)
    files += spectrum_along_path(chosen, run_dir, width)
    files += constraint_norms(chosen, run_dir, width)
    return files


def barrier_vs_width(rows: list[dict], run_dir: str, metric: str = "barrier_train") -> list[str]:
    kinds, aligns = ordered(r["path"] for r in rows), ordered(r["alignment"] for r in rows)
    types = ordered(r["pair_type"] for r in rows)
    fig, axes = plt.subplots(len(aligns), len(kinds), figsize=(4.2 * len(kinds), 3.3 * len(aligns)), squeeze=False, sharey=True, layout="constrained")
    for i, al in enumerate(aligns):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for pt in types:
                sel = [r for r in rows if r["alignment"] == al and r["path"] == kind and r["pair_type"] == pt]
                widths = sorted({r["width"] for r in sel})
                vals = [[r[metric] for r in sel if r["width"] == w] for w in widths]
                mean, std = np.array([np.mean(v) for v in vals]), np.array([np.std(v) for v in vals])
                ls = "-" if pt.split("-")[0] == pt.split("-")[1] else "--"
                # barriers are ≥ 0: the lower bar stops at 0
                ax.errorbar(widths, mean, yerr=[np.minimum(std, mean), std], ls=ls, marker="o", ms=3, capsize=2, label=pt)
            ax.set_xscale("log", base=2)
            ax.set_yscale("symlog", linthresh=1e-3)  # barriers span 0 … ~1: linear below 1e-3, log above
            ax.set_title(f"{kind} path, {al}")
            ax.set_xlabel("width m")
            if j == 0:
                ax.set_ylabel(metric.replace("_", " "))
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, title="pair type", title_fontsize=7)
    fig.suptitle("Barrier vs width (mean ± std over pairs; dashed: cross-optimizer)")
    return save_figure(fig, run_dir, "barrier_vs_width")


def loss_along_t(rows: list[dict], run_dir: str, width: int, split: str = "train") -> list[str]:
    sel = [r for r in rows if r["width"] == width]
    if not sel:
        raise UserError(f"no results at width {width}: choose one of {sorted({r['width'] for r in rows})}")
    kinds, aligns = ordered(r["path"] for r in sel), ordered(r["alignment"] for r in sel)
    fig, axes = plt.subplots(len(aligns), len(kinds), figsize=(4.2 * len(kinds), 3.3 * len(aligns)), squeeze=False, sharey=True, layout="constrained")
    for i, al in enumerate(aligns):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for pt in ordered(r["pair_type"] for r in sel):
                group = [r for r in sel if r["alignment"] == al and r["path"] == kind and r["pair_type"] == pt]
                t = np.asarray(group[0]["curve"]["t"])
                losses = np.array([(r["curve"] if split == "train" else r["curve"][split])["loss"] for r in group])
                m, s = losses.mean(0), losses.std(0)
                line, = ax.plot(t, m, label=pt)
                ax.fill_between(t, m - s, m + s, color=line.get_color(), alpha=0.15)
            ax.set_title(f"{kind} path, {al}, m={width}")
            ax.set_xlabel("t")
            if j == 0:
                ax.set_ylabel(f"{split} loss")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, run_dir, "loss_along_t")


def _example_pairs(rows: list[dict], width: int) -> list[dict]:
    """One same-optimizer and one cross-optimizer row at ``width``: aligned, on the most
    learned path kind available (polychain > bezier > linear)."""
    sel = [r for r in rows if r["width"] == width]
    kinds = ordered(r["path"] for r in sel)
    kind = next(k for k in ("polychain", "bezier", "linear") if k in kinds)
    chosen = []
    for same in (True, False):
        cands = [r for r in sel if r["same_optimizer"] == same and r["path"] == kind and r["alignment"] == "aligned"]
        if cands:
            chosen.append(cands[0])
    return chosen


def _label(r: dict) -> str:
    return f"{r['opt_a']} s{r['seed_a']} → {r['opt_b']} s{r['seed_b']} ({r['path']}, {r['alignment']})"


def spectrum_along_path(chosen: list[dict], run_dir: str, width: int) -> list[str]:
    fig, axes = plt.subplots(1, len(chosen), figsize=(5 * len(chosen), 3.6), squeeze=False, layout="constrained")
    for ax, r in zip(axes[0], chosen):
        t = np.asarray(r["spectra"]["t"])
        sv = np.asarray(r["spectra"]["singular_values"])
        for k in range(sv.shape[1]):
            ax.plot(t, sv[:, k], color=matplotlib.colormaps["viridis"](k / max(1, sv.shape[1] - 1)), lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("singular values of W")
        ax.set_title(_label(r), fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"First-layer spectrum along the path, m={width}")
    return save_figure(fig, run_dir, "spectrum_along_path")


def constraint_norms(chosen: list[dict], run_dir: str, width: int) -> list[str]:
    fig, axes = plt.subplots(1, len(chosen), figsize=(5 * len(chosen), 3.6), squeeze=False, layout="constrained")
    for ax, r in zip(axes[0], chosen):
        t = np.asarray(r["spectra"]["t"])
        ax.plot(t, r["spectra"]["linf_rel"], label="λ·max|θ|  (AdamW/Lion ball)")
        ax.plot(t, r["spectra"]["muon_rel"], label="λ·‖W‖₂/s  (Muon ball)")
        ax.axhline(1.0, color="k", ls=":", label="radius")
        ax.set_xlabel("t")
        ax.set_ylabel("norm / radius")
        ax.set_title(_label(r), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Constraint norms along the path, m={width}")
    return save_figure(fig, run_dir, "constraint_norms")
