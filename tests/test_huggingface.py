"""Hugging Face interchange: exact round trips, key and shape errors, prefix-less and sharded files, transformers."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from hf_reference import hf_logits, hf_model

from connect.errors import UserError
from connect.lm import huggingface as hf
from connect.models import gpt2

CFG = gpt2.config("tiny", vocab_size=40, n_positions=12, n_embd=16, n_head=2, n_inner=24)
_apply = jax.jit(gpt2.apply, static_argnums=2)


def _random_params(cfg, seed):
    """Params of ``cfg``'s shapes with every entry random (numpy, no compilation)."""
    shapes = jax.eval_shape(lambda key: gpt2.init(key, cfg), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32)), shapes)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _rewrite(directory, edit):
    """Apply ``edit`` to the tensors dict of ``directory``'s model.safetensors and write it back."""
    path = os.path.join(directory, hf.WEIGHTS_FILE)
    tensors = safetensors.numpy.load_file(path)
    edit(tensors)
    safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_is_bitwise_and_writes_hf_layout(tmp_path, tied):
    cfg = dataclasses.replace(CFG, tie_word_embeddings=tied)
    params = _random_params(cfg, seed=0)
    hf.save_pretrained(params, cfg, str(tmp_path / "a"))
    assert hf.is_pretrained_dir(str(tmp_path / "a"))
    assert sorted(os.listdir(tmp_path / "a")) == ["config.json", "model.safetensors"]  # no temporary files left
    loaded, cfg2 = hf.load_pretrained(str(tmp_path / "a"))
    assert cfg2 == cfg
    _assert_trees_equal(loaded, params)
    hf.save_pretrained(loaded, cfg2, str(tmp_path / "b"))  # import -> export -> import
    again, cfg3 = hf.load_pretrained(str(tmp_path / "b"))
    assert cfg3 == cfg
    _assert_trees_equal(again, params)

    tensors = safetensors.numpy.load_file(str(tmp_path / "a" / "model.safetensors"))
    assert ("lm_head.weight" in tensors) == (not tied)
    assert all(k.startswith("transformer.") for k in tensors if k != "lm_head.weight")
    np.testing.assert_array_equal(tensors["transformer.h.1.attn.c_attn.weight"], np.asarray(params["h"]["attn"]["c_attn"]["kernel"][1]))
    np.testing.assert_array_equal(tensors["transformer.h.0.ln_2.weight"], np.asarray(params["h"]["ln_2"]["scale"][0]))
    n_tensors = 4 + 12 * cfg.n_layer + (0 if tied else 1)
    assert len(tensors) == n_tensors
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert config["activation_function"] == "gelu_new" and config["n_inner"] == 24
    assert config["tie_word_embeddings"] is tied and config["n_layer"] == 2 and config["n_head"] == 2


def test_prefixless_keys_with_mask_buffers_load(tmp_path):
    """The original openai-community/gpt2 upload: keys without ``transformer.``, causal-mask buffers stored."""
    cfg = dataclasses.replace(CFG, tie_word_embeddings=True)
    params = _random_params(cfg, seed=1)
    hf.save_pretrained(params, cfg, str(tmp_path))

    def strip(tensors):
        for k in list(tensors):
            tensors[k.removeprefix("transformer.")] = tensors.pop(k)
        for i in range(cfg.n_layer):
            tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 12, 12), np.float32))
            tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)

    _rewrite(str(tmp_path), strip)
    assert not any(k.startswith("transformer.") for k in safetensors.numpy.load_file(str(tmp_path / "model.safetensors")))
    loaded, _ = hf.load_pretrained(str(tmp_path))
    _assert_trees_equal(loaded, params)


def test_sharded_checkpoint_loads(tmp_path):
    params = _random_params(CFG, seed=2)
    hf.save_pretrained(params, CFG, str(tmp_path / "one"))
    tensors = safetensors.numpy.load_file(str(tmp_path / "one" / "model.safetensors"))
    shard = tmp_path / "sharded"
    shard.mkdir()
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in parts.items():
        safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(shard / file))
    index = {"metadata": {}, "weight_map": {k: file for file, keys in parts.items() for k in keys}}
    (shard / hf.INDEX_FILE).write_text(json.dumps(index))
    (shard / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    assert hf.is_pretrained_dir(str(shard))
    loaded, cfg = hf.load_pretrained(str(shard))
    assert cfg == CFG
    _assert_trees_equal(loaded, params)


def test_bfloat16_checkpoint_is_upcast_exactly(tmp_path):
    params = _random_params(CFG, seed=3)
    hf.save_pretrained(params, CFG, str(tmp_path))
    def to_bf16(tensors):
        tensors.update({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()})
        tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 12, 12), bool))  # a mask buffer, ignored

    _rewrite(str(tmp_path), to_bf16)
    loaded, _ = hf.load_pretrained(str(tmp_path))
    expected = jax.tree.map(lambda a: jnp.asarray(np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float32)), params)
    _assert_trees_equal(loaded, expected)
    assert not np.array_equal(np.asarray(loaded["wte"]), np.asarray(params["wte"]))  # the file really was bf16


