"""Figures of the small-width example (THEORY.md §E): the reduced landscape ``g_C`` on the
(φ₁, φ₂) torus with the zero-loss points, their regions, the certified separating level and
the upper-bound path; the barrier bounds against grid size and width; where trained runs land.
Each function takes result dicts (from :mod:`theory.certificate`, :mod:`theory.example` and
:func:`theory.example_report.example_results`) and an output directory and writes ``NAME.png``
and ``NAME.pdf``; it returns the two paths."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from connect.plotting import save_figure  # noqa: E402
from theory import certificate as ce  # noqa: E402

_REGION_STYLE = {"box": ("tab:blue", "o", "box (AdamW, λ_A)"), "muon_full": ("tab:red", "s", "Muon-full (λ_M)"),
                 "none": ("0.4", "x", "neither")}
_OPT_STYLE = {"adamw": ("tab:blue", "AdamW"), "muon": ("tab:orange", "Muon (Newton–Schulz)"),
              "muon_exact": ("tab:red", "Muon (exact msign)"), "muon_full": ("tab:purple", "Muon-full (exact msign)")}


def _save(fig, out_dir: str, name: str) -> list[str]:
    return save_figure(fig, out_dir, name, subdir="", dpi=150)


def _deg(phi):
    return np.rad2deg(np.mod(np.asarray(phi) + np.pi, 2 * np.pi) - np.pi)


def _region(reg: dict) -> str:
    return "box" if reg["in_box"] else "muon_full" if reg["in_muon_full"] else "none"


def _mark_configs(ax, configs, regions):
    seen = set()
    for k, r in zip(configs, regions):
        color, marker, label = _REGION_STYLE[_region(r)]
        p = _deg(k["phi"])
        for q in (p, p[::-1]):
            ax.scatter(q[0], q[1], s=90, c=color, marker=marker, edgecolors="white", linewidths=1.2, zorder=5,
                       label=None if label in seen else label)
            seen.add(label)


def landscape(cert: dict, configs: list[dict], regions: list[dict], out_dir: str, runs: dict | None = None,
              name: str = "example_landscape") -> list[str]:
    """``log10 g_C`` on the torus (``cert`` from :func:`theory.certificate.certify`), the zero-loss
    points by region, the contour ``LB = lower`` (the certified separating level: every
    C-bounded path between the two regions crosses a cell with ``LB ≥ lower``), the upper-bound
    path and, optionally, the final angles of trained ``runs`` ({optimizer: train_runs result})."""
    n = cert["n_grid"]
    ext = np.rad2deg([-np.pi - np.pi / n, np.pi - np.pi / n])
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    img = ax.imshow(np.log10(np.maximum(cert["g"], 1e-8)).T, origin="lower", extent=[*ext, *ext], cmap="viridis",
                    aspect="equal")
    fig.colorbar(img, ax=ax, label=r"$\log_{10} g_C(\varphi)$" + f", C = {cert['c_max']:.2f}")
    deg = np.rad2deg(ce.centres(n))
    if cert["lower"] > 0:
        ax.contour(deg, deg, cert["lb"].T, levels=[cert["lower"]], colors="magenta", linewidths=1.0)
        ax.plot([], [], c="magenta", lw=1.0, label=f"LB = certified {cert['lower']:.2e}")
    path = _deg(cert["phi_T"])
    jump = np.abs(np.diff(path, axis=0)).max(axis=1) > 180  # do not draw across the wrap
    path = np.where(np.concatenate([[False], jump])[:, None], np.nan, path)
    ax.plot(path[:, 0], path[:, 1], c="orange", lw=1.4, label=f"upper-bound path (max {cert['upper']:.2e})")
    _mark_configs(ax, configs, regions)
    for opt, res in (runs or {}).items():
        color, label = _OPT_STYLE.get(opt, ("k", opt))
        phi = np.stack([r["phi"] for r in res["runs"]])
        both = np.concatenate([phi, phi[:, ::-1]])
        ax.scatter(_deg(both[:, 0]), _deg(both[:, 1]), s=12, c=color, marker="^", alpha=0.7, label=f"{label} runs")
    ax.set(xlabel=r"$\varphi_1$ (deg)", ylabel=r"$\varphi_2$ (deg)", xlim=ext, ylim=ext,
           title=f"min over |c| ≤ C of the loss, N = {n}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=7)
    return _save(fig, out_dir, name)


def barrier_bounds(certs: list[dict], wide: dict, out_dir: str, name: str = "example_barrier") -> list[str]:
    """Left: certified lower bound, grid minimax and upper bound against N (``certs``, one per N).
    Right: the barrier against width — width 2 the [lower, upper] bracket at the largest N,
    widths in ``wide`` ({width: barrier of :func:`theory.wide_paths.wide_path`})."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [c["n_grid"] for c in certs]
    for key, style, label in (("lower", "o-", "certified lower bound"), ("grid_minimax", "s--", "grid minimax of $g_C$"),
                              ("upper", "^-", "upper bound (dense path)")):
        ax1.plot(ns, [c[key] for c in certs], style, label=label)
    ax1.set(xlabel="grid size N", ylabel="loss barrier", title="width 2: bounds vs N")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(ns, [str(n) for n in ns])
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.legend(fontsize=8)
    last = max(certs, key=lambda c: c["n_grid"])
    widths = [2, *sorted(wide)]
    lo = [last["lower"], *[wide[m] for m in sorted(wide)]]
    hi = [last["upper"], *[wide[m] for m in sorted(wide)]]
    ax2.vlines(widths, lo, hi, colors="k", lw=3)
    ax2.plot(widths, lo, "o", label="lower bound (certified at width 2)")
    ax2.plot(widths, hi, "^", label="upper bound (explicit path)")
    ax2.set(yscale="symlog", xlabel="width m", ylabel="max loss − max endpoint loss", xticks=widths,
            title="barrier between the box and Muon-full zero-loss points")
    ax2.set_yscale("symlog", linthresh=1e-5)
    ax2.set_ylim(0, 2 * max(hi))
    fig.subplots_adjust(wspace=0.35)
    ax2.legend(fontsize=8)
    return _save(fig, out_dir, name)


def runs_summary(runs: dict, out_dir: str, name: str = "example_runs") -> list[str]:
    """Per optimizer ({optimizer: train_runs result}): final loss against the distance to the
    nearest zero-loss configuration, coloured by which configuration is nearest."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False, sharey=True)
    for ax, (opt, res) in zip(axes[0], runs.items()):
        rows = res["runs"]
        near = np.array([r.get("nearest", -1) for r in rows])
        dist = np.array([r.get("distance", np.nan) for r in rows])
        loss = np.array([r["loss"] for r in rows])
        for k, color in zip(sorted(set(near)), ("tab:blue", "tab:red", "tab:green", "0.4")):
            sel = near == k
            ax.scatter(dist[sel], loss[sel], s=18, c=color, label=f"nearest config {k} ({sel.sum()})")
        ax.set(xlabel="quotient distance to nearest zero-loss config", yscale="log",
               title=f"{_OPT_STYLE.get(opt, ('k', opt))[1]}, λ = {res['lam']:.3f}")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("final training loss")
    return _save(fig, out_dir, name)
