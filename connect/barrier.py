"""Loss barriers along a path (Zhang et al., arXiv 2605.09991, eq. (1); Frankle et al. 2020).

On a grid ``0 = t_0 < … < t_n = 1`` with losses ``L_i = L(θ(t_i))``:

* ``barrier = max_i [L_i − ((1 − t_i) L_0 + t_i L_n)]`` — height above the chord
  between the endpoint losses (the seed paper's definition);
* ``max_barrier = max_i L_i − max(L_0, L_n)`` — height above the worse endpoint.

Both are 0 for a path whose loss never rises above the reference, and the first is
exactly 0 for a constant path. The same formulas apply to error rates.
"""

from __future__ import annotations

import numpy as np


def grid(n_points: int = 11) -> np.ndarray:
    """``n_points`` evenly spaced t in [0, 1] (default 0, 0.1, …, 1)."""
    if n_points < 2:
        raise ValueError(f"a t-grid needs at least 2 points, got {n_points}")
    return np.linspace(0.0, 1.0, n_points, dtype=np.float32)


def refine(ts_T: np.ndarray, values_T: np.ndarray, n_extra: int) -> np.ndarray:
    """``n_extra`` extra points spread over the two grid intervals around the grid's
    maximum of ``values − chord`` (for locating the peak more precisely); a point may
    repeat a grid point, which leaves every barrier unchanged."""
    ts_T, values_T = _sorted(ts_T, values_T)
    i = int(np.argmax(values_T - chord(ts_T, values_T)))
    lo, hi = ts_T[max(i - 1, 0)], ts_T[min(i + 1, len(ts_T) - 1)]
    return np.linspace(lo, hi, n_extra + 2, dtype=np.float32)[1:-1]


def chord(ts_T: np.ndarray, values_T: np.ndarray) -> np.ndarray:
    """``(1 − t) L(0) + t L(1)`` with the endpoints taken at the grid's first and last point."""
    ts_T, values_T = np.asarray(ts_T, dtype=np.float64), np.asarray(values_T, dtype=np.float64)
    order = np.argsort(ts_T)
    ts_T, values_T = ts_T[order], values_T[order]
    if ts_T[0] != 0.0 or ts_T[-1] != 1.0:
        raise ValueError("the t-grid must contain both endpoints 0 and 1")
    return (1 - ts_T) * values_T[0] + ts_T * values_T[-1]


def barrier(ts_T, values_T) -> float:
    """``max_t [L(t) − ((1 − t) L(0) + t L(1))]`` over the grid (≥ 0: the endpoints give 0)."""
    ts_T, values_T = _sorted(ts_T, values_T)
    return float(np.max(values_T - chord(ts_T, values_T)))


def max_barrier(ts_T, values_T) -> float:
    """``max_t L(t) − max(L(0), L(1))`` over the grid (≥ 0)."""
    ts_T, values_T = _sorted(ts_T, values_T)
    return float(np.max(values_T) - max(values_T[0], values_T[-1]))


def curve(ts_T, values_T) -> dict:
    """The one record of a curve along a path, as every study writes it: ``{"t", "loss", "barrier",
    "max_barrier"}`` (lists and floats, ready for JSON; the values are losses or error rates)."""
    ts_T, values_T = np.asarray(ts_T), np.asarray(values_T)
    return {"t": ts_T.tolist(), "loss": values_T.tolist(), "barrier": barrier(ts_T, values_T),
            "max_barrier": max_barrier(ts_T, values_T)}


def _sorted(ts_T, values_T):
    """``(t, values)`` as float64 sorted by t; the grid must hold both endpoints 0 and 1."""
    ts_T, values_T = np.asarray(ts_T, dtype=np.float64), np.asarray(values_T, dtype=np.float64)
    if ts_T.ndim != 1 or ts_T.shape != values_T.shape or len(ts_T) < 2:
        raise ValueError(f"t-grid and values must be 1-D of the same length ≥ 2, got shapes {ts_T.shape} and {values_T.shape}")
    order = np.argsort(ts_T)
    ts_T, values_T = ts_T[order], values_T[order]
    if ts_T[0] != 0.0 or ts_T[-1] != 1.0:
        raise ValueError("the t-grid must contain both endpoints 0 and 1")
    return ts_T, values_T
