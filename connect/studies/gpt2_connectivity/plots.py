"""Tables and figures of the GPT-2 connectivity study, drawn only from ``OUT/results.json`` (:mod:`connect.studies.gpt2_connectivity.run`).

Tables (``OUT/tables/``, markdown and JSON), mean ± std over the pairs of a type (population std):

* ``barriers`` — the study's Table 1 form: rows pair type × path kind, columns datasets (the val split and the
  out-of-distribution corpus), the seed's barrier ``max_t [L(t) − ((1−t)L(0) + tL(1))]``; one block per alignment;
* ``ensembles`` — losses of the endpoints, of their averaged predictions, of the best path point, and of the
  endpoints plus that point (Garipov et al. 2018, §5).

Figures (``OUT/figures/``, PNG and PDF):

1. ``loss_along_t`` — val loss along t, raw vs aligned, per pair type and path kind, bands ±1 std over pairs;
2. ``spectral_strip`` — histograms of the chosen matrix's singular values at t = 0, .1, .3, .5, .7, .9, 1 with
   stable rank ``Σσ²/σ₁²`` and condition number ``σ₁/σ_(5th pct)`` on each panel, the loss along t below,
   for a same- and a cross-optimizer path;
3. ``spectral_summary`` — median over matrices of stable rank and condition number vs t per pair type;
4. ``planes`` — loss on the plane through A, B and the learned bend, raw vs aligned;
5. ``ood_barriers`` — ``L(t) − chord(t)`` on the val split vs the out-of-distribution corpus.
"""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np

from connect import barrier
from connect.errors import UserError
from connect.io import write_json_atomic, write_text_atomic
from connect.plotting import ordered, save_figure

#: t at which the spectral strip shows histograms (the study's figure).
STRIP_TS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
FIGURES = ("loss_along_t", "spectral_strip", "spectral_summary", "planes", "ood_barriers")
TABLES = ("barriers", "ensembles")


def load_results(out: str) -> dict:
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: run `connect study gpt2 --out {out}` first")
    with open(path) as f:
        return json.load(f)


def plot_study(out: str) -> list[str]:
    """Every table of :data:`TABLES` and figure of :data:`FIGURES`; returns the files written."""
    res = load_results(out)
    rows = _rows(res)
    files = barrier_table(rows, res, out) + ensemble_table(rows, out)
    files += loss_along_t(rows, out) + spectral_strip(rows, res, out) + spectral_summary(rows, out)
    files += plane_plots(res, out) + ood_barriers(rows, res, out)
    return files


def _rows(res: dict) -> list[dict]:
    """One row per (pair, alignment, path kind), with the pair's identity."""
    return [{**{k: p[k] for k in ("key", "pair_type", "same_optimizer")}, **r} for p in res["pairs"] for r in p["paths"]]


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std())


def _groups(rows: list[dict]):
    """``(alignment, pair type, path kind, rows)`` in first-seen order."""
    for al in ordered(r["alignment"] for r in rows):
        for pt in ordered(r["pair_type"] for r in rows):
            for kind in ordered(r["path"] for r in rows):
                sel = [r for r in rows if (r["alignment"], r["pair_type"], r["path"]) == (al, pt, kind)]
                if sel:
                    yield al, pt, kind, sel


def _write_table(out: str, name: str, markdown: str, obj) -> list[str]:
    md, js = os.path.join(out, "tables", f"{name}.md"), os.path.join(out, "tables", f"{name}.json")
    write_text_atomic(md, markdown)
    write_json_atomic(js, obj)
    return [md, js]


def barrier_table(rows: list[dict], res: dict, out: str) -> list[str]:
    """Barrier mean ± std over pairs: rows pair type × path, columns datasets; one block per alignment."""
    sets = [(res["corpus"] + " (val)", lambda r: r["curve"]["barrier"])]
    if res.get("ood_corpus"):
        sets.append((res["ood_corpus"] + " (OOD)", lambda r: r["curve"]["ood"]["barrier"]))
    entries, lines = [], ["# Barriers max_t [L(t) − ((1−t)L(0) + tL(1))] (nats), mean ± std over pairs", ""]
    for al in ordered(r["alignment"] for r in rows):
        lines += [f"## {al}", "", "| pair type | path | pairs | " + " | ".join(s for s, _ in sets) + " |",
                  "|---|---|---|" + "---|" * len(sets)]
        for al_, pt, kind, sel in _groups(rows):
            if al_ != al:
                continue
            cells = []
            for name, get in sets:
                m, s = _mean_std([get(r) for r in sel])
                cells.append(f"{m:.4f} ± {s:.4f}")
                entries.append({"alignment": al, "pair_type": pt, "path": kind, "dataset": name, "mean": m, "std": s, "n_pairs": len(sel)})
            lines.append(f"| {pt} | {kind} | {len(sel)} | " + " | ".join(cells) + " |")
        lines.append("")
    return _write_table(out, "barriers", "\n".join(lines), entries)


