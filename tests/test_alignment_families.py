"""Alignment of the Llama and GPT-NeoX families from their declared symmetries (connect.lm.alignment):
folding the norms, rotating the residual stream and permuting heads (GQA's two levels included) and MLP units
keep the logits to float precision; a planted copy is recovered; the aligned model loads in ``transformers``."""

import jax
import numpy as np
import pytest
import torch
import transformers

from connect import models, symmetry
from connect.lm import alignment, huggingface

#: (family, overrides): a grouped-query Llama with untied head, a tied multi-head Qwen2 with q/k/v bias, a
#: Pythia-like GPT-NeoX (parallel residual, partial rotary) and a sequential one without attention bias.
CASES = {
    "llama-gqa": ("llama", {"vocab_size": 48, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}),
    "qwen2-tied": ("llama", {"model_type": "qwen2", "vocab_size": 48, "hidden_size": 32, "intermediate_size": 40,
                             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                             "tie_word_embeddings": True, "qkv_bias": True}),
    "neox-parallel": ("gpt_neox", {"vocab_size": 48, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "rotary_pct": 0.5}),
    "neox-sequential": ("gpt_neox", {"vocab_size": 48, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "use_parallel_residual": False, "rotary_pct": 1.0}),
}


def _cfg(case):
    family, overrides = CASES[case]
    fam = models.family(family)
    return fam, fam.config("tiny", **overrides)


def _model(fam, cfg, seed):
    """Init plus noise on every array (norm gains and biases too), so nothing is at a special value."""
    params = fam.init(jax.random.key(seed), cfg)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _logits(fam, params, cfg):
    tokens = np.asarray(jax.random.randint(jax.random.key(7), (2, 12), 0, cfg.vocab_size))
    return np.asarray(fam.apply(jax.tree.map(np.asarray, params), tokens, cfg))


def _rotation(cfg, fam, seed):
    """A random orthogonal ``R``: any for RMSNorm, one with ``R𝟙 = 𝟙`` for LayerNorm."""
    d = cfg.d_model
    rng = np.random.default_rng(seed)
    if fam.RESIDUAL["norm"] == "rms":
        return np.linalg.qr(rng.normal(size=(d, d)))[0]
    basis, inner = alignment.rotation_basis(d), np.eye(d)
    inner[1:, 1:] = np.linalg.qr(rng.normal(size=(d - 1, d - 1)))[0]
    return basis @ inner @ basis.T


def _random_perms(fam, cfg, params, seed):
    """A random permutation per layer (and group) of every symmetry the family declares."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in symmetry.spec(fam.symmetry(cfg)).items():
        shape = symmetry.features(jax.tree.map(np.asarray, params), p, layer=0).shape[:-1]  # (N,) or (G, N)
        out[name] = np.stack([np.stack([rng.permutation(shape[-1]) for _ in range(p.groups)]) if p.groups > 1
                              else rng.permutation(shape[-1]) for _ in range(cfg.n_layers)])
    return out


def _close(x, y, tol=1e-4):
    assert np.max(np.abs(x - y)) <= tol * max(1.0, np.max(np.abs(y)))


@pytest.mark.parametrize("case", CASES)
def test_folding_rotation_and_permutations_keep_the_logits(case):
    fam, cfg = _cfg(case)
    params = _model(fam, cfg, 0)
    base = _logits(fam, params, cfg)
    folded, cfg_f = alignment.fold_norms(params, cfg)
    assert not cfg_f.tie_word_embeddings
    _close(_logits(fam, folded, cfg_f), base)
    rotated = alignment.rotate_residual(folded, _rotation(cfg, fam, 1), cfg_f)
    _close(_logits(fam, rotated, cfg_f), base)
    perms = _random_perms(fam, cfg, params, 2)
    assert ("q_heads" in perms) == (case == "llama-gqa")  # GQA's second level, only with grouped heads
    moved = alignment.permute(rotated, cfg_f, perms)
    assert alignment.distance(moved, rotated) > 0.1 * alignment.distance(rotated, jax.tree.map(np.zeros_like, rotated))
    _close(_logits(fam, moved, cfg_f), base)


@pytest.mark.parametrize("case", ["llama-gqa", "neox-parallel"])
def test_a_planted_copy_is_recovered_and_exports_to_transformers(case, tmp_path):
    fam, cfg = _cfg(case)
    params_a = _model(fam, cfg, 3)
    folded, cfg_f = alignment.fold_norms(params_a, cfg)
    planted = alignment.rotate_residual(alignment.permute(folded, cfg_f, _random_perms(fam, cfg, params_a, 4)), _rotation(cfg, fam, 5), cfg_f)
    res = alignment.align(params_a, planted, cfg_f)
    norm = alignment.distance(res.params_a, jax.tree.map(np.zeros_like, res.params_a))
    assert res.report[0]["distance"] > 0.5 * norm and res.report[-1]["distance"] <= 1e-5 * norm
    assert res.converged
    _close(_logits(fam, res.params_b, res.cfg), _logits(fam, params_a, cfg))
    res.export(str(tmp_path / "hf"))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    tokens = np.asarray(jax.random.randint(jax.random.key(7), (2, 12), 0, cfg.vocab_size))
    with torch.no_grad():
        theirs = model(torch.tensor(tokens.tolist(), dtype=torch.long)).logits.numpy()
    _close(theirs, _logits(fam, params_a, cfg))
    back, back_cfg = huggingface.load_pretrained(str(tmp_path / "hf"))
    _close(_logits(fam, back, back_cfg), _logits(fam, params_a, cfg))
