"""A certified loss barrier between the AdamW region's and the Muon region's zero-loss points of
the small-width example (THEORY.md §E) at width 2, and an explicit path bounding it from above
(§F.8; the barrier's disappearance at widths 3 and 4 is :mod:`theory.wide_paths`).

**Reduced landscape.** In quotient coordinates (:mod:`theory.example`, (E.1)) the residual is
``r(c, φ) = A(φ)c − y`` with ``A_ij(φ) = cos(θ_i − φ_j)_+``, and ``L = ‖r‖²/(2n)``. For a bound C
on the neuron magnitudes let

    g_C(φ) = min_{|c_j| ≤ C} L(c, φ),                                               (E.3)

a 2-variable box-constrained least squares: the minimiser of a convex quadratic over a box is
either the unconstrained minimiser (when it lies inside) or on an edge, where the 1-D
minimiser is the clipped unconstrained one; so ``g_C`` is the least of five candidates
(interior, ``c_1 = ±C``, ``c_2 = ±C``), computed in closed form and vectorised over a grid
(:func:`g_box`, JAX float64, runs batched on a GPU).

**Which paths it bounds.** Every path θ(t) with ``|c_j(t)| = |a_j|‖w_j‖₂ ≤ C`` has
``L(θ(t)) ≥ g_C(φ(t))``. The angle φ_j is continuous while ``w_j ≠ 0``; when ``w_j = 0`` then
``c_j = 0`` and ``L ≥ g_C(φ)`` for *every* φ_j, so near such times the whole circle
``{φ_j arbitrary}`` lies in an open sublevel set ``{g_C < ε}`` that contains the path: the
path's quotient image never leaves one connected component of ``{g_C < ε}`` when
``max_t L < ε`` (the open set contains a tube around the compact circle, and the path stays in
it nearby). C is picked to cover both sets' orbits (:func:`covering_c`): in the box orbit at
λ_A, ``|c_j| ≤ |a_j|·√d‖w_j‖∞ ≤ √d r_A² = 1.273``; in the Muon-full orbit
``|c_j| ≤ ‖a‖₂‖W‖₂ ≤ r_M² = 1.6``; hybrid ``|c_j| ≤ r_H·r_H = 1.2``; so C = 1.6.

**Per-cell lower bound.** On an N×N periodic grid of cells with centres φ⁰ and half-width
``h = π/N``, for φ in the closed cell and any ``|c_j| ≤ C``: ``cos(·)_+`` is 1-Lipschitz, so
``|f_i(c, φ) − f_i(c, φ⁰)| ≤ Σ_j |c_j||φ_j − φ⁰_j| ≤ m C h`` and
``‖r(c, φ)‖₂ ≥ ‖r(c, φ⁰)‖₂ − √n m C h ≥ ρ(φ⁰) − √n m C h`` with ``ρ = √(2n g_C)``:

    LB(cell) = (ρ(φ⁰) − √n · m C h)₊² / (2n)   ≤ min_{φ ∈ cell} g_C(φ)            (E.4)

(m = 2: THEORY.md's ``√n·2C·h``). Any curve in ``{g_C < ε}`` passes through cells with
``LB < ε`` only, consecutive ones 8-adjacent (a curve crossing a corner touches all four).

**Certified barrier.** The largest ε for which ``{LB < ε}`` (8-connected, periodic) separates
the cells of region A's zero-loss points (both neuron orders) from region B's: the bottleneck
value ``min_{cell paths A→B} max LB`` (:func:`separation_level`, bisection over the sorted LB
values with ``scipy.ndimage.label`` and wrap-around unions). Every path between the two
regions' zero-loss points with ``|c_j| ≤ C`` has ``max_t L − 0 ≥`` this value.

**Upper bound.** The grid minimax path of ``g_C`` (bottleneck path on the periodic grid, the
path in a minimum spanning tree, :func:`minimax_path`) mapped back to parameters: from the
exact zero-loss point A, alternately move φ at fixed c to the next cell centre and c at fixed
φ to ``argmin g_C`` there (L is convex in c), ending at the exact zero-loss point B; every
point is a balanced network ``w_j = √|c_j| e(φ_j)``, ``a_j = sign(c_j)√|c_j|``, a continuous path
of parameters with ``|c_j| ≤ C``, evaluated densely by the ordinary forward pass
(:func:`connect.models.relu.apply`, :func:`theory.example.path_losses`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.csgraph

from theory import example as ex


def covering_c(d: int = 2) -> float:
    """The least C bounding ``|c_j|`` on the box orbit at λ_A (``√d r_A²``), the Muon-full orbit
    at λ_M (``r_M²``) and the hybrid orbit at λ_H (``r_H²``) together (module docstring)."""
    return float(max(np.sqrt(d) / ex.LAM_ADAMW**2, 1 / ex.LAM_MUON_FULL**2, 1 / ex.LAM_HYBRID**2))


def centres(n_grid: int) -> np.ndarray:
    """Cell centres ``φ_k = −π + 2πk/N``, k = 0..N−1 (cell k is ``[φ_k − h, φ_k + h]``, h = π/N)."""
    return -np.pi + 2 * np.pi * np.arange(n_grid) / n_grid


def cell_of(phi, n_grid: int) -> np.ndarray:
    """Index of the cell containing angle(s) φ (nearest centre, periodic)."""
    return np.mod(np.rint((np.asarray(phi) + np.pi) * n_grid / (2 * np.pi)).astype(int), n_grid)


def g_box(phi_Gx2, c_max: float, theta_N, y_N):
    """(E.3) ``g_C(φ)`` and its minimiser ``c``: shapes ``(G,)`` and ``(G, 2)``, float64 JAX,
    the least of the interior candidate (when the 2×2 normal equations are well posed and it is
    in the box) and the clipped 1-D minimisers on the four edges, each scored by its residual."""
    with jax.enable_x64(True):
        return _g_box(jnp.asarray(phi_Gx2, jnp.float64), jnp.float64(c_max), jnp.asarray(theta_N, jnp.float64),
                      jnp.asarray(y_N, jnp.float64))


@jax.jit
def _g_box(phi_Gx2, c_max, theta_N, y_N):
    a_GxNx2 = jnp.maximum(jnp.cos(theta_N[None, :, None] - phi_Gx2[:, None, :]), 0.0)
    a1, a2 = a_GxNx2[..., 0], a_GxNx2[..., 1]
    g11, g22, g12 = (a1 * a1).sum(-1), (a2 * a2).sum(-1), (a1 * a2).sum(-1)
    b1, b2 = (a1 * y_N[None, :]).sum(-1), (a2 * y_N[None, :]).sum(-1)
    det = g11 * g22 - g12**2
    ok = det > 0  # a feasible candidate can only lower the min; near-parallel columns leave it to the edges
    safe = jnp.where(ok, det, 1.0)
    c_int = jnp.stack([(g22 * b1 - g12 * b2) / safe, (g11 * b2 - g12 * b1) / safe], -1)
    inside = ok & jnp.all(jnp.abs(c_int) <= c_max, axis=-1)
    cands = [c_int]
    for s in (1.0, -1.0):
        c1 = s * c_max
        cands.append(jnp.stack([jnp.full_like(g11, c1), _clip_ratio(b2 - g12 * c1, g22, c_max)], -1))
        cands.append(jnp.stack([_clip_ratio(b1 - g12 * c1, g11, c_max), jnp.full_like(g11, c1)], -1))
    c_Gx5x2 = jnp.stack(cands, 1)
    r = a1[:, None, :] * c_Gx5x2[..., 0:1] + a2[:, None, :] * c_Gx5x2[..., 1:2] - y_N[None, None, :]
    val = 0.5 * jnp.mean(r**2, -1)
    val = val.at[:, 0].set(jnp.where(inside, val[:, 0], jnp.inf))
    k = jnp.argmin(val, axis=1)
    return jnp.take_along_axis(val, k[:, None], 1)[:, 0], jnp.take_along_axis(c_Gx5x2, k[:, None, None], 1)[:, 0]


def _clip_ratio(num, den, c_max):
    return jnp.clip(num / jnp.where(den > 0, den, 1.0), -c_max, c_max) * (den > 0)


def g_grid(n_grid: int, c_max: float, theta_N=None, y_N=None, max_batch: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """``g_C`` and its minimiser on the N×N grid of cell centres: ``(N, N)`` and ``(N, N, 2)``,
    evaluated in blocks of rows of at most ``max_batch`` points (bounded memory, one compilation)."""
    theta_N, y_N = _theta_y(theta_N, y_N)
    phi = centres(n_grid)
    rows = max(1, min(n_grid, max_batch // n_grid))
    g, c = np.empty((n_grid, n_grid)), np.empty((n_grid, n_grid, 2))
    for start in range(0, n_grid, rows):
        idx = np.arange(start, start + rows) % n_grid  # the last block wraps round: same shape, no recompilation
        p1, p2 = np.meshgrid(phi[idx], phi, indexing="ij")
        gb, cb = g_box(np.stack([p1.ravel(), p2.ravel()], -1), c_max, theta_N, y_N)
        g[idx], c[idx] = np.asarray(gb).reshape(rows, n_grid), np.asarray(cb).reshape(rows, n_grid, 2)
    return g, c


def lower_bound(g_NxN: np.ndarray, c_max: float, n_points: int, width: int = 2) -> np.ndarray:
    """(E.4) ``LB = (√(2n g) − √n·m C h)₊² / (2n)`` per cell, ``h = π/N``."""
    h = np.pi / g_NxN.shape[0]
    rho = np.sqrt(2 * n_points * np.maximum(g_NxN, 0.0))
    return np.maximum(rho - np.sqrt(n_points) * width * c_max * h, 0.0) ** 2 / (2 * n_points)


_EIGHT = np.ones((3, 3), dtype=bool)


def periodic_components(mask_NxN: np.ndarray) -> np.ndarray:
    """Component labels (0 = outside) of a boolean grid, 8-connected on the torus: labels of
    ``scipy.ndimage.label`` united across the wrapping rows and columns (diagonals included)."""
    lab, count = scipy.ndimage.label(mask_NxN, structure=_EIGHT)
    n = lab.shape[0]
    idx = np.arange(n)
    pairs = [np.stack([lab[0, idx], lab[n - 1, (idx + dj) % n]], 1) for dj in (-1, 0, 1)]
    pairs += [np.stack([lab[idx, 0], lab[(idx + di) % n, n - 1]], 1) for di in (-1, 0, 1)]
    pairs = np.concatenate(pairs)
    pairs = np.unique(pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)], axis=0)
    parent = np.arange(count + 1)

    def find(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for u, v in pairs:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([find(u) for u in range(count + 1)])
    return roots[lab]


def _joined(values_NxN, level, cells_a, cells_b) -> bool:
    lab = periodic_components(values_NxN <= level)
    la = {int(lab[i, j]) for i, j in cells_a} - {0}
    return bool(la & ({int(lab[i, j]) for i, j in cells_b} - {0}))


def separation_level(values_NxN: np.ndarray, cells_a, cells_b) -> float:
    """The largest ε for which ``{values < ε}`` (8-connected, periodic) separates every cell of
    ``cells_a`` from every cell of ``cells_b``: the least grid value v with ``{values ≤ v}``
    joining them, by bisection over the sorted distinct values."""
    levels = np.unique(values_NxN)
    lo, hi = 0, len(levels) - 1  # joined at levels[hi] (everything)
    while lo < hi:
        mid = (lo + hi) // 2
        if _joined(values_NxN, levels[mid], cells_a, cells_b):
            hi = mid
        else:
            lo = mid + 1
    return float(levels[lo])


def minimax_path(values_NxN: np.ndarray, cells_a, cells_b) -> tuple[float, list[tuple[int, int]]]:
    """Bottleneck path on the periodic 8-connected grid: ``min over cell paths from a cell of
    cells_a to one of cells_b of max values``, and the path (list of cells). The path between two
    nodes in a minimum spanning tree (edge weight = max of its two cells) is a bottleneck path."""
    n = values_NxN.shape[0]
    if n < 4:
        raise ValueError("minimax_path needs a grid of at least 4×4 cells")
    flat = values_NxN.ravel()
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    u = (i * n + j).ravel()
    rows, cols = [], []
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
        rows.append(u)
        cols.append((((i + di) % n) * n + (j + dj) % n).ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    weight = np.maximum(flat[rows], flat[cols]) - flat.min() + 1.0  # > 0: csgraph drops zero weights
    tree = scipy.sparse.csgraph.minimum_spanning_tree(scipy.sparse.coo_matrix((weight, (rows, cols)), shape=(n * n, n * n)))
    best = (np.inf, [])
    for a in cells_a:
        src = int(a[0] * n + a[1])
        _, pred = scipy.sparse.csgraph.breadth_first_order(tree, src, directed=False, return_predecessors=True)
        for b in cells_b:
            node, path = int(b[0] * n + b[1]), []
            while node != src and node >= 0:
                path.append(node)
                node = int(pred[node])
            path.append(src)
            val = float(flat[path].max())
            if val < best[0]:
                best = (val, [divmod(p, n) for p in path[::-1]])
    return best


def _theta_y(theta_N=None, y_N=None):
    if theta_N is None:
        return np.deg2rad(np.asarray(ex.ANGLES_DEG)), np.asarray(ex.TARGETS)
    return np.asarray(theta_N, dtype=np.float64), np.asarray(y_N, dtype=np.float64)


def region_cells(configs: list[dict], n_grid: int) -> list[tuple[int, int]]:
    """Cells of the given zero-loss configurations on the (φ₁, φ₂) torus, both neuron orders."""
    out = []
    for k in configs:
        i, j = cell_of(k["phi"], n_grid)
        out += [(int(i), int(j)), (int(j), int(i))]
    return sorted(set(out))


def _wrap(x):
    return np.mod(x + np.pi, 2 * np.pi) - np.pi


def quotient_path(cells, c_grid_NxNx2, config_a: dict, config_b: dict, n_sub: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Dense quotient path ``(c_Tx2, φ_Tx2)`` of the upper bound (module docstring): from config A
    through the cell centres of ``cells`` (c = argmin g_C there) to config B, alternating a φ-move
    at fixed c and a c-move at fixed φ, each sampled at ``n_sub`` points. The first and last
    points are the two configurations exactly (neuron order matched to the end cells)."""
    n = c_grid_NxNx2.shape[0]
    phi_c = centres(n)
    c_a, phi_a = _oriented(config_a, cells[0], n)
    c_b, phi_b = _oriented(config_b, cells[-1], n)
    nodes = [(c_a, phi_a)] + [(c_grid_NxNx2[i, j], np.array([phi_c[i], phi_c[j]])) for i, j in cells] + [(c_b, phi_b)]
    cs, ps = [c_a[None]], [phi_a[None]]
    s = np.arange(1, n_sub + 1)[:, None] / n_sub
    cur_c, cur_p = c_a, phi_a
    for nxt_c, nxt_p in nodes[1:]:
        step = _wrap(nxt_p - cur_p)
        ps.append(cur_p + s * step)
        cs.append(np.broadcast_to(cur_c, (n_sub, 2)))
        cur_p = cur_p + step
        ps.append(np.broadcast_to(cur_p, (n_sub, 2)))
        cs.append(cur_c + s * (nxt_c - cur_c))
        cur_c = nxt_c
    c_T, phi_T = np.concatenate(cs), _wrap(np.concatenate(ps))
    c_T[-1], phi_T[-1] = c_b, phi_b  # exact endpoint (the sum of steps equals phi_b up to 2π and round-off)
    return c_T, phi_T


