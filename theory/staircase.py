"""The width staircase on small random data (THEORY.md §C–D): for each width m, the constrained
optimum from the convex programs, trained networks per optimizer, and whether CONNECT joins
pairs of them inside the optimizer's set — with the barrier of the straight line against that
of the constructive path, both from the ordinary barrier code.

Per width m and optimizer (an optimizer of :mod:`connect.optimizers` whose implicit set is the
box ``‖θ‖∞ ≤ 1/λ`` or Muon's ``‖W‖₂ ≤ s/λ, ‖a‖∞ ≤ 1/λ``, THEORY.md §B):

(a) **Optimum** (:func:`theory.convex.optimum`, all patterns for d = 2): a bracket
    ``lower ≤ p_C(m) ≤ upper``. Box, §C3: ``p_∞(m r²) ≤ p_box(m) ≤ p_∞((m − n) r²)`` (upper =
    the zero network's loss for ``m ≤ n``); Muon-hybrid: ``p_∞(m r_W r_a) ≤ p_hyb(m) ≤
    p_opfull(m)`` from ``C_op-full ⊂ C_hyb ⊂ C_∞`` (upper = the zero network's loss when the
    Muon-full optimum needs more than m neurons). ``upper`` is attained by a network, ``lower`` is
    certified: no network of the set at width m has a smaller loss. Alongside, once for the data,
    the weight-decay program C1 at a given ``β`` (Pilanci & Ergen 2020) with ``m*``, ``M*`` and the
    staircase width ``min(m* + M*, n + 1)`` from which its optimal set is connected (Kim, Mishkin
    & Pilanci 2025, arXiv 2411.07729) [S]; each row says whether ``m`` is at or above it.
(b) **Training** (:func:`connect.twolayer.training.train`, full batch, float64, decoupled decay λ) from
    several seeds; each final network is projected onto the optimizer's set
    (:meth:`connect.constraints.ConstraintSet.project`: training only ends *near* the set,
    THEORY.md §F.2), the distance recorded. Independent check: every projected network's loss is
    ``≥ lower − tol`` — a trained network never beats the convex optimum (§F.3).
(c) **Pairs**: for each pair of projected networks, CONNECT (:func:`theory.connectivity.connect_pair`)
    returns a constructive path inside the set or INCONCLUSIVE with its reason (for the box and
    the hybrid it succeeds whenever the supports after reduction fit, ``k_A + k_B ≤ m``, §D).
    Both the straight line and the constructive path are evaluated by
    :func:`theory.connectivity.path_report` (:func:`connect.models.relu.apply`,
    :mod:`connect.barrier`): ``max_barrier = max_t L − max(L_A, L_B)`` and the chord barrier
    ``max_t [L − (1−t)L_A − tL_B]``. Guaranteed (§D): a constructive path has
    ``max_barrier ≤ tol``, hence never more than the line's; its chord barrier may be positive
    when ``L_A ≠ L_B`` (the reductions hold the endpoint loss while the chord moves).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from connect import optimizers as optim
from connect.errors import UserError
from connect.io import write_json_atomic
from connect.models import relu
from connect.plotting import save_figure
from connect.twolayer import losses, training
from theory import connectivity, convex, critical_widths, recovery
from theory import patterns as pat

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Constraint kinds of the optimizers a staircase accepts (those with a convex bracket, §C).
KINDS = ("linf", "muon")


@dataclasses.dataclass(frozen=True)
class StaircaseResult:
    """Output of :func:`staircase`. ``weight_decay``: C1 at ``β`` (``value``, ``m_star``,
    ``M_star``, ``staircase_width``); ``rows``: one dict per (width, optimizer) with the optimum
    bracket, trained losses and per-pair CONNECT results (see :func:`staircase`); ``networks``
    and ``paths``: the projected trained networks ``{(m, opt): [params]}`` and CONNECT's answers
    ``{(m, opt, i, j): ConstructivePath | Inconclusive}`` (not in :meth:`to_dict`)."""

    x_NxD: np.ndarray
    y_N: np.ndarray
    lam: float
    widths: tuple
    optimizers: tuple
    seeds: tuple
    steps: int
    weight_decay: dict
    rows: tuple
    networks: dict
    paths: dict

    def row(self, width: int, optimizer: str) -> dict:
        return next(r for r in self.rows if r["width"] == width and r["optimizer"] == optimizer)

    def to_dict(self) -> dict:
        """JSON-ready: the data, settings, C1 summary and rows (plain floats, ints, strings)."""
        return _plain({"x": self.x_NxD.tolist(), "y": self.y_N.tolist(), "lam": self.lam, "widths": list(self.widths),
                       "optimizers": list(self.optimizers), "seeds": list(self.seeds), "steps": self.steps,
                       "weight_decay": self.weight_decay, "rows": list(self.rows)})


def _plain(obj):
    """Nested dicts/lists with NaN as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def random_data(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points on the unit circle at uniform random angles, targets ``N(0, 1)`` (float64, d = 2)."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0.0, 2 * np.pi, n)
    return np.stack([np.cos(ang), np.sin(ang)], axis=1), rng.normal(size=n)


def _mse(params, x, y):
    return losses.mse(relu.apply(params, x), y)


def train_projected(x_NxD, y_N, width: int, optimizer: str, lam: float, seeds, steps: int, lr: float | None = None):
    """Bias-free width-m networks trained by ``optimizer`` from each seed (float64, full batch,
    squared loss), projected onto the optimizer's set; ``(networks, raw losses, distances)``."""
    cset = optim.constraint(optimizer, lam, relu.MUON_MATRICES)
    lr = optim.spec(optimizer).default_lr if lr is None else lr
    cfg = relu.ReluConfig(d_in=np.shape(x_NxD)[1], width=int(width), bias=False)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x_NxD, jnp.float64), jnp.asarray(y_N, jnp.float64)
        params_S, _ = training.train(functools.partial(relu.init, cfg=cfg), _mse,
                                     optim.make(optimizer, lr, lam, relu.MUON_MATRICES), list(seeds), x, y, steps)
        nets, raw, dist = [], [], []
        for i in range(len(seeds)):
            p = {k: v[i] for k, v in params_S.items()}
            raw.append(float(_mse(p, x, y)))
            dist.append(float(cset.distance(p)))
            nets.append({k: np.asarray(v, np.float64) for k, v in cset.project(p).items()})
    return nets, raw, dist


