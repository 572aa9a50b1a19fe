"""GPT-2 alignment: each step keeps the logits; a planted permuted-and-rotated copy is recovered."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect.alignment import gpt2 as align_gpt2
from connect.errors import UserError
from connect.models import gpt2

CFG = gpt2.config("tiny", vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=4, n_inner=32)


def _model(seed, cfg=CFG):
    """A random model with non-trivial LayerNorm gains and biases and non-zero linear biases."""
    params = gpt2.init(jax.random.key(seed), cfg)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)


def _logits(params, cfg=CFG):
    tokens = jax.random.randint(jax.random.key(7), (2, 12), 0, cfg.vocab_size)
    return np.asarray(gpt2.apply(jax.tree.map(jnp.asarray, params), tokens, cfg))


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
    _close(_logits(align_gpt2.rotate_residual(folded, r), cfg), base)
    rng = np.random.default_rng(4)
    mlp = np.stack([rng.permutation(CFG.n_inner) for _ in range(CFG.n_layer)])
    heads = np.stack([rng.permutation(CFG.n_head) for _ in range(CFG.n_layer)])
    _close(_logits(align_gpt2.permute(folded, cfg, mlp, heads), cfg), base)


def test_a_rotation_moving_the_ones_vector_is_refused():
    folded, _ = align_gpt2.fold_layernorms(_model(1), CFG)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(CFG.n_embd, CFG.n_embd)))
    with pytest.raises(ValueError, match="R𝟙 = 𝟙"):
        align_gpt2.rotate_residual(folded, q)
    with pytest.raises(ValueError, match="folded"):
        align_gpt2.rotate_residual(_model(1), np.eye(CFG.n_embd))


def test_planted_copy_is_recovered():
    params_a = _model(2)
    folded, cfg = align_gpt2.fold_layernorms(params_a, CFG)
    rng = np.random.default_rng(5)
    mlp = np.stack([rng.permutation(CFG.n_inner) for _ in range(CFG.n_layer)])
    heads = np.stack([rng.permutation(CFG.n_head) for _ in range(CFG.n_layer)])
    planted = align_gpt2.rotate_residual(align_gpt2.permute(folded, cfg, mlp, heads), _random_rotation(CFG.n_embd, 6))
    res = align_gpt2.align(params_a, planted, cfg)
    _close(_logits(res.params_b, res.cfg), _logits(params_a))  # B's function is unchanged
    norm = align_gpt2.distance(res.params_a, jax.tree.map(np.zeros_like, res.params_a))
    assert res.report[1]["distance"] > 0.5 * norm  # the planted copy starts far away
    assert res.report[-1]["distance"] <= 1e-5 * norm  # and is recovered
    dists = [r["distance"] for r in res.report[1:]]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(dists, dists[1:]))


def test_independent_models_move_closer_and_keep_their_function():
    a, b = _model(10), _model(11)
    res = align_gpt2.align(a, b, CFG, rotate=False)
    assert res.report[-1]["distance"] < res.report[1]["distance"]
    _close(_logits(res.params_b, res.cfg), _logits(b))
    assert np.array_equal(res.rotation, np.eye(CFG.n_embd))


def test_different_architectures_are_a_user_error():
    other = gpt2.config(CFG, n_inner=48)
    with pytest.raises(UserError, match="different architectures"):
        align_gpt2.align(_model(0), _model(0, other), CFG)
