"""Transformer optimizers (``optimizers.make_lm``) on a hand-built GPT-2-shaped pytree: each
minimises a least-squares loss without recompiling; Muon orthogonalises q, k, v and every other
hidden matrix of every layer separately (numpy SVD) and hands the rest to AdamW exactly (optax's
``adamw`` on those leaves alone); two learning rates; decay only on matrices; clipping equals
clipping the gradient first; schedules as learning rates; vmap over seeds; errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from connect import optimizers, schedules
from connect.errors import UserError
from connect.twolayer import training

L, D, F, V, P = 2, 8, 32, 11, 6  # c_fc is (8, 32): shape factor s = sqrt(32/8) = 2

MATRICES = {("h", "attn", "c_attn", "kernel"): 3, ("h", "attn", "c_proj", "kernel"): 1,
            ("h", "mlp", "c_fc", "kernel"): 1, ("h", "mlp", "c_proj", "kernel"): 1}
HIDDEN = [("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")]


def _layout() -> dict:
    """Shapes of the pinned GPT-2 layout (untied head), per-layer arrays stacked on axis L."""
    block = {"ln_1": {"scale": (L, D), "bias": (L, D)},
             "attn": {"c_attn": {"kernel": (L, D, 3 * D), "bias": (L, 3 * D)}, "c_proj": {"kernel": (L, D, D), "bias": (L, D)}},
             "ln_2": {"scale": (L, D), "bias": (L, D)},
             "mlp": {"c_fc": {"kernel": (L, D, F), "bias": (L, F)}, "c_proj": {"kernel": (L, F, D), "bias": (L, D)}}}
    return {"wte": (V, D), "wpe": (P, D), "h": block, "ln_f": {"scale": (D,), "bias": (D,)}, "lm_head": (V, D)}


def _random(seed: int, scale: float = 1.0) -> dict:
    shapes, treedef = jax.tree.flatten(_layout(), is_leaf=lambda x: isinstance(x, tuple))
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(scale * rng.standard_normal(s), jnp.float32) for s in shapes])


def _is_hidden(path) -> bool:
    return tuple(k.key for k in path) in MATRICES


def _aux_part(tree: dict) -> dict:
    """``tree`` without the hidden kernels (the leaves Muon leaves to AdamW)."""
    h = {blk: {lyr: ({"bias": v["bias"]} if (blk, lyr) in HIDDEN else v) for lyr, v in sub.items()} if isinstance(sub, dict) else sub
         for blk, sub in tree["h"].items()}
    return {**tree, "h": h}


def _decay_mask(tree: dict) -> dict:
    """Written out by hand: decay wte, wpe, lm_head and the kernels; never LayerNorm gains or biases."""
    return jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key not in ("scale", "bias"), tree)


LRS = {"adamw": 0.05, "muon": 0.05, "lion": 0.02, "momentum": 0.02}


@pytest.mark.parametrize("name", optimizers.LM_OPTIMIZERS)
def test_minimises_least_squares_without_recompiling(name):
    target = _random(0)
    params = jax.tree.map(jnp.zeros_like, target)

    def loss(p):
        return 0.5 * sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target)))

    opt = optimizers.make_lm(name, params, lr=LRS[name], weight_decay=0.01, matrices=MATRICES, clip_norm=None)
    step = jax.jit(training.make_step(loss, opt))
    state = opt.init(params)
    loss0 = float(loss(params))
    for i in range(150):
        params, state, _ = step(params, state)
        if i == 1:
            assert step._cache_size() == 1, f"{name}: the step recompiled on its second call"
    assert step._cache_size() == 1
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, target)
    assert float(loss(params)) < 0.05 * loss0, f"{name} did not minimise the least-squares loss"


def _conditioned(seed: int, base: dict) -> dict:
    """Random gradients whose hidden matrices are ``base`` plus small noise: well-conditioned, so that
    Newton–Schulz, which only reaches σ ≳ 1e-3·‖G‖_F, orthogonalises them fully."""
    noise = _random(seed, 0.1)
    return jax.tree_util.tree_map_with_path(lambda p, x, b: x + b if _is_hidden(p) else 10 * x, noise, base)


def _orthonormal_base(seed: int) -> dict:
    """Every (in, out) matrix of every hidden kernel (q, k, v separately) is 3 × a random semi-orthogonal matrix."""
    rng = np.random.default_rng(seed)

    def semi(shape):  # (in, out) with orthonormal columns or rows
        q, _ = np.linalg.qr(rng.standard_normal((max(shape), min(shape))))
        return q if shape[0] >= shape[1] else q.T

    def leaf(path, x):
        if not _is_hidden(path):
            return jnp.zeros_like(x)
        k = MATRICES[tuple(p.key for p in path)]
        n_in, n_out = x.shape[1], x.shape[2] // k
        return jnp.asarray(3 * np.stack([np.concatenate([semi((n_in, n_out)) for _ in range(k)], axis=1) for _ in range(L)]), jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, _random(0))


def test_muon_orthogonalises_each_matrix_and_leaves_the_rest_to_adamw():
    lr, aux_lr, wd, beta, b1, b2 = 0.02, 0.003, 0.1, 0.9, 0.8, 0.9
    params = _random(1)
    opt = optimizers.make_lm("muon", params, lr=lr, aux_lr=aux_lr, weight_decay=wd, momentum=beta, betas=(b1, b2),
                             clip_norm=None, matrices=MATRICES)
    ref = optax.adamw(aux_lr, b1=b1, b2=b2, eps=1e-8, weight_decay=wd, mask=_decay_mask(_aux_part(params)))
    state, ref_state = jax.jit(opt.init)(params), ref.init(_aux_part(params))
    update, ref_update = jax.jit(opt.update), jax.jit(ref.update)
    base = _orthonormal_base(2)
    mom = {path: np.zeros(np.shape(params["h"][path[0]][path[1]]["kernel"])) for path in HIDDEN}
    for step in range(3):
        grads = _conditioned(10 + step, base)
        u, state = update(grads, state, params)
        # every leaf Muon does not handle gets exactly AdamW's update on those leaves alone
        ref_u, ref_state = ref_update(_aux_part(grads), ref_state, _aux_part(params))
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(_aux_part(u)), jax.tree.leaves(ref_u)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, err_msg=jax.tree_util.keystr(path))
        # hidden matrices: -u/lr - λθ is s·polar(Nesterov momentum), one (in, out) matrix at a time
        for blk, lyr in HIDDEN:
            k = MATRICES[("h", blk, lyr, "kernel")]
            g = np.asarray(grads["h"][blk][lyr]["kernel"], np.float64)
            mom[blk, lyr] = beta * mom[blk, lyr] + g
            nesterov = g + beta * mom[blk, lyr]
            direction = -np.asarray(u["h"][blk][lyr]["kernel"], np.float64) / lr - wd * np.asarray(params["h"][blk][lyr]["kernel"])
            n_in, n_out = g.shape[1], g.shape[2] // k
            s = math.sqrt(max(1.0, n_out / n_in))  # c_fc (8, 32): s = 2; the others 1
            for layer in range(L):
                for j in range(k):  # q, k, v of c_attn separately
                    cols = slice(j * n_out, (j + 1) * n_out)
                    sv = np.linalg.svd(direction[layer][:, cols], compute_uv=False)
                    np.testing.assert_allclose(sv, s, rtol=2e-3, err_msg=f"{blk}/{lyr} layer {layer} matrix {j}")
                    a, _, bt = np.linalg.svd(nesterov[layer][:, cols], full_matrices=False)
                    np.testing.assert_allclose(direction[layer][:, cols], s * a @ bt, atol=2e-3 * s)
            if k == 3:  # orthogonalised jointly, the fused (in, 3·out) matrix would have unit singular values; it has √3
                sv = np.linalg.svd(direction[0], compute_uv=False)
                assert sv[0] > 1.3, sv
        params = optax.apply_updates(params, u)


@pytest.mark.parametrize("name", optimizers.LM_OPTIMIZERS)
def test_zero_aux_lr_freezes_everything_but_the_hidden_matrices(name):
    params = _random(4)
    opt = optimizers.make_lm(name, params, lr=0.01, aux_lr=0.0, weight_decay=0.1, matrices=MATRICES)
    state, p, update = opt.init(params), params, jax.jit(opt.update)
    for step in range(3):
        u, state = update(_random(20 + step), state, p)
        p = optax.apply_updates(p, u)
    for path, moved in jax.tree_util.tree_leaves_with_path(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), p, params)):
        assert moved == _is_hidden(path), jax.tree_util.keystr(path)


@pytest.mark.parametrize("name", optimizers.LM_OPTIMIZERS)
def test_decay_on_matrices_only_scaled_by_each_group_lr(name):
    """With a zero gradient every direction is 0, so the update is the decay alone: ``−η λ θ`` with the
    group's η on hidden matrices and wte/wpe/lm_head, 0 on LayerNorm gains and biases."""
    lr, aux_lr, wd = 0.02, 0.005, 0.3
    params = _random(5)
    opt = optimizers.make_lm(name, params, lr=lr, aux_lr=aux_lr, weight_decay=wd, matrices=MATRICES)
    u, _ = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    mask = _decay_mask(params)
    for path, got in jax.tree_util.tree_leaves_with_path(u):
        theta = _leaf(params, path)
        eta = lr if _is_hidden(path) else aux_lr
        want = -eta * wd * theta if _leaf(mask, path) else np.zeros_like(theta)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, err_msg=jax.tree_util.keystr(path))


