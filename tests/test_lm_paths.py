"""Paths between GPT-2s: exact endpoints, t-batched losses equal to lm_training.evaluate one point at
a time, barriers and ensembles against numpy, spectra against numpy's SVD, a learned chain below the
line on a planted pair, sharding over 8 simulated devices, and the one-line errors."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from connect import paths
from connect.errors import UserError
from connect.lm import alignment as align_gpt2
from connect.lm import paths as lm_paths
from connect.lm import training as lm_training
from connect.models import gpt2

CFG = gpt2.config("tiny", vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2, n_inner=32)
CTX, BATCH = 8, 4
TS = np.array([0.0, 0.3, 0.5, 1.0], np.float32)


def _model(seed):
    """A random model with non-trivial LayerNorms and biases (every array moves along a path)."""
    params = gpt2.init(jax.random.key(seed), CFG)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + 0.3 * rng.normal(size=a.shape).astype(np.float32)), params)


def _tokens(n, seed):
    return np.random.default_rng(seed).integers(0, CFG.vocab_size, n).astype(np.uint16)


@pytest.fixture(scope="module")
def pair():
    return _model(0), _model(1)


@pytest.fixture(scope="module")
def chain(pair):
    """A one-bend chain whose bend is off the line."""
    a, b = pair
    return paths.stack_nodes(a, jax.tree.map(lambda x: x[None], _model(2)), b)


def _assert_bit_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.array_equal(np.asarray(g), np.asarray(w))


def test_every_path_on_gpt2_trees_has_exact_endpoints(pair):
    a, b = pair
    points = jax.jit(lambda kind, nodes, ts: jax.vmap(lambda t: paths.point(kind, nodes, t))(ts), static_argnums=0)
    for kind, n_free in (("linear", 0), ("polychain", 1), ("bezier", 2)):
        offsets = jnp.arange(1.0, n_free + 1.0)
        free = jax.tree.map(lambda x, o=offsets: x[None] + o.reshape(o.shape + (1,) * x.ndim), a)
        nodes = paths.stack_nodes(a, free, b)
        pts = points(kind, nodes, jnp.asarray(TS))  # the batched evaluation's construction of θ(t)
        _assert_bit_equal(jax.tree.map(lambda x: x[0], pts), a)
        _assert_bit_equal(jax.tree.map(lambda x: x[-1], pts), b)


def test_t_batched_losses_equal_one_point_at_a_time(chain):
    tokens = _tokens(CTX * 10 + 1, 3)  # 10 windows: batches of 4, 4 and a short one of 2
    kw = dict(batch_size=BATCH, context=CTX)
    batched = lm_paths.path_losses("polychain", chain, CFG, tokens, TS, t_chunk=3, **kw)  # chunks of 3, one padded
    single = lm_paths.path_losses("polychain", chain, CFG, tokens, TS, t_chunk=1, **kw)
    points = [_point("polychain", chain, t) for t in TS]
    peer = [lm_training.evaluate(p, CFG, tokens, **kw) for p in points]
    np.testing.assert_allclose(batched, peer, rtol=2e-6)
    np.testing.assert_allclose(single, peer, rtol=2e-6)
    assert np.ptp(peer) > 0.1  # the points differ: a test that can fail
    # max_batches: the first two batches only, as lm_training.evaluate
    two = lm_paths.path_losses("polychain", chain, CFG, tokens, TS, t_chunk=3, max_batches=2, **kw)
    np.testing.assert_allclose(two, [lm_training.evaluate(p, CFG, tokens, max_batches=2, **kw) for p in points], rtol=2e-6)
    assert np.max(np.abs(two - batched)) > 1e-3


_point = jax.jit(paths.point, static_argnums=0)


def _first(nodes):
    return jax.tree.map(lambda x: x[0], nodes)


def _numpy_logprobs(params, tokens, n_windows):
    """log-softmax of the logits over the consecutive windows, in float64, and the targets."""
    x = np.stack([tokens[j * CTX:(j + 1) * CTX] for j in range(n_windows)]).astype(np.int32)
    y = np.stack([tokens[j * CTX + 1:(j + 1) * CTX + 1] for j in range(n_windows)]).astype(np.int32)
    z = np.asarray(gpt2.apply(params, jnp.asarray(x), CFG), np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True)), y


@pytest.mark.parametrize("streams", [2, 3])
def test_batches_on_several_host_threads_give_one_threads_losses(chain, monkeypatch, streams):
    """CPU batches evaluated by several threads at once (``cpu_streams``): the same losses, bit for bit, in order."""
    val = _tokens(CTX * BATCH * 5 + 1 - 2 * CTX, 6)  # 5 batches, the last one short
    runs = {}
    for n in (1, streams):
        monkeypatch.setattr(lm_paths, "cpu_streams", lambda n=n: n)
        runs[n] = (lm_paths.path_losses("polychain", chain, CFG, val, TS, batch_size=BATCH, context=CTX),
                   lm_paths.ensemble_loss(chain, CFG, val, batch_size=BATCH, context=CTX))
    _assert_bit_equal(runs[streams], runs[1])
    assert len(set(np.asarray(runs[1][0]).tolist())) == len(TS)  # a real curve, not one repeated batch


def test_barriers_ood_and_ensembles_against_numpy(chain):
    val, ood = _tokens(CTX * 6 + 1, 4), _tokens(CTX * 5 + 1, 5)
    out = lm_paths.evaluate_path("polychain", chain, CFG, val, TS, batch_size=BATCH, context=CTX, ood_tokens=ood, t_chunk=3)
    json.dumps(out)  # plain numbers
    loss = np.asarray(out["loss"])
    chord = (1 - TS.astype(np.float64)) * loss[0] + TS * loss[-1]
    assert out["barrier"] == pytest.approx(np.max(loss - chord), abs=1e-12)
    assert out["max_barrier"] == pytest.approx(np.max(loss) - max(loss[0], loss[-1]), abs=1e-12)
    ood_a = lm_training.evaluate(_first(chain), CFG, ood, batch_size=BATCH, context=CTX)
    # refined: two more points around the peak, the grid's losses unchanged, t ascending
    ref = lm_paths.evaluate_path("polychain", chain, CFG, val, TS, batch_size=BATCH, context=CTX, t_chunk=3, refine=2, ensembles=False)
    assert len(ref["t"]) == len(TS) + 2 and np.all(np.diff(ref["t"]) >= 0)
    for t, v in zip(TS, loss):
        assert ref["loss"][ref["t"].index(float(t))] == v
    assert ref["barrier"] >= out["barrier"]
    assert out["ood"]["loss"][0] == pytest.approx(ood_a, rel=2e-6)
    assert out["ood"]["loss"] != pytest.approx(out["loss"], rel=1e-3)

    # ensembles: average of probabilities, from numpy's softmax of each member's logits
    ens = out["ensemble"]
    best = 1 + int(np.argmin(loss[1:-1]))
    assert ens["best_t"] == float(TS[best]) and ens["best_point"] == loss[best]
    members = [_first(chain), jax.tree.map(lambda x: x[-1], chain), _point("polychain", chain, TS[best])]
    lps = [_numpy_logprobs(m, val, 6) for m in members]
    y = lps[0][1]
    p = [np.exp(np.take_along_axis(lp, y[..., None], -1)[..., 0]) for lp, _ in lps]
    assert ens["endpoints"] == pytest.approx(-np.mean(np.log((p[0] + p[1]) / 2)), rel=2e-6)
    assert ens["endpoints_and_best"] == pytest.approx(-np.mean(np.log((p[0] + p[1] + p[2]) / 3)), rel=2e-6)
    assert ens["loss_a"] == pytest.approx(-np.mean(np.log(p[0])), rel=2e-6)


def test_spectra_along_a_path_equal_numpy_svd(chain):
    lam = 0.5
    out = lm_paths.spectra_along_path("polychain", chain, CFG, TS[:3], weight_decay=lam)
    d, f = CFG.n_embd, CFG.n_inner
    assert out["names"] == gpt2.matrix_names(CFG) and len(out["names"]) == 6 * CFG.n_layer + 3
    nodes = jax.tree.map(lambda x: np.asarray(x, np.float64), chain)
    meds = {k: [] for k in out["median"]}
    for i, t in enumerate(TS[:3].astype(np.float64)):
        w = [np.interp(t, [0.0, 0.5, 1.0], np.eye(3)[k]) for k in range(3)]  # hat weights of a one-bend chain
        theta = jax.tree.map(lambda x, w=w: w[0] * x[0] + w[1] * x[1] + w[2] * x[2], nodes)
        h = theta["h"]
        mats = {"wte": theta["wte"], "wpe": theta["wpe"], "lm_head": theta["lm_head"]}
        for layer in range(CFG.n_layer):
            qkv = h["attn"]["c_attn"]["kernel"][layer]
            mats |= {f"h.{layer}.attn.q": qkv[:, :d], f"h.{layer}.attn.k": qkv[:, d:2 * d], f"h.{layer}.attn.v": qkv[:, 2 * d:],
                     f"h.{layer}.attn.c_proj": h["attn"]["c_proj"]["kernel"][layer],
                     f"h.{layer}.mlp.c_fc": h["mlp"]["c_fc"]["kernel"][layer], f"h.{layer}.mlp.c_proj": h["mlp"]["c_proj"]["kernel"][layer]}
        per_t = {}
        for name, m in mats.items():
            s = np.linalg.svd(m, compute_uv=False)
            got = out["matrices"][name]
            np.testing.assert_allclose(got["singular_values"][i], s, rtol=2e-5, atol=1e-5)
            muon = name.startswith("h.")
            n_in, n_out = m.shape
            want = {"stable_rank": np.sum(s**2) / s[0] ** 2, "spectral_norm": s[0], "condition_number": s[0] / np.percentile(s, 5),
                    "effective_rank": np.exp(-np.sum(s / s.sum() * np.log(s / s.sum()))), "max_abs": np.max(np.abs(m)),
                    "adamw_rel": lam * np.max(np.abs(m)),
                    "muon_rel": lam * s[0] / np.sqrt(max(1.0, n_out / n_in)) if muon else lam * np.max(np.abs(m))}
            for k, v in want.items():
                np.testing.assert_allclose(got[k][i], v, rtol=1e-4, err_msg=f"{name} {k} t={t}")
            per_t[name] = want
        for k in meds:
            if k in want:
                np.testing.assert_allclose(out["median"][k][i], np.median([per_t[n][k] for n in per_t]), rtol=1e-4)
    assert out["matrices"]["h.1.mlp.c_fc"]["singular_values"].shape == (3, min(d, f))
    # a subset by name, and the muon factor really differs from 1 on c_fc (16 -> 32: s = √2)
    sub = lm_paths.spectra_along_path("linear", jax.tree.map(lambda x: x[::2], chain), CFG, [0.0], names=["h.1.mlp.c_fc"], weight_decay=lam)
    m = np.asarray(chain["h"]["mlp"]["c_fc"]["kernel"][0, 1], np.float64)
    assert sub["names"] == ["h.1.mlp.c_fc"]
    np.testing.assert_allclose(sub["matrices"]["h.1.mlp.c_fc"]["muon_rel"][0], lam * np.linalg.norm(m, 2) / np.sqrt(2), rtol=1e-5)


# --- a planted pair: a trained model and a permuted, rotated copy (the same function) ---------------


def _markov_tokens(n, seed):
    """A chain over the vocabulary where each token has two likely successors (learnable by a bigram)."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, CFG.vocab_size, (CFG.vocab_size, 2))
    out = np.zeros(n, np.uint16)
    for i in range(1, n):
        out[i] = succ[out[i - 1], rng.integers(0, 2)] if rng.random() < 0.9 else rng.integers(0, CFG.vocab_size)
    return out


