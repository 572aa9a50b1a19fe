"""Optimizer-implicit constraint sets: the norm ball each optimizer's fixed points lie in.

With decoupled weight decay and the learning-rate-multiplied convention
``θ ← θ − η (u + λ θ)`` (optax's), any fixed point satisfies ``θ = −u/λ``, and iterates
contract towards ``{θ : ‖θ‖ ≤ sup‖u‖ / λ}``: if every update has norm ≤ 1 and ηλ ≤ 1 the
ball of radius 1/λ is forward-invariant and the excess outside it shrinks by ``(1 − ηλ)``
per step (THEORY.md §B; Zhang et al., arXiv 2605.09991, §3). In Lion-K form
(Chen, Liu, Liang & Liu, arXiv 2310.05898) ``x ← x + η(∇K(M̃) − λx)`` minimises
``L(x) + (1/λ) K*(λx)``, i.e. ``min L s.t. ‖x‖_dual ≤ 1/λ`` for a norm ``K``. Per block:

========== ========================================= ===========================================
kind       optimizer                                 set ``C(λ)``
========== ========================================= ===========================================
linf       AdamW, Lion, sign descent                 ``‖θ‖∞ ≤ 1/λ`` over every array
           (Lion-K with ``K = ‖·‖₁``; AdamW: Xie & Li,
           arXiv 2404.04454, asymptotically)
muon       Muon on ``matrices``, AdamW on the rest   ``‖W‖₂ ≤ s(W)/λ`` per named matrix,
           ("Muon-hybrid"; Muon = Lion-K with the    ``‖v‖∞ ≤ 1/λ`` on every other array
           nuclear norm, Chen, Li & Liu 2506.15054)
muon_full  Muon on the vectors too: the msign of a   ``‖W‖₂ ≤ s(W)/λ`` per named matrix,
           vector (a 1×m row) is ``g/‖g‖₂``          ``‖v‖₂ ≤ 1/λ`` on every other array
l2         normalised GD (``u = g/‖g‖`` per array)    ``‖x‖_F ≤ 1/λ`` per array
none       SGD, momentum, Adam (coupled L2)          no ball: the penalised loss
                                                     ``L + (λ/2)‖θ‖²``; radius ∞
========== ========================================= ===========================================

``s(W) = sqrt(max(1, fan_out/fan_in))`` is Muon's shape factor (Keller Jordan). Newton–Schulz
only approximates ``msign``, so Muon's ball is approximate (see :func:`connect.optimizers.orthogonalize`).
λ = 0 means no ball for every kind.

Norms are reported *relative to the radius* (``λ·max|θ|``, ``λ·‖W‖₂/s``, ...): a value ≤ 1
means inside the set. Projections (:meth:`ConstraintSet.project`) are Euclidean and blockwise:
ℓ∞ clip, ℓ₂ rescale, spectral ``U·min(Σ, r)·Vᵀ``.

Orbit membership (:meth:`ConstraintSet.in_orbit`) asks whether a neuron rescaling
``(w_j, b_j, a_j) → (s_j w_j, s_j b_j, a_j/s_j)``, ``s_j > 0``, of a two-layer ReLU network
(:mod:`connect.models.relu`) lies in the set; it keeps the function (ReLU is positively
homogeneous). The bias scales with its row ``w_j`` (THEORY.md §A: an extra input column) but
is constrained as the separate array it is in ``params``. Neurons with ``a_j = 0`` or
``(w_j, b_j) = 0`` compute zero; they are sent to zero (the limit ``s_j → 0`` or ``∞``), so
the closed forms characterise the closure of the orbit.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

KINDS = ("linf", "muon", "muon_full", "l2", "none")


def muon_shape_factor(shape: Sequence[int]) -> float:
    """Muon's update scale ``s = sqrt(max(1, fan_out / fan_in))`` for a matrix of
    shape ``(fan_out, fan_in)`` (Jordan et al., Muon, 2024)."""
    fan_out, fan_in = shape[-2], shape[-1]
    return math.sqrt(max(1.0, fan_out / fan_in))


class ConstraintSet(NamedTuple):
    """The implicit set of one optimizer at decay λ (table in the module docstring).

    ``kind``: one of :data:`KINDS`. ``lam`` is the decay λ (radius ∞ when λ = 0).
    ``matrices`` names the arrays Muon orthogonalises (kinds ``muon``, ``muon_full``).
    """

    kind: str
    lam: float
    matrices: tuple[str, ...] = ()

    @property
    def linf_radius(self) -> float:
        """Radius of the ℓ∞ ball on the arrays that have one (kinds ``linf``, ``muon``)."""
        return math.inf if self.lam == 0 or self.kind not in ("linf", "muon") else 1.0 / self.lam

    def spectral_radius(self, shape: Sequence[int]) -> float:
        """Radius ``s/λ`` of the spectral ball on a named matrix (kinds ``muon``, ``muon_full``)."""
        if self.lam == 0 or self.kind not in ("muon", "muon_full"):
            return math.inf
        return muon_shape_factor(shape) / self.lam

    @property
    def _free(self) -> bool:
        if self.kind not in KINDS:
            raise ValueError(f"unknown constraint kind {self.kind!r}; expected one of {KINDS}")
        return self.kind == "none" or self.lam == 0

    def _is_matrix(self, name: str) -> bool:
        return self.kind in ("muon", "muon_full") and name in self.matrices

    def _block_relative(self, name: str, x: jax.Array) -> jax.Array:
        """``norm(x)/radius`` for one array."""
        if self._is_matrix(name):
            return self.lam * jnp.linalg.norm(x, ord=2) / muon_shape_factor(x.shape)
        if self.kind in ("linf", "muon"):
            return self.lam * jnp.max(jnp.abs(x))
        return self.lam * jnp.linalg.norm(jnp.ravel(x))  # muon_full vectors, l2

    def relative_norm(self, params: dict) -> jax.Array:
        """``max`` over the set's defining norms of ``norm/radius``; ≤ 1 ⇔ inside the set.
        For ``kind="none"`` (or λ = 0) this is 0 (no constraint)."""
        if self._free:
            return jnp.zeros(())
        if self.kind == "linf":
            return linf_relative(params, self.lam)
        return jnp.max(jnp.stack([self._block_relative(k, v) for k, v in params.items()]))

    def contains(self, params: dict, rtol: float = 1e-3) -> bool:
        return bool(self.relative_norm(params) <= 1.0 + rtol)

    def _project_block(self, name: str, x: jax.Array) -> jax.Array:
        if self._is_matrix(name):
            r = muon_shape_factor(x.shape) / self.lam
            u, sv, vt = jnp.linalg.svd(x, full_matrices=False)
            return (u * jnp.minimum(sv, r)[..., None, :]) @ vt
        r = 1.0 / self.lam
        if self.kind in ("linf", "muon"):
            return jnp.clip(x, -r, r)
        norm = jnp.linalg.norm(jnp.ravel(x))
        return x * jnp.minimum(1.0, r / jnp.maximum(norm, jnp.finfo(x.dtype).tiny))

    def project(self, params: dict) -> dict:
        """Euclidean projection ``argmin_{y ∈ C} ‖y − θ‖`` (THEORY.md §B), blockwise since ``C``
        is a product of per-array balls: ℓ∞ ball → clip to ``[−r, r]``; ℓ₂/Frobenius ball →
        ``x·min(1, r/‖x‖)``; spectral ball of radius ``r = s/λ`` → ``U·min(Σ, r)·Vᵀ`` for
        ``W = UΣVᵀ`` (nearest in Frobenius norm by von Neumann's trace inequality)."""
        if self._free:
            return dict(params)
        return {k: self._project_block(k, v) for k, v in params.items()}

    def distance(self, params: dict) -> jax.Array:
        """Euclidean distance ``‖θ − P_C(θ)‖₂`` over all arrays (0 inside the set)."""
        proj = self.project(params)
        sq = [jnp.sum((params[k] - proj[k]) ** 2) for k in params]
        return jnp.sqrt(jnp.sum(jnp.stack(sq))) if sq else jnp.zeros(())

    def orbit_relative(self, params: dict) -> jax.Array:
        """``min`` over neuron rescalings ``s > 0`` of :meth:`relative_norm` (closure of the
        orbit), for a two-layer ReLU network ``{"W": (m, d), "b": (m,) optional, "a": (m,)}``.
        ``≤ 1`` ⇔ some rescaling lies in the set. Closed forms (THEORY.md §B [R], derived in the
        general-radius form: every ``W``/``b`` norm grows with each ``s_j`` and every ``a``
        norm shrinks, so the best rescalings trade them off):

        * ``linf`` (box, ``r = 1/λ``; ``w̃_j = (w_j, b_j)``), per neuron:
          ``min_s max(s‖w̃_j‖∞, |a_j|/s) = sqrt(|a_j|·‖w̃_j‖∞)``, so
          ``orbit ⇔ max_j |a_j|·‖w̃_j‖∞ ≤ r²``; value ``λ·sqrt(max_j |a_j|‖w̃_j‖∞)``.
        * ``muon`` (hybrid, ``r_W = s/λ`` on ``W``, ``r = 1/λ`` on ``a`` and ``b``): for a
          target ``ρ`` the smallest admissible scales are ``s_j = λ|a_j|/ρ``, giving
          ``‖diag(s)W‖₂ = λ‖diag(a)W‖₂/ρ`` and ``|s_j b_j| = λ|a_j b_j|/ρ``; hence the value is
          ``λ·sqrt(max(‖diag(a)W‖₂/s, max_j |a_j b_j|))`` and, with ``v_j = |a_j| w_j``,
          ``orbit ⇔ λ_max(Σ_j v_j v_jᵀ) ≤ r_W² r² = s²/λ⁴  and  max_j |a_j b_j| ≤ r² = 1/λ²``
          (THEORY's ``λ_max(Σ v_j v_jᵀ) ≤ r⁴`` is the case ``s = 1``, no bias).
        * ``l2`` (no bias; ``r = 1/λ``): with ``t_j = s_j²``, Cauchy–Schwarz gives
          ``(Σ t_j‖w_j‖²)(Σ a_j²/t_j) ≥ (Σ |a_j|‖w_j‖₂)²`` with equality at
          ``t_j = |a_j|/‖w_j‖``, so ``orbit ⇔ Σ_j |a_j|‖w_j‖₂ ≤ r²``.
        * ``muon_full``: needs a small SDP (∃ t ≥ 0, Σ t_j ≤ r², Σ v_j v_jᵀ/t_j ⪯ r_W² I);
          solved in :func:`theory.orbits.muon_full_orbit_relative` (cvxpy), not here
          (``NotImplementedError``); nor ``l2`` with a bias.
        """
        self._check_orbit(params)
        if self._free:
            return jnp.zeros(())
        w, a = params["W"], params["a"]
        abs_a = jnp.abs(a)
        if self.kind == "linf":
            return self.lam * jnp.sqrt(jnp.max(abs_a * _row_max_abs(params)))
        if self.kind == "muon":
            s = muon_shape_factor(w.shape)
            worst = jnp.linalg.norm(abs_a[:, None] * w, ord=2) / s
            if "b" in params:
                worst = jnp.maximum(worst, jnp.max(abs_a * jnp.abs(params["b"])))
            return self.lam * jnp.sqrt(worst)
        return self.lam * jnp.sqrt(jnp.sum(abs_a * jnp.linalg.norm(w, axis=1)))  # l2

    def in_orbit(self, params: dict, rtol: float = 1e-3) -> bool:
        """Does some neuron rescaling of ``params`` lie in the set (closure of the orbit, up to
        ``rtol`` as in :meth:`contains`)? See :meth:`orbit_relative` for the closed forms."""
        return bool(self.orbit_relative(params) <= 1.0 + rtol)

    def rescale_into(self, params: dict) -> dict:
        """The rescaling ``(s_j w_j, s_j b_j, a_j/s_j)`` attaining :meth:`orbit_relative`: its
        :meth:`relative_norm` equals that value, so it lies in the set exactly when
        :meth:`in_orbit` holds (a constructive witness), and it computes the same function.
        Scales: box and ``l2`` balance each neuron, ``s_j = sqrt(|a_j|/‖w̃_j‖)`` (ℓ∞ resp. ℓ₂
        norm of the row); hybrid puts every ``a_j`` on the sphere of the orbit value,
        ``s_j = λ|a_j|/ρ``. Neurons with ``a_j = 0`` or ``w̃_j = 0`` are zeroed."""
        self._check_orbit(params)
        if self._free:
            return dict(params)
        w, a = params["W"], params["a"]
        abs_a = jnp.abs(a)
        row = _row_max_abs(params)
        live = (abs_a > 0) & (row > 0)
        if self.kind == "muon":
            rho = self.orbit_relative(params)
            scale = self.lam * abs_a / jnp.where(rho > 0, rho, 1.0)
        else:
            row = row if self.kind == "linf" else jnp.linalg.norm(w, axis=1)
            scale = jnp.sqrt(abs_a / jnp.where(live, row, 1.0))
        scale = jnp.where(live, scale, 1.0)
        out = {
            "W": jnp.where(live[:, None], scale[:, None] * w, 0.0),
            "a": jnp.where(live, a / scale, 0.0),
        }
        if "b" in params:
            out["b"] = jnp.where(live, scale * params["b"], 0.0)
        return out

    def _check_orbit(self, params: dict) -> None:
        if set(params) - {"W", "b", "a"} or "W" not in params or "a" not in params:
            raise ValueError("orbit membership is for two-layer ReLU params {'W', 'b' (optional), 'a'}")
        if self._free:
            return
        if self.kind == "muon_full":
            raise NotImplementedError(
                "orbit membership for 'muon_full' is a small SDP (∃ t ≥ 0, Σ t_j ≤ r², "
                "Σ v_j v_jᵀ/t_j ⪯ r_W² I, THEORY.md §B) with no closed form: use theory.orbits.muon_full_orbit_relative"
            )
        if self.kind == "muon" and tuple(self.matrices) != ("W",):
            raise ValueError(f"orbit membership for 'muon' expects matrices=('W',), got {self.matrices}")
        if self.kind == "l2" and "b" in params:
            raise NotImplementedError("orbit membership for 'l2' with a bias has no closed form here")


def _row_max_abs(params: dict) -> jax.Array:
    """``‖(w_j, b_j)‖∞`` per neuron, shape ``(m,)``."""
    row = jnp.max(jnp.abs(params["W"]), axis=1)
    return jnp.maximum(row, jnp.abs(params["b"])) if "b" in params else row


def linf_relative(params, lam: float) -> jax.Array:
    """``λ · max_i |θ_i|`` over every array of the pytree (the AdamW/Lion ball is ``≤ 1``)."""
    return lam * jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(params)]))