def _pair(pa: dict, pb: dict, x, y, cset, tol: float, n_line: int) -> tuple[dict, object]:
    """CONNECT between two networks and the barriers of the line and of the constructive path."""
    line = connectivity.path_report(connectivity.linear_path(pa, pb), x, y, cset, np.linspace(0.0, 1.0, n_line))
    out = connectivity.connect_pair(pa, pb, x, y, cset, tol=tol)
    nums = out.numbers
    row = {"linear_max_barrier": line["max_barrier"], "linear_barrier": line["barrier"],
           "bound_a": int(nums.get("bound_a", -1)), "bound_b": int(nums.get("bound_b", -1))}
    if isinstance(out, connectivity.Inconclusive):
        return {**row, "result": "inconclusive", "reason": out.reason, "k_a": out.k_a, "k_b": out.k_b,
                "path_max_barrier": math.nan, "path_barrier": math.nan, "path_max_relative_norm": math.nan}, out
    rep = connectivity.path_report(out, x, y, cset, np.linspace(0.0, 1.0, 8 * len(out.segments) + 1))
    return {**row, "result": "path", "reason": "", "k_a": out.numbers["k_a"], "k_b": out.numbers["k_b"],
            "path_max_barrier": rep["max_barrier"], "path_barrier": rep["barrier"],
            "path_max_relative_norm": rep["max_relative_norm"]}, out


