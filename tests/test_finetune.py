"""Finetuning study: a zero-step finetune forgets exactly nothing, a 3-step finetune with every method records
consistent fields, resume skips finished points, Pareto fronts, ΔW statistics and activation norms against brute
force / numpy, the run module loads no matplotlib, bad input is one UserError; a Hugging Face Llama directory is
finetuned (full and LoRA) with its own matrix names, and ΔW statistics name GPT-NeoX's."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from connect import checkpoints, config, models
from connect.errors import UserError
from connect.lm import huggingface, tasks
from connect.lm import training as lm_training
from connect.models import gpt2, gpt_neox, llama
from connect.studies.finetune import analysis, plots
from connect.studies.finetune import run as finetune
from connect.studies.finetune.config import FinetuneConfig

MODEL = gpt2.config("tiny", n_layer=1, n_embd=16, n_head=2, n_inner=32, n_positions=32)
LRS = {"adamw": [1e-3], "muon": [1e-3], "lion": [1e-4], "momentum": [1e-2], "lora": [1e-2]}


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
    return FinetuneConfig(**{**base, **kw})


def test_zero_step_finetune_forgets_nothing(study):
    cfg = _cfg(study, steps=0, methods=["adamw", "lora"], second_corpus=str(study / "corpus.txt"))
    summary = finetune.run(cfg, str(study / "zero"), progress=False)
    points = analysis.load_points(str(study / "zero"))
    assert summary["n_points"] == len(points) == 2
    for p in points:
        assert p["forgetting"] == 0.0 and p["second_forgetting"] == 0.0 and p["task_loss"] == p["task_loss_before"]
        assert p["second_val_loss_before"] == p["val_loss_before"]  # the same corpus twice
        assert p["path"]["corpus_barrier"] == 0.0 and p["curve"] == []
        assert all(v == 0.0 for d in p["delta_w"].values() for v in d["frobenius"])


def test_three_steps_each_method_records_everything_and_resumes(study):
    out = str(study / "run")
    cfg = _cfg(study)
    finetune.run(cfg, out, progress=False)
    points = {p["method"]: p for p in analysis.load_points(out)}
    assert set(points) == {"adamw", "muon", "lion", "momentum", "lora"}
    for m, p in points.items():
        assert p["pretraining_optimizer"] == "adamw" and p["done"]
        assert p["forgetting"] == p["val_loss_after"] - p["val_loss_before"] != 0.0
        # the linear path's ends are the two models, evaluated by the same functions
        assert p["path"]["corpus_loss"][0] == p["val_loss_before"] and p["path"]["corpus_loss"][-1] == p["val_loss_after"]
        assert p["path"]["task_loss"][0] == p["task_loss_before"] and p["path"]["task_loss"][-1] == p["task_loss"]
        assert [c["step"] for c in p["curve"]] == [2, 3] and p["curve"][-1]["heldout_loss"] == pytest.approx(p["task_loss"], rel=1e-5)
        assert 0.0 <= p["task_accuracy"] <= 1.0 and p["path"]["corpus_barrier"] >= 0.0
        assert len(p["path"]["spectral_norm"]["mlp.c_fc"]) == 3 and all(1.0 <= r <= 16.0 for r in p["path"]["stable_rank"]["attn.c_proj"])
        assert set(p["delta_w"]) == set(p["path"]["stable_rank"]) == set(gpt2.LAYER_MATRICES)  # the family's naming
        assert set(p["activation_norms"]) >= {"residual_rms", "mlp_hidden_rms", "residual_max_abs"}
        for d in p["delta_w"].values():
            assert d["frobenius"][0] > 0 and 0.0 <= d["top_k_alignment"][0] <= 1.0 + 1e-6
            assert d["spectral_norm"][0] <= d["frobenius"][0] * (1 + 1e-6) and d["max_abs"][0] <= d["spectral_norm"][0] * (1 + 1e-6)
            if m == "lora":  # (α/r) A B has rank ≤ r = 2, so its stable rank is at most 2
                assert d["stable_rank"][0] <= 2.0 + 1e-4
    assert points["lora"]["n_trainable"] < points["adamw"]["n_trainable"]
    w_pre = np.asarray(lm_training.load(str(study / "adamw-run"))[0]["h"]["mlp"]["c_fc"]["kernel"], np.float64)
    np.testing.assert_allclose(points["momentum"]["path"]["spectral_norm"]["mlp.c_fc"][0],
                               np.mean([np.linalg.norm(w, 2) for w in w_pre]), rtol=1e-5)  # t = 0 is the pretrained model
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert summary["studies"][0]["at_equal_accuracy"]["best"] in points

    files = sorted(os.listdir(os.path.join(out, "points")))
    stamps = {f: os.stat(os.path.join(out, "points", f)).st_mtime_ns for f in files}
    os.remove(os.path.join(out, "points", files[0]))
    finetune.run(cfg, out, progress=False)  # resume: only the deleted point is recomputed
    assert sorted(os.listdir(os.path.join(out, "points"))) == files
    assert all(os.stat(os.path.join(out, "points", f)).st_mtime_ns == stamps[f] for f in files[1:])
    with pytest.raises(UserError, match="started with steps = 3"):
        finetune.run(_cfg(study, steps=4), out, progress=False)
    figures = plots.plot(out)
    assert {os.path.basename(f) for f in figures} >= {"pareto.png", "learning_curves.png", "delta_w.png"}


def test_pareto_front_hand_made_and_brute_force():
    pts = [{"forgetting": f, "task_accuracy": a, "task_loss": 1 - a} for f, a in
           [(0.1, 0.5), (0.2, 0.4), (0.05, 0.2), (0.3, 0.9), (0.1, 0.5), (0.0, 0.1), (0.25, 0.9)]]
    # (0.2, 0.4) is dominated by (0.1, 0.5); (0.3, 0.9) by (0.25, 0.9); the repeated (0.1, 0.5) keeps its first copy
    assert analysis.pareto_front(pts) == [5, 2, 0, 6]
    assert analysis.pareto_front(pts, y="task_loss", maximize_y=False) == [5, 2, 0, 6]
    diverged = pts + [{"forgetting": float("nan"), "task_accuracy": 1.0, "task_loss": float("nan")}]
    assert analysis.pareto_front(diverged) == [5, 2, 0, 6]  # a diverged run is on no front and hides none
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.integers(0, 6, (12, 2)).astype(float)
        rows = [{"forgetting": x, "task_accuracy": y} for x, y in xy]
        brute = {i for i in range(12) if not any(
            (xy[j, 0] <= xy[i, 0] and xy[j, 1] >= xy[i, 1] and (xy[j] != xy[i]).any()) or ((xy[j] == xy[i]).all() and j < i)
            for j in range(12))}
        assert set(analysis.pareto_front(rows)) == brute


def test_least_forgetting_at_equal_performance_hand_made():
    rows = [{"method": "adamw", "forgetting": 0.1, "task_accuracy": 0.6}, {"method": "adamw", "forgetting": 0.3, "task_accuracy": 0.9},
            {"method": "muon", "forgetting": 0.05, "task_accuracy": 0.3}, {"method": "muon", "forgetting": 0.2, "task_accuracy": 0.7}]
    r = analysis.least_forgetting_at_equal_performance(rows)
    assert r["target"] == 0.7 and r["forgetting"] == {"adamw": 0.3, "muon": 0.2} and r["best"] == "muon"
    # along adamw's front (0.1, 0.6) -> (0.3, 0.9), accuracy 0.7 is reached at forgetting 0.1 + 0.2/3
    assert r["interpolated"] == pytest.approx({"adamw": 0.1 + 0.2 / 3, "muon": 0.2}) and r["best_interpolated"] == "adamw"
    rows.append({"method": "momentum", "forgetting": float("nan"), "task_accuracy": 1.0})
    assert analysis.least_forgetting_at_equal_performance(rows) == r


def test_delta_w_stats_against_numpy():
    rng = np.random.default_rng(1)
    pre = jax.tree.map(np.asarray, gpt2.init(jax.random.key(1), MODEL))
    post = jax.tree.map(lambda w: w + 0.01 * rng.standard_normal(w.shape).astype(np.float32), pre)
    stats = analysis.delta_w_stats(pre, post, top_k=3, model_cfg=MODEL)
    w = np.asarray(pre["h"]["mlp"]["c_fc"]["kernel"][0], np.float64)
    d = np.asarray(post["h"]["mlp"]["c_fc"]["kernel"][0], np.float64) - w
    dq = np.asarray(post["h"]["attn"]["c_attn"]["kernel"][0], np.float64)[:, :16] - np.asarray(pre["h"]["attn"]["c_attn"]["kernel"][0], np.float64)[:, :16]
    np.testing.assert_allclose(stats["attn.q"]["spectral_norm"][0], np.linalg.norm(dq, 2), rtol=1e-4)  # q alone, not q|k|v
    u, _, vt = np.linalg.svd(w)
    s = np.linalg.svd(d, compute_uv=False)
    got = stats["mlp.c_fc"]
    np.testing.assert_allclose(got["top_k_alignment"][0], np.sum((u[:, :3].T @ d @ vt[:3].T) ** 2) / np.sum(d**2), rtol=1e-3)
    np.testing.assert_allclose(got["stable_rank"][0], np.sum(s**2) / s[0] ** 2, rtol=1e-4)
    np.testing.assert_allclose(got["spectral_norm"][0], s[0], rtol=1e-4)
    assert got["alignment_baseline"] == 9 / (16 * 32)


def _numpy_activation_norms(params, x_NxT, valid_NxT, cfg):
    """:func:`analysis.activation_norms`'s statistics from an independent float64 forward pass (vectorised numpy)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h, (N, T), D, H = p["h"], x_NxT.shape, cfg.n_embd, cfg.n_head

    def ln(x, g, layer):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_epsilon) * g["scale"][layer] + g["bias"][layer]

    def dense(x, d, layer):
        return x @ d["kernel"][layer] + d["bias"][layer]

    rms = lambda a: math.sqrt(np.sum(np.mean(a**2, -1) * valid_NxT) / valid_NxT.sum())  # noqa: E731
    max_abs = lambda a: float(np.max(np.abs(a).max(-1) * valid_NxT))  # noqa: E731
    out = {k: [] for k in ("residual_rms", "residual_max_abs", "attn_out_rms", "mlp_hidden_rms", "mlp_out_rms")}
    x = p["wte"][x_NxT] + p["wpe"][:T]
    for layer in range(cfg.n_layer):
        out["residual_rms"].append(rms(x))
        out["residual_max_abs"].append(max_abs(x))
        q, k, v = (a.reshape(N, T, H, D // H) for a in np.split(dense(ln(x, h["ln_1"], layer), h["attn"]["c_attn"], layer), 3, -1))
        scores = np.where(np.tril(np.ones((T, T), bool)), np.einsum("nthd,nshd->nhts", q, k) / math.sqrt(D // H), -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        attn = dense(np.einsum("nhts,nshd->nthd", w / w.sum(-1, keepdims=True), v).reshape(N, T, D), h["attn"]["c_proj"], layer)
        z = dense(ln(x + attn, h["ln_2"], layer), h["mlp"]["c_fc"], layer)
        hidden = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
        mlp = dense(hidden, h["mlp"]["c_proj"], layer)
        out["attn_out_rms"].append(rms(attn))
        out["mlp_hidden_rms"].append(rms(hidden))
        out["mlp_out_rms"].append(rms(mlp))
        x = x + attn + mlp
    return {**out, "final_residual_rms": rms(x), "final_residual_max_abs": max_abs(x)}


def test_activation_norms_against_numpy():
    cfg = gpt2.config(MODEL, n_layer=2)
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda w: w + 0.2 * rng.standard_normal(w.shape).astype(np.float32), gpt2.init(jax.random.key(2), cfg))
    enc = tasks.encode(tasks.make("arithmetic", seed=0, n_train=4, n_heldout=6).heldout, 32)
    valid_NxT = np.arange(32)[None, :] < (enc.prompt_len_N + enc.answer_len_N - 1)[:, None]
    assert 0 < valid_NxT.sum() < valid_NxT.size  # the pad positions are really left out
    got = analysis.activation_norms(params, cfg, enc)
    want = _numpy_activation_norms(params, np.asarray(enc.x_NxT), valid_NxT, cfg)
    assert set(got) == set(want) and all(len(got[k]) == 2 for k in want if not k.startswith("final"))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, err_msg=k)


def test_run_module_loads_no_matplotlib():
    code = ("import sys; from connect.studies.finetune import analysis, config, run; "
            "assert 'matplotlib' not in sys.modules, sorted(m for m in sys.modules if 'matplotlib' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert "matplotlib" not in open(finetune.__file__).read()  # not even a lazy import


def test_bad_input_is_a_user_error(study):
    with pytest.raises(UserError, match="not positive"):
        _cfg(study, lrs={**LRS, "momentum": [0.01, 0.0]}).validate()
    with pytest.raises(UserError, match="unknown finetuning method"):
        _cfg(study, methods=["adam"]).validate()
    with pytest.raises(UserError, match="unknown task"):
        finetune.run(_cfg(study, task="sudoku", methods=["adamw"]), str(study / "bad"), progress=False)
    with pytest.raises(UserError, match="exceeds min"):
        finetune.run(_cfg(study, lora_rank=99, methods=["lora"]), str(study / "bad2"), progress=False)


def test_experiment_config_tables_load_and_validate():
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "finetune_consistency.toml")
    for table, n_lrs in (("finetune", 5), ("tiny", 4)):
        cfg = config.load(FinetuneConfig, path, variant=None if table == "finetune" else table, overrides={"pretrained": ["runs/a"]})
        assert all(len(cfg.lr_grid(m)) == n_lrs for m in cfg.methods) and set(cfg.methods) == {"adamw", "muon", "lion", "momentum", "lora"}
    tiny, default = config.load(FinetuneConfig, path, variant="tiny", overrides={"pretrained": ["runs/a"]}), FinetuneConfig(pretrained=["runs/a"])
    differ = {k for k, v in default.to_dict().items() if tiny.to_dict()[k] != v}
    assert differ == {"data_sizes", "size_method", "size_lr"}  # the defaults are the tiny table without the size comparison
    with pytest.raises(UserError, match="no \\[huge\\] table"):
        config.load(FinetuneConfig, path, variant="huge")


LLAMA = llama.config("tiny", hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, max_position_embeddings=32)
LLAMA_KINDS = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
               "mlp.down_proj"}


def test_llama_from_a_hugging_face_directory_full_and_lora(study):
    """A tiny Llama saved as a Hugging Face directory: full finetuning (AdamW; Muon's split of the family's matrices is
    tested in test_families) and LoRA run end to end, and the per-matrix statistics carry the Llama names, a value per layer."""
    hf_dir = str(study / "llama-hf")
    huggingface.save_pretrained(jax.jit(llama.init, static_argnums=1)(jax.random.key(0), LLAMA), LLAMA, hf_dir)
    out = str(study / "llama-run")
    finetune.run(_cfg(study, pretrained=[hf_dir], methods=["adamw", "lora"], seeds=[0]), out, progress=False)
    points = {p["method"]: p for p in analysis.load_points(out)}
    assert set(points) == {"adamw", "lora"}
    for m, p in points.items():
        assert p["pretraining_optimizer"] == "unknown" and p["pretrained"] == "llama-hf"
        assert p["forgetting"] == p["val_loss_after"] - p["val_loss_before"] != 0.0
        assert p["path"]["corpus_loss"][0] == p["val_loss_before"] and p["path"]["task_loss"][-1] == p["task_loss"]
        assert set(p["delta_w"]) == set(p["path"]["stable_rank"]) == set(p["path"]["spectral_norm"]) == LLAMA_KINDS
        assert all(len(p["path"]["stable_rank"][k]) == 3 for k in LLAMA_KINDS)  # one value per t
        assert set(p["activation_norms"]) >= {"residual_rms", "attn_out_rms", "mlp_hidden_rms", "mlp_out_rms"}
        assert len(p["activation_norms"]["mlp_hidden_rms"]) == 2
        for d in p["delta_w"].values():
            assert len(d["frobenius"]) == 2 and min(d["frobenius"]) > 0  # every layer moved
            if m == "lora":  # rank 2 adapters on every kernel
                assert max(d["stable_rank"]) <= 2.0 + 1e-4
    assert points["lora"]["n_trainable"] < points["adamw"]["n_trainable"]
    assert {os.path.basename(f) for f in plots.plot(out)} >= {"pareto.png", "delta_w.png"}
    with pytest.raises(UserError, match="context 64 exceeds llama-hf's context limit 32: use --context 32 or less"):
        finetune.run(_cfg(study, pretrained=[hf_dir], context=64, methods=["adamw"]), str(study / "llama-bad"), progress=False)
    with pytest.raises(UserError, match="unknown LoRA target 'attn.c_attn': use attn, mlp or a llama kernel: self_attn.q_proj"):
        finetune.run(_cfg(study, pretrained=[hf_dir], methods=["lora"], lora_targets=["attn.c_attn"]), str(study / "llama-bad2"),
                     progress=False)


def test_delta_w_stats_name_the_family_matrices():
    """GPT-NeoX: a kind per matrix of :func:`connect.models.layer_matrices` (q, k and v cut out of the fused kernel)."""
    cfg = gpt_neox.config("tiny", hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    rng = np.random.default_rng(3)
    pre = jax.tree.map(np.asarray, gpt_neox.init(jax.random.key(3), cfg))
    post = jax.tree.map(lambda w: w + 0.01 * rng.standard_normal(w.shape).astype(np.float32), pre)
    stats = analysis.delta_w_stats(pre, post, top_k=2, model_cfg=cfg)
    assert list(stats) == list(models.layer_matrices(cfg)) and "attention.query" in stats
    w_pre, w_post = (gpt_neox.matrices(p, cfg, ["layers.1.attention.key"])["layers.1.attention.key"] for p in (pre, post))
    np.testing.assert_allclose(stats["attention.key"]["spectral_norm"][1], np.linalg.norm(np.asarray(w_post - w_pre, np.float64), 2),
                               rtol=1e-4)
