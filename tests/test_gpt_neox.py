"""GPT-NeoX: logits, loss and hidden states against transformers' GPTNeoXForCausalLM, checkpoints both ways,
config reading, matrices, symmetries, init."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from hf_reference import hf_logits, hf_model

from connect import symmetry as sym
from connect.errors import UserError
from connect.lm import huggingface as hf
from connect.lm.huggingface import gpt_neox as hf_neox
from connect.models import gpt_neox

T = 16
#: Random tiny configs covering every option: parallel / sequential residual, rotary fractions, attention
#: bias, tied head, the GELU spellings; ``pythia`` has Pythia's shape ratios (4 heads, F = 4D, 25% rotary).
CONFIGS = {
    "parallel": gpt_neox.config("tiny", vocab_size=96, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=T),
    "sequential": gpt_neox.config("tiny", vocab_size=80, hidden_size=32, num_attention_heads=2, intermediate_size=48,
                                  max_position_embeddings=T, use_parallel_residual=False, rotary_pct=1.0,
                                  rotary_emb_base=500.0, attention_bias=False, tie_word_embeddings=True,
                                  hidden_act="gelu_new"),
    "half": gpt_neox.config("tiny", vocab_size=64, hidden_size=48, num_attention_heads=3, intermediate_size=40,
                            num_hidden_layers=1, max_position_embeddings=T, use_parallel_residual=False,
                            rotary_pct=0.5, layer_norm_eps=1e-3, hidden_act="gelu_pytorch_tanh"),
    "norotary": gpt_neox.config("tiny", vocab_size=64, hidden_size=32, num_attention_heads=4, intermediate_size=32,
                                max_position_embeddings=T, rotary_pct=0.0, tie_word_embeddings=True,
                                hidden_act="gelu_fast"),
    "pythia": gpt_neox.config("tiny", vocab_size=128, hidden_size=64, num_attention_heads=4, intermediate_size=256,
                              max_position_embeddings=T),
}

_apply = jax.jit(gpt_neox.apply, static_argnums=2)


@functools.partial(jax.jit, static_argnums=3)
def _loss_and_activations(params, tokens_BxT, targets_BxT, cfg):
    return gpt_neox.loss(params, tokens_BxT, targets_BxT, cfg), gpt_neox.activations(params, tokens_BxT, cfg)


def _tokens(cfg, seed, B=2):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, T))


def _random_params(cfg, seed):
    """Params of ``cfg``'s shapes with every entry random (numpy, no compilation)."""
    shapes = jax.eval_shape(lambda key: gpt_neox.init(key, cfg), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32)), shapes)


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_equal_transformers_both_directions(tmp_path, name):
    cfg = CONFIGS[name]
    model = hf_model(cfg, seed=1)
    tokens = _tokens(cfg, seed=2)
    reference = hf_logits(model, tokens)
    assert np.std(reference) > 0.5

    model.save_pretrained(str(tmp_path / "hf"))  # transformers writes, connect reads
    written = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert set(written) == set(hf_neox.tensor_names(cfg))
    params, cfg_read = hf.load_pretrained(str(tmp_path / "hf"))
    assert cfg_read == cfg
    logits = np.asarray(_apply(params, jnp.asarray(tokens, jnp.int32), cfg))
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)

    hf.save_pretrained(params, cfg, str(tmp_path / "connect"))  # connect writes, transformers reads
    reloaded = transformers.GPTNeoXForCausalLM.from_pretrained(str(tmp_path / "connect")).eval()
    assert reloaded.config.tie_word_embeddings is cfg.tie_word_embeddings
    assert reloaded.config.rope_parameters["partial_rotary_factor"] == cfg.rotary_pct
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), reference)  # the very same float32 weights


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_checkpoints_both_directions(tmp_path, dtype):
    cfg = CONFIGS["parallel"]
    model = hf_model(cfg, seed=3)
    tokens = _tokens(cfg, seed=4)
    model.to(getattr(torch, dtype)).save_pretrained(str(tmp_path / "hf"))
    params, _ = hf.load_pretrained(str(tmp_path / "hf"))
    rounded = model.to(torch.float32)  # the 16-bit weights, exactly, in float32
    reference = hf_logits(rounded, tokens)
    np.testing.assert_allclose(np.asarray(_apply(params, jnp.asarray(tokens, jnp.int32), cfg)), reference, atol=1e-4, rtol=0)

    hf.save_pretrained(params, cfg, str(tmp_path / "connect"), dtype=dtype)
    reloaded = transformers.GPTNeoXForCausalLM.from_pretrained(str(tmp_path / "connect"), dtype=torch.float32).eval()
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), reference)  # 16-bit rounding is idempotent


