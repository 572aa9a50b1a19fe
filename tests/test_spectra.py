"""Spectral summaries against numpy's SVD and the textbook formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import spectra

SHAPES = [(6, 6), (9, 4), (4, 9), (7, 5), (5, 7), (12, 3), (3, 12), (8, 1), (1, 8)]

# One compiled program per shape (eager mode would compile every primitive per shape).
_summarize = jax.jit(spectra.summarize)


def _matrix(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # uneven column scales so the summaries are not all near their random-matrix values
    return (rng.standard_normal(shape) * np.geomspace(1.0, 0.05, shape[1])[None, :]).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_summaries_against_numpy(shape):
    w = _matrix(shape)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    out = _summarize(jnp.asarray(w))
    assert set(out) == {"singular_values", *spectra.SUMMARIES}
    assert out["singular_values"].shape == (min(shape),)
    np.testing.assert_allclose(out["singular_values"], s, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(np.asarray(out["singular_values"])) <= 0)  # descending

    fro2, spec2 = np.sum(w.astype(np.float64) ** 2), np.linalg.norm(w.astype(np.float64), 2) ** 2
    np.testing.assert_allclose(out["stable_rank"], fro2 / spec2, rtol=1e-5)
    np.testing.assert_allclose(out["spectral_norm"], np.sqrt(spec2), rtol=1e-5)
    np.testing.assert_allclose(out["condition_number"], s[0] / np.percentile(s, 5), rtol=1e-4)
    p = s / s.sum()
    np.testing.assert_allclose(out["effective_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-5)
    np.testing.assert_allclose(out["nuclear_norm"], np.linalg.norm(w.astype(np.float64), "nuc"), rtol=1e-5)
    assert float(out["max_abs"]) == float(np.max(np.abs(w)))


@pytest.mark.parametrize("shape", [(24, 6), (6, 24), (6, 6)])
def test_singular_values_of_rank_deficient_and_zero_matrices(shape):
    """QR first (24 × 6 and its transpose) or not: a rank-2 matrix's trailing values are ~0, a zero matrix's all 0."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((shape[0], 2)) @ rng.standard_normal((2, shape[1]))).astype(np.float32)
    got = np.asarray(jax.jit(spectra.singular_values)(jnp.asarray(w)))
    want = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(got, want, atol=1e-5 * want[0])
    assert np.all(got >= 0) and np.all(np.diff(got) <= 0)
    np.testing.assert_array_equal(jax.jit(spectra.singular_values)(jnp.zeros(shape, jnp.float32)), np.zeros(min(shape)))


def test_condition_number_uses_the_5th_percentile_not_the_minimum():
    s = jnp.array([10.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.01])
    want = 10.0 / np.percentile(np.asarray(s), 5)  # between 0.01 and 0.125, by linear interpolation
    np.testing.assert_allclose(spectra.condition_number(s), want, rtol=1e-6)
    assert float(spectra.condition_number(s)) < 10.0 / 0.01
    np.testing.assert_allclose(spectra.condition_number(s, percentile=0.0), 1000.0, rtol=1e-5)


def test_effective_rank_of_identity_and_rank_one():
    for n in (4, 6):
        out = _summarize(jnp.eye(n))
        np.testing.assert_allclose(out["effective_rank"], n, rtol=1e-6)
        np.testing.assert_allclose(out["stable_rank"], n, rtol=1e-6)
        np.testing.assert_allclose(out["condition_number"], 1.0, rtol=1e-6)
    u, v = np.arange(1.0, 10.0, dtype=np.float32), np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    out = _summarize(jnp.asarray(np.outer(u, v)))
    np.testing.assert_allclose(out["effective_rank"], 1.0, atol=1e-4)
    np.testing.assert_allclose(out["stable_rank"], 1.0, atol=1e-5)
    np.testing.assert_allclose(out["spectral_norm"], np.linalg.norm(u) * np.linalg.norm(v), rtol=1e-5)
    # exact zeros in the spectrum contribute nothing (no 0·log 0 = NaN)
    np.testing.assert_allclose(spectra.effective_rank(jnp.array([2.0, 2.0, 0.0])), 2.0, rtol=1e-6)


def test_batched_summaries_match_one_by_one():
    ws = jnp.stack([jnp.asarray(_matrix((5, 3), seed)) for seed in range(3)])
    batched = jax.jit(jax.vmap(spectra.summarize))(ws)
    for i in range(3):
        one = _summarize(ws[i])
        for k in one:
            np.testing.assert_allclose(batched[k][i], one[k], rtol=1e-5, atol=1e-6)


def test_summarize_stack_equals_one_by_one():
    ws = jnp.stack([jnp.stack([jnp.asarray(_matrix((5, 3), 3 * i + j)) for j in range(3)]) for i in range(2)])  # (2, 3, 5, 3)
    out = jax.jit(spectra.summarize_stack)(ws)
    assert out["singular_values"].shape == (2, 3, 3) and out["stable_rank"].shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one = _summarize(ws[i, j])
            for k in one:
                np.testing.assert_allclose(out[k][i, j], one[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["linf", "muon", "muon_full", "l2", "none"])
def test_constraint_relative_equals_the_constraint_sets_norm(kind):
    """From the summary alone, as ConstraintSet.relative_norm computes it on the matrix itself."""
    from connect.constraints import ConstraintSet

    for shape in SHAPES:
        w = jnp.asarray(_matrix(shape, 5))
        s = _summarize(w)
        for named in (True, False):
            cs = ConstraintSet(kind, 0.7, ("W",) if named else ())
            want = float(cs.relative_norm({"W": w}))
            got = float(spectra.constraint_relative(s, cs, "W", shape))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
            if kind != "none":
                assert got > 0


def test_medians_over_matrices():
    rng = np.random.default_rng(0)
    per = {f"m{i}": {"a": rng.normal(size=4), "b": rng.normal(size=4)} for i in range(5)}
    out = spectra.medians(per, ["a"])
    assert set(out) == {"a"}
    np.testing.assert_allclose(out["a"], np.median(np.stack([per[k]["a"] for k in per]), axis=0), rtol=1e-6)
