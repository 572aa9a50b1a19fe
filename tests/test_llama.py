"""The Llama family (Llama, Qwen2, Mistral) against ``transformers`` itself: logits, loss, checkpoints both ways,
matrices, permutation symmetries, init, and the one-line refusals of configs connect does not implement."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_reference import hf_logits, hf_model

from connect import symmetry
from connect.errors import UserError
from connect.lm import huggingface as hf
from connect.lm.huggingface import llama as hf_llama
from connect.models import language, llama

T = 16
BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=T)
#: With d_h = 16: one high frequency kept, one smoothed, six divided by the factor.
LLAMA3 = dict(rope_type="llama3", rope_theta=500000.0, rope_factor=8.0, rope_low_freq_factor=0.5,
              rope_high_freq_factor=4.0, rope_original_max_position_embeddings=32, max_position_embeddings=64)
#: Random tiny configs covering every option: name -> overrides of BASE.
CONFIGS = {
    "llama-tied-mha": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "llama-untied-gqa-bias": dict(qkv_bias=True, o_bias=True, mlp_bias=True, rms_norm_eps=1e-5),
    "llama3-rope-head-dim": dict(head_dim=16, num_key_value_heads=1, **LLAMA3),
    "qwen2": dict(model_type="qwen2", qkv_bias=True, tie_word_embeddings=True, rope_theta=1e6),
    "qwen2-sliding-head-dim": dict(model_type="qwen2", qkv_bias=True, sliding_window=4, max_window_layers=1, head_dim=4),
    "mistral-sliding": dict(model_type="mistral", sliding_window=5, head_dim=12),
}
_apply = jax.jit(llama.apply, static_argnums=2, static_argnames="compute_dtype")
_loss = jax.jit(llama.loss, static_argnums=3)


def _cfg(name):
    return llama.config(llama.LlamaConfig(**{**BASE, **CONFIGS[name]}))


def _params(model, cfg):
    return hf.params_from_hf({k: v.float().numpy() for k, v in model.state_dict().items()}, cfg)


def _tokens(cfg, seed, batch=2):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, T))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_and_loss_equal_transformers(name):
    cfg = _cfg(name)
    model = hf_model(cfg, seed=0)
    tokens = _tokens(cfg, seed=1)
    reference = hf_logits(model, tokens)
    assert np.std(reference) > 0.5
    params = _params(model, cfg)
    logits = np.asarray(_apply(params, jnp.asarray(tokens, jnp.int32), cfg))
    print(f"{name}: max |logits - transformers| = {np.max(np.abs(logits - reference)):.2e}")
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)
    with torch.no_grad():
        hf_loss = model(torch.tensor(tokens), labels=torch.tensor(tokens)).loss.item()
    ours = float(_loss(params, jnp.asarray(tokens[:, :-1], jnp.int32), jnp.asarray(tokens[:, 1:], jnp.int32), cfg))
    assert abs(ours - hf_loss) < 1e-5


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_checkpoints_both_directions(tmp_path, name):
    cfg = _cfg(name)
    model = hf_model(cfg, seed=2)
    tokens = _tokens(cfg, seed=3)
    reference = hf_logits(model, tokens)
    model.save_pretrained(str(tmp_path / "hf"))  # transformers writes, connect reads
    params, cfg_read = hf.load_pretrained(str(tmp_path / "hf"))
    assert cfg_read == cfg
    np.testing.assert_allclose(np.asarray(_apply(params, jnp.asarray(tokens, jnp.int32), cfg)), reference, atol=1e-4, rtol=0)
    hf.save_pretrained(params, cfg, str(tmp_path / "connect"))  # connect writes, transformers reads
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "connect")).eval()
    assert type(reloaded).__name__ == hf_llama.MODEL_TYPES[cfg.model_type]
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), reference)  # the very same float32 weights


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_checkpoints_load_exactly(tmp_path, dtype):
    cfg = _cfg("llama-untied-gqa-bias")
    model = hf_model(cfg, seed=4)
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(getattr(torch, dtype)).float())
    model.to(getattr(torch, dtype)).save_pretrained(str(tmp_path))
    params, cfg_read = hf.load_pretrained(str(tmp_path))
    assert cfg_read == cfg
    tokens = _tokens(cfg, seed=5)
    logits = np.asarray(_apply(params, jnp.asarray(tokens, jnp.int32), cfg))
    np.testing.assert_allclose(logits, hf_logits(rounded, tokens), atol=1e-4, rtol=0)


def test_matrices_are_the_transformers_linear_weights():
    cfg = _cfg("llama-untied-gqa-bias")
    model = hf_model(cfg, seed=6)
    params = _params(model, cfg)
    mats = llama.matrices(params, cfg)
    assert list(mats) == llama.matrix_names(cfg)
    assert llama.hidden_matrix_names(cfg) == tuple(n for n in mats if n.startswith("layers."))
    for name, w in mats.items():
        module = model.lm_head if name == "lm_head" else model.model.get_submodule(name)
        np.testing.assert_array_equal(np.asarray(w), module.weight.detach().numpy())
    stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), params)  # a leading t axis is kept
    w = llama.matrices(stacked, cfg, ["layers.1.self_attn.k_proj"])["layers.1.self_attn.k_proj"]
    assert w.shape == (2, cfg.num_key_value_heads * cfg.d_head, cfg.hidden_size)
    for path, fused in llama.MUON_MATRICES.items():
        assert fused == 1 and _get(params, path).ndim == 3
    with pytest.raises(UserError, match="no matrix 'lm_head'"):
        llama.checked_matrix_names(_cfg("qwen2"), ["lm_head"])


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _random_perms(cfg, spec, rng):
    """A random permutation of every symmetry, per layer, of the shape :func:`symmetry.permute` takes."""
    K, G = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads
    sizes = {"mlp": (1, cfg.intermediate_size), "kv_heads": (1, K), "q_heads": (K, G)}  # (groups, units)
    assert set(spec) == ({"mlp", "kv_heads", "q_heads"} if G > 1 else {"mlp", "kv_heads"})
    perms = {name: np.array([[rng.permutation(sizes[name][1]) for _ in range(sizes[name][0])]
                             for _ in range(cfg.num_hidden_layers)]) for name in spec}
    return {name: p if name == "q_heads" else p[:, 0] for name, p in perms.items()}


@pytest.mark.parametrize("name", ["llama-untied-gqa-bias", "llama3-rope-head-dim", "llama-tied-mha", "qwen2"])
def test_permutation_symmetry_keeps_logits(name):
    cfg = _cfg(name)
    params = _params(hf_model(cfg, seed=7), cfg)
    spec = symmetry.spec(llama.symmetry(cfg))
    perms = _random_perms(cfg, spec, np.random.default_rng(8))
    permuted = jax.tree.map(jnp.asarray, symmetry.permute(params, spec, perms))
    tokens = jnp.asarray(_tokens(cfg, seed=9), jnp.int32)
    reference = np.asarray(_apply(params, tokens, cfg))
    np.testing.assert_allclose(np.asarray(_apply(permuted, tokens, cfg)), reference, atol=2e-5, rtol=0)
    moved = ("q_proj", "o_proj") + (("k_proj",) if cfg.num_key_value_heads > 1 else ())  # one kv head cannot move
    for path in [("layers", "self_attn", n, "kernel") for n in moved] + [("layers", "mlp", "up_proj", "kernel")]:
        assert not np.array_equal(np.asarray(_get(permuted, path)), np.asarray(_get(params, path))), path


def test_init_statistics_and_shapes_match_tensor_names():
    cfg = llama.config("tiny", qkv_bias=True, o_bias=True, mlp_bias=True)
    params = llama.init(jax.random.key(0), cfg)
    for name, w in llama.matrices(params, cfg).items():
        assert abs(float(jnp.std(w)) - llama.INIT_STD) < 0.15 * llama.INIT_STD, name
        assert abs(float(jnp.mean(w))) < 0.1 * llama.INIT_STD, name
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    assert not np.any(np.asarray(params["layers"]["self_attn"]["o_proj"]["bias"]))
    assert np.all(np.asarray(params["layers"]["input_layernorm"]["scale"]) == 1)
    for name in CONFIGS:
        cfg = _cfg(name)
        shapes = jax.eval_shape(lambda key, cfg=cfg: llama.init(key, cfg), jax.random.key(0))
        state = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.for_model(**hf_llama.config_to_hf(cfg))).state_dict()
        names = hf_llama.tensor_names(cfg)
        assert set(names) == set(state) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
        n_leaves = len(jax.tree.leaves(shapes))
        assert len({path for path, _, _ in names.values()}) == n_leaves
        for key, (path, layer, transposed) in names.items():
            shape = _get(shapes, path).shape[1 if layer is not None else 0:]
            assert tuple(shape[::-1] if transposed else shape) == tuple(state[key].shape), key


def test_activations_and_bfloat16():
    cfg = _cfg("qwen2-sliding-head-dim")
    params = _params(hf_model(cfg, seed=10), cfg)
    tokens = jnp.asarray(_tokens(cfg, seed=11), jnp.int32)
    acts = llama.activations(params, tokens, cfg)
    L, B, D, F = cfg.num_hidden_layers, 2, cfg.hidden_size, cfg.intermediate_size
    assert acts["residual"].shape == acts["attn_out"].shape == acts["mlp_out"].shape == (L, B, T, D)
    assert acts["mlp_hidden"].shape == (L, B, T, F) and acts["final_residual"].shape == (B, T, D)
    np.testing.assert_allclose(acts["residual"][1], acts["residual"][0] + acts["attn_out"][0] + acts["mlp_out"][0], atol=1e-5)
    np.testing.assert_array_equal(acts["residual"][0], params["embed_tokens"][tokens])
    f32 = np.asarray(_apply(params, tokens, cfg))
    bf16 = np.asarray(_apply(params, tokens, cfg, compute_dtype=jnp.bfloat16))
    assert bf16.dtype == np.float32 and np.mean(np.abs(bf16 - f32)) < 0.02 * np.std(f32)


def test_attention_window_static_and_traced_agree_with_a_direct_computation():
    """Key j visible to query i iff j ≤ i and i − j < window; grouped query heads n read key/value head n // (N/K)."""
    rng = np.random.default_rng(12)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 8, n, 4)), jnp.float32) for n in (6, 2, 2))
    i, j = np.arange(8)[:, None], np.arange(8)[None, :]
    for window in (None, 3):
        visible = (j <= i) & ((i - j < window) if window else True)
        scores = np.einsum("btnh,bsnh->bnts", q, np.repeat(k, 3, axis=2)) / 2.0
        probs = np.exp(np.where(visible, scores, -np.inf) - scores.max(-1, keepdims=True))
        expected = np.einsum("bnts,bsnh->btnh", probs / probs.sum(-1, keepdims=True), np.repeat(v, 3, axis=2))
        np.testing.assert_allclose(language.causal_attention(q, k, v, jnp.float32, window), expected, atol=1e-5)
    traced = jax.jit(lambda w: language.causal_attention(q, k, v, jnp.float32, w))(jnp.int32(3))
    np.testing.assert_allclose(traced, language.causal_attention(q, k, v, jnp.float32, 3), atol=1e-6)


