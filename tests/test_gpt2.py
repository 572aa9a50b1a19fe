"""GPT-2: logits against a plain numpy forward pass, causality, bf16, heads, configs, init."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect.errors import UserError
from connect.models import gpt2

TINY = gpt2.config("tiny")
B, T = 2, 24  # one token shape throughout, so jitted functions compile once per config

# Jitted once per (config, dtype): eager op-by-op dispatch would dominate the run time.
_init = jax.jit(gpt2.init, static_argnums=1)
_value_and_grad = jax.jit(jax.value_and_grad(gpt2.loss), static_argnums=3)


@functools.partial(jax.jit, static_argnums=3, static_argnames="compute_dtype")
def _forward(params, tokens_BxT, targets_BxT, cfg, compute_dtype=jnp.float32):
    """Logits and loss of one batch."""
    return (gpt2.apply(params, tokens_BxT, cfg, compute_dtype=compute_dtype),
            gpt2.loss(params, tokens_BxT, targets_BxT, cfg, compute_dtype=compute_dtype))


def _random_params(cfg, seed, scale=0.3):
    """Params with every leaf random (LayerNorm gains around 1), so no term of the forward pass is trivially zero."""
    leaves, treedef = jax.tree.flatten(_init(jax.random.key(seed), cfg))
    rng = np.random.default_rng(seed)
    noisy = [jnp.asarray((leaf + scale * rng.standard_normal(leaf.shape)).astype(np.float32)) for leaf in leaves]
    return jax.tree.unflatten(treedef, noisy)


def _numpy_gpt2(params, tokens_BxT, cfg):
    """Independent float64 GPT-2 forward pass, written plainly with loops over batch, layers and heads."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    D, Hn = cfg.n_embd, cfg.n_head
    dh = D // Hn

    def layer_norm(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_epsilon) * g + b

    def gelu_new(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    out = []
    for tokens in np.asarray(tokens_BxT):
        T = len(tokens)
        x = p["wte"][tokens] + p["wpe"][:T]
        for layer in range(cfg.n_layer):
            h = p["h"]
            a = layer_norm(x, h["ln_1"]["scale"][layer], h["ln_1"]["bias"][layer])
            qkv = a @ h["attn"]["c_attn"]["kernel"][layer] + h["attn"]["c_attn"]["bias"][layer]
            q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
            heads = []
            for n in range(Hn):
                sl = slice(n * dh, (n + 1) * dh)
                o = np.zeros((T, dh))
                for i in range(T):
                    s = np.array([q[i, sl] @ k[j, sl] / math.sqrt(dh) for j in range(i + 1)])
                    w = np.exp(s - s.max())
                    w /= w.sum()
                    o[i] = w @ v[: i + 1, sl]
                heads.append(o)
            x = x + np.concatenate(heads, axis=1) @ h["attn"]["c_proj"]["kernel"][layer] + h["attn"]["c_proj"]["bias"][layer]
            m = layer_norm(x, h["ln_2"]["scale"][layer], h["ln_2"]["bias"][layer])
            m = gelu_new(m @ h["mlp"]["c_fc"]["kernel"][layer] + h["mlp"]["c_fc"]["bias"][layer])
            x = x + m @ h["mlp"]["c_proj"]["kernel"][layer] + h["mlp"]["c_proj"]["bias"][layer]
        x = layer_norm(x, p["ln_f"]["scale"], p["ln_f"]["bias"])
        out.append(x @ (p["wte"] if cfg.tie_word_embeddings else p["lm_head"]).T)
    return np.stack(out)


def _tokens(cfg, seed):
    return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, T)), jnp.int32)