def test_missing_and_misshaped_keys_name_the_key(tmp_path):
    params = _random_params(CFG, seed=4)
    hf.save_pretrained(params, CFG, str(tmp_path))
    _rewrite(str(tmp_path), lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(UserError, match=r"lacks key 'transformer\.h\.1\.mlp\.c_fc\.bias' \(expected shape \(24,\)\)"):
        hf.load_pretrained(str(tmp_path))

    hf.save_pretrained(params, CFG, str(tmp_path))
    _rewrite(str(tmp_path), lambda t: t.update({"transformer.h.0.attn.c_attn.weight": t["transformer.h.0.attn.c_attn.weight"].T.copy()}))
    with pytest.raises(UserError, match=r"'transformer\.h\.0\.attn\.c_attn\.weight' has shape \(48, 16\), expected \(16, 48\)"):
        hf.load_pretrained(str(tmp_path))

    hf.save_pretrained(params, CFG, str(tmp_path))
    _rewrite(str(tmp_path), lambda t: t.pop("lm_head.weight"))  # config says untied, the head is gone
    with pytest.raises(UserError, match=r"lacks key 'lm_head\.weight'"):
        hf.load_pretrained(str(tmp_path))

    hf.save_pretrained(params, CFG, str(tmp_path))
    _rewrite(str(tmp_path), lambda t: t.update({"transformer.h.2.ln_1.weight": np.ones(16, np.float32)}))  # a layer too many
    with pytest.raises(UserError, match=r"unexpected key 'transformer\.h\.2\.ln_1\.weight'"):
        hf.load_pretrained(str(tmp_path))

    with pytest.raises(UserError, match="have .lm_head., which does not fit the config \\(tied head\\)"):
        hf.save_pretrained(params, dataclasses.replace(CFG, tie_word_embeddings=True), str(tmp_path / "x"))
    with pytest.raises(UserError, match=r"transformer\.h\.0\.mlp\.c_fc\.weight' have shape \(16, 24\), expected \(16, 32\)"):
        hf.save_pretrained(params, dataclasses.replace(CFG, n_inner=32), str(tmp_path / "x"))


@pytest.mark.parametrize("key, value", [("activation_function", "relu"), ("scale_attn_by_inverse_layer_idx", True),
                                        ("reorder_and_upcast_attn", True), ("scale_attn_weights", False),
                                        ("add_cross_attention", True), ("model_type", "gpt_neo")])
def test_unsupported_config_is_a_user_error(tmp_path, key, value):
    hf.save_pretrained(_random_params(CFG, seed=5), CFG, str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=key):
        hf.load_pretrained(str(tmp_path))


def test_config_defaults_and_bad_directories(tmp_path):
    cfg = hf.config_from_hf({"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
                             "n_inner": None, "activation_function": "gelu_pytorch_tanh"})
    assert cfg == gpt2.config("gpt2")  # HF defaults: n_inner 4D, tied head, eps 1e-5
    assert not hf.is_pretrained_dir(str(tmp_path))
    with pytest.raises(UserError, match="config.json not found"):
        hf.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(hf.config_to_hf(CFG)))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert not hf.is_pretrained_dir(str(tmp_path))
    with pytest.raises(UserError, match="pickle"):
        hf.load_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="not a directory"):
        hf.load_pretrained(str(tmp_path / "nope"))


def test_truncated_weights_file_is_a_user_error(tmp_path):
    hf.save_pretrained(_random_params(CFG, seed=8), CFG, str(tmp_path))
    path = tmp_path / hf.WEIGHTS_FILE
    for cut in (path.stat().st_size - 100, 20):  # data cut short; header cut short
        path.write_bytes(path.read_bytes()[:cut])
        with pytest.raises(UserError, match="not a readable safetensors file"):
            hf.load_pretrained(str(tmp_path))


# --- against transformers itself (the test extra installs it with CPU torch: a missing reference fails) --------------


@pytest.mark.parametrize("tied", [False, True])
def test_logits_equal_transformers_both_directions(tmp_path, tied):
    cfg = dataclasses.replace(CFG, tie_word_embeddings=tied)
    model = hf_model(cfg, seed=6)
    tokens = np.random.default_rng(7).integers(0, cfg.vocab_size, (2, cfg.n_positions))
    reference = hf_logits(model, tokens)
    assert np.std(reference) > 0.5

    model.save_pretrained(str(tmp_path / "hf"))  # transformers writes, connect reads
    params, cfg_read = hf.load_pretrained(str(tmp_path / "hf"))
    assert cfg_read == cfg
    logits = np.asarray(_apply(params, jnp.asarray(tokens, jnp.int32), cfg_read))
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)

    hf.save_pretrained(params, cfg, str(tmp_path / "connect"))  # connect writes, transformers reads
    import transformers
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "connect")).eval()
    assert reloaded.config.tie_word_embeddings is tied
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), reference)  # the very same float32 weights


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_connect_writes_shards_and_16_bit_weights_that_transformers_and_connect_read(tmp_path, dtype):
    """``save_pretrained(..., dtype=, max_shard_bytes=)``: several shards listed by the index, weights in the dtype
    asked for; transformers and connect both read them back to the same (rounded) weights and logits."""
    import torch
    import transformers

    params = gpt2.init(jax.random.key(3), CFG)
    hf.save_pretrained(params, CFG, str(tmp_path / "out"), dtype=dtype, max_shard_bytes=4096)
    index = json.loads((tmp_path / "out" / hf.INDEX_FILE).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and not (tmp_path / "out" / hf.WEIGHTS_FILE).exists()
    back, cfg = hf.load_pretrained(str(tmp_path / "out"))
    rounded = jax.tree.map(lambda x: np.asarray(jnp.asarray(x, dtype).astype(jnp.float32)), params)
    assert cfg == CFG and all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(rounded)))
    model = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out"), dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, CFG.n_positions))
    np.testing.assert_allclose(hf_logits(model, tokens), np.asarray(_apply(back, jnp.asarray(tokens, jnp.int32), cfg)), atol=1e-4)
    with pytest.raises(UserError, match="max_shard_bytes=0 is invalid"):
        hf.save_pretrained(params, CFG, str(tmp_path / "x"), max_shard_bytes=0)
    with pytest.raises(UserError, match="dtype 'int8' cannot be saved"):
        hf.save_pretrained(params, CFG, str(tmp_path / "y"), dtype="int8")