def _leaf(tree, path):
    for k in path:
        tree = tree[k.key]
    return np.asarray(tree)


@pytest.mark.parametrize("name", optimizers.LM_OPTIMIZERS)
def test_clipping_equals_clipping_the_gradient_first(name):
    c = 1.0
    params = _random(6)
    clipped = optimizers.make_lm(name, params, lr=0.01, weight_decay=0.1, clip_norm=c, matrices=MATRICES)
    plain = optimizers.make_lm(name, params, lr=0.01, weight_decay=0.1, clip_norm=None, matrices=MATRICES)
    s1, s2, s3 = clipped.init(params), plain.init(params), plain.init(params)
    update_clipped, update_plain = jax.jit(clipped.update), jax.jit(plain.update)
    differs = False
    for step, scale in enumerate([0.5, 0.003, 0.2]):  # global norms ≈ 12, 0.07, 5: clipped, untouched, clipped
        g = _random(30 + step, scale)
        norm = math.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(g)))
        factor = np.float32(min(1.0, c / norm))
        g_clipped = jax.tree.map(functools.partial(np.multiply, factor), g)
        u1, s1 = update_clipped(g, s1, params)
        u2, s2 = update_plain(g_clipped, s2, params)
        u3, s3 = update_plain(g, s3, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)  # Newton–Schulz in float32 feels the input's scale
        differs |= any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u3)))
    if name in ("momentum", "adamw"):  # Lion and Muon are invariant to a global scale of a single gradient; these are not
        assert differs, f"{name}: clipping changed nothing"


