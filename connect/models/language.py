"""What every language-model family shares: the next-token loss (on logits, or fused with the head's product), dense
layers and causal attention as XLA:CPU runs them fastest, rematerialisation, and the checking of matrix names."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from connect.errors import UserError


def next_token_loss(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy in nats, ``mean_{b,i} [logsumexp_v z_{biv} − z_{b,i,y_bi}]`` (float32), from
    materialised logits (the reference the families' fused :func:`head_loss` is tested against)."""
    return jnp.mean(_logits_nll(logits_BxTxV, targets_BxT))


def _logits_nll(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    logz_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    return logz_BxT - jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]


def head_loss(x_BxTxD: jax.Array, head_VxD: jax.Array, targets_BxT: jax.Array, dtype) -> jax.Array:
    """:func:`next_token_loss` of the logits ``z = x · Wᵀ`` without materialising them (:func:`head_nll`)."""
    return jnp.mean(head_nll(x_BxTxD, head_VxD, targets_BxT, dtype))


def head_nll(x_BxTxD: jax.Array, head_VxD: jax.Array, targets_BxT: jax.Array, dtype) -> jax.Array:
    """``−log softmax(z)_y = logsumexp_v z_v − z_y`` per token, ``(B, T)`` float32, for the logits ``z = x · Wᵀ`` of
    the final hidden states and the ``(V, D)`` head (operands in ``dtype``, float32 accumulation).

    On CPU the vocabulary is swept in blocks of :data:`HEAD_CHUNK` columns with the running (online) logsumexp
    ``m' = max(m, max_c z_c)``, ``s' = s·e^{m−m'} + Σ_c e^{z_c−m'}`` (Milakov & Gimelshein 2018), so that a block's
    logits are used while still in cache; the ``B·T × V`` matrix is never stored. The gradient (a custom VJP)
    sweeps the blocks again: ``∂z = g·(softmax(z) − onehot(y))``, ``∂x = ∂z·W``, ``∂W = ∂zᵀ·x`` (the fused
    linear cross-entropy of Wijmans et al. 2025, "Cut your losses"). Seed-paper head, 1024 tokens × 256 × 50257 on
    one core, against materialised logits: forward 403 → 156 ms, with the gradient 807 → 654 ms
    (``benchmarks/README.md``). On accelerators the logits are one product, differentiated by autodiff: memory
    bandwidth is ample there, and the fused gradient's second product would add ~10 % to GPT-2 124M's FLOPs. A
    vocabulary of one block (``V ≤ HEAD_CHUNK``) is one product everywhere."""
    if jax.default_backend() != "cpu" or head_VxD.shape[0] <= HEAD_CHUNK:
        return _logits_nll(head_logits(x_BxTxD, head_VxD, dtype), targets_BxT)
    nll_N = _head_nll(x_BxTxD.reshape(-1, x_BxTxD.shape[-1]), head_VxD, targets_BxT.reshape(-1), jnp.dtype(dtype).name, HEAD_CHUNK)
    return nll_N.reshape(targets_BxT.shape)


#: Vocabulary columns per block of :func:`head_nll` on CPU (the seed-paper head on one core: 153–167 ms forward for blocks of 128 … 1024).
HEAD_CHUNK = 256


def _blocks_of(head_VxD: jax.Array, chunk: int, init, update):
    """``update(carry, start, W_block)`` over the head's row blocks of ``chunk`` (the last one shorter), in order."""
    n_full, carry = head_VxD.shape[0] // chunk, init
    if n_full:
        carry = jax.lax.fori_loop(0, n_full, lambda i, c: update(c, i * chunk, jax.lax.dynamic_slice_in_dim(head_VxD, i * chunk, chunk)), carry)
    if head_VxD.shape[0] % chunk:
        carry = update(carry, n_full * chunk, head_VxD[n_full * chunk:])
    return carry


def _logits(x_NxD, w_CxD, dtype_name):
    contract = ((1,), (1,)), ((), ())
    return jax.lax.dot_general(x_NxD.astype(dtype_name), w_CxD.astype(dtype_name), contract, preferred_element_type=jnp.float32)


def _logsumexp_and_target(x_NxD, head_VxD, y_N, dtype_name, chunk):
    def update(carry, start, w_CxD):
        m_N, s_N = carry
        z_NxC = _logits(x_NxD, w_CxD, dtype_name)
        m_new_N = jnp.maximum(m_N, jnp.max(z_NxC, axis=1))
        return m_new_N, s_N * jnp.exp(m_N - m_new_N) + jnp.sum(jnp.exp(z_NxC - m_new_N[:, None]), axis=1)

    n = x_NxD.shape[0]
    m_N, s_N = _blocks_of(head_VxD, chunk, (jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.float32)), update)
    w_y_NxD = head_VxD[y_N].astype(dtype_name).astype(jnp.float32)
    target_N = jnp.sum(x_NxD.astype(dtype_name).astype(jnp.float32) * w_y_NxD, axis=1)
    return m_N + jnp.log(s_N), target_N


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _head_nll(x_NxD, head_VxD, y_N, dtype_name, chunk):
    return _head_nll_fwd(x_NxD, head_VxD, y_N, dtype_name, chunk)[0]


