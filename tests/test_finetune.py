"""Finetuning study: a zero-step finetune forgets exactly nothing, a 3-step finetune with every method records
consistent fields, resume skips finished points, Pareto fronts and ΔW statistics against brute force / numpy,
bad input is one UserError."""

import json
import os

import jax
import numpy as np
import pytest

from connect import checkpoints, finetune, lm_training
from connect.errors import UserError
from connect.models import gpt2

MODEL = gpt2.config("tiny", n_layer=1, n_embd=16, n_head=2, n_inner=32, n_positions=32)
LRS = {"adamw": [1e-3], "muon": [1e-3], "lion": [1e-4], "sgd": [1e-2], "lora": [1e-2]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny 'pretrained' run directory (as train-lm lays it out) and a small text corpus."""
    root = tmp_path_factory.mktemp("ft")
    run = root / "adamw-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"optimizer": "adamw"}))
    params = jax.jit(gpt2.init, static_argnums=1)(jax.random.key(0), MODEL)
    checkpoints.save_checkpoint(checkpoints.step_dir(str(run / "seed-0" / "ckpt"), 5), params,
                                {"model": "gpt2", "model_config": MODEL.to_dict(), "optimizer": "adamw"})
    rng = np.random.default_rng(0)
    (root / "corpus.txt").write_text(" ".join("".join(rng.choice(list("abcdefgh"), 5)) for _ in range(3000)))
    return root


def _cfg(root, **kw):
    base = dict(pretrained=[str(root / "adamw-run")], n_train=16, n_heldout=8, steps=3, batch_size=4, eval_every=2,
                path_points=3, top_k=2, eval_batches=2, context=32, lora_rank=2, corpus=str(root / "corpus.txt"), lrs=LRS)
    return finetune.FinetuneConfig(**{**base, **kw})


def test_zero_step_finetune_forgets_nothing(study):
    cfg = _cfg(study, steps=0, methods=["adamw", "lora"], second_corpus=str(study / "corpus.txt"))
    summary = finetune.run(cfg, str(study / "zero"), progress=False, plots=False)
    points = finetune.load_points(str(study / "zero"))
    assert summary["n_points"] == len(points) == 2
    for p in points:
        assert p["forgetting"] == 0.0 and p["second_forgetting"] == 0.0 and p["task_loss"] == p["task_loss_before"]
        assert p["second_val_loss_before"] == p["val_loss_before"]  # the same corpus twice
        assert p["path"]["corpus_barrier"] == 0.0 and p["curve"] == []
        assert all(v == 0.0 for d in p["delta_w"].values() for v in d["frobenius"])


def test_three_steps_each_method_records_everything_and_resumes(study):
    out = str(study / "run")
    cfg = _cfg(study)
    finetune.run(cfg, out, progress=False, plots=False)
    points = {p["method"]: p for p in finetune.load_points(out)}
    assert set(points) == {"adamw", "muon", "lion", "sgd", "lora"}
    for m, p in points.items():
        assert p["pretraining_optimizer"] == "adamw" and p["done"]
        assert p["forgetting"] == p["val_loss_after"] - p["val_loss_before"] != 0.0
        # the linear path's ends are the two models, evaluated by the same functions
        assert p["path"]["corpus_loss"][0] == p["val_loss_before"] and p["path"]["corpus_loss"][-1] == p["val_loss_after"]
        assert p["path"]["task_loss"][0] == p["task_loss_before"] and p["path"]["task_loss"][-1] == p["task_loss"]
        assert [c["step"] for c in p["curve"]] == [2, 3] and p["curve"][-1]["heldout_loss"] == pytest.approx(p["task_loss"], rel=1e-5)
        assert 0.0 <= p["task_accuracy"] <= 1.0 and p["path"]["corpus_barrier"] >= 0.0
        assert len(p["path"]["spectral_norm"]["mlp/c_fc"]) == 3 and all(1.0 <= r <= 16.0 for r in p["path"]["stable_rank"]["attn/c_proj"])
        assert set(p["delta_w"]) == {"attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"}
        assert set(p["activation_norms"]) >= {"residual_rms", "mlp_hidden_rms", "residual_max_abs"}
        for d in p["delta_w"].values():
            assert d["frobenius"][0] > 0 and 0.0 <= d["top_k_alignment"][0] <= 1.0 + 1e-6
            assert d["spectral_norm"][0] <= d["frobenius"][0] * (1 + 1e-6) and d["max_abs"][0] <= d["spectral_norm"][0] * (1 + 1e-6)
            if m == "lora":  # (α/r) A B has rank ≤ r = 2, so its stable rank is at most 2
                assert d["stable_rank"][0] <= 2.0 + 1e-4
    assert points["lora"]["n_trainable"] < points["adamw"]["n_trainable"]
    w_pre = np.asarray(lm_training.load(str(study / "adamw-run"))[0]["h"]["mlp"]["c_fc"]["kernel"], np.float64)
    np.testing.assert_allclose(points["sgd"]["path"]["spectral_norm"]["mlp/c_fc"][0],
                               np.mean([np.linalg.norm(w, 2) for w in w_pre]), rtol=1e-5)  # t = 0 is the pretrained model
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert summary["studies"][0]["at_equal_accuracy"]["best"] in points

    files = sorted(os.listdir(os.path.join(out, "points")))
    stamps = {f: os.stat(os.path.join(out, "points", f)).st_mtime_ns for f in files}
    os.remove(os.path.join(out, "points", files[0]))
    finetune.run(cfg, out, progress=False, plots=False)  # resume: only the deleted point is recomputed
    assert sorted(os.listdir(os.path.join(out, "points"))) == files
    assert all(os.stat(os.path.join(out, "points", f)).st_mtime_ns == stamps[f] for f in files[1:])
    with pytest.raises(UserError, match="started with steps = 3"):
        finetune.run(_cfg(study, steps=4), out, progress=False, plots=False)
    figures = finetune.plot(out)
    assert {os.path.basename(f) for f in figures} >= {"pareto.png", "learning_curves.png", "delta_w.png"}


def test_pareto_front_hand_made_and_brute_force():
    pts = [{"forgetting": f, "task_accuracy": a, "task_loss": 1 - a} for f, a in
           [(0.1, 0.5), (0.2, 0.4), (0.05, 0.2), (0.3, 0.9), (0.1, 0.5), (0.0, 0.1), (0.25, 0.9)]]
    # (0.2, 0.4) is dominated by (0.1, 0.5); (0.3, 0.9) by (0.25, 0.9); the repeated (0.1, 0.5) keeps its first copy
    assert finetune.pareto_front(pts) == [5, 2, 0, 6]
    assert finetune.pareto_front(pts, y="task_loss", maximize_y=False) == [5, 2, 0, 6]
    diverged = pts + [{"forgetting": float("nan"), "task_accuracy": 1.0, "task_loss": float("nan")}]
    assert finetune.pareto_front(diverged) == [5, 2, 0, 6]  # a diverged run is on no front and hides none
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.integers(0, 6, (12, 2)).astype(float)
        rows = [{"forgetting": x, "task_accuracy": y} for x, y in xy]
        brute = {i for i in range(12) if not any(
            (xy[j, 0] <= xy[i, 0] and xy[j, 1] >= xy[i, 1] and (xy[j] != xy[i]).any()) or ((xy[j] == xy[i]).all() and j < i)
            for j in range(12))}
        assert set(finetune.pareto_front(rows)) == brute


def test_least_forgetting_at_equal_performance_hand_made():
    rows = [{"method": "adamw", "forgetting": 0.1, "task_accuracy": 0.6}, {"method": "adamw", "forgetting": 0.3, "task_accuracy": 0.9},
            {"method": "muon", "forgetting": 0.05, "task_accuracy": 0.3}, {"method": "muon", "forgetting": 0.2, "task_accuracy": 0.7}]
    r = finetune.least_forgetting_at_equal_performance(rows)
    assert r["target"] == 0.7 and r["forgetting"] == {"adamw": 0.3, "muon": 0.2} and r["best"] == "muon"
    # along adamw's front (0.1, 0.6) -> (0.3, 0.9), accuracy 0.7 is reached at forgetting 0.1 + 0.2/3
    assert r["interpolated"] == pytest.approx({"adamw": 0.1 + 0.2 / 3, "muon": 0.2}) and r["best_interpolated"] == "adamw"
    rows.append({"method": "sgd", "forgetting": float("nan"), "task_accuracy": 1.0})
    assert finetune.least_forgetting_at_equal_performance(rows) == r


def test_delta_w_stats_against_numpy():
    rng = np.random.default_rng(1)
    pre = jax.tree.map(np.asarray, gpt2.init(jax.random.key(1), MODEL))
    post = jax.tree.map(lambda w: w + 0.01 * rng.standard_normal(w.shape).astype(np.float32), pre)
    stats = finetune.delta_w_stats(pre, post, top_k=3)
    w = np.asarray(pre["h"]["mlp"]["c_fc"]["kernel"][0], np.float64)
    d = np.asarray(post["h"]["mlp"]["c_fc"]["kernel"][0], np.float64) - w
    u, _, vt = np.linalg.svd(w)
    s = np.linalg.svd(d, compute_uv=False)
    got = stats["mlp/c_fc"]
    np.testing.assert_allclose(got["top_k_alignment"][0], np.sum((u[:, :3].T @ d @ vt[:3].T) ** 2) / np.sum(d**2), rtol=1e-3)
    np.testing.assert_allclose(got["stable_rank"][0], np.sum(s**2) / s[0] ** 2, rtol=1e-4)
    np.testing.assert_allclose(got["spectral_norm"][0], s[0], rtol=1e-4)
    assert got["alignment_baseline"] == 9 / (16 * 32)


def test_bad_input_is_a_user_error(study):
    with pytest.raises(UserError, match="not positive"):
        _cfg(study, lrs={**LRS, "sgd": [0.01, 0.0]}).validate()
    with pytest.raises(UserError, match="unknown finetuning method"):
        _cfg(study, methods=["adam"]).validate()
    with pytest.raises(UserError, match="unknown task"):
        finetune.run(_cfg(study, task="sudoku", methods=["adamw"]), str(study / "bad"), progress=False, plots=False)
    with pytest.raises(UserError, match="exceeds min"):
        finetune.run(_cfg(study, lora_rank=99, methods=["lora"]), str(study / "bad2"), progress=False, plots=False)


def test_experiment_config_tables_load_and_validate():
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "finetune_consistency.toml")
    for table, n_lrs in (("finetune", 5), ("tiny", 4)):
        cfg = finetune.load_config(path, table, pretrained=["runs/a"]).validate()
        assert all(len(cfg.lr_grid(m)) == n_lrs for m in cfg.methods) and set(cfg.methods) == {"adamw", "muon", "lion", "sgd", "lora"}
    tiny, default = finetune.load_config(path, "tiny", pretrained=["runs/a"]), finetune.FinetuneConfig(pretrained=["runs/a"])
    differ = {k for k, v in default.to_dict().items() if tiny.to_dict()[k] != v}
    assert differ == {"data_sizes", "size_method", "size_lr"}  # the defaults are the tiny table without the size comparison
    with pytest.raises(UserError, match="no \\[huge\\] table"):
        finetune.load_config(path, "huge")
