"""Optimizers by name, one registry: each an optax ``GradientTransformation`` plus the
implicit constraint set it induces (:mod:`connect.constraints`).

Weight decay is decoupled and multiplied by the learning rate everywhere it is
decoupled: ``θ ← θ − η (u(g) + λ θ)`` (Loshchilov & Hutter 2019; optax's convention).

=========  ================================================  ==========
name       update ``u``                                      set
=========  ================================================  ==========
sgd        ``g`` (decay = L2 penalty)                        none
momentum   heavy-ball trace ``m ← βm + g``                   none
adam       Adam on ``g + λθ`` (coupled L2, Kingma & Ba)      none
adamw      Adam, decoupled decay                             ℓ∞ 1/λ
lion       ``sign(β₁m + (1−β₁)g)`` (Chen et al. 2023)        ℓ∞ 1/λ
signsgd    ``sign(g)``                                       ℓ∞ 1/λ
muon       matrices: ``s·NS(nesterov momentum)``; rest AdamW  ‖W‖₂ ≤ s/λ
muon_exact as muon, with the exact ``msign = U Vᵀ`` (SVD)      ‖W‖₂ ≤ s/λ
muon_full  exact-msign Muon on matrices and on every other    ‖W‖₂ ≤ s/λ,
           array as a 1×k row, whose msign is ``g/‖g‖₂``      ‖v‖₂ ≤ 1/λ
=========  ================================================  ==========

Muon's split is explicit: the caller names which arrays are matrices (the model
module's ``MUON_MATRICES``); every other array is updated by AdamW with the same
learning rate and decay ("Muon-hybrid"), or, for ``muon_full`` (THEORY.md §B), by Muon
itself on the array flattened to a row (Nesterov momentum, then ``msign`` of a 1×k matrix
``= g/‖g‖₂``), so each such array stays in the ℓ₂ ball ``1/λ``.

Transformers (:func:`make_lm`, names :data:`LM_OPTIMIZERS`) take nested parameter pytrees
(:mod:`connect.models.gpt2`), two learning rates (hidden matrices / everything else), decay
only on matrices, global-norm clipping, and run Muon on kernels stored ``(in, out)``, stacked
over layers and fused along the last axis (QKV), one matrix at a time.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from connect.constraints import ConstraintSet, muon_shape_factor
from connect.errors import UserError

#: Quintic Newton–Schulz coefficients of Jordan et al. (Muon, 2024).
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: jax.Array, ns_steps: int = 5, polish_steps: int = 4) -> jax.Array:
    """Approximate the polar factor ``U Vᵀ`` of ``G = U Σ Vᵀ`` by Newton–Schulz, for the last
    two axes of ``g`` (leading axes are a batch, e.g. the free nodes of a path).

    ``ns_steps`` quintic iterations ``X ← aX + b(XXᵀ)X + c(XXᵀ)²X`` (fast, leave σ in
    ~[0.68, 1.13]) followed by ``polish_steps`` cubic ones ``X ← 1.5X − 0.5(XXᵀ)X``
    (Newton–Schulz proper, converges quadratically to σ = 1: the error ``|σ − 1|`` is at
    most ~1e-3 after 3 of them and ~2e-6 after 4), so that ``‖u‖₂ ≈ s`` and the Muon
    radius ``s/λ`` is tight rather than off by ~20%.
    """
    a, b, c = NS_COEFFS
    mT = lambda x: jnp.swapaxes(x, -1, -2)  # noqa: E731
    transpose = g.shape[-2] > g.shape[-1]
    x = mT(g) if transpose else g
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + 1e-7)

    def quintic(_, x):
        gram = x @ mT(x)
        return a * x + (b * gram + c * gram @ gram) @ x

    def cubic(_, x):
        return 1.5 * x - 0.5 * (x @ mT(x)) @ x

    # loops rather than unrolled iterations: the same arithmetic, a third of the compile time
    x = jax.lax.fori_loop(0, ns_steps, quintic, x)
    x = jax.lax.fori_loop(0, polish_steps, cubic, x)
    return mT(x) if transpose else x


def msign(g: jax.Array) -> jax.Array:
    """The exact polar factor ``msign(G) = U Vᵀ`` of ``G = U Σ Vᵀ`` (by SVD), over the last two
    axes: the direction Muon approximates (Chen, Li & Liu, arXiv 2506.15054). For theory checks,
    where the Muon ball ``‖W‖₂ ≤ s/λ`` must hold to round-off."""
    u, _, vt = jnp.linalg.svd(g, full_matrices=False)
    return u @ vt


class MuonState(NamedTuple):
    momentum: optax.Updates


def scale_by_muon(beta: float = 0.95, ns_steps: int = 5, polish_steps: int = 4, exact: bool = False) -> optax.GradientTransformation:
    """Muon's direction for matrices: Nesterov momentum, then ``s · orthogonalize(·)``
    with ``s = sqrt(max(1, fan_out/fan_in))`` (Jordan et al. 2024); ``exact=True`` uses
    :func:`msign` (SVD) instead of Newton–Schulz."""
    direction = msign if exact else (lambda u: orthogonalize(u, ns_steps, polish_steps))

    def init_fn(params):
        return MuonState(jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        mom = jax.tree.map(lambda m, g: beta * m + g, state.momentum, updates)
        nesterov = jax.tree.map(lambda m, g: g + beta * m, mom, updates)
        out = jax.tree.map(
            lambda u: muon_shape_factor(u.shape) * direction(u), nesterov
        )
        return out, MuonState(mom)

    return optax.GradientTransformation(init_fn, update_fn)


def _decoupled(direction: optax.GradientTransformation, lr: float, wd: float) -> optax.GradientTransformation:
    return optax.chain(direction, optax.add_decayed_weights(wd), optax.scale_by_learning_rate(lr))


def _sgd(lr, wd, matrices):
    return _decoupled(optax.identity(), lr, wd)


def _momentum(lr, wd, matrices):
    return _decoupled(optax.trace(decay=0.9), lr, wd)


def _adam(lr, wd, matrices):
    return optax.chain(optax.add_decayed_weights(wd), optax.scale_by_adam(), optax.scale_by_learning_rate(lr))


def _adamw(lr, wd, matrices):
    return _decoupled(optax.scale_by_adam(), lr, wd)


def _lion(lr, wd, matrices):
    return _decoupled(optax.scale_by_lion(b1=0.9, b2=0.99), lr, wd)


def _signsgd(lr, wd, matrices):
    return _decoupled(optax.scale_by_sign(), lr, wd)


def _muon(lr, wd, matrices, exact=False):
    if not matrices:
        raise UserError("muon needs the names of the matrices it orthogonalises (the model's MUON_MATRICES)")

    def labels(params):
        return {k: ("muon" if k in matrices else "adamw") for k in params}

    return optax.multi_transform(
        {"muon": _decoupled(scale_by_muon(exact=exact), lr, wd), "adamw": _adamw(lr, wd, matrices)}, labels
    )


def _muon_exact(lr, wd, matrices):
    return _muon(lr, wd, matrices, exact=True)


def _as_rows(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` applied to every array reshaped to a ``1×k`` row (and the result reshaped back)."""

    def rows(tree):
        return jax.tree.map(lambda x: jnp.reshape(x, (1, -1)), tree)

    def update_fn(updates, state, params=None):
        out, state = inner.update(rows(updates), state, None if params is None else rows(params))
        return jax.tree.map(lambda u, g: jnp.reshape(u, jnp.shape(g)), out, updates), state

    return optax.GradientTransformation(lambda params: inner.init(rows(params)), update_fn)


