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


def head_logits(x_BxTxD: jax.Array, head_VxD: jax.Array, dtype) -> jax.Array:
    """Logits ``x · Wᵀ`` of the final hidden states and the ``(V, D)`` head, operands in ``dtype``, float32 out."""
    return jnp.einsum("btd,vd->btv", x_BxTxD.astype(dtype), head_VxD.astype(dtype), preferred_element_type=jnp.float32)


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
