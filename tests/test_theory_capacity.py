"""THEORY.md §B capacity bounds (§F.5): never exceeded inside the set, attained by an explicit network."""

import jax
import numpy as np
import pytest

from theory import capacity


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("kind", capacity.KINDS)
@pytest.mark.parametrize("width", [1, 4, 16])
def test_capacity_claim(kind, width):
    result = capacity.claim_capacity(kind, width, n_random=50)
    assert result.passed, result.line()


def test_capacity_growth_with_width():
    """At a fixed radius the box grows like m, the hybrid like √m and Muon-full not at all
    (THEORY.md §B). With Keller Jordan's shape factor the Muon radius itself is
    s/λ = √(m/d)/λ, so the spectral sets gain another √m: hybrid ∝ m, Muon-full ∝ √m."""
    from connect.constraints import ConstraintSet

    x = np.array([1.0, -2.0, 0.5])
    ratio = {k: capacity.bound(ConstraintSet(k, 0.5, ("W",)), 64, x) / capacity.bound(ConstraintSet(k, 0.5, ("W",)), 16, x)
             for k in capacity.KINDS}
    # widths 16 and 64 on d = 3 inputs: Muon's shape factor √(m/d) enters r_W for the spectral sets
    assert ratio["linf"] == pytest.approx(4.0)
    assert ratio["muon"] == pytest.approx(2.0 * 2.0)  # √m growth × shape factor √(64/16)
    assert ratio["muon_full"] == pytest.approx(2.0)  # shape factor only


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        capacity.claim_capacity("l2", 4)