def _muon_full(lr, wd, matrices):
    """Muon-full (THEORY.md §B): exact-msign Muon on ``matrices`` and on every other array as a
    row, ``msign(gᵀ) = gᵀ/‖g‖₂`` (shape factor 1 for a ``1×k`` row). Every direction has unit
    dual norm, so with ``ηλ ≤ 1`` the set ``‖W‖₂ ≤ s/λ``, ``‖v‖₂ ≤ 1/λ`` is forward-invariant."""
    if not matrices:
        raise UserError("muon_full needs the names of the matrices it orthogonalises (the model's MUON_MATRICES)")

    def labels(params):
        return {k: ("muon" if k in matrices else "row") for k in params}

    return optax.multi_transform({"muon": _decoupled(scale_by_muon(exact=True), lr, wd),
                                  "row": _decoupled(_as_rows(scale_by_muon(exact=True)), lr, wd)}, labels)


class OptimizerSpec(NamedTuple):
    build: Callable[[float, float, tuple[str, ...]], optax.GradientTransformation]
    constraint_kind: str
    default_lr: float
    summary: str


REGISTRY: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(_sgd, "none", 0.02, "gradient descent, decay as L2 penalty"),
    "momentum": OptimizerSpec(_momentum, "none", 0.01, "heavy-ball momentum 0.9, decoupled decay"),
    "adam": OptimizerSpec(_adam, "none", 0.01, "Adam with coupled L2 decay"),
    "adamw": OptimizerSpec(_adamw, "linf", 0.01, "Adam with decoupled decay: ℓ∞ ball 1/λ"),
    "lion": OptimizerSpec(_lion, "linf", 0.003, "Lion (β=0.9, 0.99), decoupled decay: ℓ∞ ball 1/λ"),
    "signsgd": OptimizerSpec(_signsgd, "linf", 0.003, "sign descent, decoupled decay: ℓ∞ ball 1/λ"),
    "muon": OptimizerSpec(_muon, "muon", 0.01, "Newton–Schulz orthogonalised momentum on matrices, AdamW elsewhere: spectral ball s/λ"),
    "muon_exact": OptimizerSpec(_muon_exact, "muon", 0.01, "Muon with the exact msign U Vᵀ (SVD) for theory checks: spectral ball s/λ to round-off"),
    "muon_full": OptimizerSpec(_muon_full, "muon_full", 0.01,
                               "exact-msign Muon on matrices and on the other arrays as rows (g/‖g‖₂): ‖W‖₂ ≤ s/λ, ‖v‖₂ ≤ 1/λ"),
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def spec(name: str) -> OptimizerSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown optimizer {name!r}: choose from {', '.join(REGISTRY)}") from None