def _head_nll_fwd(x_NxD, head_VxD, y_N, dtype_name, chunk):
    lse_N, target_N = _logsumexp_and_target(x_NxD, head_VxD, y_N, dtype_name, chunk)
    return lse_N - target_N, (x_NxD, head_VxD, y_N, lse_N)


def _head_nll_bwd(dtype_name, chunk, res, g_N):
    x_NxD, head_VxD, y_N, lse_N = res
    x_c = x_NxD.astype(dtype_name)

    def update(carry, start, w_CxD):
        dx_NxD, dw_VxD = carry
        p_NxC = (jnp.exp(_logits(x_NxD, w_CxD, dtype_name) - lse_N[:, None]) * g_N[:, None]).astype(dtype_name)
        dx_NxD = dx_NxD + jnp.dot(p_NxC, w_CxD.astype(dtype_name), preferred_element_type=jnp.float32)
        dw_CxD = jax.lax.dot_general(p_NxC, x_c, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        return dx_NxD, jax.lax.dynamic_update_slice_in_dim(dw_VxD, dw_CxD.astype(dw_VxD.dtype), start, axis=0)

    init = (jnp.zeros(x_NxD.shape, jnp.float32), jnp.zeros(head_VxD.shape, head_VxD.dtype))
    dx_NxD, dw_VxD = _blocks_of(head_VxD, chunk, init, update)
    # the target's part, −z_y: ∂x −= g·W_y, ∂W_y −= g·x (rounded to dtype as the product's operands)
    dx_NxD = dx_NxD - g_N[:, None] * head_VxD[y_N].astype(dtype_name).astype(jnp.float32)
    dw_VxD = dw_VxD.at[y_N].add((-g_N[:, None] * x_c.astype(jnp.float32)).astype(dw_VxD.dtype))
    return dx_NxD.astype(x_NxD.dtype), dw_VxD, None


_head_nll.defvjp(_head_nll_fwd, _head_nll_bwd)


#: causal attention's queries run in at most this many blocks of at least ``ATTENTION_MIN_BLOCK`` positions
ATTENTION_BLOCKS, ATTENTION_MIN_BLOCK = 4, 32


def causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, dtype, window=None) -> jax.Array:
    """``softmax(q kᵀ · d_h^(−1/2) + mask) v`` per query head ``n`` (Vaswani et al. 2017) with key/value head
    ``n // (N/K)`` (grouped-query attention, Ainslie et al. 2023; ``K = N``: multi-head); key ``j`` is visible to
    query ``i`` iff ``j ≤ i`` and ``i − j < window`` (an int, a traced per-layer int, or None: no window). Scores and
    softmax in float32, result ``(B, T, N, H)`` float32.

    On a GPU with 16-bit compute and a static window, cuDNN's fused (flash) attention, which never stores the
    ``T × T`` scores (where cuDNN declines the shapes — it checks them while tracing — and elsewhere, the computation
    below). Key/value heads are repeated to the N query heads and heads moved ahead of time, ``(B, N, T, H)``:
    batched products with leading batch axes, whose backward pass XLA:CPU runs without transposed copies (forward +
    backward of a (16, 128, 4, 32) attention on one core: 6.6 ms, against 11.3 ms for ``jax.nn.dot_product_attention``).

    The queries run in :func:`query_blocks`, each against the keys up to its last position only (from its first
    position's window on, for a static window): the masked upper triangle is mostly never computed, as in flash
    attention's causal tiling (Dao et al. 2022). The mask is an added ``0 / −∞`` bias per block. One core, forward /
    forward + rematerialised backward: (16, 128, 4, 32) 2.39 / 6.59 → 2.11 / 6.01 ms; GPT-2 124M's (2, 1024, 12, 64)
    142 / 437 → 82 / 282 ms (``benchmarks/README.md``)."""
    if dtype != jnp.float32 and jax.default_backend() == "gpu" and not isinstance(window, jax.Array):
        try:
            return jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, is_causal=True, implementation="cudnn",
                                                local_window_size=None if window is None else (window - 1, 0))
        except (ValueError, NotImplementedError, RuntimeError):
            pass
    B, T, N, H = q_BxTxNxH.shape
    G = N // k_BxTxKxH.shape[2]
    k_BxNxTxH, v_BxNxTxH = (jnp.swapaxes(jnp.repeat(a, G, axis=2) if G > 1 else a, 1, 2) for a in (k_BxTxKxH, v_BxTxKxH))
    q_BxNxTxH = jnp.swapaxes(q_BxTxNxH, 1, 2)
    static_window = window is not None and not isinstance(window, jax.Array)
    out = []
    for lo, hi in query_blocks(T):
        first = max(0, lo - int(window) + 1) if static_window else 0  # the block's first visible key
        scores_BxNxQxS = jnp.einsum("bnth,bnsh->bnts", q_BxNxTxH[:, :, lo:hi], k_BxNxTxH[:, :, first:hi],
                                    preferred_element_type=jnp.float32) * jnp.float32(H ** -0.5)
        i_Qx1, j_1xS = jnp.arange(lo, hi)[:, None], jnp.arange(first, hi)[None, :]
        visible_QxS = (j_1xS <= i_Qx1) if window is None else (j_1xS <= i_Qx1) & (i_Qx1 - j_1xS < window)
        probs_BxNxQxS = jax.nn.softmax(scores_BxNxQxS + jnp.where(visible_QxS, 0.0, -jnp.inf)[None, None].astype(jnp.float32), axis=-1)
        out.append(jnp.einsum("bnts,bnsh->bnth", probs_BxNxQxS.astype(dtype), v_BxNxTxH[:, :, first:hi],
                              preferred_element_type=jnp.float32))
    return jnp.swapaxes(jnp.concatenate(out, axis=2) if len(out) > 1 else out[0], 1, 2)


