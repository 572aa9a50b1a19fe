"""The GPT-2 connectivity study (Zhang et al., arXiv 2605.09991, §5): seeds per optimizer, every pair joined by
paths, raw and aligned; barriers in and out of distribution, spectra, planes and ensembles along them.

Steps (:func:`run`), all resumable:

1. **train** ``seeds`` models per optimizer with :func:`connect.lm.training.train` into ``OUT/train/{optimizer}``
   (each optimizer's seeds in one program; a rerun resumes from their checkpoints);
2. **pairs** (:func:`pairs`): AdamW–AdamW and Muon–Muon (every ``i < j``) and AdamW–Muon (``(i, i + k mod n)``
   by increasing ``k``, so the first pairs use distinct seeds), at most ``pairs_per_type`` of each type;
3. **measure** each pair (:func:`measure_pair`): for the raw pair and, with ``align``, the pair aligned by
   :func:`connect.lm.alignment.align` (both models LayerNorm-folded, B permuted and rotated toward A), every
   path kind — linear, or its free nodes learned by :func:`connect.lm.paths.learn_path` with the endpoints'
   optimizer (``cross_path_optimizer`` for a cross pair) — evaluated by :func:`connect.lm.paths.evaluate_path`
   on the val split and the out-of-distribution tokens (barriers ``max_t [L(t) − ((1−t)L(0) + tL(1))]`` and
   ``max_t L(t) − max(L(0), L(1))``; ensembles), spectra along the path (:func:`connect.lm.paths.spectra_along_path`:
   median over matrices of every summary, and one chosen matrix's singular values), and for the first
   ``plane_pairs`` pairs of each type the loss plane through A, B and the learned bend (:mod:`connect.planes`);
   each pair's record goes to ``OUT/pairs/{key}.json`` atomically, and a finished pair is skipped on rerun;
4. **results** ``OUT/results.json`` (every pair); the tables and figures are drawn from it by
   :mod:`connect.studies.gpt2_connectivity.plots`.

Out of distribution: for the embedded corpus (Python source and its pydoc help texts) the default second
corpus is English prose that the embedded corpus leaves out — the text files of the standard library's
``idlelib`` directory (NEWS, README, HISTORY, …; idlelib is excluded from the embedded corpus) and its
``LICENSE.txt`` — read as bytes like the corpus. A different split of the same corpus would not be out of
distribution. Any other corpus is given by ``ood_data`` (its val split is used).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import sysconfig
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from connect import barrier, models, optimizers
from connect.errors import UserError
from connect.io import check_directory, claim_directory, run_lock, write_json_atomic
from connect.lm import alignment as lm_alignment
from connect.lm import corpus, planes
from connect.lm import paths as lm_paths
from connect.lm import training as lm_training
from connect.models import LMConfig
from connect.studies.gpt2_connectivity.config import EMBEDDED_OOD, StudyConfig


def pairs(cfg: StudyConfig) -> list[tuple[str, int, str, int]]:
    """``(opt_a, seed_a, opt_b, seed_b)`` of every pair measured, grouped by pair type (see the module docstring)."""
    n, cap = cfg.seeds, cfg.pairs_per_type or None
    out = []
    for opt in cfg.optimizers:
        out += [(opt, i, opt, j) for i, j in itertools.combinations(range(n), 2)][:cap]
    for opt_a, opt_b in itertools.combinations(cfg.optimizers, 2):
        out += [(opt_a, i, opt_b, (i + k) % n) for k in range(n) for i in range(n)][:cap]
    return out


def pair_key(pair: tuple[str, int, str, int]) -> str:
    opt_a, seed_a, opt_b, seed_b = pair
    return f"{opt_a}-{seed_a}__{opt_b}-{seed_b}"


def pair_type(opt_a: str, opt_b: str) -> str:
    return f"{opt_a}-{opt_b}"


def embedded_ood_tokens() -> np.ndarray:
    """The embedded out-of-distribution corpus: the standard library's ``idlelib/*.txt`` and ``LICENSE.txt``
    in sorted order, as bytes (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((root / "idlelib").glob("*.txt")) + [root / "LICENSE.txt"]
    data = b"\n".join(f.read_bytes() for f in files if f.is_file())
    if not data:
        raise UserError(f"no idlelib/*.txt or LICENSE.txt under {root} for the embedded OOD corpus: pass ood_data")
    return np.frombuffer(data, dtype=np.uint8)


def load_ood(ood_data: str, data: corpus.Corpus, *, tokenizer: str = "", val_fraction: float = 0.05) -> tuple[str, np.ndarray | None]:
    """``(name, tokens)`` of the out-of-distribution corpus (``(None-name, None)`` when there is none)."""
    if ood_data:
        ood = corpus.load(ood_data, tokenizer=tokenizer or None, val_fraction=val_fraction)
        if ood.vocab_size > data.vocab_size:
            raise UserError(f"OOD corpus {ood.name} has vocabulary {ood.vocab_size} > {data.vocab_size} of {data.name}: "
                            "encode it with the training corpus's tokenizer")
        return ood.name, ood.val
    if data.tokenizer == "bytes" and data.name.startswith("stdlib-py"):
        return EMBEDDED_OOD, embedded_ood_tokens()
    return "", None


# --- one pair ---------------------------------------------------------------------------------------


def spectra_matrix(cfg, model_cfg: LMConfig) -> str:
    """``cfg.spectra_matrix`` checked against the model, or when empty layer 0's first MLP matrix of its family
    (``h.0.mlp.c_fc``, ``layers.0.mlp.gate_proj``, ``layers.0.mlp.dense_h_to_4h``)."""
    fam = models.family(model_cfg)
    if cfg.spectra_matrix:
        return fam.checked_matrix_names(model_cfg, [cfg.spectra_matrix])[0]
    return next(name for names in models.layer_matrices(model_cfg).values() for name in names[:1] if ".mlp." in name)


def measure_pair(theta_a, theta_b, model_cfg: LMConfig, data: corpus.Corpus, cfg: StudyConfig, *, path_optimizer: str,
                 ood_tokens: np.ndarray | None = None, context: int | None = None, plane: bool = False,
                 weight_decay: float = 0.1, ts_T=None, progress=None) -> dict:
    """Every path kind of ``cfg.paths`` between two models of one family, raw and (``cfg.align``) aligned, on the t-grid ``ts_T``
    (default ``cfg.t_points`` evenly spaced); see the module docstring.

    Returns ``{"alignment_report" (distances after each alignment step), "alignment" (its
    :meth:`connect.lm.alignment.Alignment.summary`: convergence, architecture changes), "paths": [{"path", "alignment", "curve" (:func:`connect.lm.paths.evaluate_path`),
    "objective", "spectra"}], "planes": [{"alignment", …}]}``. ``weight_decay`` is the λ of the constraint norms.
    """
    model_cfg = lm_paths.check_pair(theta_a, model_cfg, theta_b, model_cfg)
    matrix = spectra_matrix(cfg, model_cfg)  # a missing matrix fails now, not after learning
    ts_T = lm_paths.check_grid(barrier.grid(cfg.t_points) if ts_T is None else ts_T)
    if 0.0 not in ts_T or 1.0 not in ts_T:  # checked before any path is learned
        raise UserError(f"the t-grid {ts_T.tolist()} must contain both endpoints 0 and 1 for barriers: add them")
    context = context or model_cfg.context_limit
    versions = [("raw", theta_a, theta_b, model_cfg)]
    summary = None
    if cfg.align:
        al = lm_alignment.align(theta_a, theta_b, model_cfg)
        versions.append(("aligned", al.params_a, al.params_b, al.cfg))
        summary = al.summary()
    eval_kw = dict(batch_size=cfg.eval_batch_size, context=context, max_batches=cfg.eval_batches or None)
    out = {"alignment_report": None if summary is None else summary["report"], "alignment": summary, "paths": [], "planes": []}
    for alignment, a, b, mcfg in versions:
        for kind in cfg.paths:
            if progress is not None:
                progress.set_postfix_str(f"{alignment} {kind}")
            if kind == "linear":  # nothing to learn: the two endpoints (stacked on the host, no per-array compiles)
                nodes_K, obj = jax.tree.map(lambda x, y: np.stack([np.asarray(x), np.asarray(y)]), a, b), np.zeros(0)
            else:
                nodes_K, obj = lm_paths.learn_path(
                    a, b, kind, mcfg, data.train, n_free=1, steps=cfg.path_steps, batch_size=cfg.path_batch_size, context=context,
                    t_per_step=cfg.path_t_samples, optimizer=path_optimizer, lr=cfg.path_lr.get(path_optimizer, 1e-3),
                    aux_lr=cfg.path_aux_lr.get(path_optimizer), weight_decay=cfg.path_weight_decay, seed=cfg.seed)
            curve = lm_paths.evaluate_path(kind, nodes_K, mcfg, data.val, ts_T, ood_tokens=ood_tokens, t_chunk=cfg.t_chunk or None, **eval_kw)
            spec = lm_paths.spectra_along_path(kind, nodes_K, mcfg, ts_T, weight_decay=weight_decay)
            out["paths"].append({"path": kind, "alignment": alignment, "curve": curve, "objective": np.asarray(obj).tolist(),
                                 "spectra": _spectra_record(spec, matrix)})
            if plane and kind != "linear":
                bend = jax.tree.map(lambda x: x[1], nodes_K)
                pl = planes.plane_losses(a, b, bend, mcfg, data.val, n_points=cfg.plane_points, margin=cfg.plane_margin,
                                         t_chunk=cfg.t_chunk or None, **eval_kw)
                out["planes"].append({"alignment": alignment, "path": kind, "third": "learned bend", **pl})
    return out


def _spectra_record(spec: dict, matrix: str) -> dict:
    """JSON summary of :func:`connect.lm.paths.spectra_along_path`: medians over matrices, every matrix's
    stable rank and condition number, and ``matrix``'s singular values and summaries."""
    per = spec["matrices"]
    return {"t": np.asarray(spec["t"]).tolist(), "median": {k: np.asarray(v).tolist() for k, v in spec["median"].items()},
            "stable_rank": {n: per[n]["stable_rank"].tolist() for n in spec["names"]},
            "condition_number": {n: per[n]["condition_number"].tolist() for n in spec["names"]},
            "matrix": {"name": matrix, **{k: np.asarray(v).tolist() for k, v in per[matrix].items()}}}


# --- the study --------------------------------------------------------------------------------------


def run(cfg: StudyConfig, out: str, *, progress: bool = True, finish=None) -> dict:
    """Train (or reuse) the seeds, measure every pair not yet on disk, write ``OUT/results.json``; returns the
    results (see the module docstring). Every input — the config, the study directory, each optimizer's
    training run (:func:`connect.lm.training.check`), the corpus and the out-of-distribution corpus — is
    checked before anything is written or trained; then ``out`` is written holding :func:`connect.io.run_lock`,
    and ``finish(out)`` (the tables and figures) runs last under it."""
    train_cfgs, data, ood_name, ood_tokens = _check(cfg, out)
    with run_lock(out):
        _claim(out, cfg)
        for opt, tcfg in train_cfgs.items():
            if progress:
                print(f"training {cfg.seeds} {opt} seeds into {os.path.join(out, 'train', opt)}", file=sys.stderr)
            lm_training.train(tcfg, os.path.join(out, "train", opt), progress=progress)
        records = _measure_pairs(cfg, out, train_cfgs, data, ood_tokens, progress)
        results = {"corpus": data.name, "ood_corpus": ood_name or None, "spectra_matrix": spectra_matrix(cfg, train_cfgs[cfg.optimizers[0]].model_config()),
                   "optimizers": cfg.optimizers, "pairs": records}
        write_json_atomic(os.path.join(out, "results.json"), results)
        if finish is not None:
            finish(out)
    return results


def _check(cfg: StudyConfig, out: str):
    """``(train configs by optimizer, corpus, OOD name, OOD tokens)`` after checking every input of :func:`run`
    (writes nothing)."""
    cfg.validate()
    check_directory(out, cfg.to_dict(), filename="study.json", allowed=("train",))
    train_cfgs = {opt: cfg.train_config(opt) for opt in cfg.optimizers}
    checked = {opt: lm_training.check(tcfg, os.path.join(out, "train", opt)) for opt, tcfg in train_cfgs.items()}
    first = checked[cfg.optimizers[0]]
    other = [opt for opt, c in checked.items() if c.model_cfg != first.model_cfg]
    if other:
        raise UserError(f"{other[0]} trains another architecture than {cfg.optimizers[0]} (train_by changes the model): "
                        "pairs need one architecture; give every optimizer the same model settings")
    spectra_matrix(cfg, first.model_cfg)
    ood_name, ood_tokens = load_ood(cfg.ood_data, first.data, tokenizer=first.cfg.tokenizer, val_fraction=first.cfg.val_fraction)
    if ood_tokens is not None:
        corpus.check_windows(ood_tokens, 1, first.cfg.context)
    return train_cfgs, first.data, ood_name, ood_tokens


def _measure_pairs(cfg: StudyConfig, out: str, train_cfgs: dict, data: corpus.Corpus, ood_tokens, progress: bool) -> list[dict]:
    """The record of every pair of :func:`pairs`: read from ``OUT/pairs/`` if measured before, else measured
    (:func:`measure_pair`) and written there."""
    planes_left: dict = {}
    bar = tqdm(pairs(cfg), desc="study gpt2 pairs", unit="pair", disable=not progress)
    records = []
    for pair in bar:
        opt_a, seed_a, opt_b, seed_b = pair
        ptype = pair_type(opt_a, opt_b)
        planes_left.setdefault(ptype, cfg.plane_pairs)
        want_plane = planes_left[ptype] > 0
        planes_left[ptype] -= 1
        path = os.path.join(out, "pairs", pair_key(pair) + ".json")
        if os.path.isfile(path):
            with open(path) as f:
                records.append(json.load(f))
            continue
        bar.set_description(f"study gpt2 {pair_key(pair)}")
        theta_a, cfg_a = lm_training.load(os.path.join(out, "train", opt_a, f"seed-{seed_a}"))
        theta_b, cfg_b = lm_training.load(os.path.join(out, "train", opt_b, f"seed-{seed_b}"))
        model_cfg = lm_paths.check_pair(theta_a, cfg_a, theta_b, cfg_b)
        path_opt = optimizers.path_optimizer(opt_a, opt_b, cfg.cross_path_optimizer)
        rec = measure_pair(theta_a, theta_b, model_cfg, data, cfg, path_optimizer=path_opt, ood_tokens=ood_tokens,
                           context=train_cfgs[opt_a].context, plane=want_plane, weight_decay=train_cfgs[opt_a].weight_decay,
                           progress=bar if progress else None)
        rec = {"key": pair_key(pair), "pair_type": ptype, "opt_a": opt_a, "seed_a": seed_a, "opt_b": opt_b, "seed_b": seed_b,
               "same_optimizer": opt_a == opt_b, "path_optimizer": path_opt, **rec}
        write_json_atomic(path, rec)
        records.append(rec)
    bar.close()
    return records


def _claim(out: str, cfg: StudyConfig) -> None:
    """Write ``OUT/study.json`` or check that the stored one equals ``cfg`` (a resumed study measures the
    same); ``OUT/train`` alone (seeds trained before) is reused."""
    claim_directory(out, cfg.to_dict(), filename="study.json", allowed=("train",))