def muon_relative(params: dict, lam: float, matrices: Sequence[str]) -> jax.Array:
    """``max_W λ · ‖W‖₂ / s(W)`` over the named matrices (the Muon ball is ``≤ 1``)."""
    vals = [lam * jnp.linalg.norm(params[k], ord=2) / muon_shape_factor(params[k].shape) for k in matrices]
    return jnp.max(jnp.stack(vals))


def project_simplex_magnitudes(x: jax.Array, r: float) -> jax.Array:
    """Euclidean projection of ``x`` onto the ℓ₁ ball ``{‖x‖₁ ≤ r}`` (the Lion-K set of
    ``K = ‖·‖∞``): ``sign(x)·max(|x| − θ, 0)`` with the threshold θ of Duchi, Shalev-Shwartz,
    Singer & Chandra 2008 ("Efficient projections onto the ℓ1-ball", Fig. 1): sort
    ``u = |x|`` decreasingly, ``ρ = max{j : u_j − (Σ_{i≤j} u_i − r)/j > 0}``,
    ``θ = (Σ_{i≤ρ} u_i − r)/ρ``; ``x`` itself when already inside."""
    flat = jnp.ravel(x)
    u = jnp.sort(jnp.abs(flat))[::-1]
    css = jnp.cumsum(u)
    j = jnp.arange(1, u.size + 1, dtype=u.dtype)
    rho = jnp.max(jnp.where(u - (css - r) / j > 0, j, 1.0))
    theta = (jnp.take(css, rho.astype(jnp.int32) - 1) - r) / rho
    out = jnp.sign(flat) * jnp.maximum(jnp.abs(flat) - theta, 0.0)
    return jnp.where(jnp.sum(jnp.abs(flat)) <= r, flat, out).reshape(x.shape)


def project_nuclear(w: jax.Array, r: float) -> jax.Array:
    """Euclidean projection of a matrix onto the nuclear-norm ball ``{‖W‖_* ≤ r}`` (the set of
    Lion-K with ``K = ‖·‖₂``, dual of Muon's): ``U·diag(P_{ℓ₁}(σ))·Vᵀ`` — the singular values
    projected onto the ℓ₁ ball (:func:`project_simplex_magnitudes`), the singular vectors kept
    (von Neumann's trace inequality makes the problem separable in σ)."""
    u, sv, vt = jnp.linalg.svd(w, full_matrices=False)
    return (u * project_simplex_magnitudes(sv, r)[None, :]) @ vt