def _train(tokens, steps=100):
    from connect.lm import corpus

    xs, ys = zip(*(corpus.batch(tokens, 0, k, 16, CTX) for k in range(steps)))
    opt = optax.adam(3e-2)

    def step(carry, xy):
        p, s = carry
        g = jax.grad(lambda p: gpt2.loss(p, *xy, CFG))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    p0 = gpt2.init(jax.random.key(0), CFG)
    (p, _), _ = jax.jit(lambda p, xy: jax.lax.scan(step, (p, opt.init(p)), xy))(p0, (np.stack(xs), np.stack(ys)))
    return p


def test_learned_chain_is_below_the_line_on_a_planted_pair():
    tokens = _markov_tokens(6000 + CTX * 16 + 1, 0)
    train, val = tokens[:6000], tokens[6000:]
    folded, cfg = align_gpt2.fold_layernorms(_train(train), CFG)
    assert cfg == gpt2.config(CFG, tie_word_embeddings=False)
    rng = np.random.default_rng(2)
    mlp = np.stack([rng.permutation(CFG.n_inner) for _ in range(CFG.n_layer)])
    heads = np.stack([rng.permutation(CFG.n_head) for _ in range(CFG.n_layer)])
    basis = align_gpt2.rotation_basis(CFG.n_embd)
    inner = np.eye(CFG.n_embd)
    inner[1:, 1:] = np.linalg.qr(rng.normal(size=(CFG.n_embd - 1,) * 2))[0]
    a = jax.tree.map(jnp.asarray, folded)
    b = jax.tree.map(jnp.asarray, align_gpt2.rotate_residual(align_gpt2.permute(folded, cfg, {"mlp": mlp, "heads": heads}), basis @ inner @ basis.T, cfg))
    ts = np.linspace(0, 1, 5, dtype=np.float32)
    kw = dict(batch_size=16, context=CTX, t_chunk=5, ensembles=False)
    line = lm_paths.evaluate_path("linear", paths.stack_nodes(a, paths.init_free(a, b, 0), b), cfg, val, ts, **kw)
    assert line["loss"][0] == pytest.approx(line["loss"][-1], rel=1e-4)  # the same function at both ends
    assert line["barrier"] > 0.5  # the planted copy is far along the line
    nodes, obj = lm_paths.learn_path(a, b, "polychain", cfg, train, steps=60, batch_size=16, context=CTX, t_per_step=2,
                                     optimizer=optax.adam(1e-2))
    assert obj.shape == (60,)
    _assert_bit_equal(jax.tree.map(lambda x: x[0], nodes), a)
    _assert_bit_equal(jax.tree.map(lambda x: x[-1], nodes), b)
    learned = lm_paths.evaluate_path("polychain", nodes, cfg, val, ts, **kw)
    assert np.mean(learned["loss"]) < np.mean(line["loss"]) - 0.2
    assert learned["barrier"] < 0.5 * line["barrier"]


