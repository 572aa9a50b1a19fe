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

an affine combination of the three points. The loss over a grid of ``(u, v)`` is then
a path evaluation with a weight function of the grid index (:func:`grid_path`): the family's path
evaluator (e.g. :func:`connect.lm.planes.plane_losses`) runs it as one compiled program, batched and
sharded exactly as along a path; nothing here touches the data or a model.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from connect.errors import UserError


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
    return jax.tree.map(lambda a, c, b: np.stack([np.asarray(a), np.asarray(c), np.asarray(b)]), theta_a, theta_c, theta_b)


def point(pl: Plane, nodes_3, uv) -> dict:
    """θ(u, v) = Σ_k w_k θ_k over ``[θ_A, θ_C, θ_B]`` with the weights of :func:`weights` (float64 on the host, float32 out)."""
    w_3 = weights(pl, np.asarray(uv, np.float64)[None])[0]
    return jax.tree.map(lambda x: np.tensordot(w_3, np.asarray(x, np.float64), axes=1).astype(np.float32), nodes_3)


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


def grid_path(theta_a, theta_b, theta_c, n_points: int = 11, margin: float = 0.2):
    """The plane's ``n_points × n_points`` grid as a path: ``(plane, u_U, v_V, weight_fn, corners_3, ts_G, abc_3)``.

    Grid point ``(i, j)`` is ``O + (i/(n−1))(P_u − O) + (j/(n−1))(P_v − O)`` over the nodes ``corners_3 =
    [O, P_u, P_v]`` — the grid's corner ``O = θ(u_0, v_0)`` and its neighbours along each axis at the far end,
    ``P_u = θ(u_{U−1}, v_0)``, ``P_v = θ(u_0, v_{V−1})`` — reached at ``t = ts_G[g]`` by ``weight_fn``
    (:func:`unit_grid`), whose weights depend on ``n`` only (one compiled program per grid size and model);
    ``abc_3 = [θ_A, θ_C, θ_B]`` is the one-bend chain through the three points (``t = 0, ½, 1``).
    """
    pl = plane(theta_a, theta_b, theta_c)
    u_U, v_V = grid(pl, n_points, margin)
    abc_3 = nodes(theta_a, theta_b, theta_c)
    corners = [point(pl, abc_3, uv) for uv in ((u_U[0], v_V[0]), (u_U[-1], v_V[0]), (u_U[0], v_V[-1]))]
    corners_3 = jax.tree.map(lambda *x: np.stack(x), *corners)
    n_grid = n_points * n_points
    return pl, u_U, v_V, unit_grid(n_points), corners_3, np.arange(n_grid, dtype=np.float32) / (n_grid - 1), abc_3


@functools.cache
def unit_grid(n: int):
    """Weights of ``[O, P_u, P_v]`` at grid point ``g = round(t·(n²−1))``, ``(i, j) = (g mod n, g div n)``:
    ``(1 − a − b, a, b)`` with ``a = i/(n−1)``, ``b = j/(n−1)``; one object per ``n`` (a static argument of the
    compiled loss, so every plane of that size reuses the program)."""

    def w(t):
        g = jnp.round(t * (n * n - 1)).astype(jnp.int32)
        a, b = (g % n).astype(jnp.float32) / (n - 1), (g // n).astype(jnp.float32) / (n - 1)
        return jnp.stack([1.0 - a - b, a, b])

    return w


def _diff(x, y):
    return [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))]


def _dot(xs, ys) -> float:
    return float(sum(np.vdot(a, b) for a, b in zip(xs, ys)))