def staircase(x_NxD, y_N, widths, optimizers=("adamw", "muon"), lam: float = 1.0, seeds=(0, 1, 2), steps: int = 2000,
              beta: float = 0.01, tol: float = 1e-9, optimum_tol: float = 1e-7, n_line: int = 101) -> StaircaseResult:
    """The staircase of the module docstring on ``(x, y)`` (squared loss, no bias).

    Each row: ``width``, ``optimizer``, ``constraint``; the bracket ``optimum_lower``,
    ``optimum_upper``, ``optimum_exact`` (bracket closed over all patterns), ``zero_loss`` (loss of
    the zero network); ``above_staircase`` (``m ≥`` C1's staircase width); ``trained_losses``
    (projected networks), ``raw_losses``, ``projection_distances``, ``trained_mean``,
    ``trained_minus_lower`` (min over seeds; ``never_below``: ≥ ``−optimum_tol·max(1, L0)``);
    ``pairs`` (per pair: seeds, ``result`` path/inconclusive, ``reason``, ``k_a``, ``k_b`` and the
    reduction's bounds ``bound_a``, ``bound_b`` (−1 when not reached), linear and constructive ``max_barrier``/``barrier``, the path's largest relative norm);
    ``connected_fraction``. ``tol`` is CONNECT's check tolerance. ``beta``: the weight decay of the
    C1 reference staircase (at ``β = λ`` the zero network is often optimal, ``m* = 0``)."""
    x_NxD, y_N = np.asarray(x_NxD, np.float64), np.asarray(y_N, np.float64)
    names = tuple(optimizers)
    for name in names:
        if _kind(name) not in KINDS:
            raise UserError(f"the staircase compares with a constrained optimum: {name!r} has no ball "
                            f"(kind {_kind(name)!r}); use optimizers whose set is the box or Muon's")
    if not widths or min(widths) < 1:
        raise UserError(f"widths must be ≥ 1, got {list(widths)}")
    if len(seeds) < 2:
        raise UserError("the staircase needs at least two seeds to form pairs")
    # the convex optima first: convex.optimum validates the data and λ (one-line UserErrors)
    optima = {(m, name): convex.optimum(x_NxD, y_N, name, lam, width=int(m)) for m, name in itertools.product(widths, names)}
    n = len(y_N)
    zero_loss = recovery.data_loss(np.zeros(n), y_N)
    d_PxN = pat.complete(x_NxD, 1000, 0).d_PxN
    wd = critical_widths.weight_decay_optimum(x_NxD, y_N, d_PxN, beta)
    stair = critical_widths.staircase_width(wd.m_star, wd.M_star, n)
    weight_decay = {"value": wd.value, "m_star": wd.m_star, "M_star": -1 if wd.M_star is None else wd.M_star,
                    "staircase_width": stair, "beta": float(beta), "n_patterns": int(len(d_PxN))}
    rows, nets_all, paths = [], {}, {}
    for m, name in itertools.product(widths, names):
        opt = optima[m, name]
        lower = float(opt.bracket["value_lower"])
        nets, raw, dist = train_projected(x_NxD, y_N, m, name, lam, seeds, steps)
        trained = [recovery.data_loss(recovery.forward(p, x_NxD), y_N) for p in nets]
        cset = optim.constraint(name, lam, relu.MUON_MATRICES)
        pairs = []
        for i, j in itertools.combinations(range(len(seeds)), 2):
            res, out = _pair(nets[i], nets[j], x_NxD, y_N, cset, tol, n_line)
            pairs.append({"seeds": [int(seeds[i]), int(seeds[j])], **res})
            paths[m, name, i, j] = out
        nets_all[m, name] = nets
        gap = min(trained) - lower
        rows.append({"width": int(m), "optimizer": name, "constraint": opt.constraint, "optimum_lower": lower,
                     "optimum_upper": float(opt.value), "optimum_exact": bool(opt.exact), "zero_loss": zero_loss,
                     "above_staircase": bool(m >= stair), "trained_losses": trained, "raw_losses": raw,
                     "projection_distances": dist, "trained_mean": float(np.mean(trained)), "trained_minus_lower": gap,
                     "never_below": bool(gap >= -optimum_tol * max(1.0, zero_loss)), "pairs": pairs,
                     "connected_fraction": float(np.mean([p["result"] == "path" for p in pairs]))})
    return StaircaseResult(x_NxD, y_N, float(lam), tuple(int(m) for m in widths), names, tuple(int(s) for s in seeds),
                           int(steps), weight_decay, tuple(rows), nets_all, paths)


def _kind(name: str) -> str:
    return optim.spec(name).constraint_kind


# ---------------------------------------------------------------- figure

#: Values below this are drawn at it on the logarithmic axes (losses and barriers reach round-off, or 0).
FLOOR = 1e-12
_STYLE = {"adamw": ("tab:blue", "o"), "muon": ("tab:orange", "s"), "muon_exact": ("tab:red", "D"),
          "lion": ("tab:green", "^"), "signsgd": ("tab:olive", "v")}


def _rows_of(result: StaircaseResult, name: str) -> list[dict]:
    return sorted((r for r in result.rows if r["optimizer"] == name), key=lambda r: r["width"])


def _pair_mean(row: dict, key: str, only_paths: bool = False) -> float:
    vals = [p[key] for p in row["pairs"] if not only_paths or p["result"] == "path"]
    return float(np.mean(vals)) if vals else math.nan