def query_blocks(T: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` spans of the ``T`` query positions for :func:`causal_attention`: ``min(ATTENTION_BLOCKS,
    T // ATTENTION_MIN_BLOCK)`` blocks (at least one) of equal length, the last one shorter where ``T`` does not
    divide. Measured on one core (``benchmarks/README.md``): 4 blocks are best from T = 128 (T = 1024: 8 blocks
    within 3 %), 2 at T = 64; more blocks make the products too small."""
    n = max(1, min(ATTENTION_BLOCKS, T // ATTENTION_MIN_BLOCK))
    size = -(-T // n)
    return [(lo, min(lo + size, T)) for lo in range(0, T, size)]


def remat(block_fn):
    """``block_fn(x, layer) -> (x', parts)`` whose intermediates the backward pass recomputes instead of storing
    (``jax.checkpoint``; Chen et al. 2016): on CPU nothing is saved — storing every layer's activations costs more
    than recomputing them once they fall out of cache (mid-size GPT-2 step on one core: 247 → 162 ms,
    ``benchmarks/README.md``); on accelerators the matmul outputs are saved and the elementwise work recomputed
    (``dots_saveable``). A forward pass without differentiation is unchanged."""
    policies = jax.checkpoint_policies
    return jax.checkpoint(block_fn, policy=policies.nothing_saveable if jax.default_backend() == "cpu" else policies.dots_saveable)


def matmul(x_xI: jax.Array, w_IxO: jax.Array, dtype, *, transpose_w: bool = False) -> jax.Array:
    """``x @ w`` (``x @ wᵀ`` with ``transpose_w``) over the last axis of ``x``, operands in ``dtype``, float32
    accumulation and result. The leading axes are flattened into one first: the same matrix product, but its
    backward pass is then two plain 2-D products — as a ``(B, T, I)`` contraction, XLA:CPU (jax 0.10) transposes
    and copies ``∂y`` and computes ``∂w`` at a quarter of the speed (12.3 ms against 3.2 ms for a 16 × 128 × 128
    by 128 × 512 layer on one core; ``benchmarks/README.md``, ``vs_torch.py``)."""
    contract = ((1,), (1 if transpose_w else 0,)), ((), ())
    x_NxI = x_xI.reshape(-1, x_xI.shape[-1]).astype(dtype)
    y_NxO = jax.lax.dot_general(x_NxI, w_IxO.astype(dtype), contract, preferred_element_type=jnp.float32)
    return y_NxO.reshape(*x_xI.shape[:-1], y_NxO.shape[-1])


def head_logits(x_BxTxD: jax.Array, head_VxD: jax.Array, dtype) -> jax.Array:
    """Logits ``x · Wᵀ`` of the final hidden states and the ``(V, D)`` head, operands in ``dtype``, float32 out."""
    return matmul(x_BxTxD, head_VxD, dtype, transpose_w=True)


def checked_names(known: list[str], names, n_layers: int, tied: bool) -> list[str]:
    """``names`` (default: all of ``known``, a family's ``matrix_names``) after checking that each is known; the error
    names a first, a last per-layer and a non-layer matrix of the family as examples."""
    names = list(known) if names is None else list(names)
    if unknown := [n for n in names if n not in known]:
        per_layer = [n for n in known if n.split(".")[1:2] and n.split(".")[1].isdigit()]
        examples = ", ".join(repr(n) for n in dict.fromkeys([known[0], per_layer[-1], *[n for n in known if n not in per_layer][:1]]))
        raise UserError(f"this checkpoint has no matrix {unknown[0]!r} ({n_layers} layers, {'tied' if tied else 'untied'} head): "
                        f"use names like {examples}")
    if not names:
        raise UserError(f"no matrix named: pass at least one name, e.g. {known[0]!r}")
    return names
