"""Low-rank adapters (LoRA; Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on the
stacked pytree of any language-model family of :mod:`connect.models` (GPT-2, Llama/Qwen2/Mistral, GPT-NeoX).

A target kernel ``W`` (stored ``(in, out)``, one per layer on the leading axis ``L``) is replaced by::

    W' = W + (α / r) · A B,     A ∈ ℝ^{in×r},  B ∈ ℝ^{r×out}                     (Hu et al. 2021, eq. (3))

with ``A ~ N(0, 1/in)`` and ``B = 0`` at init, so ``W' = W`` exactly and the finetuned model starts
as the pretrained one. A layer computes ``x W' + b = x W + b + (α/r)(x A) B``; :func:`apply_lora`
forms ``W'`` densely, so the family's own ``apply`` runs the adapted model (no second forward pass),
and the same function gives the merged dense weights (:func:`merge`).

The targets are the family's per-layer linear kernels, its ``MUON_MATRICES`` leaf paths, each named by the
path between the layer stack and ``kernel`` (:func:`target_paths`: ``attn.c_attn`` … ``mlp.c_proj`` for GPT-2,
``self_attn.q_proj`` … ``mlp.down_proj`` for Llama, ``attention.query_key_value`` … ``mlp.dense_4h_to_h``
for GPT-NeoX); ``attn`` and ``mlp`` name the attention and the MLP kernels (:func:`target_groups`). A fused q|k|v
kernel (GPT-2's ``c_attn``, GPT-NeoX's ``query_key_value``) carries one adapter of shape ``(D, r)·(r, 3D)``,
as Hugging Face PEFT places LoRA on such a fused layer.

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

from connect import models, optimizers
from connect.errors import UserError
from connect.models import LMConfig

#: Blocks of a layer whose kernels form the ``attn`` group (GPT-2, Llama, GPT-NeoX); every other kernel is ``mlp``.
ATTENTION_BLOCKS = ("attn", "self_attn", "attention")
#: Adapt every attention and MLP kernel unless told otherwise.
DEFAULT_TARGETS = ("attn", "mlp")


def target_paths(model: LMConfig | str) -> dict[str, tuple[str, ...]]:
    """Target names -> leaf path of the kernel, for a model config or family name: the family's
    ``MUON_MATRICES`` paths (e.g. ``("h", "attn", "c_attn", "kernel")``) named ``".".join(path[1:-1])``
    (``attn.c_attn``), in the family's order."""
    return dict(_targets(models.family(model).FAMILY))


def target_groups(model: LMConfig | str) -> dict[str, tuple[str, ...]]:
    """Shorthands of a model config or family name: ``attn`` (the kernels of :data:`ATTENTION_BLOCKS`) and
    ``mlp`` (the others) -> their target names."""
    names = _targets(models.family(model).FAMILY)
    return {"attn": tuple(n for n, path in names if path[1] in ATTENTION_BLOCKS),
            "mlp": tuple(n for n, path in names if path[1] not in ATTENTION_BLOCKS)}


@functools.cache
def _targets(family: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((".".join(path[1:-1]), path) for path in models.family(family).MUON_MATRICES)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["adapters"], meta_fields=["rank", "alpha", "family"])
@dataclasses.dataclass(frozen=True)
class LoRA:
    """Adapters ``{target: {"a": (L, in, r), "b": (L, r, out)}}`` (the only leaves), their rank and α, and the
    model family whose kernels they adapt (its name, :data:`connect.models.LM_FAMILIES`)."""

    adapters: dict
    rank: int
    alpha: float
    family: str

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def resolve_targets(model: LMConfig | str, names: Sequence[str]) -> tuple[str, ...]:
    """Target names of a model config or family name (``attn``, ``mlp`` or keys of :func:`target_paths`)
    expanded and deduplicated, in order."""
    paths, shorthands = target_paths(model), target_groups(model)
    valid = f"use attn, mlp or a {models.family(model).FAMILY} kernel: {', '.join(paths)}"
    out: list[str] = []
    for name in names:
        if name in shorthands:
            out += [t for t in shorthands[name] if t not in out]
        elif name in paths:
            out += [] if name in out else [name]
        else:
            raise UserError(f"unknown LoRA target {name!r}: {valid}")
    if not out:
        raise UserError(f"LoRA needs at least one target: {valid}")
    return tuple(out)


