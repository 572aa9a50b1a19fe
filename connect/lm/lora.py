"""Low-rank adapters (LoRA; Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on
the stacked GPT-2 pytree of :mod:`connect.models.gpt2`.

A target kernel ``W`` (stored ``(in, out)``, one per layer on the leading axis ``L``) is replaced by::

    W' = W + (α / r) · A B,     A ∈ ℝ^{in×r},  B ∈ ℝ^{r×out}                     (Hu et al. 2021, eq. (3))

with ``A ~ N(0, 1/in)`` and ``B = 0`` at init, so ``W' = W`` exactly and the finetuned model starts
as the pretrained one. A layer computes ``x W' + b = x W + b + (α/r)(x A) B``; :func:`apply_lora`
forms ``W'`` densely, so the model's own :func:`connect.models.gpt2.apply` runs the adapted model
(no second forward pass), and the same function gives the merged dense weights (:func:`merge`).
The fused q|k|v kernel ``c_attn`` carries one adapter of shape ``(D, r)·(r, 3D)``, as Hugging Face
PEFT places LoRA on GPT-2's fused ``Conv1D``.

Only the adapters ``A, B`` are trained (:func:`optimizer`); the pretrained params are an input, not
a variable, so their gradient is never formed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from connect import optimizers
from connect.errors import UserError

#: Adapter target names -> leaf path of the kernel in the GPT-2 pytree.
TARGETS: dict[str, tuple[str, ...]] = {
    "attn.c_attn": ("h", "attn", "c_attn", "kernel"),
    "attn.c_proj": ("h", "attn", "c_proj", "kernel"),
    "mlp.c_fc": ("h", "mlp", "c_fc", "kernel"),
    "mlp.c_proj": ("h", "mlp", "c_proj", "kernel"),
}
#: Shorthands: ``attn`` (both attention kernels), ``mlp`` (both MLP kernels).
GROUPS: dict[str, tuple[str, ...]] = {"attn": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_proj")}
DEFAULT_TARGETS = ("attn", "mlp")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["adapters"], meta_fields=["rank", "alpha"])
@dataclasses.dataclass(frozen=True)
class LoRA:
    """Adapters ``{target: {"a": (L, in, r), "b": (L, r, out)}}`` (the only leaves) and their rank and α."""

    adapters: dict
    rank: int
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def resolve_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """Target names (``attn``, ``mlp`` or keys of :data:`TARGETS`) expanded and deduplicated, in order."""
    out: list[str] = []
    for name in targets:
        if name in GROUPS:
            out += [t for t in GROUPS[name] if t not in out]
        elif name in TARGETS:
            out += [] if name in out else [name]
        else:
            raise UserError(f"unknown LoRA target {name!r}: use attn, mlp or one of {', '.join(TARGETS)}")
    if not out:
        raise UserError("LoRA needs at least one target: use attn, mlp or one of " + ", ".join(TARGETS))
    return tuple(out)


def init(key: jax.Array, params: dict, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> LoRA:
    """Adapters for ``targets`` of ``params``: ``A ~ N(0, 1/in)`` (a key per target), ``B = 0``.

    ``rank`` must satisfy ``1 ≤ r ≤ min(in, out)`` of every target kernel (a larger rank is no longer
    low-rank and only adds parameters); ``α > 0``.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"LoRA rank must be a positive integer, got {rank!r}")
    if not alpha > 0:
        raise UserError(f"LoRA alpha must be positive, got {alpha!r}")
    adapters = {}
    for i, name in enumerate(resolve_targets(targets)):
        w_LxIxO = _leaf(params, TARGETS[name])
        n_layer, n_in, n_out = w_LxIxO.shape
        if rank > min(n_in, n_out):
            raise UserError(f"LoRA rank {rank} exceeds min(in, out) = {min(n_in, n_out)} of {name} ({n_in}x{n_out}): "
                            f"use a rank of at most {min(n_in, n_out)}")
        a_LxIxR = jax.random.normal(jax.random.fold_in(key, i), (n_layer, n_in, rank), jnp.float32) / jnp.sqrt(n_in)
        adapters[name] = {"a": a_LxIxR, "b": jnp.zeros((n_layer, rank, n_out), jnp.float32)}
    return LoRA(adapters, int(rank), float(alpha))


def delta(lora: LoRA) -> dict:
    """``{target: (α/r) A B}``, the weight update of each target, shape ``(L, in, out)``."""
    return {name: lora.scale * jnp.einsum("lir,lro->lio", ab["a"], ab["b"]) for name, ab in lora.adapters.items()}


def apply_lora(params: dict, lora: LoRA) -> dict:
    """The effective params ``W + (α/r) A B`` on every target (differentiable in ``lora``); run them
    with :func:`connect.models.gpt2.apply`."""
    out = params
    for name, d_LxIxO in delta(lora).items():
        out = _replace_leaf(out, TARGETS[name], _leaf(params, TARGETS[name]) + d_LxIxO)
    return out


def merge(params: dict, lora: LoRA) -> dict:
    """Dense params with the adapters folded in (a plain GPT-2 pytree, e.g. to save as a checkpoint)."""
    return jax.device_get(apply_lora(params, lora))


def n_params(lora: LoRA) -> int:
    """Trainable adapter parameters, ``Σ_targets L·r·(in + out)``."""
    return sum(int(x.size) for x in jax.tree.leaves(lora))


def optimizer(name: str, lora: LoRA, *, lr, weight_decay: float = 0.0, clip_norm: float | None = 1.0) -> optax.GradientTransformation:
    """Optimizer ``name`` of :data:`connect.optimizers.LM_OPTIMIZERS` over the adapters only
    (:func:`connect.optimizers.make_lm`, every ``A`` and ``B`` a hidden matrix at learning rate ``lr``)."""
    matrices = {("adapters", name, ab): 1 for name in lora.adapters for ab in ("a", "b")}
    return optimizers.make_lm(name, lora, lr=lr, weight_decay=weight_decay, clip_norm=clip_norm, matrices=matrices)


def _leaf(tree: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            raise UserError(f"parameters have no {'/'.join(path)}: LoRA targets the GPT-2 pytree of connect.models.gpt2")
        tree = tree[k]
    return tree


def _replace_leaf(tree: dict, path: tuple[str, ...], value) -> dict:
    """A copy of the nested dict ``tree`` with the leaf at ``path`` replaced (other leaves shared)."""
    if not path:
        return value
    return {**tree, path[0]: _replace_leaf(tree[path[0]], path[1:], value)}

