"""The fused next-token loss of the head (``language.head_nll``: blocks of the vocabulary, online logsumexp, custom
VJP) against float64 numpy and against autodiff through materialised logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import models
from connect.models import language


def _case(V, D=12, B=3, T=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    w = (rng.standard_normal((V, D)) * 2).astype(np.float32)  # logits of spread ~10: the running max matters
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    return x, w, y


def _nll_numpy(x, w, y):
    z = x.astype(np.float64) @ w.astype(np.float64).T
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    return lse - np.take_along_axis(z, y[..., None], -1)[..., 0]


@pytest.mark.parametrize("V, chunk", [(50, 8), (48, 8), (7, 8), (8, 8), (50, 50), (50, 1), (9, 8)])
def test_head_nll_matches_float64_numpy_at_every_block_split(monkeypatch, V, chunk):
    """Full blocks and a short last one, exactly full blocks, one column per block, one full block and a last of one
    column; a vocabulary of one block (7, 8), (8, 8), (50, 50) is the materialised product."""
    monkeypatch.setattr(language, "HEAD_CHUNK", chunk)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    x, w, y = _case(V)
    got = np.asarray(jax.jit(lambda x, w, y: language.head_nll(x, w, y, jnp.float32))(x, w, y))
    np.testing.assert_allclose(got, _nll_numpy(x, w, y), rtol=2e-6, atol=2e-6)


def test_head_nll_on_accelerators_is_the_materialised_form(monkeypatch):
    """Off CPU the logits are one product (autodiff's gradient); the same numbers."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(language, "HEAD_CHUNK", 8)
    x, w, y = _case(50)
    got = np.asarray(jax.jit(lambda x, w, y: language.head_nll(x, w, y, jnp.float32))(x, w, y))
    np.testing.assert_allclose(got, _nll_numpy(x, w, y), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("V", [50, 16, 9])
def test_head_loss_gradient_matches_autodiff_through_the_logits(monkeypatch, dtype, rtol, V):
    """The custom VJP (∂z = g·(softmax − onehot), swept again by blocks) against ``jax.grad`` of
    ``next_token_loss(head_logits(...))``; repeated targets exercise the scatter-add of the target's part."""
    monkeypatch.setattr(language, "HEAD_CHUNK", 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    x, w, y = _case(V, seed=1)
    y[0, :] = y[1, 0]  # one token id targeted several times
    want_loss, want_g = jax.value_and_grad(lambda x, w: language.next_token_loss(language.head_logits(x, w, dtype), y), (0, 1))(x, w)
    got_loss, got_g = jax.jit(jax.value_and_grad(lambda x, w: language.head_loss(x, w, y, dtype), (0, 1)))(x, w)
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-6)
    for got, want in zip(got_g, want_g):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("family", models.LM_FAMILIES)
def test_family_loss_is_the_mean_nll_of_its_logits(monkeypatch, family):
    """Each family's ``loss`` (fused, from ``features``) equals the cross-entropy of its ``apply`` logits."""
    monkeypatch.setattr(language, "HEAD_CHUNK", 64)
    fam = models.family(family)
    cfg = fam.config("tiny")
    params = fam.init(jax.random.key(0), cfg)
    rng = np.random.default_rng(2)
    x = rng.integers(0, cfg.vocab_size, (2, 16)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (2, 16)).astype(np.int32)
    want = language.next_token_loss(fam.apply(params, x, cfg), y)
    np.testing.assert_allclose(float(fam.loss(params, x, y, cfg)), float(want), rtol=1e-6)


def test_head_loss_and_gradient_under_vmap_equal_one_at_a_time(monkeypatch):
    """Seeds are trained under ``vmap`` (``lm.training``): the fused loss and its custom VJP batch over them."""
    monkeypatch.setattr(language, "HEAD_CHUNK", 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    cases = [_case(50, seed=s) for s in (3, 4)]
    x_S, w_S, y_S = (np.stack(a) for a in zip(*cases))
    value_and_grad = jax.value_and_grad(lambda x, w, y: language.head_loss(x, w, y, jnp.float32), (0, 1))
    loss_S, (gx_S, gw_S) = jax.jit(jax.vmap(value_and_grad))(x_S, w_S, y_S)
    for s, (x, w, y) in enumerate(cases):
        loss, (gx, gw) = value_and_grad(x, w, y)
        np.testing.assert_allclose(float(loss_S[s]), float(loss), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(gx_S[s]), np.asarray(gx), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(gw_S[s]), np.asarray(gw), rtol=1e-5, atol=1e-7)
