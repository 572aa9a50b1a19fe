"""Activation patterns (THEORY.md §C4): exact enumeration for d = 2 against brute force and the
region counts of a central hyperplane arrangement; sampling, completeness check, memory guard."""

import math

import numpy as np
import pytest
import scipy.optimize

from connect.errors import UserError
from theory import patterns


def _rows(d_PxN):
    return {tuple(r) for r in np.asarray(d_PxN, dtype=bool)}


def _brute_force_2d(x_Nx2, n_angles=200_000):
    """Patterns of a dense grid of gate angles (with an irrational offset, so no gate lies on a hyperplane)."""
    phi = np.linspace(0, 2 * np.pi, n_angles, endpoint=False) + 1 / math.pi * 1e-3
    d_GxN = (np.stack([np.cos(phi), np.sin(phi)], 1) @ x_Nx2.T >= 0)
    return {r for r in _rows(d_GxN) if any(r)}


def _has_all_negative_side(x_NxD):
    """Independent LP: is there a u with Xu < 0 (the all-zero pattern has a chamber)?"""
    res = scipy.optimize.linprog(np.zeros(x_NxD.shape[1]), A_ub=x_NxD, b_ub=-np.ones(len(x_NxD)),
                                 bounds=(None, None), method="highs")
    return res.status == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enumerate_2d_matches_brute_force_and_region_count(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(7, 2)) * rng.uniform(0.5, 2.0, size=(7, 1))
    enum = patterns.enumerate_2d(x)
    assert _rows(enum) == _brute_force_2d(x)
    # n lines through the origin in general position cut the plane into 2n chambers
    assert len(enum) == 2 * len(x) - _has_all_negative_side(x)


def test_enumerate_2d_degenerate_points():
    """Repeated, antipodal and zero points: zero-length arcs are skipped, the set still matches."""
    x = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.3, 0.9], [0.0, 0.0], [-0.6, -1.8]])
    assert _rows(patterns.enumerate_2d(x)) == _brute_force_2d(x)


def test_sample_is_subset_of_enumeration_and_deterministic():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 2))
    few = patterns.sample(x, 7, seed=5)
    assert _rows(few) <= _rows(patterns.enumerate_2d(x))
    assert np.array_equal(few, patterns.sample(x, 7, seed=5))
    assert few.any(axis=1).all()  # the all-zero pattern is dropped
    assert _rows(patterns.sample(x, 20_000, seed=0)) == _rows(patterns.enumerate_2d(x))


def test_sample_counts_cover_regions_in_3d():
    """Cover (1965): n central hyperplanes in general position in ℝ³ make 2·Σ_{k<3} C(n−1, k) regions."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3))
    regions = 2 * sum(math.comb(3, k) for k in range(3))
    found = patterns.sample(x, 100_000, seed=0)
    assert len(found) == regions - _has_all_negative_side(x)


def test_complete_reports_whether_more_gates_add_patterns():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    full = patterns.complete(x, 20_000, seed=0)
    assert full.exact and full.added == 0
    assert len(full.d_PxN) == 2 * sum(math.comb(5, k) for k in range(3)) - _has_all_negative_side(x)
    part = patterns.complete(x, 3, seed=0)
    assert not part.exact and part.added == len(part.d_PxN) - len(patterns.sample(x, 3, seed=0)) > 0
    two = patterns.complete(x[:, :2], 3, seed=0)
    assert two.exact and _rows(two.d_PxN) == _rows(patterns.enumerate_2d(x[:, :2]))


def test_memory_guard_names_count_memory_and_fix():
    x = np.random.default_rng(6).normal(size=(12, 3))
    with pytest.raises(UserError, match=r"activation patterns .* GB .* fewer gates"):
        patterns.sample(x, 5000, seed=0, max_patterns=10)
    with pytest.raises(UserError, match="3000000 activation patterns"):
        patterns.guard(3_000_000, 100, 10)
    patterns.guard(10, 12, 3)  # a small program passes
    assert patterns.program_bytes(2, 3, 4) == 2 * (4 * 3 * 4 + 3 + 4) * patterns._BYTES_PER_ENTRY