def staircase_figure(result: StaircaseResult, out_dir: str, name: str = "staircase") -> list[str]:
    """Four panels against width, per optimizer: (1) the optimum bracket ``[lower, upper]`` (band)
    and the mean loss of the projected trained networks (min–max bars), with C1's staircase
    width (dotted); (2) the fraction of pairs CONNECT joins; (3) ``max_t L − max(L_A, L_B)`` of the
    straight line (solid) and of the constructive path (dashed, successful pairs), mean over
    pairs; (4) ``k_A + k_B`` after CONNECT's reduction (mean over pairs) against the width line
    ``k = m`` (CONNECT needs ``k_A + k_B ≤ m``). Writes ``NAME.png`` and ``NAME.pdf``."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    ax_opt, ax_frac, ax_bar, ax_k = axes
    widths = np.asarray(result.widths)
    for name_opt in result.optimizers:
        rows = _rows_of(result, name_opt)
        m = np.array([r["width"] for r in rows])
        color, marker = _STYLE.get(name_opt, ("k", "x"))
        lo = np.maximum([r["optimum_lower"] for r in rows], FLOOR)
        hi = np.maximum([r["optimum_upper"] for r in rows], FLOOR)
        ax_opt.fill_between(m, lo, hi, color=color, alpha=0.15)
        ax_opt.plot(m, lo, "-", color=color, lw=1, label=f"{name_opt}: optimum bracket")
        tr = np.array([r["trained_losses"] for r in rows])
        mean = np.maximum(tr.mean(axis=1), FLOOR)
        ax_opt.errorbar(m, mean, yerr=[mean - np.maximum(tr.min(axis=1), FLOOR), np.maximum(tr.max(axis=1), FLOOR) - mean],
                        fmt=marker, color=color, ms=5, capsize=3, label=f"{name_opt}: trained (projected)")
        ax_frac.plot(m, [r["connected_fraction"] for r in rows], marker + "-", color=color, label=name_opt)
        ax_bar.plot(m, np.maximum([_pair_mean(r, "linear_max_barrier") for r in rows], FLOOR), marker + "-", color=color,
                    label=f"{name_opt}: linear")
        ax_bar.plot(m, np.maximum([_pair_mean(r, "path_max_barrier", True) for r in rows], FLOOR), marker + "--", color=color,
                    mfc="none", label=f"{name_opt}: CONNECT path")
        ax_k.plot(m, [np.mean([p["k_a"] + p["k_b"] for p in r["pairs"]]) for r in rows], marker + "-", color=color,
                  label=name_opt)
    stair = result.weight_decay["staircase_width"]
    ax_opt.axvline(stair, ls=":", color="k", label=f"C1 staircase width (β = {result.weight_decay['beta']:g})")
    ax_opt.set(yscale="log", xlabel="width m", ylabel="training loss", title=f"optimum vs trained, λ = {result.lam:g}")
    ax_frac.set(xlabel="width m", ylabel="fraction of pairs", ylim=(-0.05, 1.05), title="CONNECT succeeded")
    ax_bar.set(yscale="log", xlabel="width m", ylabel=r"$\max_t L - \max(L_A, L_B)$", title="barrier: linear vs constructive")
    ax_k.plot(widths, widths, "k:", label="k = m")
    ax_k.set(xlabel="width m", ylabel=r"$k_A + k_B$", title="supports after reduction")
    for ax in axes:
        ax.set_xticks(widths)
        ax.legend(fontsize=7)
    fig.text(0.5, -0.02, f"n = {len(result.y_N)}, d = {result.x_NxD.shape[1]}, seeds {list(result.seeds)}, "
             f"{result.steps} steps; values below {FLOOR:g} drawn at {FLOOR:g}", ha="center", fontsize=8)
    return save_figure(fig, out_dir, name, subdir="", dpi=150)


def staircase_figure_default(out_dir: str) -> list[str]:
    """The staircase of :func:`random_data` (n = 4, d = 2, seed 0) at widths 2, 4, 6, 8 for AdamW and
    Muon at λ = 1, three seeds, 2000 steps (about 40 s on 2 CPU cores): the figure and
    ``staircase.json`` (:meth:`StaircaseResult.to_dict`). For ``connect theory verify``."""
    x, y = random_data(4, 0)
    result = staircase(x, y, (2, 4, 6, 8), ("adamw", "muon"), lam=1.0, seeds=(0, 1, 2), steps=2000)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "staircase.json")
    write_json_atomic(out, result.to_dict())
    return staircase_figure(result, out_dir) + [out]
