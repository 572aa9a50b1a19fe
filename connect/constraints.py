"""Optimizer-implicit constraint sets: the norm ball each optimizer's fixed points lie in.

With decoupled weight decay and the learning-rate-multiplied convention
``θ ← θ − η (u + λ θ)``, any fixed point satisfies ``θ = −u/λ``, and iterates
contract towards ``{θ : ‖θ‖ ≤ sup‖u‖ / λ}``. Hence (Zhang et al., arXiv 2605.09991, §3):

* AdamW, Lion, sign descent: ``|u_i| ≤ 1`` entrywise → ℓ∞ ball ``‖θ‖∞ ≤ 1/λ``;
* Muon: ``u = s·O`` with ``O`` orthogonal (‖O‖₂ = 1) on each matrix → spectral ball
  ``‖W‖₂ ≤ s/λ`` per matrix, ``s`` the update's shape factor; Muon's non-matrix
  arrays are updated by AdamW and lie in the ℓ∞ ball ``1/λ``;
* SGD, momentum, Adam with coupled L2 decay: no ball; they minimise the penalised
  loss ``L + (λ/2)‖θ‖²`` (``kind = "none"``, radius ∞).

Norms here are reported *relative to the radius*, i.e. ``λ·max|θ|`` and
``λ·‖W‖₂/s``: a value ≤ 1 means inside the set.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

KINDS = ("linf", "muon", "none")


def muon_shape_factor(shape: Sequence[int]) -> float:
    """Muon's update scale ``s = sqrt(max(1, fan_out / fan_in))`` for a matrix of
    shape ``(fan_out, fan_in)`` (Jordan et al., Muon, 2024)."""
    fan_out, fan_in = shape[-2], shape[-1]
    return math.sqrt(max(1.0, fan_out / fan_in))


class ConstraintSet(NamedTuple):
    """The implicit set of one optimizer at decay λ.

    ``kind``: ``linf`` (‖θ‖∞ ≤ 1/λ), ``muon`` (‖W‖₂ ≤ s/λ on ``matrices``, ℓ∞ ≤ 1/λ on the rest)
    or ``none``. ``lam`` is the decay λ (radius ∞ when λ = 0).
    """

    kind: str
    lam: float
    matrices: tuple[str, ...] = ()

    @property
    def linf_radius(self) -> float:
        return math.inf if self.lam == 0 or self.kind == "none" else 1.0 / self.lam

    def spectral_radius(self, shape: Sequence[int]) -> float:
        return math.inf if self.lam == 0 or self.kind != "muon" else muon_shape_factor(shape) / self.lam

    def relative_norm(self, params: dict) -> jax.Array:
        """``max`` over the set's defining norms of ``norm/radius``; ≤ 1 ⇔ inside the set.
        For ``kind="none"`` this is 0 (no constraint)."""
        if self.kind == "none" or self.lam == 0:
            return jnp.zeros(())
        if self.kind == "linf":
            return linf_relative(params, self.lam)
        rest = {k: v for k, v in params.items() if k not in self.matrices}
        parts = [muon_relative(params, self.lam, self.matrices)]
        if rest:
            parts.append(linf_relative(rest, self.lam))
        return jnp.max(jnp.stack(parts))

    def contains(self, params: dict, rtol: float = 1e-3) -> bool:
        return bool(self.relative_norm(params) <= 1.0 + rtol)


def linf_relative(params, lam: float) -> jax.Array:
    """``λ · max_i |θ_i|`` over every array of the pytree (the AdamW/Lion ball is ``≤ 1``)."""
    return lam * jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(params)]))


def muon_relative(params: dict, lam: float, matrices: Sequence[str]) -> jax.Array:
    """``max_W λ · ‖W‖₂ / s(W)`` over the named matrices (the Muon ball is ``≤ 1``)."""
    vals = [lam * jnp.linalg.norm(params[k], ord=2) / muon_shape_factor(params[k].shape) for k in matrices]
    return jnp.max(jnp.stack(vals))