def make(name: str, lr: float, weight_decay: float, matrices: Sequence[str] = ()) -> optax.GradientTransformation:
    """The optax transformation of optimizer ``name`` at learning rate ``lr`` and decay λ."""
    if not lr > 0:
        raise UserError(f"learning rate for {name} must be positive, got {lr}")
    if not weight_decay >= 0:
        raise UserError(f"weight decay must be non-negative, got {weight_decay}")
    spec(name)
    return _build(name, float(lr), float(weight_decay), tuple(matrices))


@functools.cache
def _build(name: str, lr: float, weight_decay: float, matrices: tuple[str, ...]) -> optax.GradientTransformation:
    # one object per setting, so jitted programs taking the optimizer as static reuse their compilation
    return REGISTRY[name].build(lr, weight_decay, matrices)


def path_optimizer(opt_a: str | None, opt_b: str | None, cross: str = "adamw") -> str:
    """The optimizer that learns a path between solutions of ``opt_a`` and ``opt_b``: the endpoints' own when
    they share one (the "optimizer-restricted" path, Zhang et al., arXiv 2605.09991), else ``cross``;
    ``None`` (not recorded) counts as unknown."""
    return opt_a if opt_a is not None and opt_a == opt_b else cross


def constraint(name: str, weight_decay: float, matrices: Sequence[str] = ()) -> ConstraintSet:
    """The implicit constraint set of optimizer ``name`` at decay λ (see :mod:`connect.constraints`)."""
    return ConstraintSet(spec(name).constraint_kind, float(weight_decay), tuple(matrices))


# ---- transformers ---------------------------------------------------------------------

LM_OPTIMIZERS = ("adamw", "muon", "lion", "momentum")


