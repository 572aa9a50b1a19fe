"""The loss on the 2-D plane through three parameter points θ_A, θ_B, θ_C (Garipov et al. 2018, §3 and
fig. 1; Izmailov et al.'s ``plane.py``): θ_C is a third checkpoint or the learned bend of a path.

Gram–Schmidt on the two directions from θ_A (inner products over every array of the tree)::

    e₁ = (θ_B − θ_A) / ‖θ_B − θ_A‖,     r = θ_C − θ_A,     c_u = ⟨r, e₁⟩,
    e₂ = (r − c_u e₁) / c_v,            c_v = ‖r − c_u e₁‖,
    θ(u, v) = θ_A + u e₁ + v e₂,

so ``(u, v)`` are Euclidean coordinates in parameter space and the three points sit at
``A = (0, 0)``, ``B = (‖θ_B − θ_A‖, 0)``, ``C = (c_u, c_v)``. Substituting e₁ and e₂, θ(u, v) is the affine
combination ``w_A θ_A + w_C θ_C + w_B θ_B`` with

    w_C = v / c_v,     w_B = u / ‖θ_B − θ_A‖ − v c_u / (‖θ_B − θ_A‖ c_v),     w_A = 1 − w_B − w_C,

i.e. a "path" over the nodes ``[θ_A, θ_C, θ_B]`` whose weights are a table indexed by grid point. The
loss of every grid point is therefore :func:`connect.lm_paths.path_losses` with that table as the
path's weight function (one compiled program, points chunked under ``vmap``, data batched and
sharded exactly as along a path); nothing here touches the data.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from connect import lm_paths, paths
from connect.errors import UserError
from connect.models import gpt2


@dataclasses.dataclass(frozen=True)
class Plane:
    """The plane's coordinates of its three defining points (see the module docstring)."""

    ab_norm: float  # ‖θ_B − θ_A‖: B = (ab_norm, 0)
    c_u: float  # C = (c_u, c_v)
    c_v: float

    def points_3x2(self) -> np.ndarray:
        """``(u, v)`` of A, B, C."""
        return np.array([[0.0, 0.0], [self.ab_norm, 0.0], [self.c_u, self.c_v]])


def plane(theta_a, theta_b, theta_c) -> Plane:
    """Gram–Schmidt coordinates of the three points (float64 inner products on the host)."""
    d_ab, d_ac = _diff(theta_b, theta_a), _diff(theta_c, theta_a)
    ab = np.sqrt(_dot(d_ab, d_ab))
    if ab == 0:
        raise UserError("θ_A and θ_B are the same point: a plane needs three distinct, non-collinear points")
    c_u = _dot(d_ac, d_ab) / ab
    c_v = np.sqrt(max(_dot(d_ac, d_ac) - c_u**2, 0.0))
    if c_v <= 1e-5 * ab:  # float32 points: a midpoint is off the line by rounding only
        raise UserError("the three points are collinear (θ_C lies on the line through θ_A and θ_B): pass a third point off that line")
    return Plane(float(ab), float(c_u), float(c_v))


def weights(pl: Plane, uv_Gx2) -> np.ndarray:
    """Weights of ``[θ_A, θ_C, θ_B]`` at every ``(u, v)``, shape ``(G, 3)``; each row sums to 1."""
    uv_Gx2 = np.asarray(uv_Gx2, np.float64)
    w_c = uv_Gx2[:, 1] / pl.c_v
    w_b = uv_Gx2[:, 0] / pl.ab_norm - uv_Gx2[:, 1] * pl.c_u / (pl.ab_norm * pl.c_v)
    return np.stack([1.0 - w_b - w_c, w_c, w_b], axis=1)


def nodes(theta_a, theta_b, theta_c):
    """The three points stacked as ``[θ_A, θ_C, θ_B]`` (the node order of :func:`weights`)."""
    return jax.tree.map(lambda a, c, b: jnp.stack([a, c, b]), theta_a, theta_c, theta_b)