def test_rope_parameters_and_legacy_rope_scaling_read_alike():
    cfg = _cfg("llama3-rope-head-dim")
    new = hf_llama.config_to_hf(cfg)
    legacy = {k: v for k, v in new.items() if k != "rope_parameters"}
    legacy.update(rope_theta=cfg.rope_theta, original_max_position_embeddings=32,  # top level, as Phi3 writes it
                  rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 0.5, "high_freq_factor": 4.0})
    assert hf_llama.config_from_hf(legacy, "c") == hf_llama.config_from_hf(new, "c") == cfg
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**legacy))
    np.testing.assert_allclose(llama.inv_freq(cfg), model.model.rotary_emb.inv_freq.numpy(), rtol=1e-6)
    assert hf_llama.config_from_hf({**new, "rope_parameters": None, "rope_theta": 7.0}, "c").rope_theta == 7.0
    assert hf_llama.config_from_hf({**new, "rope_parameters": None}, "c").rope_theta == 10000.0
    mistral = hf_llama.config_to_hf(_cfg("mistral-sliding"))
    assert hf_llama.config_from_hf({k: v for k, v in mistral.items() if k != "sliding_window"}, "c").sliding_window == 4096
    assert hf_llama.config_from_hf({**mistral, "sliding_window": None}, "c").sliding_window is None
    assert hf_llama.config_from_hf({**new, "pretraining_tp": 2}, "c") == cfg  # transformers 5 ignores it