def check_lm_name(name: str, what: str = "optimizer") -> str:
    """``name`` if it is one of :data:`LM_OPTIMIZERS`, else a UserError (``sgd``, which :func:`make_lm` called
    heavy-ball momentum before it took the registry's meaning of plain gradient descent, names ``momentum``)."""
    if name == "sgd":
        raise UserError(f"transformer {what} 'sgd' is now spelled 'momentum' (heavy-ball momentum; 'sgd' is plain "
                        "gradient descent in connect's registry): pass momentum")
    if name not in LM_OPTIMIZERS:
        raise UserError(f"unknown transformer {what} {name!r}: choose from {', '.join(LM_OPTIMIZERS)}")
    return name

#: Leaf names that are never decayed in :func:`make_lm`: LayerNorm gains and biases.
NO_DECAY_NAMES = ("scale", "bias")


def make_lm(name: str, params, *, lr, aux_lr=None, weight_decay: float = 0.0, betas=(0.9, 0.95), eps: float = 1e-8,
            momentum: float = 0.95, clip_norm: float | None = 1.0,
            matrices: Mapping[tuple[str, ...], int]) -> optax.GradientTransformation:
    """The optax transformation of transformer optimizer ``name`` for a parameter pytree like ``params``.

    Leaves fall in three groups, by their path in the nested dict:

    - *hidden matrices*, the paths in ``matrices`` (a model family's ``MUON_MATRICES``, e.g.
      :data:`connect.models.gpt2.MUON_MATRICES`: the attention and MLP kernels): learning rate ``lr``, decay λ;
    - *other matrices*, every other leaf not named ``scale`` or ``bias`` (``wte``, ``wpe``,
      ``lm_head``): learning rate ``aux_lr`` (default ``lr``), decay λ;
    - *LayerNorm gains and biases*, leaves named ``scale`` or ``bias``: ``aux_lr``, no decay.

    ``lr`` and ``aux_lr`` are floats ≥ 0 or optax schedules (:func:`connect.schedules.make`).
    Decay is decoupled and multiplied by the group's learning rate, ``θ ← θ − η(u + λθ)``
    (Loshchilov & Hutter 2019; optax's convention, as the rest of this module), and the
    gradient is first clipped to global norm ``clip_norm`` over all leaves,
    ``g ← g · min(1, c/‖g‖₂)`` (Pascanu et al. 2013; ``None``: no clipping).

    Update directions ``u``:

    - ``adamw``: Adam with ``betas``, ``eps`` on every group;
    - ``muon``: on the hidden matrices Nesterov momentum ``momentum`` then
      ``s · NS(·)`` per matrix (:func:`scale_by_muon`, Jordan et al. 2024); on the other two
      groups AdamW with ``betas``, ``eps`` at ``aux_lr``;
    - ``lion``: ``sign(β₁m + (1−β₁)g)``, ``m ← β₂m + (1−β₂)g`` with ``(β₁, β₂) = betas``
      (Chen et al. 2023) on every group;
    - ``momentum``: heavy-ball momentum ``m ← μm + g``, ``u = m`` with ``μ = momentum`` on every group (the
      registry's ``momentum`` with a configurable μ; ``sgd`` is refused with a message naming it).

    Muon's matrices: a kernel stored ``(…, in, k·out)`` (leading axes a batch, e.g. the layer
    axis L) with ``matrices[path] = k`` holds ``k`` matrices fused along its last axis (``c_attn``:
    q | k | v, k = 3); each ``(in, out)`` matrix ``W`` is orthogonalised on its own and scaled by
    ``s = sqrt(max(1, out/in))``, the shape factor of its ``(out, in)`` transpose
    (:func:`connect.constraints.muon_shape_factor`; the polar factor commutes with transposition).
    Its implicit set is then ``‖W‖₂ ≤ s/λ`` per matrix (:mod:`connect.constraints`).
    """
    aux_lr = lr if aux_lr is None else aux_lr
    _check_lm_settings(name, lr, aux_lr, weight_decay, betas, eps, momentum, clip_norm)
    matrices = {tuple(path): int(k) for path, k in matrices.items()}
    _check_matrices(params, matrices)
    b1, b2 = betas
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    hidden, aux = {
        "adamw": (adam, adam),
        "muon": (_per_matrix(scale_by_muon(beta=momentum), matrices), adam),
        "lion": (optax.scale_by_lion(b1=b1, b2=b2),) * 2,
        "momentum": (optax.trace(decay=momentum),) * 2,
    }[name]
    split = optax.multi_transform(
        {"hidden": _decoupled(hidden, lr, weight_decay), "matrix": _decoupled(aux, aux_lr, weight_decay),
         "plain": optax.chain(aux, optax.scale_by_learning_rate(aux_lr))},
        functools.partial(_lm_labels, matrices=matrices),
    )
    return split if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), split)


