"""The loss of a GPT-2 on the plane through three parameter points (:mod:`connect.planes` for the geometry)."""

from __future__ import annotations

import numpy as np

from connect import planes
from connect.lm import paths as lm_paths
from connect.models import LMConfig


def plane_losses(theta_a, theta_b, theta_c, model_cfg: LMConfig, tokens: np.ndarray, *, n_points: int = 11,
                 margin: float = 0.2, **kw) -> dict:
    """The loss on the ``n_points × n_points`` grid of :func:`grid`, plus the three points' own coordinates
    and losses: ``{"u", "v", "loss" (V, U), "points" (3, 2), "point_loss" (3,)}`` (lists, ready for JSON).

    The grid is the path-loss machinery of :func:`connect.lm.paths.path_losses` over the grid path of
    :func:`connect.planes.grid_path`; the three points are the one-bend chain ``[θ_A, θ_C, θ_B]`` at
    ``t = 0, ½, 1``. ``kw``: ``batch_size``, ``context``, ``max_batches``, ``mesh``, ``t_chunk``, ``compute_dtype``.
    """
    pl, u_U, v_V, weight_fn, corners_3, ts_G, abc_3 = planes.grid_path(theta_a, theta_b, theta_c, n_points, margin)
    loss_G = lm_paths.path_losses(weight_fn, corners_3, model_cfg, tokens, ts_G, **kw)
    loss_3 = lm_paths.path_losses("polychain", abc_3, model_cfg, tokens, np.array([0.0, 0.5, 1.0], np.float32), **kw)
    return {"u": u_U.tolist(), "v": v_V.tolist(), "loss": loss_G.reshape(n_points, n_points).tolist(),
            "points": pl.points_3x2().tolist(), "point_loss": loss_3[[0, 2, 1]].tolist()}  # A, B, C