@pytest.mark.parametrize("tied", [False, True])
def test_logits_and_loss_match_numpy_forward(tied):
    cfg = dataclasses.replace(TINY, tie_word_embeddings=tied)
    params = _random_params(cfg, seed=1, scale=0.1)
    tokens, targets = _tokens(cfg, seed=2), _tokens(cfg, seed=3)
    logits, loss = _forward(params, tokens, targets, cfg)
    ref = _numpy_gpt2(params, tokens, cfg)
    assert logits.dtype == jnp.float32 and logits.shape == (B, T, cfg.vocab_size)
    assert np.std(ref) > 0.5  # logits of order one: a real comparison, not one of near-zeros
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-5, rtol=0)
    logp = ref - ref.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    ref_loss = -np.mean(np.take_along_axis(logp, np.asarray(targets)[..., None], -1))
    np.testing.assert_allclose(float(loss), ref_loss, rtol=0, atol=1e-5)


def test_causal_gradient_of_logits_wrt_later_positions_is_zero():
    """d logits[:, i] / d x_j = 0 for j > i: the embedding input of position j is x_j = wte[t_j] + wpe[j]."""
    params = _random_params(TINY, seed=6)
    tokens = _tokens(TINY, seed=7)
    i = 9

    @jax.jit
    def grad_wpe(wpe):
        return jax.grad(lambda w: jnp.sum(gpt2.apply({**params, "wpe": w}, tokens, TINY)[:, i] ** 2))(wpe)

    grad = np.asarray(grad_wpe(params["wpe"]))
    assert np.all(grad[i + 1:] == 0.0)
    assert np.all(np.abs(grad[: i + 1]).sum(-1) > 0)  # earlier positions (and i itself) do matter


def test_causal_logits_unchanged_when_later_tokens_change():
    params = _random_params(TINY, seed=8)
    tokens = _tokens(TINY, seed=9)
    later = tokens.at[:, 7:].set((tokens[:, 7:] + 1) % TINY.vocab_size)
    a, b = np.asarray(_forward(params, tokens, tokens, TINY)[0]), np.asarray(_forward(params, later, later, TINY)[0])
    np.testing.assert_array_equal(a[:, :7], b[:, :7])  # bit for bit
    assert np.abs(a[:, 7:] - b[:, 7:]).min() > 0


def test_bf16_compute_close_to_fp32():
    params = _init(jax.random.key(10), TINY)
    tokens, targets = _tokens(TINY, seed=11), _tokens(TINY, seed=12)
    full, l32 = _forward(params, tokens, targets, TINY)
    half, l16 = _forward(params, tokens, targets, TINY, compute_dtype=jnp.bfloat16)
    assert half.dtype == l16.dtype == jnp.float32
    full, half = np.asarray(full), np.asarray(half)
    assert np.max(np.abs(half - full)) < 0.03 * np.max(np.abs(full)) and not np.array_equal(half, full)
    assert abs(float(l16) - float(l32)) < 1e-2
    grad = jax.eval_shape(jax.grad(functools.partial(gpt2.loss, cfg=TINY, compute_dtype=jnp.bfloat16)), params, tokens, targets)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grad))  # master params and their grads stay float32


def test_tied_and_untied_heads():
    untied = _init(jax.random.key(13), TINY)
    tied_cfg = dataclasses.replace(TINY, tie_word_embeddings=True)
    assert "lm_head" in untied and "lm_head" not in _init(jax.random.key(13), tied_cfg)
    tokens, targets = _tokens(TINY, seed=14), _tokens(TINY, seed=15)
    # An untied model whose head equals wte computes exactly what the tied model computes ...
    tied = {k: v for k, v in untied.items() if k != "lm_head"}
    loss_tied, g_tied = _value_and_grad(tied, tokens, targets, tied_cfg)
    loss_untied, g_untied = _value_and_grad({**untied, "lm_head": untied["wte"]}, tokens, targets, TINY)
    assert float(loss_tied) == float(loss_untied)
    # ... and the tied head's gradient reaches wte through both the embedding and the output layer.
    np.testing.assert_allclose(np.asarray(g_tied["wte"]), np.asarray(g_untied["wte"] + g_untied["lm_head"]), atol=1e-7)
    assert np.abs(np.asarray(g_untied["lm_head"])).max() > 0 and np.abs(np.asarray(g_untied["wte"])).max() > 0