def init(key: jax.Array, params: dict, model_cfg: LMConfig, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> LoRA:
    """Adapters for ``targets`` (:func:`resolve_targets`) of ``params``, a model of config ``model_cfg``:
    ``A ~ N(0, 1/in)`` (a key per target), ``B = 0``.

    ``rank`` must satisfy ``1 ≤ r ≤ min(in, out)`` of every target kernel (a larger rank is no longer
    low-rank and only adds parameters); ``α > 0``.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"LoRA rank must be a positive integer, got {rank!r}")
    if not alpha > 0:
        raise UserError(f"LoRA alpha must be positive, got {alpha!r}")
    family, paths = models.family(model_cfg).FAMILY, target_paths(model_cfg)
    adapters = {}
    for i, name in enumerate(resolve_targets(model_cfg, targets)):
        w_LxIxO = _leaf(params, paths[name], family)
        n_layer, n_in, n_out = w_LxIxO.shape
        if rank > min(n_in, n_out):
            raise UserError(f"LoRA rank {rank} exceeds min(in, out) = {min(n_in, n_out)} of {name} ({n_in}x{n_out}): "
                            f"use a rank of at most {min(n_in, n_out)}")
        a_LxIxR = jax.random.normal(jax.random.fold_in(key, i), (n_layer, n_in, rank), jnp.float32) / jnp.sqrt(n_in)
        adapters[name] = {"a": a_LxIxR, "b": jnp.zeros((n_layer, rank, n_out), jnp.float32)}
    return LoRA(adapters, int(rank), float(alpha), family)


def delta(lora: LoRA) -> dict:
    """``{target: (α/r) A B}``, the weight update of each target, shape ``(L, in, out)``."""
    return {name: lora.scale * jnp.einsum("lir,lro->lio", ab["a"], ab["b"]) for name, ab in lora.adapters.items()}


def apply_lora(params: dict, lora: LoRA) -> dict:
    """The effective params ``W + (α/r) A B`` on every target (differentiable in ``lora``); run them
    with the ``apply`` of the family ``lora.family``."""
    paths, out = target_paths(lora.family), params
    for name, d_LxIxO in delta(lora).items():
        out = _replace_leaf(out, paths[name], _leaf(params, paths[name], lora.family) + d_LxIxO)
    return out


def merge(params: dict, lora: LoRA) -> dict:
    """Dense params with the adapters folded in (a plain pytree of the family, e.g. to save as a checkpoint)."""
    return jax.device_get(apply_lora(params, lora))


def n_params(lora: LoRA) -> int:
    """Trainable adapter parameters, ``Σ_targets L·r·(in + out)``."""
    return sum(int(x.size) for x in jax.tree.leaves(lora))


def optimizer(name: str, lora: LoRA, *, lr, weight_decay: float = 0.0, clip_norm: float | None = 1.0) -> optax.GradientTransformation:
    """Optimizer ``name`` of :data:`connect.optimizers.LM_OPTIMIZERS` over the adapters only
    (:func:`connect.optimizers.make_lm`, every ``A`` and ``B`` a hidden matrix at learning rate ``lr``)."""
    matrices = {("adapters", name, ab): 1 for name in lora.adapters for ab in ("a", "b")}
    return optimizers.make_lm(name, lora, lr=lr, weight_decay=weight_decay, clip_norm=clip_norm, matrices=matrices)


def _leaf(tree: dict, path: tuple[str, ...], family: str):
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            raise UserError(f"parameters have no {'/'.join(path)}: pass the params of a {family} model, the family of the config given to LoRA")
        tree = tree[k]
    return tree


def _replace_leaf(tree: dict, path: tuple[str, ...], value) -> dict:
    """A copy of the nested dict ``tree`` with the leaf at ``path`` replaced (other leaves shared)."""
    if not path:
        return value
    return {**tree, path[0]: _replace_leaf(tree[path[0]], path[1:], value)}

