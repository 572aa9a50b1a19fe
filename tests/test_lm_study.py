"""The GPT-2 connectivity study end to end on a micro model: a killed study resumes without redoing finished
pairs, every table and figure is written, the tables equal numpy recomputations from the per-pair curves, the
endpoints' losses equal lm_training.evaluate of the trained checkpoints; `connect paths` on two checkpoints and
its one-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import checkpoints, cli, config
from connect.errors import UserError
from connect.lm import corpus
from connect.lm import training as lm_training
from connect.models import gpt2
from connect.studies.gpt2_connectivity import config as study_config
from connect.studies.gpt2_connectivity import plots as lm_plots
from connect.studies.gpt2_connectivity import run as lm_study

TOML = os.path.join(os.path.dirname(__file__), "..", "experiments", "gpt2_connectivity.toml")
MICRO = {"seeds": 2, "pairs_per_type": 1, "path_steps": 3, "eval_batches": 2, "eval_batch_size": 4, "plane_points": 3,
         "t_points": 5, "spectra_matrix": "h.0.mlp.c_fc", "train.steps": 6, "train.eval_every": 0, "train.checkpoint_every": 0,
         "train.batch_size": 4, "train.context": 16,
         "train.model_overrides": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_inner": 32, "n_positions": 16}}


def _set_args(values: dict) -> list[str]:
    def toml(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {toml(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    return ["--set", *[f"{k}={toml(v)}" for k, v in values.items()]]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The micro study, killed after its first pair and rerun to the end; returns (out, calls of the rerun)."""
    out = str(tmp_path_factory.mktemp("study") / "s")
    argv = ["study", "gpt2", "--config", TOML, "--tiny", "--out", out, "--quiet", *_set_args(MICRO)]
    real, calls = lm_study.measure_pair, []

    def killed_after_one(*a, **kw):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **kw)

    lm_study.measure_pair = killed_after_one
    try:
        assert cli.main(argv) == 130
    finally:
        lm_study.measure_pair = real
    done = sorted(os.listdir(os.path.join(out, "pairs")))
    assert len(done) == 1 and not os.path.exists(os.path.join(out, "results.json"))
    first = os.stat(os.path.join(out, "pairs", done[0]))
    rerun = []
    lm_study.measure_pair = lambda *a, **kw: rerun.append(1) or real(*a, **kw)
    try:
        assert cli.main(argv) == 0
    finally:
        lm_study.measure_pair = real
    again = os.stat(os.path.join(out, "pairs", done[0]))
    assert (again.st_mtime_ns, again.st_ino) == (first.st_mtime_ns, first.st_ino)  # the finished pair was not redone
    return out, len(rerun)


def test_killed_study_resumes_and_writes_every_table_and_figure(study):
    out, n_rerun = study
    res = lm_plots.load_results(out)
    assert [(p["opt_a"], p["seed_a"], p["opt_b"], p["seed_b"]) for p in res["pairs"]] == [
        ("adamw", 0, "adamw", 1), ("muon", 0, "muon", 1), ("adamw", 0, "muon", 0)]
    assert n_rerun == 2
    for name in lm_plots.FIGURES:
        for ext in ("png", "pdf"):
            assert os.path.getsize(os.path.join(out, "figures", f"{name}.{ext}")) > 1000
    for name in lm_plots.TABLES:
        assert os.path.getsize(os.path.join(out, "tables", f"{name}.md")) > 100
    assert res["ood_corpus"] == study_config.EMBEDDED_OOD
    # the same directory with another config is refused in one line
    with pytest.raises(UserError, match="was started with seeds = 2"):
        lm_study.run(config.load(study_config.StudyConfig, TOML, variant="tiny", overrides={**MICRO, "seeds": 3}), out, progress=False)


def test_tables_equal_numpy_recomputation_from_the_curves(study):
    out, _ = study
    res = lm_plots.load_results(out)
    with open(os.path.join(out, "tables", "barriers.json")) as f:
        table = json.load(f)
    assert len(table) == 2 * 3 * 2 * 2  # alignments × pair types × paths × datasets
    for entry in table:
        recs = [r for p in res["pairs"] if p["pair_type"] == entry["pair_type"] for r in p["paths"]
                if (r["alignment"], r["path"]) == (entry["alignment"], entry["path"])]
        curves = [r["curve"] if entry["dataset"].endswith("(val)") else r["curve"]["ood"] for r in recs]
        # independent: the barrier from the stored losses by the formula, chord through the endpoints
        want = [max(l_t - ((1 - t) * c["loss"][0] + t * c["loss"][-1]) for t, l_t in zip(c["t"], c["loss"])) for c in curves]
        assert entry["n_pairs"] == len(recs) == 1
        np.testing.assert_allclose(entry["mean"], np.mean(want), rtol=1e-9, atol=1e-12)
    md = open(os.path.join(out, "tables", "barriers.md")).read()
    assert "| adamw-adamw | linear | 1 |" in md and "stdlib-prose (OOD)" in md