@pytest.mark.parametrize("overrides, field", [
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(hidden_size=30), "hidden_size"),
    (dict(hidden_size=30, head_dim=8), "hidden_size"),  # transformers' LlamaConfig refuses it too
    (dict(head_dim=7), "head_dim"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps"),
    (dict(vocab_size=True), "vocab_size"),
    (dict(rope_type="yarn"), "rope_type"),
    (dict(rope_type="llama3"), "rope_factor"),
    (dict(rope_factor=2.0), "rope_factor"),
    (dict(qkv_bias=True), "model_type"),
    (dict(sliding_window=8), "model_type"),
    (dict(model_type="mistral", mlp_bias=True), "model_type"),
    (dict(model_type="qwen2"), "model_type"),
    (dict(model_type="mistral", max_window_layers=1), "model_type"),
    (dict(model_type="gemma"), "model_type"),
])
def test_config_refuses_bad_values(overrides, field):
    with pytest.raises(UserError, match=field) as e:
        llama.config("tiny", **overrides)
    assert "\n" not in str(e.value)


def test_config_names_and_context():
    with pytest.raises(UserError, match="unknown Llama config"):
        llama.config("nope")
    with pytest.raises(UserError, match="unknown Llama config field"):
        llama.config("tiny", n_embd=3)
    cfg = llama.config("tiny")
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.context_limit) == (256, 64, 2, 64)
    assert llama.config("tiny", head_dim=16).head_dim is None  # the default, spelt one way
    assert llama.config(cfg) == cfg and cfg.to_dict()["model_type"] == "llama"
    llama.check_context(cfg, 64)
    with pytest.raises(UserError, match="max_position_embeddings=64"):
        llama.check_context(cfg, 65)
    for name in llama.CONFIGS:
        llama.config(name)


@pytest.mark.parametrize("edit, field", [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "rope_type"),
    ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_type"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default"}}}, "rope_parameters"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}}, "high_freq_factor"),
    ({"attention_bias": "yes"}, "attention_bias"),
    ({"num_key_value_heads": 0}, "num_key_value_heads"),
    ({"head_dim": 5}, "head_dim"),
    ({"model_type": "mixtral"}, "model_type"),
    ({"model_type": "qwen2", "layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ({"model_type": "mistral", "sliding_window": 0}, "sliding_window"),
])
def test_config_from_hf_refuses_what_connect_lacks(edit, field):
    config = {**hf_llama.config_to_hf(_cfg("llama-tied-mha")), **edit}
    with pytest.raises(UserError, match=field) as e:
        hf_llama.config_from_hf(config, "config.json")
    assert "\n" not in str(e.value)