def ensemble_table(rows: list[dict], out: str) -> list[str]:
    """Ensemble losses mean ± std over pairs, per alignment, pair type and path."""
    cols = ("loss_a", "loss_b", "endpoints", "best_point", "endpoints_and_best")
    entries, lines = [], ["# Ensembles: val loss (nats) of averaged predictions, mean ± std over pairs", "",
                          "| alignment | pair type | path | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for al, pt, kind, sel in _groups(rows):
        sel = [r for r in sel if r["curve"].get("ensemble")]
        if not sel:
            continue
        entry = {"alignment": al, "pair_type": pt, "path": kind, "n_pairs": len(sel)}
        cells = []
        for c in cols:
            vals = [r["curve"]["ensemble"][c] for r in sel if r["curve"]["ensemble"][c] is not None]
            if vals:
                entry[c] = _mean_std(vals)
                cells.append(f"{entry[c][0]:.4f} ± {entry[c][1]:.4f}")
            else:
                cells.append("-")
        entries.append(entry)
        lines.append(f"| {al} | {pt} | {kind} | " + " | ".join(cells) + " |")
    return _write_table(out, "ensembles", "\n".join(lines) + "\n", entries)


def _band(ax, t, curves, label, ls="-", color=None):
    c = np.asarray(curves, np.float64)
    m, s = c.mean(0), c.std(0)
    line, = ax.plot(t, m, ls=ls, label=label, color=color)
    ax.fill_between(t, m - s, m + s, color=line.get_color(), alpha=0.15)
    return line


def loss_along_t(rows: list[dict], out: str) -> list[str]:
    types, kinds = ordered(r["pair_type"] for r in rows), ordered(r["path"] for r in rows)
    fig, axes = plt.subplots(len(kinds), len(types), figsize=(4.2 * len(types), 3.2 * len(kinds)), squeeze=False, sharey=True)
    fig.subplots_adjust(hspace=0.5, wspace=0.3)  # no constrained layout: it triples the drawing time
    for i, kind in enumerate(kinds):
        for j, pt in enumerate(types):
            ax = axes[i][j]
            for al, ls in (("raw", "--"), ("aligned", "-")):
                sel = [r for r in rows if (r["alignment"], r["pair_type"], r["path"]) == (al, pt, kind)]
                if sel:
                    _band(ax, sel[0]["curve"]["t"], [r["curve"]["loss"] for r in sel], f"{al} ({len(sel)} pairs)", ls=ls)
            ax.set_title(f"{pt}, {kind} path")
            ax.set_xlabel("t")
            if j == 0:
                ax.set_ylabel("val loss (nats)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Val loss along the path, raw vs aligned (mean ± std over pairs)")
    return save_figure(fig, out, "loss_along_t")


def _strip_rows(rows: list[dict]) -> list[dict]:
    """A same- and a cross-optimizer path: aligned if measured, on the most learned kind available."""
    kind = next(k for k in ("polychain", "bezier", "linear") if any(r["path"] == k for r in rows))
    chosen = []
    for same in (True, False):
        for al in ("aligned", "raw"):
            cands = [r for r in rows if r["same_optimizer"] == same and r["path"] == kind and r["alignment"] == al]
            if cands:
                chosen.append(cands[0])
                break
    return chosen


def spectral_strip(rows: list[dict], res: dict, out: str) -> list[str]:
    chosen = _strip_rows(rows)
    n = len(STRIP_TS)
    fig = plt.figure(figsize=(2.1 * n, 3.9 * len(chosen)))
    grids = fig.add_gridspec(2 * len(chosen), n, height_ratios=[2, 1] * len(chosen), hspace=0.55, wspace=0.3)
    for i, r in enumerate(chosen):
        spec = r["spectra"]
        t = np.asarray(spec["t"])
        sv_TxR = np.asarray(spec["matrix"]["singular_values"])
        bins = np.linspace(0.0, sv_TxR.max() * 1.02, 30)
        for j, ts in enumerate(STRIP_TS):
            k = int(np.argmin(np.abs(t - ts)))
            ax = fig.add_subplot(grids[2 * i, j])
            ax.hist(sv_TxR[k], bins=bins, color="C0" if r["same_optimizer"] else "C3", alpha=0.8)
            ax.set_title(f"t = {t[k]:.1f}", fontsize=8)
            ax.text(0.97, 0.95, f"srank {spec['matrix']['stable_rank'][k]:.1f}\ncond {spec['matrix']['condition_number'][k]:.1f}",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(f"{r['key']}\n({r['path']}, {r['alignment']})", fontsize=7)
        ax = fig.add_subplot(grids[2 * i + 1, :])
        ax.plot(r["curve"]["t"], r["curve"]["loss"], marker="o", ms=3)
        for ts in STRIP_TS:
            ax.axvline(ts, color="k", lw=0.5, alpha=0.3)
        ax.set_xlabel("t")
        ax.set_ylabel("val loss", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Singular values of {res['spectra_matrix']} along the path (stable rank, condition number σ₁/σ₅%)")
    return save_figure(fig, out, "spectral_strip")


def spectral_summary(rows: list[dict], out: str) -> list[str]:
    combos = ordered((r["path"], r["alignment"]) for r in rows)
    stats = ("stable_rank", "condition_number")
    fig, axes = plt.subplots(len(combos), 2, figsize=(9, 3.0 * len(combos)), squeeze=False)
    fig.subplots_adjust(hspace=0.5, wspace=0.3)  # no constrained layout: it triples the drawing time
    for i, (kind, al) in enumerate(combos):
        for j, stat in enumerate(stats):
            ax = axes[i][j]
            for pt in ordered(r["pair_type"] for r in rows):
                sel = [r for r in rows if (r["path"], r["alignment"], r["pair_type"]) == (kind, al, pt)]
                if sel:
                    _band(ax, sel[0]["spectra"]["t"], [r["spectra"]["median"][stat] for r in sel], pt)
            ax.set_title(f"{kind} path, {al}", fontsize=9)
            ax.set_xlabel("t")
            ax.set_ylabel(f"median {stat.replace('_', ' ')}")
            if stat == "condition_number":
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Spectra along the path: median over matrices (mean ± std over pairs)")
    return save_figure(fig, out, "spectral_summary")


def plane_plots(res: dict, out: str) -> list[str]:
    items = [(p["key"], pl) for p in res["pairs"] for pl in p.get("planes", [])]
    if not items:
        return []
    keys = ordered(k for k, _ in items)
    aligns = ordered(pl["alignment"] for _, pl in items)
    fig, axes = plt.subplots(len(keys), len(aligns), figsize=(4.6 * len(aligns), 3.8 * len(keys)), squeeze=False)
    fig.subplots_adjust(hspace=0.5, wspace=0.45)  # no constrained layout: it triples the drawing time
    for i, key in enumerate(keys):
        for j, al in enumerate(aligns):
            ax = axes[i][j]
            pl = next((p for k, p in items if k == key and p["alignment"] == al), None)
            if pl is None:
                ax.axis("off")
                continue
            loss = np.asarray(pl["loss"])
            levels = np.linspace(loss.min(), min(loss.max(), loss.min() + 3 * (np.median(loss) - loss.min()) + 1e-6), 20)
            cs = ax.contourf(pl["u"], pl["v"], np.minimum(loss, levels[-1]), levels=levels, cmap="viridis")
            fig.colorbar(cs, ax=ax, label="val loss")
            pts = np.asarray(pl["points"])
            for (u, v), name, lv in zip(pts, ("A", "B", "bend"), pl["point_loss"]):
                ax.plot(u, v, "o", color="w", mec="k")
                ax.annotate(f"{name} {lv:.3f}", (u, v), textcoords="offset points", xytext=(4, 4), color="w", fontsize=7)
            ax.set_title(f"{key}, {al}", fontsize=8)
            ax.set_xlabel("u (along B − A)")
            ax.set_ylabel("v")
    fig.suptitle("Loss on the plane through A, B and the learned bend")
    return save_figure(fig, out, "planes")


def ood_barriers(rows: list[dict], res: dict, out: str) -> list[str]:
    if not res.get("ood_corpus"):
        return []
    kinds, aligns = ordered(r["path"] for r in rows), ordered(r["alignment"] for r in rows)
    fig, axes = plt.subplots(len(aligns), len(kinds), figsize=(4.4 * len(kinds), 3.3 * len(aligns)), squeeze=False, sharey=True)
    fig.subplots_adjust(hspace=0.5, wspace=0.3)  # no constrained layout: it triples the drawing time
    for i, al in enumerate(aligns):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for c, pt in enumerate(ordered(r["pair_type"] for r in rows)):
                sel = [r for r in rows if (r["alignment"], r["path"], r["pair_type"]) == (al, kind, pt)]
                if not sel:
                    continue
                for split, ls in (("val", "-"), ("ood", "--")):
                    curves = [_above_chord(r["curve"] if split == "val" else r["curve"]["ood"]) for r in sel]
                    _band(ax, sel[0]["curve"]["t"], curves, f"{pt} {split}", ls=ls, color=f"C{c}")
            ax.set_title(f"{kind} path, {al}")
            ax.set_xlabel("t")
            if j == 0:
                ax.set_ylabel("L(t) − chord (nats)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(f"Barrier curves: {res['corpus']} val (solid) vs {res['ood_corpus']} (dashed, out of distribution)")
    return save_figure(fig, out, "ood_barriers")


def _above_chord(curve: dict) -> np.ndarray:
    return np.asarray(curve["loss"]) - barrier.chord(curve["t"], curve["loss"])