@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_loss_and_hidden_states_equal_transformers(name):
    cfg = CONFIGS[name]
    model = hf_model(cfg, seed=5)
    params = hf.params_from_hf({k: v.numpy() for k, v in _hf_state(model).items()}, cfg)
    tokens = _tokens(cfg, seed=6)
    with torch.no_grad():
        out = model(torch.tensor(tokens), labels=torch.tensor(tokens), output_hidden_states=True)
    loss, acts = _loss_and_activations(params, jnp.asarray(tokens[:, :-1], jnp.int32), jnp.asarray(tokens[:, 1:], jnp.int32), cfg)
    np.testing.assert_allclose(float(loss), out.loss.item(), atol=1e-5, rtol=0)
    L = cfg.num_hidden_layers
    for layer in range(L):
        np.testing.assert_allclose(np.asarray(acts["residual"][layer]), out.hidden_states[layer][:, :-1].numpy(), atol=1e-4, rtol=0)
    x = np.asarray(acts["final_residual"], np.float64)  # transformers' last hidden state is after the final norm
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + cfg.layer_norm_eps)
    ln_f = params["final_layer_norm"]
    normed = normed * np.asarray(ln_f["scale"]) + np.asarray(ln_f["bias"])
    np.testing.assert_allclose(normed, out.hidden_states[L][:, :-1].numpy(), atol=1e-4, rtol=0)
    stepped = acts["residual"][1:] - acts["residual"][:-1] - acts["attn_out"][:-1] - acts["mlp_out"][:-1]
    np.testing.assert_allclose(np.asarray(stepped), 0.0, atol=1e-5)
    assert acts["mlp_hidden"].shape == (L, 2, T - 1, cfg.intermediate_size)