def test_named_configs_and_errors():
    assert gpt2.config("seed-paper") == gpt2.GPT2Config(50257, 256, 256, 6, 4, 1024, tie_word_embeddings=False)
    assert gpt2.config("gpt2") == gpt2.GPT2Config(50257, 1024, 768, 12, 12, 3072, tie_word_embeddings=True)
    assert gpt2.config("tiny") == gpt2.GPT2Config(256, 64, 64, 2, 4, 256, tie_word_embeddings=False)
    assert gpt2.config(TINY, n_layer=3).n_layer == 3 and gpt2.config(TINY) == TINY
    with pytest.raises(UserError, match="unknown GPT-2 config 'gpt5'"):
        gpt2.config("gpt5")
    with pytest.raises(UserError, match="n_laye"):
        gpt2.config("tiny", n_laye=3)
    with pytest.raises(UserError, match="not divisible by n_head=3"):
        gpt2.config("tiny", n_head=3)
    with pytest.raises(UserError, match="n_layer=0"):
        gpt2.config("tiny", n_layer=0)
    with pytest.raises(UserError, match="exceeds the model's context n_positions=64"):
        jax.eval_shape(functools.partial(gpt2.apply, cfg=TINY), _init(jax.random.key(0), TINY), jnp.zeros((1, 65), jnp.int32))


def test_param_count_of_gpt2_124m():
    """124,439,808 parameters (Radford et al. 2019's "117M"; Hugging Face's ``num_parameters()`` of gpt2)."""
    shapes = jax.eval_shape(lambda key: gpt2.init(key, gpt2.config("gpt2")), jax.random.key(0))
    V, P, D, L, F = 50257, 1024, 768, 12, 3072
    per_layer = 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * F + F) + (F * D + D)
    assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == V * D + P * D + L * per_layer + 2 * D == 124_439_808


def test_init_statistics():
    cfg = gpt2.config("tiny", n_layer=4, n_embd=128, n_inner=512, vocab_size=512)
    params = _init(jax.random.key(15), cfg)
    h = params["h"]

    def std_ok(a, std):
        a = np.asarray(a)
        n = a.size  # std of a sample std of n normals is about std / sqrt(2n); allow 6 of those
        assert abs(a.mean()) < 6 * std / math.sqrt(n) and abs(a.std() - std) < 6 * std / math.sqrt(2 * n)

    for a in (params["wte"], params["wpe"], params["lm_head"], h["attn"]["c_attn"]["kernel"], h["mlp"]["c_fc"]["kernel"]):
        std_ok(a, 0.02)
    for a in (h["attn"]["c_proj"]["kernel"], h["mlp"]["c_proj"]["kernel"]):
        std_ok(a, 0.02 / math.sqrt(2 * cfg.n_layer))
    assert not np.array_equal(np.asarray(params["wte"]), np.asarray(params["lm_head"]))
    for ln in (h["ln_1"], h["ln_2"], params["ln_f"]):
        assert np.all(np.asarray(ln["scale"]) == 1) and np.all(np.asarray(ln["bias"]) == 0)
    for name in ("c_attn", "c_proj"):
        assert np.all(np.asarray(h["attn"][name]["bias"]) == 0)
    for name in ("c_fc", "c_proj"):
        assert np.all(np.asarray(h["mlp"][name]["bias"]) == 0)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_muon_matrices_name_kernels_with_fused_counts():
    params = _init(jax.random.key(0), TINY)
    D = TINY.n_embd
    for path, n in gpt2.MUON_MATRICES.items():
        leaf = params
        for p in path:
            leaf = leaf[p]
        assert leaf.ndim == 3 and leaf.shape[0] == TINY.n_layer and leaf.shape[-1] % n == 0
    assert params["h"]["attn"]["c_attn"]["kernel"].shape[-1] == 3 * D and gpt2.MUON_MATRICES[("h", "attn", "c_attn", "kernel")] == 3