def _oriented(config, cell, n):
    c, phi = np.asarray(config["c"]), np.asarray(config["phi"])
    if tuple(cell_of(phi, n)) != tuple(cell):
        c, phi = c[::-1], phi[::-1]
    if tuple(cell_of(phi, n)) != tuple(cell):
        raise ValueError("the path does not start or end at the configuration's cell")
    return c.copy(), phi.copy()


def certify(n_grid: int, c_max: float | None = None, zero=None, n_sub: int = 16) -> dict:
    """The certificate at grid size N between the box region (A) and the Muon-full region (B):
    certified lower bound (E.4 + separation), grid minimax of ``g_C``, and the upper bound of the
    dense parameter path, with the path itself and timings."""
    c_max = covering_c() if c_max is None else float(c_max)
    zero = ex.zero_loss_configurations() if zero is None else zero
    configs, reg = zero["configs"], ex.regions(zero["configs"])
    conf_a = [k for k, r in zip(configs, reg) if r["in_box"]]
    conf_b = [k for k, r in zip(configs, reg) if r["in_muon_full"]]
    if not conf_a or not conf_b:
        raise ValueError("each region needs a zero-loss configuration for a barrier between them")
    x, y = ex.data()
    t0 = time.perf_counter()
    g, c_grid = g_grid(n_grid, c_max)
    t1 = time.perf_counter()
    lb = lower_bound(g, c_max, len(y))
    cells_a, cells_b = region_cells(conf_a, n_grid), region_cells(conf_b, n_grid)
    lower = separation_level(lb, cells_a, cells_b)
    t2 = time.perf_counter()
    grid_minimax, cells = minimax_path(g, cells_a, cells_b)
    t3 = time.perf_counter()
    end_a = next(k for k in conf_a if tuple(cells[0]) in region_cells([k], n_grid))
    end_b = next(k for k in conf_b if tuple(cells[-1]) in region_cells([k], n_grid))
    c_T, phi_T = quotient_path(cells, c_grid, end_a, end_b, n_sub)
    params_T = ex.network(c_T, phi_T)
    loss_T = ex.path_losses(params_T, x, y)
    t4 = time.perf_counter()
    upper = float(loss_T.max() - max(loss_T[0], loss_T[-1]))
    return {"n_grid": n_grid, "c_max": c_max, "lower": lower, "grid_minimax": grid_minimax, "upper": upper,
            "path_cells": len(cells), "path_points": len(loss_T), "end_losses": (float(loss_T[0]), float(loss_T[-1])),
            "path_max_abs_c": float(np.abs(c_T).max()), "g": g, "lb": lb, "cells_a": cells_a, "cells_b": cells_b,
            "cells": cells, "c_T": c_T, "phi_T": phi_T, "params_T": params_T, "loss_T": loss_T,
            "configs": (end_a, end_b),
            "seconds": {"grid": t1 - t0, "separation": t2 - t1, "minimax": t3 - t2, "path": t4 - t3}}


def random_cell_check(g_NxN: np.ndarray, c_max: float, n_samples: int = 2000, seed: int = 0) -> dict:
    """Numerical check of (E.4): at random points φ of random cells and random ``|c_j| ≤ C``
    (and at ``argmin g_C(φ)``), ``L(c, φ) ≥ LB(cell)``. Returns the number of violations and the
    smallest slack ``L − LB``."""
    n_grid = g_NxN.shape[0]
    theta, y = _theta_y()
    lb = lower_bound(g_NxN, c_max, len(y))
    rng = np.random.default_rng(seed)
    cell = rng.integers(0, n_grid, size=(n_samples, 2))
    phi = centres(n_grid)[cell] + rng.uniform(-np.pi / n_grid, np.pi / n_grid, size=(n_samples, 2))
    c = rng.uniform(-c_max, c_max, size=(n_samples, 2))
    g_min = np.asarray(g_box(phi, c_max, theta, y)[0])
    lo = np.minimum(ex.loss(ex.quotient_forward(c, phi, theta), y), g_min)
    slack = lo - lb[cell[:, 0], cell[:, 1]]
    return {"violations": int((slack < -1e-15).sum()), "min_slack": float(slack.min())}