# --- sharding -------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from jax.sharding import Mesh
    from connect import paths
    from connect.lm import paths as lm_paths
    from connect.models import gpt2
    assert jax.device_count() == 8, jax.devices()
    cfg = gpt2.config("tiny", vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2, n_inner=32)
    a, b, m = (gpt2.init(jax.random.key(s), cfg) for s in range(3))
    nodes = paths.stack_nodes(a, jax.tree.map(lambda x: 3 * x[None], m), b)
    tokens = np.random.default_rng(0).integers(0, 32, 8 * 20 + 1).astype(np.uint16)  # 20 windows: 8, 8 and a short 4
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    ts = [0.0, 0.4, 1.0]
    kw = dict(batch_size=8, context=8, t_chunk=3)
    out = {"eight": lm_paths.evaluate_path("polychain", nodes, cfg, tokens, ts, mesh=mesh, **kw),
           "one": lm_paths.evaluate_path("polychain", nodes, cfg, tokens, ts, **kw)}
    learned = [lm_paths.learn_path(a, b, "polychain", cfg, tokens, steps=2, batch_size=8, context=8, t_per_step=2,
                                   optimizer=optax.adam(1e-2), mesh=m) for m in (mesh, None)]
    out["learned_maxdiff"] = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                                 for x, y in zip(jax.tree.leaves(learned[0][0]), jax.tree.leaves(learned[1][0])))
    out["learned_moved"] = float(np.max(np.abs(np.asarray(learned[1][0]["wte"][1]) - np.asarray(0.5 * (a["wte"] + b["wte"])))))
    out["objective"] = [np.asarray(x[1]).tolist() for x in learned]
    # every node fully sharded (each device ~1/8 of the model), spectra too; and a grouped-query Llama
    from connect import models, sharding
    out["fraction"] = sharding.fraction_per_device(sharding.put(nodes, mesh))
    names = gpt2.hidden_matrix_names(cfg)[:3]
    sv = [lm_paths.spectra_along_path("polychain", nodes, cfg, ts, names=names, mesh=m) for m in (mesh, None)]
    out["sv_maxdiff"] = max(float(np.max(np.abs(sv[0]["matrices"][n]["singular_values"] - sv[1]["matrices"][n]["singular_values"])))
                            for n in names)
    llama = models.family("llama")
    lcfg = llama.config("tiny", vocab_size=32, max_position_embeddings=8, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=24)
    la, lb = (llama.init(jax.random.key(s), lcfg) for s in (3, 4))
    lnodes = paths.stack_nodes(la, paths.init_free(la, lb, 0), lb)
    out["llama"] = [lm_paths.path_losses("linear", lnodes, lcfg, tokens, ts, mesh=m, **kw).tolist() for m in (mesh, None)]
    try:
        lm_paths.path_losses("polychain", nodes, cfg, tokens, ts, mesh=mesh, batch_size=12, context=8)
    except Exception as e:
        out["error"] = type(e).__name__ + ": " + str(e)
    print("RESULT" + json.dumps(out))