def test_schedules_as_learning_rates():
    """SGD without momentum or decay: the update at step t is exactly −η(t) g, per group."""
    params = _random(7)
    lr = schedules.make("cosine", 0.1, 10, warmup_frac=0.2)
    aux = schedules.make("wsd", 0.03, 10, warmup_frac=0.0, decay_frac=0.5)
    opt = optimizers.make_lm("momentum", params, lr=lr, aux_lr=aux, momentum=0.0, clip_norm=None, matrices=MATRICES)
    state, update = opt.init(params), jax.jit(opt.update)
    for t in range(4):
        g = _random(40 + t)
        u, state = update(g, state, params)
        for (path, got), gl in zip(jax.tree_util.tree_leaves_with_path(u), jax.tree.leaves(g)):
            eta = float((lr if _is_hidden(path) else aux)(t))
            np.testing.assert_allclose(got, -eta * np.asarray(gl), rtol=1e-6, err_msg=f"step {t} {jax.tree_util.keystr(path)}")


def test_vmap_over_seeds_equals_one_at_a_time():
    seeds, grads = [_random(8), _random(9)], [_random(50), _random(51)]
    stack = functools.partial(jax.tree.map, lambda *xs: jnp.stack(xs))
    opt = optimizers.make_lm("muon", seeds[0], lr=0.02, weight_decay=0.1, matrices=MATRICES)
    u, _ = jax.jit(jax.vmap(opt.update))(stack(*grads), jax.vmap(opt.init)(stack(*seeds)), stack(*seeds))
    update = jax.jit(opt.update)
    for i, (p, g) in enumerate(zip(seeds, grads)):
        u_i, _ = update(g, opt.init(p), p)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u_i)):
            np.testing.assert_allclose(a[i], b, rtol=1e-3, atol=1e-5)  # batched float32 Newton–Schulz rounds differently


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "adam"}, "unknown transformer optimizer 'adam'"),
        ({"name": "sgd"}, "'sgd' is now spelled 'momentum'"),
        ({"lr": -0.1}, "lr"),
        ({"aux_lr": -1e-3}, "aux_lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -0.1}, "weight decay"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"momentum": -0.5}, "momentum"),
        ({"eps": -1.0}, "eps"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"matrices": {("h", "attn", "q", "kernel"): 1}}, "h/attn/q/kernel is not in the parameters"),
        ({"matrices": {("h", "mlp", "c_fc", "kernel"): 3}}, "cannot hold 3 matrices"),
        ({"matrices": {("ln_f", "scale"): 1}}, "cannot hold 1 matrices"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs, match):
    args = {"name": "muon", "lr": 0.01, "matrices": MATRICES, **kwargs}
    with pytest.raises(UserError, match=match):
        optimizers.make_lm(args.pop("name"), _random(0), **args)