def point(pl: Plane, nodes_3, uv) -> dict:
    """θ(u, v) (:func:`connect.paths.combine` of :func:`weights`, anchored at θ_A)."""
    w_3 = jnp.asarray(weights(pl, np.asarray(uv, np.float64)[None])[0], jnp.float32)
    return paths.combine(w_3, nodes_3, jnp.asarray(False))


def grid(pl: Plane, n_points: int = 11, margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``(u_U, v_V)``: ``n_points`` evenly spaced values per axis over the three points' bounding box
    widened by ``margin`` times its size on every side."""
    if n_points < 2:
        raise UserError(f"a plane grid needs at least 2 points per axis, got {n_points}")
    if margin < 0:
        raise UserError(f"the plane margin must be ≥ 0, got {margin}")
    pts_3x2 = pl.points_3x2()
    lo, hi = pts_3x2.min(0), pts_3x2.max(0)
    pad = margin * (hi - lo)
    return np.linspace(lo[0] - pad[0], hi[0] + pad[0], n_points), np.linspace(lo[1] - pad[1], hi[1] + pad[1], n_points)


def losses(pl: Plane, nodes_3, model_cfg: gpt2.GPT2Config, tokens: np.ndarray, uv_Gx2, *, batch_size: int, context: int,
           max_batches: int | None = None, mesh=None, t_chunk: int | None = None, compute_dtype=jnp.float32) -> np.ndarray:
    """Mean next-token loss (nats) at every ``(u, v)`` of ``uv_Gx2``, shape ``(G,)``, by
    :func:`connect.lm_paths.path_losses` over the weight table (see the module docstring)."""
    w_GxK = weights(pl, uv_Gx2)
    n = w_GxK.shape[0]
    index_T = np.arange(n, dtype=np.float32) / max(n - 1, 1)  # "t" of grid point g is g/(G−1), exact in float32
    return lm_paths.path_losses(_Table(w_GxK.astype(np.float32)), nodes_3, model_cfg, tokens, index_T, batch_size=batch_size,
                                context=context, max_batches=max_batches, mesh=mesh, t_chunk=t_chunk, compute_dtype=compute_dtype)


def plane_losses(theta_a, theta_b, theta_c, model_cfg: gpt2.GPT2Config, tokens: np.ndarray, *, n_points: int = 11,
                 margin: float = 0.2, **kw) -> dict:
    """The loss on the ``n_points × n_points`` grid of :func:`grid`, plus the three points' own coordinates
    and losses: ``{"u", "v", "loss" (V, U), "points" (3, 2), "point_loss" (3,)}`` (lists, ready for JSON)."""
    pl = plane(theta_a, theta_b, theta_c)
    u_U, v_V = grid(pl, n_points, margin)
    uv_Gx2 = np.concatenate([np.stack(np.meshgrid(u_U, v_V), axis=-1).reshape(-1, 2), pl.points_3x2()])
    loss_G = losses(pl, nodes(theta_a, theta_b, theta_c), model_cfg, tokens, uv_Gx2, **kw)
    return {"u": u_U.tolist(), "v": v_V.tolist(), "loss": loss_G[:-3].reshape(v_V.size, u_U.size).tolist(),
            "points": pl.points_3x2().tolist(), "point_loss": loss_G[-3:].tolist()}


@dataclasses.dataclass(frozen=True, eq=False)
class _Table:
    """A weight function ``t -> w_K`` reading row ``round(t·(G−1))`` of a table (hashable by identity,
    so it can be a static argument of the compiled loss)."""

    w_GxK: np.ndarray

    def __call__(self, t):
        n = self.w_GxK.shape[0]
        return jnp.asarray(self.w_GxK)[jnp.round(t * (n - 1)).astype(jnp.int32)]


def _diff(x, y):
    return [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))]


def _dot(xs, ys) -> float:
    return float(sum(np.vdot(a, b) for a, b in zip(xs, ys)))
