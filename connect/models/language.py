"""What every language-model family shares: the next-token loss on its logits and the checking of matrix names."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from connect.errors import UserError


def next_token_loss(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy in nats, ``mean_{b,i} [logsumexp_v z_{biv} − z_{b,i,y_bi}]`` (float32)."""
    logz_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    target_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return jnp.mean(logz_BxT - target_BxT)


def causal_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, dtype) -> jax.Array:
    """``softmax(q kᵀ · d_h^(−1/2) + mask) v`` per head, mask −∞ above the diagonal (Vaswani et al. 2017), scores and
    softmax in float32, result ``(B, T, N, H)`` float32. On a GPU with 16-bit compute, cuDNN's fused (flash)
    attention, which never stores the ``T × T`` scores (where cuDNN declines the shapes — it checks them while
    tracing — and on CPU, the computation below). Heads are moved ahead of time first, ``(B, N, T, H)``: batched
    products with leading batch axes, whose backward pass XLA:CPU runs without transposed copies."""
    if dtype != jnp.float32 and jax.default_backend() == "gpu":
        try:
            return jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, is_causal=True, implementation="cudnn")
        except (ValueError, NotImplementedError, RuntimeError):
            pass
    T, H = q_BxTxNxH.shape[1], q_BxTxNxH.shape[3]
    q_BxNxTxH, k_BxNxTxH, v_BxNxTxH = (jnp.swapaxes(a, 1, 2) for a in (q_BxTxNxH, k_BxTxNxH, v_BxTxNxH))
    scores_BxNxTxT = jnp.einsum("bnth,bnsh->bnts", q_BxNxTxH, k_BxNxTxH, preferred_element_type=jnp.float32) * jnp.float32(H ** -0.5)
    scores_BxNxTxT = jnp.where(jnp.tril(jnp.ones((T, T), bool))[None, None, :, :], scores_BxNxTxT, -jnp.inf)
    probs_BxNxTxT = jax.nn.softmax(scores_BxNxTxT, axis=-1)
    out_BxNxTxH = jnp.einsum("bnts,bnsh->bnth", probs_BxNxTxT.astype(dtype), v_BxNxTxH, preferred_element_type=jnp.float32)
    return jnp.swapaxes(out_BxNxTxH, 1, 2)


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
