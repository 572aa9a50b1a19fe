"""Optimizer registry: every optimizer minimises a quadratic without recompiling; decoupled
weight decay confines AdamW/Lion/sign descent to the ℓ∞ ball 1/λ and Muon's matrices to
the spectral ball s/λ; Newton–Schulz orthogonalisation; constraint sets; errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import constraints, optimizers
from connect.errors import UserError
from connect.twolayer import training


def _quadratic(target: dict):
    def loss(params):
        return 0.5 * sum(jnp.sum((params[k] - target[k]) ** 2) for k in sorted(params))

    return loss


def _run(opt, loss, params, steps: int):
    """``steps`` optimizer steps in one compiled ``lax.scan``; returns the final params."""
    step = training.make_step(loss, opt)

    @jax.jit
    def go(params):
        def body(carry, _):
            p, s, _loss = step(*carry)
            return (p, s), None

        (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return params

    return go(params)


_TARGET = {"W": jax.random.normal(jax.random.key(0), (4, 3)), "a": jax.random.normal(jax.random.key(1), (3,))}


def test_registry_names():
    assert set(optimizers.names()) >= {"sgd", "momentum", "adam", "adamw", "lion", "signsgd", "muon"}


@pytest.mark.parametrize("name", optimizers.names())
def test_minimises_a_quadratic_without_recompiling(name):
    loss = _quadratic(_TARGET)
    opt = optimizers.make(name, 0.02, 0.0, matrices=("W",))
    params = jax.tree.map(jnp.zeros_like, _TARGET)
    state = opt.init(params)
    step = jax.jit(training.make_step(loss, opt))
    loss0 = float(loss(params))
    for i in range(300):
        params, state, reported = step(params, state)
        if i == 1:
            assert step._cache_size() == 1, f"{name}: the step recompiled on its second call"
        if i == 0:
            assert float(reported) == pytest.approx(loss0)  # the loss before the step
    assert step._cache_size() == 1
    assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(lambda x: (x.shape, x.dtype), _TARGET)
    assert float(loss(params)) < loss0 / 1000, f"{name} did not minimise the quadratic"


# ---- implicit constraint sets -------------------------------------------------------

LAM = 2.0


def _far_target(key) -> dict:
    """Targets mostly far outside the ℓ∞ ball 1/λ (|T| ∈ [5/λ, 10/λ]); a, a few inside it."""
    k_s, k_m = jax.random.split(key)
    sign = jax.random.choice(k_s, jnp.array([-1.0, 1.0]), (4, 3))
    return {
        "W": sign * jax.random.uniform(k_m, (4, 3), minval=5.0, maxval=10.0) / LAM,
        "a": jnp.array([0.3, -0.2, 8.0]) / LAM,
    }


@pytest.mark.parametrize("name", ["adamw", "lion", "signsgd"])
def test_decoupled_decay_confines_to_the_linf_ball(name):
    target = _far_target(jax.random.key(3))
    assert float(jnp.min(jnp.abs(target["W"]))) >= 5.0 / LAM  # the unconstrained minimiser is outside
    params = _run(optimizers.make(name, 0.01, LAM), _quadratic(target), jax.tree.map(jnp.zeros_like, target), 1500)
    max_abs = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(params))
    assert max_abs <= 1.01 / LAM
    assert max_abs >= 0.99 / LAM  # the bound is active, not just satisfied
    # entries whose target is inside the ball are not pushed to the boundary
    assert abs(float(params["a"][1])) < 0.5 / LAM
    cset = optimizers.constraint(name, LAM)
    assert cset.kind == "linf" and cset.linf_radius == pytest.approx(1 / LAM)
    assert cset.contains(params, rtol=0.01)
    assert float(cset.relative_norm(params)) == pytest.approx(LAM * max_abs, rel=1e-6)


def test_coupled_l2_adam_is_not_confined():
    """Adam with coupled L2 decay minimises L + (λ/2)‖θ‖²: for these targets, |θ| = |T|/(1 + λ) > 1/λ."""
    target = _far_target(jax.random.key(3))
    params = _run(optimizers.make("adam", 0.01, LAM), _quadratic(target), jax.tree.map(jnp.zeros_like, target), 1500)
    np.testing.assert_allclose(params["W"], target["W"] / (1 + LAM), rtol=0.02)
    assert not optimizers.constraint("adamw", LAM).contains(params)
    assert optimizers.constraint("adam", LAM).contains(params)  # kind "none" contains everything


@pytest.mark.parametrize("name, tol", [("muon", 0.02), ("muon_exact", 1e-3)])  # THEORY.md §F.2: exact msign to 1e-3
def test_muon_confines_matrices_to_the_spectral_ball(name, tol):
    shape = (6, 3)  # tall: shape factor s = sqrt(2)
    s = constraints.muon_shape_factor(shape)
    assert s == pytest.approx(math.sqrt(2.0))
    k_u, k_v = jax.random.split(jax.random.key(4))
    u, _ = jnp.linalg.qr(jax.random.normal(k_u, shape))
    v, _ = jnp.linalg.qr(jax.random.normal(k_v, (3, 3)))
    sigma = jnp.array([10.0, 6.0, 0.3]) * s / LAM  # two singular values far outside the ball s/λ
    target = {"W": (u * sigma[None, :]) @ v.T, "a": jnp.array([0.3, -0.2, 8.0]) / LAM}
    opt = optimizers.make(name, 0.01, LAM, matrices=("W",))
    params = _run(opt, _quadratic(target), jax.tree.map(jnp.zeros_like, target), 1500)

    sv = np.linalg.svd(np.asarray(params["W"]), compute_uv=False)
    assert sv[0] <= (1 + tol) * s / LAM
    assert sv[1] >= 0.98 * s / LAM  # the bound is active
    assert sv[2] < 0.5 * s / LAM  # a direction inside the ball is not pushed out
    # the vector a is updated by AdamW: it ends on the ℓ∞ ball 1/λ
    assert float(jnp.max(jnp.abs(params["a"]))) <= 1.01 / LAM
    assert float(jnp.max(jnp.abs(params["a"]))) >= 0.99 / LAM
    cset = optimizers.constraint(name, LAM, ("W",))
    assert cset.kind == "muon" and cset.spectral_radius(shape) == pytest.approx(s / LAM)
    assert cset.contains(params, rtol=0.02)
    np.testing.assert_allclose(cset.relative_norm(params), max(LAM * sv[0] / s, LAM * float(jnp.max(jnp.abs(params["a"])))), rtol=1e-5)


def test_muon_full_first_update_is_msign_of_each_array():
    """Muon-full's first step (zero momentum, so the Nesterov direction is g): W moves by
    ``−η(U Vᵀ + λW)`` and every other array v by ``−η(g_v/‖g_v‖₂ + λv)`` — the msign of a row —
    each array on its own (numpy SVD and norms, float64)."""
    lr, lam = 0.05, 0.7
    rng = np.random.default_rng(6)
    opt = optimizers.make("muon_full", lr, lam, ("W",))
    with jax.enable_x64(True):
        p = {"W": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.asarray(rng.normal(size=5)), "a": jnp.asarray(rng.normal(size=5))}
        g = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in p.items()}
        upd, _ = opt.update(g, opt.init(p), p)
    gw = np.asarray(g["W"])
    u, _, vt = np.linalg.svd(gw, full_matrices=False)
    s = constraints.muon_shape_factor(gw.shape)
    assert s == pytest.approx(math.sqrt(5 / 3))
    np.testing.assert_allclose(np.asarray(upd["W"]), -lr * (s * u @ vt + lam * np.asarray(p["W"])), atol=1e-12)
    for k in ("a", "b"):
        gk = np.asarray(g[k])
        np.testing.assert_allclose(np.asarray(upd[k]), -lr * (gk / np.linalg.norm(gk) + lam * np.asarray(p[k])), atol=1e-12)


def test_muon_full_keeps_its_ball_and_reaches_it():
    """THEORY.md §B [R]: every Muon-full direction has unit dual norm (``‖U Vᵀ‖₂ = 1``,
    ``‖g/‖g‖‖₂ = 1``), so with ηλ ≤ 1 the set ``‖W‖₂ ≤ s/λ``, ``‖a‖₂ ≤ 1/λ`` is forward-invariant:
    started inside, no iterate leaves it (float64, round-off); with targets far outside, the
    iterates end on its boundary."""
    target = {"W": 10.0 * jax.random.normal(jax.random.key(4), (6, 3)) / LAM, "a": 10.0 * jax.random.normal(jax.random.key(5), (3,)) / LAM}
    opt = optimizers.make("muon_full", 0.01, LAM, ("W",))
    cset = optimizers.constraint("muon_full", LAM, ("W",))
    with jax.enable_x64(True):
        tgt = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), target)
        step = training.make_step(_quadratic(tgt), opt)

        @jax.jit
        def go(params):
            def body(carry, _):
                p, s, _loss = step(*carry)
                return (p, s), cset.relative_norm(p)

            (params, _), rel_T = jax.lax.scan(body, (params, opt.init(params)), None, length=1500)
            return params, rel_T

        start = jax.tree.map(lambda x: 0.1 * x / (10.0 * float(cset.relative_norm(tgt))), tgt)  # relative norm 0.01
        params, rel_T = go(start)
    assert float(np.asarray(rel_T).max()) <= 1 + 1e-12
    sv = np.linalg.svd(np.asarray(params["W"]), compute_uv=False)
    s = constraints.muon_shape_factor((6, 3))
    assert sv[0] * LAM / s == pytest.approx(1.0, abs=2e-2) and np.linalg.norm(np.asarray(params["a"])) * LAM == pytest.approx(1.0, abs=2e-2)


def test_constraint_kinds_and_radii():
    kinds = {name: optimizers.constraint(name, 0.5, ("W",)).kind for name in optimizers.names()}
    assert kinds == {"sgd": "none", "momentum": "none", "adam": "none", "adamw": "linf", "lion": "linf", "signsgd": "linf", "muon": "muon",
                     "muon_exact": "muon", "muon_full": "muon_full"}
    assert set(kinds.values()) <= set(constraints.KINDS)
    linf, muon, none = (optimizers.constraint(n, 0.5, ("W",)) for n in ("adamw", "muon", "sgd"))
    assert linf.linf_radius == 2.0 and math.isinf(linf.spectral_radius((4, 4)))
    assert muon.linf_radius == 2.0 and muon.spectral_radius((8, 2)) == pytest.approx(4.0)  # s = 2
    assert math.isinf(none.linf_radius) and math.isinf(none.spectral_radius((4, 4)))
    assert math.isinf(optimizers.constraint("adamw", 0.0).linf_radius)  # λ = 0: no ball


def test_muon_shape_factor():
    assert constraints.muon_shape_factor((6, 3)) == pytest.approx(math.sqrt(2))
    assert constraints.muon_shape_factor((3, 6)) == 1.0
    assert constraints.muon_shape_factor((5, 5)) == 1.0
    assert constraints.muon_shape_factor((7, 16, 4)) == 2.0  # last two axes


def test_constraint_set_contains_hand_computed():
    params = {"W": jnp.array([[3.0, 0.0], [0.0, -1.0]]), "a": jnp.array([0.5, -2.5])}
    # ℓ∞: max|θ| = 3
    assert float(constraints.ConstraintSet("linf", 0.5).relative_norm(params)) == pytest.approx(1.5)
    assert not constraints.ConstraintSet("linf", 0.5).contains(params)
    assert constraints.ConstraintSet("linf", 1 / 3).contains(params)
    assert not constraints.ConstraintSet("linf", 1 / 3 * 1.01).contains(params)
    # Muon: ‖W‖₂ = 3 (s = 1) on W, ℓ∞ on a (max 2.5)
    muon = constraints.ConstraintSet("muon", 0.25, ("W",))
    assert float(muon.relative_norm(params)) == pytest.approx(0.75)
    assert muon.contains(params)
    assert float(constraints.ConstraintSet("muon", 0.3, ("W",)).relative_norm(params)) == pytest.approx(0.9)
    assert float(constraints.ConstraintSet("muon", 0.5, ("W",)).relative_norm(params)) == pytest.approx(1.5)
    # a is the binding constraint once W's spectral norm is small relative to its radius
    assert float(constraints.ConstraintSet("muon", 0.25, ("W",)).relative_norm({**params, "a": jnp.array([5.0, 0.0])})) == pytest.approx(1.25)
    # spectral vs ℓ∞: a matrix with small entries but a large spectral norm
    ones = {"W": jnp.ones((4, 4))}  # max|W| = 1, ‖W‖₂ = 4
    assert constraints.ConstraintSet("linf", 1.0).contains(ones)
    assert not constraints.ConstraintSet("muon", 1.0, ("W",)).contains(ones)
    # kind "none" contains everything
    assert constraints.ConstraintSet("none", 10.0).contains(params)
    assert float(constraints.ConstraintSet("none", 10.0).relative_norm(params)) == 0.0


# ---- Newton–Schulz ------------------------------------------------------------------

_orthogonalize = jax.jit(optimizers.orthogonalize)  # one program per shape, not one per primitive


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (3, 6, 4)])
def test_orthogonalize_gives_unit_singular_values(shape):
    g = jax.random.normal(jax.random.key(7), shape)
    o = np.asarray(_orthogonalize(g))
    assert o.shape == shape
    sv = np.linalg.svd(o, compute_uv=False)
    np.testing.assert_allclose(sv, 1.0, atol=1e-3)
    # and it is the polar factor U Vᵀ of g, not just any orthogonal matrix
    u, _, vt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    np.testing.assert_allclose(o, u @ vt, atol=1e-3)


def test_orthogonalize_ignores_the_scale():
    g = jax.random.normal(jax.random.key(8), (8, 5))
    np.testing.assert_allclose(_orthogonalize(1e-3 * g), _orthogonalize(1e3 * g), atol=1e-5)


# ---- errors ---------------------------------------------------------------------------


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(UserError, match="unknown optimizer 'adamx'"):
        optimizers.make("adamx", 0.01, 0.0)
    with pytest.raises(UserError, match="adamw"):  # the message lists the choices
        optimizers.constraint("adamx", 0.1)
    with pytest.raises(UserError, match="unknown optimizer"):
        optimizers.spec("")


def test_bad_hyperparameters_are_user_errors():
    with pytest.raises(UserError, match="learning rate"):
        optimizers.make("adamw", 0.0, 0.1)
    with pytest.raises(UserError, match="weight decay"):
        optimizers.make("adamw", 0.01, -0.1)
    with pytest.raises(UserError, match="matrices"):
        optimizers.make("muon", 0.01, 0.1)
    with pytest.raises(UserError, match="matrices"):
        optimizers.make("muon_full", 0.01, 0.1)


def test_msign_is_the_polar_factor():
    g = np.asarray(jax.random.normal(jax.random.key(7), (2, 5, 3)))
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    np.testing.assert_allclose(optimizers.msign(jnp.asarray(g)), u @ vt, atol=1e-5)
    np.testing.assert_allclose(optimizers.orthogonalize(jnp.asarray(g)), u @ vt, atol=1e-4)