""")


def test_sharded_over_eight_devices_equals_unsharded():
    """Path losses, ensembles, learned paths and spectra with the data batch and every node (fully) sharded over 8
    simulated devices equal the one-device numbers, for GPT-2 and a grouped-query Llama."""
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "OPENBLAS_NUM_THREADS": "1", "CONNECT_JAX_CACHE": ""}
    root = os.path.join(os.path.dirname(__file__), "..")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    eight, one = out["eight"], out["one"]
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-6)
    assert np.ptp(one["loss"]) > 0.01
    for k in ("endpoints", "endpoints_and_best"):
        assert eight["ensemble"][k] == pytest.approx(one["ensemble"][k], rel=1e-6)
    assert out["error"].startswith("UserError: batch_size 12 is not divisible by the 8 devices")
    # a path learned on minibatches sharded over the 8 devices equals the one learned on one device
    np.testing.assert_allclose(out["objective"][0], out["objective"][1], rtol=1e-5)
    assert out["learned_moved"] > 1e-3 and out["learned_maxdiff"] <= 1e-3 * out["learned_moved"]
    # the nodes fully sharded (each device holds ~1/8 plus the few odd-width arrays, not a replica); spectra and a
    # grouped-query Llama's path give the unsharded numbers
    assert out["fraction"] < 0.25
    assert out["sv_maxdiff"] <= 1e-4
    np.testing.assert_allclose(out["llama"][0], out["llama"][1], rtol=1e-6)


# --- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_user_errors(pair, chain):
    a, b = pair
    tokens = _tokens(CTX * 4 + 1, 6)
    kw = dict(batch_size=BATCH, context=CTX)
    cases = [
        (lambda: lm_paths.path_losses("polychain", chain, CFG, tokens, [0.0, 1.5], **kw), "outside \\[0, 1\\]"),
        (lambda: lm_paths.evaluate_path("polychain", chain, CFG, tokens, [-0.1, 0.0, 1.0], **kw), "outside \\[0, 1\\]"),
        (lambda: lm_paths.evaluate_path("polychain", chain, CFG, tokens, [0.0, 0.5], **kw), "must contain both endpoints"),
        (lambda: lm_paths.spectra_along_path("linear", chain, CFG, [2.0]), "outside"),
        (lambda: lm_paths.check_pair(a, CFG, b, gpt2.config(CFG, n_inner=64)), "different GPT-2 configs \\(n_inner 32 vs 64\\)"),
        (lambda: lm_paths.check_pair(a, CFG, {**b, "wte": b["wte"][:, :8]}, CFG), "second checkpoint's wte has shape \\(32, 8\\)"),
        (lambda: lm_paths.spectra_along_path("polychain", chain, CFG, names=["h.2.attn.q"]), "no matrix 'h.2.attn.q'"),
        (lambda: gpt2.matrices(a, gpt2.config(CFG, tie_word_embeddings=True), ["lm_head"]), "no matrix 'lm_head'"),
        (lambda: gpt2.matrices({k: v for k, v in a.items() if k != "lm_head"}, CFG), "checkpoint has no lm_head"),
        (lambda: lm_paths.path_losses("linear", chain, CFG, tokens, [0.0], batch_size=2, context=16), "context 16 is longer"),
        (lambda: lm_paths.learn_path(a, b, "spline", CFG, tokens), "unknown path kind"),
        (lambda: paths.fit("polychain", {"x": jnp.zeros(2)}, {"x": jnp.ones(2)}, lambda p: jnp.sum(p["x"]), optax.sgd(0.1),
                           jax.random.key(0), steps=1, t_dist=("uniform", 0.2, 1.5)), "not inside \\[0, 1\\]"),
    ]
    for fn, match in cases:
        with pytest.raises(UserError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)
    assert lm_paths.check_pair(a, CFG, b, CFG) == CFG


def test_between_two_checkpoint_directories_in_one_call(pair, tmp_path):
    """``lm_paths.between``: loads two Hugging Face directories, its curve's ends are the models' own val
    losses on the same windows, and an aligned learned chain keeps both ends."""
    from connect.lm import corpus, huggingface

    a, b = pair
    for name, p in (("a", a), ("b", b)):
        huggingface.save_pretrained(p, CFG, str(tmp_path / name))
    data = corpus.Corpus("random", _tokens(600, 3), _tokens(200, 4), CFG.vocab_size, "bytes")
    out = lm_paths.between(str(tmp_path / "a"), str(tmp_path / "b"), data=data, ts_T=TS)
    want = [lm_training.evaluate(p, CFG, data.val, batch_size=8, context=CTX, max_batches=16) for p in (a, b)]
    np.testing.assert_allclose([out["loss"][0], out["loss"][-1]], want, rtol=1e-5)
    assert out["barrier"] == pytest.approx(float(np.max(np.asarray(out["loss"]) - ((1 - TS) * want[0] + TS * want[1]))), abs=1e-5)
    assert out["path_optimizer"] == "adamw" and out["alignment"] is None  # Hugging Face directories record no optimizer
    bent = lm_paths.between(str(tmp_path / "a"), str(tmp_path / "b"), "polychain", data=data, ts_T=TS, align=True, steps=2)
    assert len(bent["objective"]) == 2 and bent["alignment"]["architecture_changes"]
    np.testing.assert_allclose([bent["loss"][0], bent["loss"][-1]], want, rtol=1e-4)  # alignment keeps each model's function