def test_endpoint_losses_and_spectra_match_the_checkpoints(study):
    out, _ = study
    res = lm_plots.load_results(out)
    cfg = config.load(study_config.StudyConfig, TOML, variant="tiny", overrides=MICRO)
    data = corpus.load(None)
    pair = next(p for p in res["pairs"] if p["pair_type"] == "adamw-muon")
    raw_linear = next(r for r in pair["paths"] if (r["alignment"], r["path"]) == ("raw", "linear"))
    for seed, opt, i in ((pair["seed_a"], pair["opt_a"], 0), (pair["seed_b"], pair["opt_b"], -1)):
        params, model_cfg = lm_training.load(os.path.join(out, "train", opt, f"seed-{seed}"))
        want = lm_training.evaluate(params, model_cfg, data.val, batch_size=cfg.eval_batch_size, context=16, max_batches=cfg.eval_batches)
        np.testing.assert_allclose(raw_linear["curve"]["loss"][i], want, rtol=1e-5)
        w = np.asarray(params["h"]["mlp"]["c_fc"]["kernel"][0], np.float64)
        s = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(raw_linear["spectra"]["matrix"]["singular_values"][i], s, rtol=1e-4)
        np.testing.assert_allclose(raw_linear["spectra"]["matrix"]["stable_rank"][i], np.sum(s**2) / s[0] ** 2, rtol=1e-4)
    # aligning keeps each endpoint's function: the aligned path's endpoint losses are the raw ones
    aligned = next(r for r in pair["paths"] if (r["alignment"], r["path"]) == ("aligned", "linear"))
    np.testing.assert_allclose([aligned["curve"]["loss"][0], aligned["curve"]["loss"][-1]],
                               [raw_linear["curve"]["loss"][0], raw_linear["curve"]["loss"][-1]], rtol=1e-4)
    assert pair["alignment_report"][-1]["distance"] < pair["alignment_report"][0]["distance"]
    # `connect paths` learns bends with the optimizer the endpoints' checkpoints record
    assert [checkpoints.recorded_optimizer(os.path.join(out, "train", o, "seed-1")) for o in ("adamw", "muon")] == ["adamw", "muon"]
    planes = [pl for p in res["pairs"] for pl in p["planes"]]
    assert len(planes) == 3 * 2 and all(np.asarray(pl["loss"]).shape == (3, 3) for pl in planes)


def test_pairs_same_then_cross_with_distinct_seeds_first():
    cfg = config.from_dict({"seeds": 3, "pairs_per_type": 0, "train": {"model": "tiny"}}, cls=study_config.StudyConfig).validate()
    got = lm_study.pairs(cfg)
    assert got[:6] == [("adamw", 0, "adamw", 1), ("adamw", 0, "adamw", 2), ("adamw", 1, "adamw", 2),
                       ("muon", 0, "muon", 1), ("muon", 0, "muon", 2), ("muon", 1, "muon", 2)]
    cross = got[6:]
    assert sorted(cross) == sorted(("adamw", i, "muon", j) for i in range(3) for j in range(3))
    assert [c[3] for c in cross[:3]] == [0, 1, 2]  # the first n cross pairs use every seed once
    assert len(lm_study.pairs(config.from_dict({"seeds": 3, "pairs_per_type": 2, "train": {"model": "tiny"}}, cls=study_config.StudyConfig).validate())) == 6


_INIT = jax.jit(gpt2.init, static_argnums=1)
CFG = gpt2.config("tiny", n_positions=16, n_embd=16, n_layer=2, n_head=2, n_inner=32)


def _save(path, cfg, seed):
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: np.asarray(a) + 0.05 * rng.normal(size=a.shape).astype(np.float32), _INIT(jax.random.key(seed), cfg))
    checkpoints.save_checkpoint(str(path), params, {"model": "gpt2", "model_config": cfg.to_dict()})
    return params


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    _save(d / "a", CFG, 0), _save(d / "b", CFG, 1)
    _save(d / "wide", gpt2.config(CFG, n_embd=32), 2)
    return d


def test_connect_paths_prints_barriers_and_writes_json(ckpts, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["paths", str(ckpts / "a"), str(ckpts / "b"), "--align", "--path", "linear", "--t-grid", "0", "0.5", "1",
            "--steps", "2", "--batch-size", "4", "--max-batches", "2", "--context", "16", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["path", "alignment", "loss_A", "loss_B"]
    assert [ln.split()[:2] for ln in lines[1:3]] == [["linear", "raw"], ["linear", "aligned"]]  # learned paths: the study test
    res = json.loads(out.read_text())
    assert res["t"] == [0.0, 0.5, 1.0] and res["ood_corpus"] == study_config.EMBEDDED_OOD
    assert res["path_optimizer"] == "adamw"  # the checkpoints record no optimizer
    lin = res["paths"][0]["curve"]
    # independent: the midpoint of the line evaluated by lm_training.evaluate
    (a, cfg_a), (b, _) = lm_training.load(str(ckpts / "a")), lm_training.load(str(ckpts / "b"))
    mid = jax.tree.map(lambda x, y: 0.5 * (jnp.asarray(x) + jnp.asarray(y)), a, b)
    val = corpus.load(None).val
    want = lm_training.evaluate(mid, cfg_a, val, batch_size=4, context=16, max_batches=2)
    np.testing.assert_allclose(lin["loss"][1], want, rtol=1e-5)
    assert float(lines[1].split()[4]) == pytest.approx(lin["barrier"], abs=1e-5)


@pytest.mark.parametrize("extra, needle", [
    (["--spectra-matrix", "h.9.attn.q"], "no matrix 'h.9.attn.q'"),
    (["--t-grid", "0", "0.5", "1.2"], "outside [0, 1]"),
    (["--t-grid", "0.2", "0.5"], "must contain both endpoints"),
])
def test_connect_paths_bad_inputs_fail_in_one_line(ckpts, capsys, extra, needle):
    assert cli.main(["paths", str(ckpts / "a"), str(ckpts / "b"), "--quiet", "--steps", "1", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_connect_paths_refuses_checkpoints_of_different_configs(ckpts, capsys):
    assert cli.main(["paths", str(ckpts / "a"), str(ckpts / "wide"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "different GPT-2 configs (n_embd 16 vs 32)" in err and len(err.splitlines()) == 1
