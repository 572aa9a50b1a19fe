"""LoRA: zero B leaves the model unchanged, merged weights equal the factored adapters, gradients reach only
the adapters (and match the chain rule), ranks and targets checked; the targets of every family (GPT-2, Llama,
GPT-NeoX) are its per-layer kernels, and merging equals applying the adapters on each."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from connect import models
from connect.errors import UserError
from connect.lm import lora
from connect.models import gpt2, gpt_neox, llama

CFG = gpt2.config("tiny", n_layer=2, n_embd=16, n_head=2, n_inner=32, n_positions=16)
B, T = 2, 12


def _setup(seed=0):
    params = jax.jit(gpt2.init, static_argnums=1)(jax.random.key(seed), CFG)
    x_BxT = jax.random.randint(jax.random.key(seed + 1), (B, T), 0, CFG.vocab_size)
    return params, x_BxT


def _with_random_b(ad: lora.LoRA, seed: int) -> lora.LoRA:
    rng = np.random.default_rng(seed)
    adapters = {n: {"a": ab["a"], "b": jnp.asarray(rng.standard_normal(ab["b"].shape).astype(np.float32) * 0.1)}
                for n, ab in ad.adapters.items()}
    return lora.LoRA(adapters, ad.rank, ad.alpha, ad.family)


def test_zero_b_leaves_logits_unchanged_exactly():
    params, x_BxT = _setup()
    ad = lora.init(jax.random.key(3), params, CFG, rank=4, alpha=8.0)
    assert list(ad.adapters) == list(lora.target_paths(CFG)) == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert {lora.target_paths(CFG)[n] for n in ad.adapters} == set(gpt2.MUON_MATRICES)
    for ab in ad.adapters.values():
        assert not np.any(np.asarray(ab["b"])) and np.std(np.asarray(ab["a"])) > 0
    apply = jax.jit(gpt2.apply, static_argnums=2)
    np.testing.assert_array_equal(np.asarray(apply(params, x_BxT, CFG)), np.asarray(apply(lora.apply_lora(params, ad), x_BxT, CFG)))


def test_merge_equals_running_the_adapters():
    params, _ = _setup()
    ad = _with_random_b(lora.init(jax.random.key(3), params, CFG, rank=3, alpha=6.0, targets=["attn.c_attn", "mlp"]), 7)
    merged = lora.merge(params, ad)
    rng = np.random.default_rng(0)
    for name, path in lora.target_paths(CFG).items():
        w = np.asarray(params[path[0]][path[1]][path[2]][path[3]], np.float64)
        w_merged = np.asarray(merged[path[0]][path[1]][path[2]][path[3]], np.float64)
        if name not in ad.adapters:
            np.testing.assert_array_equal(w_merged, w)
            continue
        a, b = (np.asarray(ad.adapters[name][k], np.float64) for k in ("a", "b"))
        x_LxNxI = rng.standard_normal((w.shape[0], 5, w.shape[1]))
        factored = x_LxNxI @ w + (6.0 / 3) * (x_LxNxI @ a) @ b  # x W + (α/r)(x A) B, layer by layer
        np.testing.assert_allclose(x_LxNxI @ w_merged, factored, rtol=1e-5, atol=1e-6)
        assert np.abs(w_merged - w).max() > 1e-3
    # everything that is not a target is the very same array
    np.testing.assert_array_equal(np.asarray(merged["wte"]), np.asarray(params["wte"]))


def test_gradients_reach_only_adapters_and_follow_the_chain_rule():
    params, x_BxT = _setup(1)
    y_BxT = jnp.roll(x_BxT, -1, axis=1)
    ad = lora.init(jax.random.key(5), params, CFG, rank=2, alpha=4.0)

    def loss_of(ad, params):
        return gpt2.loss(lora.apply_lora(params, ad), x_BxT, y_BxT, CFG)

    g_ad = jax.jit(jax.grad(loss_of))(ad, params)
    g_eff = jax.jit(jax.grad(gpt2.loss), static_argnums=3)(lora.apply_lora(params, ad), x_BxT, y_BxT, CFG)
    for name, path in lora.target_paths(CFG).items():
        a = np.asarray(ad.adapters[name]["a"], np.float64)
        g_w = np.asarray(g_eff[path[0]][path[1]][path[2]][path[3]], np.float64)
        # W' = W + s A B with B = 0: dL/dA = s G Bᵀ = 0 exactly, dL/dB = s Aᵀ G
        assert not np.any(np.asarray(g_ad.adapters[name]["a"]))
        np.testing.assert_allclose(np.asarray(g_ad.adapters[name]["b"]), 2.0 * np.einsum("lir,lio->lro", a, g_w), rtol=1e-4, atol=1e-7)

    opt = lora.optimizer("adamw", ad, lr=1e-2)
    state = opt.init(ad)
    updates, _ = opt.update(g_ad, state, ad)
    new = optax.apply_updates(ad, updates)
    assert jax.tree.structure(new) == jax.tree.structure(ad)  # the optimizer sees adapters only
    assert all(np.abs(np.asarray(new.adapters[n]["b"])).max() > 0 for n in new.adapters)
    assert lora.n_params(ad) == sum(2 * (i * 2 + 2 * o) for i, o in [(16, 48), (16, 16), (16, 32), (32, 16)])


def test_bad_rank_and_target_are_user_errors():
    params, _ = _setup()
    with pytest.raises(UserError, match="exceeds min"):
        lora.init(jax.random.key(0), params, CFG, rank=17, alpha=1.0)
    lora.init(jax.random.key(0), params, CFG, rank=16, alpha=1.0)  # min(in, out) = 16 is allowed
    with pytest.raises(UserError, match="unknown LoRA target 'wte': use attn, mlp or a gpt2 kernel: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj$"):
        lora.init(jax.random.key(0), params, CFG, rank=2, alpha=1.0, targets=["wte"])
    with pytest.raises(UserError, match="positive integer"):
        lora.init(jax.random.key(0), params, CFG, rank=0, alpha=1.0)
    with pytest.raises(UserError, match="a gpt_neox kernel: attention.query_key_value, attention.dense"):  # another family's name
        lora.init(jax.random.key(0), params, gpt_neox.config("tiny"), rank=2, alpha=1.0, targets=["attn.c_attn"])
    with pytest.raises(UserError, match="parameters have no layers/attention/query_key_value/kernel: pass the params of a gpt_neox"):
        lora.init(jax.random.key(0), params, gpt_neox.config("tiny"), rank=2, alpha=1.0)  # GPT-2 params, GPT-NeoX config


FAMILY_CFGS = {
    "llama": llama.config("tiny", hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=16),
    "gpt_neox": gpt_neox.config("tiny", hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                max_position_embeddings=16, rotary_pct=0.5),
}
TARGET_NAMES = {
    "llama": {"attn": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"],
              "mlp": ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]},
    "gpt_neox": {"attn": ["attention.query_key_value", "attention.dense"], "mlp": ["mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]},
}


@pytest.mark.parametrize("name", sorted(FAMILY_CFGS))
def test_other_families_targets_and_merge_equals_apply(name):
    """On Llama (grouped-query: k, v narrower than q) and GPT-NeoX (fused per-head q|k|v), the targets are the family's
    per-layer kernels; zero B changes nothing; the merged model's logits equal the adapted model's, and its kernels
    are ``W + (α/r) A B``."""
    cfg, fam = FAMILY_CFGS[name], models.family(FAMILY_CFGS[name])
    assert lora.target_groups(cfg) == {k: tuple(v) for k, v in TARGET_NAMES[name].items()}
    paths = lora.target_paths(cfg)
    assert set(paths.values()) == set(fam.MUON_MATRICES) and all(".".join(p[1:-1]) == n for n, p in paths.items())
    params = jax.jit(fam.init, static_argnums=1)(jax.random.key(0), cfg)
    x_BxT = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
    apply = jax.jit(fam.apply, static_argnums=2)
    ad = lora.init(jax.random.key(3), params, cfg, rank=2, alpha=4.0)
    assert list(ad.adapters) == list(paths) and ad.family == name
    np.testing.assert_array_equal(np.asarray(apply(lora.apply_lora(params, ad), x_BxT, cfg)), np.asarray(apply(params, x_BxT, cfg)))

    ad = _with_random_b(lora.init(jax.random.key(3), params, cfg, rank=2, alpha=4.0, targets=["mlp", TARGET_NAMES[name]["attn"][0]]), 5)
    merged = lora.merge(params, ad)
    adapted = jax.jit(lambda ad, p: fam.apply(lora.apply_lora(p, ad), x_BxT, cfg))(ad, params)  # the adapters inside the jit
    logits = np.asarray(apply(jax.tree.map(jnp.asarray, merged), x_BxT, cfg))
    np.testing.assert_allclose(logits, np.asarray(adapted), rtol=1e-5, atol=1e-5)
    assert np.abs(logits - np.asarray(apply(params, x_BxT, cfg))).max() > 1e-4  # the adapters reach the logits
    for target, path in paths.items():
        w, w_merged = (np.asarray(functools.reduce(dict.__getitem__, path, tree), np.float64) for tree in (params, merged))
        if target not in ad.adapters:
            np.testing.assert_array_equal(w_merged, w)
            continue
        a, b = (np.asarray(ad.adapters[target][k], np.float64) for k in ("a", "b"))
        np.testing.assert_allclose(w_merged, w + 2.0 * a @ b, rtol=1e-5, atol=1e-6)
