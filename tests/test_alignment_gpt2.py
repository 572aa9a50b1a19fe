"""GPT-2 alignment: each step keeps the logits; a planted permuted-and-rotated copy is recovered."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect.errors import UserError
from connect.lm import alignment as align_gpt2
from connect.lm import huggingface, training
from connect.models import gpt2

CFG = gpt2.config("tiny", vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=4, n_inner=32)


def _model(seed, cfg=CFG):
    """A random model with non-trivial LayerNorm gains and biases and non-zero linear biases."""
    params = gpt2.init(jax.random.key(seed), cfg)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)


def _logits(params, cfg=CFG):
    return np.asarray(gpt2.apply(jax.tree.map(jnp.asarray, params), _tokens(cfg), cfg))


def _tokens(cfg=CFG):
    return np.asarray(jax.random.randint(jax.random.key(7), (2, 12), 0, cfg.vocab_size))


def _close(x, y, rel=1e-4):
    assert np.max(np.abs(x - y)) <= rel * np.max(np.abs(y))


def _random_rotation(d, seed):
    basis = align_gpt2.rotation_basis(d)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d - 1, d - 1)))
    inner = np.eye(d)
    inner[1:, 1:] = q
    return basis @ inner @ basis.T


@pytest.mark.parametrize("tied", [False, True])
def test_folding_keeps_the_function(tied):
    cfg = gpt2.config(CFG, tie_word_embeddings=tied)
    params = _model(0, cfg)
    folded, cfg_f = align_gpt2.fold_layernorms(params, cfg)
    assert not cfg_f.tie_word_embeddings
    assert np.all(folded["h"]["ln_1"]["scale"] == 1) and np.all(folded["h"]["ln_2"]["bias"] == 0)
    _close(_logits(folded, cfg_f), _logits(params, cfg))


def test_rotation_and_permutations_keep_the_function():
    folded, cfg = align_gpt2.fold_layernorms(_model(1), CFG)
    base = _logits(folded, cfg)
    r = _random_rotation(CFG.n_embd, 3)
    _close(_logits(align_gpt2.rotate_residual(folded, r, cfg), cfg), base)
    rng = np.random.default_rng(4)
    mlp = np.stack([rng.permutation(CFG.n_inner) for _ in range(CFG.n_layer)])
    heads = np.stack([rng.permutation(CFG.n_head) for _ in range(CFG.n_layer)])
    _close(_logits(align_gpt2.permute(folded, cfg, {"mlp": mlp, "heads": heads}), cfg), base)


def test_a_rotation_moving_the_ones_vector_is_refused():
    folded, _ = align_gpt2.fold_layernorms(_model(1), CFG)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(CFG.n_embd, CFG.n_embd)))
    with pytest.raises(ValueError, match="R𝟙 = 𝟙"):
        align_gpt2.rotate_residual(folded, q, CFG)
    with pytest.raises(ValueError, match="folded"):
        align_gpt2.rotate_residual(_model(1), np.eye(CFG.n_embd), CFG)


def test_planted_copy_is_recovered():
    params_a = _model(2)
    folded, cfg = align_gpt2.fold_layernorms(params_a, CFG)
    rng = np.random.default_rng(5)
    mlp = np.stack([rng.permutation(CFG.n_inner) for _ in range(CFG.n_layer)])
    heads = np.stack([rng.permutation(CFG.n_head) for _ in range(CFG.n_layer)])
    planted = align_gpt2.rotate_residual(align_gpt2.permute(folded, cfg, {"mlp": mlp, "heads": heads}), _random_rotation(CFG.n_embd, 6), cfg)
    res = align_gpt2.align(params_a, planted, cfg)
    _close(_logits(res.params_b, res.cfg), _logits(params_a))  # B's function is unchanged
    norm = align_gpt2.distance(res.params_a, jax.tree.map(np.zeros_like, res.params_a))
    assert res.report[0]["distance"] > 0.5 * norm  # the planted copy starts far away
    assert res.report[-1]["distance"] <= 1e-5 * norm  # and is recovered
    assert res.converged and res.iterations <= 3
    dists = [r["distance"] for r in res.report]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(dists, dists[1:]))


def test_independent_models_move_closer_and_keep_their_function():
    a, b = _model(10), _model(11)
    res = align_gpt2.align(a, b, CFG, rotate=False)
    assert res.report[-1]["distance"] < res.report[0]["distance"]
    _close(_logits(res.params_b, res.cfg), _logits(b))
    assert np.array_equal(res.rotation, np.eye(CFG.n_embd))
    assert res.converged and res.iterations == 1  # per-layer assignments are exact at once


def test_different_architectures_are_a_user_error():
    other = gpt2.config(CFG, n_inner=48)
    with pytest.raises(UserError, match="different architectures"):
        align_gpt2.align(_model(0), _model(0, other), CFG)


def test_max_iters_reached_is_reported_as_not_converged():
    res = align_gpt2.align(_model(10), _model(11), CFG, max_iters=1)
    assert not res.converged and res.iterations == 1
    assert [r["step"] for r in res.report] == ["folded", "permute heads and MLP units", "rotate residual stream"]


@pytest.mark.parametrize("tied", [False, True])
def test_report_rows_are_like_for_like(tied):
    """Every row compares folded trees (untied head included); the unfolded distance is apart."""
    cfg = gpt2.config(CFG, tie_word_embeddings=tied)
    a, b = _model(20, cfg), _model(21, cfg)
    res = align_gpt2.align(a, b, cfg)
    fa, _ = align_gpt2.fold_layernorms(a, cfg)
    fb, _ = align_gpt2.fold_layernorms(b, cfg)
    assert res.report[0] == {"step": "folded", "iteration": 0, "distance": align_gpt2.distance(fa, fb)}
    assert res.distance_unfolded == align_gpt2.distance(a, b)
    assert res.report[-1]["distance"] == pytest.approx(align_gpt2.distance(res.params_a, res.params_b), rel=1e-5)
    assert res.input_cfg == cfg and not res.cfg.tie_word_embeddings
    assert res.architecture_changes == ((align_gpt2.FOLDED, align_gpt2.UNTIED) if tied else (align_gpt2.FOLDED,))


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def aligned_pair(request):
    cfg = gpt2.config(CFG, tie_word_embeddings=request.param)
    a, b = _model(30, cfg), _model(31, cfg)
    return a, b, cfg, align_gpt2.align(a, b, cfg)


def test_export_round_trip_keeps_the_function(aligned_pair, tmp_path):
    a, b, cfg, res = aligned_pair
    res.export(str(tmp_path / "hf"))
    with open(tmp_path / "hf" / "config.json") as f:
        assert json.load(f)["tie_word_embeddings"] is False
    params, loaded_cfg = training.load(str(tmp_path / "hf"))
    assert loaded_cfg == res.cfg
    _close(_logits(params, loaded_cfg), _logits(b, cfg), rel=1e-5)  # the ORIGINAL B's function
    params, _ = huggingface.load_pretrained(str(tmp_path / "hf"))
    _close(_logits(params, loaded_cfg), _logits(b, cfg), rel=1e-5)
    res.export(str(tmp_path / "hf_a"), which="a")
    _close(_logits(*training.load(str(tmp_path / "hf_a"))), _logits(a, cfg), rel=1e-5)


def test_save_round_trip_keeps_the_function(aligned_pair, tmp_path):
    a, b, cfg, res = aligned_pair
    for which, original in (("b", b), ("a", a)):
        path = str(tmp_path / which)
        res.save(path, which=which)
        params, loaded_cfg = training.load(path)
        assert loaded_cfg == res.cfg
        _close(_logits(params, loaded_cfg), _logits(original, cfg), rel=1e-5)
        with open(os.path.join(path, "metadata.json")) as f:
            meta = json.load(f)["alignment"]
        assert meta["endpoint"] == which and meta["converged"] == res.converged and meta["report"] == res.report
        assert meta["input_config"] == cfg.to_dict() and meta["architecture_changes"] == list(res.architecture_changes)
    with pytest.raises(UserError, match="which="):
        res.save(str(tmp_path / "c"), which="c")


def test_export_loads_in_transformers(aligned_pair, tmp_path):
    import torch
    import transformers
    _, b, cfg, res = aligned_pair
    res.export(str(tmp_path / "hf"))
    model = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    with torch.no_grad():
        logits = model(torch.tensor(_tokens(cfg).tolist(), dtype=torch.long)).logits.numpy()
    _close(logits, _logits(b, cfg), rel=1e-5)
