"""Which optimizer's implicit set each checkpoint of a run lies in, and whether its orbit does.

For every finished two-layer ReLU checkpoint of a run directory (``RUN/checkpoints/*``,
written by ``connect width-sweep``) and every optimizer of the run, at that optimizer's decay
λ: the relative norm ``norm/radius`` of the optimizer's set (≤ 1 ⇔ inside,
:meth:`connect.constraints.ConstraintSet.relative_norm`) and the orbit-relative norm, the
smallest value over neuron rescalings ``(s_j w_j, s_j b_j, a_j/s_j)`` that keep the function
(:meth:`~connect.constraints.ConstraintSet.orbit_relative`; the Muon-full orbit is an SDP,
:func:`theory.orbits.muon_full_orbit_relative`). A network trained by optimizer A that lies in
B's set's orbit is a function B's implicit problem also admits (THEORY.md §B, §D).
"""

from __future__ import annotations

import json
import os

import numpy as np

from connect import checkpoints, optimizers
from connect.constraints import ConstraintSet
from connect.errors import UserError
from connect.io import write_json_atomic, write_text_atomic
from connect.models import relu

RTOL = 1e-3  # inside ⇔ relative norm ≤ 1 + RTOL, as ConstraintSet.contains


def run_sets(run_dir: str) -> dict[str, float]:
    """``optimizer → λ`` of the run's optimizers with a constraint set (from ``RUN/config.json``)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{run_dir} has no config.json: pass a run directory written by `connect width-sweep`")
    with open(path) as f:
        cfg = json.load(f)
    decay = {name: float(cfg.get("weight_decay_by", {}).get(name, cfg.get("weight_decay", 0.0))) for name in cfg.get("optimizers", [])}
    return {n: lam for n, lam in decay.items() if optimizers.spec(n).constraint_kind != "none" and lam > 0}


def checkpoint_rows(params: dict, sets: dict[str, float], muon_full: bool = False) -> list[dict]:
    """One row per optimizer set: relative norm and orbit-relative norm of ``params``; with
    ``muon_full``, also the Muon-full set at the λ of each Muon-hybrid set."""
    rows = []
    for name, lam in sets.items():
        cset = optimizers.constraint(name, lam, relu.MUON_MATRICES)
        rows.append(_row(name, cset.kind, lam, float(cset.relative_norm(params)), _orbit_relative(cset, params)))
        if muon_full and cset.kind == "muon":
            full = ConstraintSet("muon_full", lam, relu.MUON_MATRICES)
            rows.append(_row(name, "muon_full", lam, float(full.relative_norm(params)), _orbit_relative(full, params)))
    return rows


def _orbit_relative(cset: ConstraintSet, params: dict) -> float:
    """:meth:`ConstraintSet.orbit_relative`, or the SDP of :mod:`theory.orbits` for the Muon-full set."""
    if cset.kind != "muon_full":
        return float(cset.orbit_relative(params))
    from theory.orbits import muon_full_orbit_relative

    return muon_full_orbit_relative({k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, cset.lam)[0]


def _row(name, kind, lam, rel, orbit):
    return {"set_of": name, "kind": kind, "lam": lam, "relative_norm": rel, "inside": rel <= 1 + RTOL,
            "orbit_relative": orbit, "orbit_inside": orbit <= 1 + RTOL}


def analyse(run_dir: str, muon_full: bool = False) -> list[dict]:
    """Rows for every finished checkpoint of ``run_dir`` × every optimizer set of the run;
    written to ``RUN/constraint_sets.json`` and ``RUN/constraint_sets.md``."""
    sets = run_sets(run_dir)
    ckpt_root = os.path.join(run_dir, "checkpoints")
    names = sorted(d for d in os.listdir(ckpt_root) if checkpoints.is_complete(os.path.join(ckpt_root, d))) if os.path.isdir(ckpt_root) else []
    if not names:
        raise UserError(f"{run_dir} has no finished checkpoints: run `connect width-sweep --run-dir {run_dir}` first")
    rows = []
    for name in names:
        params, meta = checkpoints.load_checkpoint(os.path.join(ckpt_root, name))
        head = {"checkpoint": name, "width": int(params["W"].shape[0]), "optimizer": meta.get("optimizer"), "seed": meta.get("seed")}
        rows += [{**head, **r} for r in checkpoint_rows(params, sets, muon_full)]
    write_json_atomic(os.path.join(run_dir, "constraint_sets.json"), {"rtol": RTOL, "sets": sets, "rows": rows})
    write_text_atomic(os.path.join(run_dir, "constraint_sets.md"), to_markdown(rows))
    return rows


def to_markdown(rows: list[dict]) -> str:
    """A table: checkpoint × set, ``relative norm (orbit)`` with ✓ when ≤ 1."""
    lines = ["| checkpoint | trained by | set of | kind | λ | norm/radius | in set | orbit norm/radius | orbit in set |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['checkpoint']} | {r['optimizer']} | {r['set_of']} | {r['kind']} | {r['lam']:g} | "
                     f"{r['relative_norm']:.4f} | {'yes' if r['inside'] else 'no'} | {r['orbit_relative']:.4f} | "
                     f"{'yes' if r['orbit_inside'] else 'no'} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> list[dict]:
    """Per (width, trained-by, set): the fraction of checkpoints inside and inside up to rescaling."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["width"], r["optimizer"], r["set_of"], r["kind"]), []).append(r)
    return [{"width": w, "optimizer": o, "set_of": s, "kind": k, "n": len(g),
             "inside": sum(r["inside"] for r in g) / len(g), "orbit_inside": sum(r["orbit_inside"] for r in g) / len(g)}
            for (w, o, s, k), g in sorted(groups.items())]