def test_gpt2_matrices_split_the_gpt2_model():
    """On the real tiny GPT-2 (``matrices`` = its MUON_MATRICES): the decay-only update of a zero gradient puts the model's
    MUON_MATRICES at ``lr``, wte/wpe/lm_head at ``aux_lr``, LayerNorm gains and biases at 0; Muon traces."""
    gpt2 = pytest.importorskip("connect.models.gpt2")
    cfg = gpt2.config("tiny")
    params = gpt2.init(jax.random.key(0), cfg)
    lr, aux_lr, wd = 0.02, 0.005, 0.3
    opt = optimizers.make_lm("momentum", params, lr=lr, aux_lr=aux_lr, weight_decay=wd, matrices=gpt2.MUON_MATRICES)
    u, _ = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    groups = {"hidden": set(), "matrix": set(), "plain": set()}
    for path, got in jax.tree_util.tree_leaves_with_path(u):
        theta = _leaf(params, path)
        names = tuple(k.key for k in path)
        group = "plain" if not np.any(np.asarray(got)) else "hidden" if np.allclose(got, -lr * wd * theta) else "matrix"
        if group == "matrix":
            np.testing.assert_allclose(got, -aux_lr * wd * theta, rtol=1e-6, err_msg=str(names))
        groups[group].add(names)
    assert groups["hidden"] == set(gpt2.MUON_MATRICES)
    assert groups["matrix"] == {("wte",), ("wpe",), ("lm_head",)}
    assert all(names[-1] in ("scale", "bias") for names in groups["plain"])
    muon = optimizers.make_lm("muon", params, lr=lr, matrices=gpt2.MUON_MATRICES)
    out = jax.eval_shape(muon.update, params, jax.eval_shape(muon.init, params), params)[0]
    assert jax.tree.map(lambda x: x.shape, out) == jax.tree.map(jnp.shape, params)