def _check_lm_settings(name, lr, aux_lr, weight_decay, betas, eps, momentum, clip_norm) -> None:
    """Every argument of :func:`make_lm` in range, else a UserError naming it."""
    check_lm_name(name)
    _check_lr("lr", lr)
    _check_lr("aux_lr", aux_lr)
    if not weight_decay >= 0:
        raise UserError(f"weight decay must be non-negative, got {weight_decay}")
    for label, beta in (("betas[0]", betas[0]), ("betas[1]", betas[1]), ("momentum", momentum)):
        if not 0.0 <= beta < 1.0:
            raise UserError(f"{label} must lie in [0, 1), got {beta}")
    if not eps >= 0:
        raise UserError(f"eps must be non-negative, got {eps}")
    if clip_norm is not None and not clip_norm > 0:
        raise UserError(f"clip_norm must be positive or None (no clipping), got {clip_norm}")


def _check_lr(label: str, lr) -> None:
    if callable(lr):
        return
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
        raise UserError(f"{label} must be a non-negative number or a schedule, got {lr!r}")


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _lm_labels(params, matrices: Mapping[tuple[str, ...], int]):
    """The group of each leaf: ``hidden``, ``matrix`` or ``plain`` (see :func:`make_lm`)."""

    def label(path, _leaf):
        names = _path_names(path)
        if names in matrices:
            return "hidden"
        return "plain" if names[-1] in NO_DECAY_NAMES else "matrix"

    return jax.tree_util.tree_map_with_path(label, params)


def _check_matrices(params, matrices: Mapping[tuple[str, ...], int]) -> None:
    leaves = {_path_names(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for path, k in matrices.items():
        where = "/".join(path)
        if path not in leaves:
            raise UserError(f"matrix {where} is not in the parameters: pass matrices naming existing leaves (e.g. the model's MUON_MATRICES)")
        shape = tuple(getattr(leaves[path], "shape", ()))
        if len(shape) < 2 or k < 1 or shape[-1] % k:
            raise UserError(f"matrix {where} of shape {shape} cannot hold {k} matrices fused along its last axis")


def _fused_to_matrices(x: jax.Array, k: int) -> jax.Array:
    """``(…, in, k·out) -> (…, k, out, in)``: the ``k`` fused ``(in, out)`` matrices, transposed."""
    *lead, n_in, n_fused = x.shape
    return jnp.moveaxis(x.reshape(*lead, n_in, k, n_fused // k), -3, -1)


def _matrices_to_fused(x: jax.Array) -> jax.Array:
    """Inverse of :func:`_fused_to_matrices`."""
    *lead, k, n_out, n_in = x.shape
    return jnp.moveaxis(x, -1, -3).reshape(*lead, n_in, k * n_out)


def _per_matrix(inner: optax.GradientTransformation, matrices: Mapping[tuple[str, ...], int]) -> optax.GradientTransformation:
    """Run ``inner`` (a transformation acting on the last two axes, e.g. :func:`scale_by_muon`) on
    each fused kernel seen as its stack of ``(out, in)`` matrices; its state lives in that layout."""

    def split(tree):
        return jax.tree_util.tree_map_with_path(lambda p, x: _fused_to_matrices(x, matrices[_path_names(p)]), tree)

    def init_fn(params):
        return inner.init(split(params))

    def update_fn(updates, state, params=None):
        out, state = inner.update(split(updates), state, None if params is None else split(params))
        return jax.tree.map(_matrices_to_fused, out), state

    return optax.GradientTransformation(init_fn, update_fn)