def _hf_state(model):
    """The tensors ``save_pretrained`` writes, from the module (``lm_head`` named ``embed_out``, tied head dropped)."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("inv_freq")}
    head = state.pop("lm_head.weight")
    return state if model.config.tie_word_embeddings else {**state, "embed_out.weight": head}


@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_matrices_are_the_torch_linear_weights(name):
    cfg = CONFIGS[name]
    model = hf_model(cfg, seed=7)
    state = {k: v.numpy() for k, v in _hf_state(model).items()}
    params = hf.params_from_hf(state, cfg)
    N, H, D = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    mats = gpt_neox.matrices(params, cfg)
    assert list(mats) == gpt_neox.matrix_names(cfg)
    for name_ in gpt_neox.matrix_names(cfg):
        if name_.startswith("layers."):
            prefix, suffix = name_.rsplit(".", 1)
            if suffix in ("query", "key", "value"):
                fused = state[f"gpt_neox.{prefix}.query_key_value.weight"].reshape(N, 3, H, D)
                want = fused[:, ("query", "key", "value").index(suffix)].reshape(D, D)
            else:
                want = state[f"gpt_neox.{name_}.weight"]
        else:
            want = state["embed_out.weight" if name_ == "embed_out" else "gpt_neox.embed_in.weight"]
        np.testing.assert_array_equal(np.asarray(mats[name_]), want, err_msg=name_)
    assert gpt_neox.hidden_matrix_names(cfg) == tuple(n for n in mats if n.startswith("layers."))
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)  # a leading t axis is kept
    q = gpt_neox.matrices(stacked, cfg, ["layers.1.attention.value"])["layers.1.attention.value"]
    np.testing.assert_array_equal(np.asarray(q[1]), 2 * np.asarray(mats["layers.1.attention.value"]))
    with pytest.raises(UserError, match="no matrix 'layers.9.attention.query'"):
        gpt_neox.checked_matrix_names(cfg, ["layers.9.attention.query"])
    for path, fused in gpt_neox.MUON_MATRICES.items():
        leaf = functools.reduce(lambda node, key: node[key], path, params)
        assert leaf.ndim == 3 and leaf.shape[-1] % fused == 0


@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_permutations_keep_the_logits(name):
    cfg = CONFIGS[name]
    params = jax.tree.map(lambda a: 0.5 * a, _random_params(cfg, seed=8))
    declared = gpt_neox.symmetry(cfg)
    rng = np.random.default_rng(9)
    L = cfg.num_hidden_layers
    units = {"mlp": cfg.intermediate_size, "heads": cfg.num_attention_heads}
    perms = {k: np.stack([_shuffled(rng, units[k]) for _ in range(L)]) for k in declared}
    permuted = sym.permute(jax.tree.map(np.asarray, params), sym.spec(declared), perms)
    tokens = jnp.asarray(_tokens(cfg, seed=10), jnp.int32)
    kernel = params["layers"]["attention"]["query_key_value"]["kernel"]
    assert not np.array_equal(np.asarray(kernel), permuted["layers"]["attention"]["query_key_value"]["kernel"])
    np.testing.assert_allclose(np.asarray(_apply(jax.tree.map(jnp.asarray, permuted), tokens, cfg)),
                               np.asarray(_apply(params, tokens, cfg)), atol=1e-5, rtol=0)


def _shuffled(rng, n):
    """A random permutation of ``n ≥ 2`` units other than the identity."""
    perm = rng.permutation(n)
    return perm[::-1].copy() if np.array_equal(perm, np.arange(n)) else perm


def test_init_statistics_and_shapes_fit_the_hf_tensors():
    cfg = gpt_neox.config("tiny")
    params = jax.jit(gpt_neox.init, static_argnums=1)(jax.random.key(0), cfg)
    layers = params["layers"]
    for w in (params["embed_in"], params["embed_out"], layers["attention"]["query_key_value"]["kernel"],
              layers["attention"]["dense"]["kernel"], layers["mlp"]["dense_h_to_4h"]["kernel"],
              layers["mlp"]["dense_4h_to_h"]["kernel"]):
        assert abs(float(jnp.std(w)) / gpt_neox.INIT_STD - 1) < 0.05 and abs(float(jnp.mean(w))) < 1e-3
    for ln in (layers["input_layernorm"], layers["post_attention_layernorm"], params["final_layer_norm"]):
        assert np.all(np.asarray(ln["scale"]) == 1) and np.all(np.asarray(ln["bias"]) == 0)
    assert np.all(np.asarray(layers["mlp"]["dense_h_to_4h"]["bias"]) == 0)
    assert jax.tree.leaves(jax.tree.map(lambda a: a.dtype == jnp.float32, params)) == [True] * len(jax.tree.leaves(params))
    for name in ("parallel", "sequential"):  # with and without attention biases and head
        cfg = CONFIGS[name]
        shapes = jax.eval_shape(lambda key, c=cfg: gpt_neox.init(key, c), jax.random.key(0))
        state = _hf_state(transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig.from_dict(hf_neox.config_to_hf(cfg))))
        names = hf_neox.tensor_names(cfg)
        assert set(names) == set(state)
        for key, (path, layer, transposed) in names.items():
            shape = functools.reduce(lambda node, k: node[k], path, shapes).shape[0 if layer is None else 1:]
            assert (shape[::-1] if transposed else shape) == tuple(state[key].shape), key


def test_bf16_compute_is_close_and_long_windows_are_refused():
    cfg = CONFIGS["pythia"]
    params = jax.tree.map(lambda a: 0.3 * a, _random_params(cfg, seed=11))
    tokens = jnp.asarray(_tokens(cfg, seed=12), jnp.int32)
    full = gpt_neox.apply(params, tokens, cfg)
    half = gpt_neox.apply(params, tokens, cfg, compute_dtype=jnp.bfloat16)
    assert half.dtype == jnp.float32 and float(jnp.max(jnp.abs(half - full))) < 0.1
    with pytest.raises(UserError, match="max_position_embeddings=16"):
        gpt_neox.apply(params, jnp.zeros((1, T + 1), jnp.int32), cfg)
    with pytest.raises(UserError, match="--context 16"):
        gpt_neox.check_context(cfg, T + 1)


@pytest.mark.parametrize("name, overrides, match", [
    ("nope", {}, "unknown GPT-NeoX config 'nope'"),
    ("tiny", {"n_embd": 8}, "unknown GPT-NeoX config field"),
    ("tiny", {"vocab_size": 0}, "vocab_size=0"),
    ("tiny", {"num_hidden_layers": True}, "num_hidden_layers=True"),
    ("tiny", {"num_attention_heads": 5}, "not divisible by num_attention_heads=5"),
    ("tiny", {"rotary_pct": 1.5}, "rotary_pct=1.5"),
    ("tiny", {"rotary_pct": 0.2}, "int\\(head_dim·rotary_pct\\) is even"),
    ("tiny", {"rotary_emb_base": -1.0}, "rotary_emb_base=-1.0"),
    ("tiny", {"layer_norm_eps": 0.0}, "layer_norm_eps=0.0"),
    ("tiny", {"hidden_act": "relu"}, "hidden_act='relu'"),
    ("tiny", {"use_parallel_residual": 1}, "use_parallel_residual=1"),
])
def test_config_errors_are_one_line(name, overrides, match):
    with pytest.raises(UserError, match=match) as e:
        gpt_neox.config(name, **overrides)
    assert "\n" not in str(e.value)


_OLD = {"model_type": "gpt_neox", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 16}


@pytest.mark.parametrize("extra", [
    {"rotary_pct": 0.5, "rotary_emb_base": 500, "rope_scaling": None},                       # transformers < 4.45
    {"rotary_pct": 0.5, "partial_rotary_factor": 0.5, "rotary_emb_base": 500, "rope_theta": 500},  # 4.45 .. 4.57
    {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}},  # 5
    {"rope_scaling": {"type": "default", "rope_theta": 500.0}, "rotary_pct": 0.5},
])
def test_every_rotary_spelling_reads_as_transformers_does(extra):
    hf_config = {**_OLD, **extra}
    cfg = hf_neox.config_from_hf(hf_config, "config.json")
    assert (cfg.rotary_pct, cfg.rotary_emb_base) == (0.5, 500.0)
    rope = transformers.GPTNeoXConfig.from_dict(hf_config).rope_parameters
    assert (rope["partial_rotary_factor"], rope["rope_theta"]) == (cfg.rotary_pct, cfg.rotary_emb_base)
    assert hf_neox.config_from_hf(hf_neox.config_to_hf(cfg), "config.json") == cfg


@pytest.mark.parametrize("extra, match", [
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling="),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "rope_parameters="),
    ({"hidden_act": "relu"}, "hidden_act='relu'"),
    ({"hidden_act": "quick_gelu"}, "hidden_act='quick_gelu'"),
    ({"head_dim": 8}, "head_dim=8"),
    ({"rotary_emb_base": 500, "rope_theta": 10000}, "conflicting values rotary_emb_base=500.0, rope_theta=10000.0"),
    ({"rope_parameters": {"partial_rotary_factor": 0.5}, "rotary_pct": 0.25}, "conflicting values"),
    ({"rotary_pct": 1.5}, "rotary_pct = 1.5 is not a fraction"),
    ({"rotary_pct": 0.1}, "int\\(head_dim·rotary_pct\\)"),
    ({"rotary_emb_base": -2}, "rotary_emb_base = -2 is not a finite positive number"),
    ({"vocab_size": "64"}, "vocab_size = '64' is not a positive integer"),
    ({"use_parallel_residual": "yes"}, "use_parallel_residual = 'yes' is not a boolean"),
    ({"hidden_size": 33}, "hidden_size = 33 is not divisible"),
    ({"num_hidden_layers": None}, "lacks num_hidden_layers"),
    ({"rope_parameters": [1]}, "rope_parameters = \\[1\\] is not a JSON object"),
])
def test_config_from_hf_refusals_are_one_line(extra, match):
    with pytest.raises(UserError, match=match) as e:
        hf_neox.config_from_hf({**_OLD, **extra}, "config.json")
    assert "\n" not in str(e.value) and str(e.value).startswith("config.json")


def test_config_round_trips_through_transformers_and_buffers_are_ignored(tmp_path):
    cfg = CONFIGS["sequential"]
    assert hf.config_from_hf(json.loads(json.dumps(hf_neox.config_to_hf(cfg)))) == cfg
    written = transformers.GPTNeoXConfig.from_dict(hf_neox.config_to_hf(cfg))
    written.save_pretrained(str(tmp_path))
    assert hf.config_from_hf(json.loads((tmp_path / "config.json").read_text())) == cfg
    params = _random_params(cfg, seed=13)
    tensors = hf.params_to_hf(params, cfg)
    tensors.update({"gpt_neox.layers.0.attention.rotary_emb.inv_freq": np.ones(8, np.float32),
                    "gpt_neox.layers.1.attention.bias": np.ones((1, 1, 4, 4), bool),
                    "gpt_neox.layers.1.attention.masked_bias": np.array(-1e9, np.float32)})
    loaded = hf.params_from_hf({k: np.asarray(v).astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v
                                for k, v in tensors.items()}, cfg)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    assert all(hf_neox.IGNORED.match(k) for k in tensors if k not in hf_neox.tensor_names(cfg))
    assert not any(hf_neox.IGNORED.match(k) for k in hf_neox.tensor_names(cfg))
    assert dataclasses.asdict(cfg) == cfg.to_dict()


def test_pythia_config_json_reads_as_the_named_config():
    """EleutherAI/pythia-70m's config.json (transformers 4.24 spelling)."""
    pythia = {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
              "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
              "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6,
              "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
              "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 50304}
    assert hf.config_from_hf(pythia) == gpt_neox.config("pythia-70m")
    assert hf_neox.config_to_hf(gpt_neox.config("pythia-70m"))["eos_token_id"] == 0
