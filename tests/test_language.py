"""The fused next-token loss of the head (``language.head_nll``: blocks of the vocabulary, online logsumexp, custom
VJP) against float64 numpy and against autodiff through materialised logits; causal attention by query blocks
(``language.causal_attention``) against float64 numpy and against autodiff through one dense masked softmax;
forward-mode autodiff through each family's ``apply`` against reverse mode."""

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


def _attention_case(T, N=6, K=2, H=4, B=2, seed=5):
    rng = np.random.default_rng(seed)
    return tuple((rng.standard_normal((B, T, n, H)) * 2).astype(np.float32) for n in (N, K, K))  # spread scores


def _visible(T, window):
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    return (j <= i) & ((i - j < window) if window is not None else True)


def _attention_numpy(q, k, v, window):
    """Dense float64 ``softmax(q kᵀ/√H + mask) v``, key/value head ``n // (N/K)`` for query head ``n``."""
    G = q.shape[2] // k.shape[2]
    k, v = (np.repeat(a.astype(np.float64), G, axis=2) for a in (k, v))
    scores = np.einsum("btnh,bsnh->bnts", q.astype(np.float64), k) / np.sqrt(q.shape[-1])
    scores = np.where(_visible(q.shape[1], window), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bnts,bsnh->btnh", probs / probs.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("T, window", [(12, None), (13, None), (13, 1), (13, 2), (13, 5), (12, 4), (16, 16), (7, None)])
def test_causal_attention_by_query_blocks_matches_float64_numpy(monkeypatch, T, window):
    """Query blocks of at least 3 positions (T = 12: 4 of 3; T = 13: 4 of 4, the last of one position; T = 7: 4 and 3),
    windows inside one block, across blocks and covering the whole context; static and traced windows agree."""
    monkeypatch.setattr(language, "ATTENTION_MIN_BLOCK", 3)
    q, k, v = _attention_case(T)
    assert len(language.query_blocks(T)) == min(4, T // 3)
    want = _attention_numpy(q, k, v, window)
    got = jax.jit(lambda q, k, v: language.causal_attention(q, k, v, jnp.float32, window))(q, k, v)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    if window is not None:
        traced = jax.jit(lambda q, k, v, w: language.causal_attention(q, k, v, jnp.float32, w))(q, k, v, jnp.int32(window))
        np.testing.assert_allclose(np.asarray(traced), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [None, 2, 5])
def test_causal_attention_gradient_matches_autodiff_through_one_dense_softmax(monkeypatch, window):
    """The gradient through the query blocks (each against its visible keys only) equals autodiff through the
    whole ``T × T`` masked softmax, for queries, keys and values (grouped key/value heads sum their queries' parts)."""
    monkeypatch.setattr(language, "ATTENTION_MIN_BLOCK", 3)
    T = 13
    q, k, v = _attention_case(T, seed=6)
    g = np.random.default_rng(7).standard_normal(q.shape).astype(np.float32)

    def dense(q, k, v):
        k, v = (jnp.repeat(a, 3, axis=2) for a in (k, v))
        scores = jnp.einsum("btnh,bsnh->bnts", q, k) / 2.0
        probs = jax.nn.softmax(jnp.where(_visible(T, window)[None, None], scores, -jnp.inf), axis=-1)
        return jnp.einsum("bnts,bsnh->btnh", probs, v)

    want = jax.grad(lambda *a: jnp.sum(dense(*a) * g), (0, 1, 2))(q, k, v)
    got = jax.jit(jax.grad(lambda *a: jnp.sum(language.causal_attention(*a, jnp.float32, window) * g), (0, 1, 2)))(q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_query_blocks_cover_the_context_in_order():
    """Contiguous spans from 0 to T; ``min(4, T // 32)`` of them (at least one), equal but for a shorter last one."""
    for T in range(1, 1100):
        spans = language.query_blocks(T)
        assert spans[0][0] == 0 and spans[-1][1] == T and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert len(spans) == max(1, min(language.ATTENTION_BLOCKS, T // language.ATTENTION_MIN_BLOCK))
        sizes = [hi - lo for lo, hi in spans]
        assert all(s == sizes[0] for s in sizes[:-1]) and 0 < sizes[-1] <= sizes[0]


@pytest.mark.parametrize("family", models.LM_FAMILIES)
def test_forward_mode_autodiff_through_apply_agrees_with_reverse_mode(family):
    """``jax.jvp`` runs through every family's ``apply`` (forward-over-reverse Hessian-vector products and
    ``jax.hessian`` need it; a ``custom_vjp`` in the forward pass would refuse it) and agrees with ``jax.vjp``:
    ``⟨g, J u⟩ = ⟨Jᵀ g, u⟩``."""
    fam = models.family(family)
    cfg = fam.config("tiny")
    params = fam.init(jax.random.key(0), cfg)
    x = np.random.default_rng(9).integers(0, cfg.vocab_size, (2, 8)).astype(np.int32)
    apply = jax.jit(lambda p: fam.apply(p, x, cfg))
    leaves, treedef = jax.tree.flatten(params)
    u = treedef.unflatten([jax.random.normal(k, a.shape, a.dtype) for k, a in zip(jax.random.split(jax.random.key(1), len(leaves)), leaves)])
    logits, ju = jax.jvp(apply, (params,), (u,))
    g = jax.random.normal(jax.random.key(2), logits.shape)
    (jtg,) = jax.vjp(apply, params)[1](g)
    lhs = float(jnp.vdot(g, ju))
    rhs = float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(jtg), jax.tree.leaves(u))))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)
