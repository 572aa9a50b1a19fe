"""GPT-2 training loop: resume is bitwise, seeds vmapped equal seeds alone, accumulation equals a big
batch, the first step's loss is ln V, bad configs fail in one line."""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import checkpoints, config
from connect.errors import UserError
from connect.lm import corpus, flops
from connect.lm import training as lm_training
from connect.lm.config import TrainLMConfig
from connect.models import gpt2

SMALL = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_inner": 64}


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    """40 documents of a random order-1 Markov byte chain (learnable, so losses move)."""
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"abcdefgh ijklmn\nopqrs", dtype=np.uint8)
    trans = rng.dirichlet(np.full(alphabet.size, 0.3), size=alphabet.size)
    d = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        state, out = 0, []
        for _ in range(600):
            state = rng.choice(alphabet.size, p=trans[state])
            out.append(alphabet[state])
        (d / f"doc{i:02d}.txt").write_bytes(bytes(out))
    return str(d)


def _cfg(text_dir, **over):
    base = dict(model_overrides=SMALL, data=text_dir, val_fraction=0.2, context=16, batch_size=4, steps=6,
                eval_every=3, eval_batches=2, checkpoint_every=3, log_every=1, seeds=[0], compute_dtype="float32")
    return TrainLMConfig(**{**base, **over})


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_resume_after_kill_is_bitwise_identical(tmp_path, text_dir):
    cfg = _cfg(text_dir)
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    lm_training.train(cfg, full, progress=False)
    # a run killed while saving step 6: step 3's checkpoint complete, step 6's without metadata, metrics past 3
    shutil.copytree(full, cut)
    os.remove(os.path.join(checkpoints.step_dir(os.path.join(cut, "seed-0", "ckpt"), 6), "metadata.json"))
    with open(os.path.join(cut, "seed-0", "metrics.jsonl"), "a") as f:
        f.write('{"step": 7, "lo')  # a line cut by the kill
    assert checkpoints.complete_steps(os.path.join(cut, "seed-0", "ckpt")) == [3]
    lm_training.train(cfg, cut, progress=False)
    a, _ = lm_training.load(os.path.join(full, "seed-0"))
    b, _ = lm_training.load(os.path.join(cut, "seed-0"))
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    rows_a, rows_b = _rows(os.path.join(full, "seed-0", "metrics.jsonl")), _rows(os.path.join(cut, "seed-0", "metrics.jsonl"))
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == [0, 1, 2, 3, 4, 5, 6]
    assert [r.get("loss") for r in rows_b] == [r.get("loss") for r in rows_a]
    assert rows_b[-1]["val_loss"] == rows_a[-1]["val_loss"]


def test_changed_config_on_resume_names_the_field(tmp_path, text_dir):
    out = str(tmp_path / "run")
    lm_training.train(_cfg(text_dir, checkpoint_every=0), out, progress=False)
    with pytest.raises(UserError, match="lr = 0.004, not 0.001") as e:
        lm_training.train(_cfg(text_dir, checkpoint_every=0, lr=1e-3), out, progress=False)
    assert "\n" not in str(e.value)


def test_two_seeds_vmapped_equal_two_one_seed_runs(tmp_path, text_dir):
    # momentum SGD: Adam would turn float noise in the exactly-zero gradient of the key biases into ±lr steps
    cfg = _cfg(text_dir, steps=3, eval_every=0, checkpoint_every=0, log_every=3, optimizer="momentum", lr=0.1, clip_norm=0.0)
    both = lm_training.train(cfg, str(tmp_path / "both"), seeds=[0, 1], progress=False)
    for s in (0, 1):
        alone = lm_training.train(cfg, str(tmp_path / f"s{s}"), seeds=[s], progress=False)
        assert both["seeds"][s]["loss"] == pytest.approx(alone["seeds"][s]["loss"], rel=1e-5)
        pa, _ = lm_training.load(str(tmp_path / "both" / f"seed-{s}"))
        pb, _ = lm_training.load(str(tmp_path / f"s{s}"))
        for x, y in zip(_leaves(pa), _leaves(pb)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    p0, _ = lm_training.load(str(tmp_path / "both" / "seed-0"))
    p1, _ = lm_training.load(str(tmp_path / "both" / "seed-1"))
    assert not np.allclose(p0["wte"], p1["wte"])
    assert both["seeds"][0]["val_loss"] != both["seeds"][1]["val_loss"]


def test_grad_accumulation_equals_one_big_batch(text_dir):
    cfg = _cfg(text_dir, batch_size=8, optimizer="momentum", lr=0.1, clip_norm=0.0)  # update = lr·g: compares the gradients
    model_cfg = cfg.model_config()
    params = gpt2.init(jax.random.key(0), model_cfg)
    optimizer = lm_training.make_optimizer(cfg, params)
    step = jax.jit(lm_training.make_step(model_cfg, optimizer))
    x_BxT, y_BxT = corpus.batch(corpus.load(text_dir, val_fraction=0.2).train, 0, 0, 8, 16)
    stacked = lambda tree: jax.tree.map(lambda a: jnp.asarray(a)[None], tree)
    one = step(stacked(params), stacked(optimizer.init(params)), x_BxT[None, None], y_BxT[None, None])
    acc = step(stacked(params), stacked(optimizer.init(params)), x_BxT.reshape(1, 4, 2, 16), y_BxT.reshape(1, 4, 2, 16))
    direct = gpt2.loss(params, x_BxT, y_BxT, model_cfg)
    np.testing.assert_allclose(one[2]["loss"][0], direct, rtol=1e-6)
    np.testing.assert_allclose(acc[2]["loss"][0], direct, rtol=1e-5)
    np.testing.assert_allclose(acc[2]["grad_norm"], one[2]["grad_norm"], rtol=1e-4)
    for x, y in zip(_leaves(one[0]), _leaves(acc[0])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_first_step_loss_is_ln_vocab(tmp_path, text_dir):
    """At init the logits z = LN(x)·h_v have variance σ² = D·0.02² (unit LN output, N(0, 0.02²) head), so
    E[logsumexp z − z_y] ≈ ln V + σ²/2 (second-order expansion). One batch of 64 tokens over ~20 distinct
    bytes averages few independent z_y (σ ≈ 0.11), hence the tolerance 0.1; a head init 5× too large
    would shift the loss by 12σ²  ≈ 0.16. The stored value is the model's own loss of batch 0."""
    cfg = _cfg(text_dir, seeds=[3], eval_every=0, checkpoint_every=0)
    lm_training.train(cfg, str(tmp_path / "run"), progress=False)
    row = _rows(tmp_path / "run" / "seed-3" / "metrics.jsonl")[0]
    assert row["step"] == 1
    assert row["loss"] == pytest.approx(math.log(256) + SMALL["n_embd"] * 0.02**2 / 2, abs=0.1)
    model_cfg = cfg.model_config()
    x, y = corpus.batch(corpus.load(text_dir, val_fraction=0.2).train, 3, 0, 4, 16)
    assert row["loss"] == pytest.approx(float(gpt2.loss(gpt2.init(jax.random.key(3), model_cfg), x, y, model_cfg)), rel=1e-6)


def test_run_directory_describes_itself(tmp_path, text_dir):
    out = tmp_path / "run"
    summary = lm_training.train(_cfg(text_dir, checkpoint_every=2, keep_checkpoints=1), str(out), progress=False)
    stored = json.loads((out / "config.json").read_text())
    assert {k: stored[k] for k in TrainLMConfig().to_dict()} == json.loads(json.dumps(_cfg(text_dir, checkpoint_every=2, keep_checkpoints=1).to_dict()))
    assert stored["resolved"]["model_config"]["n_embd"] == 32 and stored["resolved"]["compute_dtype"] == "float32"
    assert checkpoints.complete_steps(str(out / "seed-0" / "ckpt")) == [6]  # older ones pruned
    rows = _rows(out / "seed-0" / "metrics.jsonl")
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "val_loss"} <= set(rows[-1])
    assert rows[-1]["mfu"] is None  # CPU: no peak FLOP/s
    # the val loss logged is evaluate() of the final checkpoint, itself the mean loss over the eval windows
    params, model_cfg = lm_training.load(str(out))
    val = corpus.load(text_dir, val_fraction=0.2).val
    manual = [(float(gpt2.loss(params, x, y, model_cfg)), x.shape[0]) for x, y in corpus.eval_batches(val, 4, 16, 2)]
    expected = sum(v * n for v, n in manual) / sum(n for _, n in manual)
    assert lm_training.evaluate(params, model_cfg, val, batch_size=4, context=16, max_batches=2) == pytest.approx(expected, rel=1e-6)
    assert rows[-1]["val_loss"] == pytest.approx(expected, rel=1e-6) == summary["seeds"][0]["val_loss"]


def test_load_reads_hugging_face_directories(tmp_path):
    from connect.lm import huggingface

    model_cfg = gpt2.config("tiny", **SMALL)
    params = gpt2.init(jax.random.key(1), model_cfg)
    huggingface.save_pretrained(params, model_cfg, str(tmp_path / "hf"))
    loaded, cfg = lm_training.load(str(tmp_path / "hf"))
    assert cfg == model_cfg
    for x, y in zip(_leaves(params), _leaves(loaded)):
        np.testing.assert_array_equal(x, y)


def test_flops_per_token_counts_the_matmuls():
    """6N + 12·L·T·D with N the weights used in matmuls: 4 kernels per layer (D·3D + D·D + 2·D·F, plus their
    biases and LayerNorms) and the head (V·D), not the embedding lookups."""
    cfg = gpt2.config("tiny")
    V, D, L, F, T = 256, 64, 2, 256, 64
    n = L * (4 * D * D + 2 * D * F + 3 * D + D + F + D + 4 * D) + 2 * D + V * D
    assert flops.n_params(cfg) == n
    assert flops.flops_per_token(cfg, T) == 6 * n + 12 * L * T * D


@pytest.mark.parametrize("over, needle", [
    ({"context": 65}, "context 65 is longer than the model's n_positions=64"),
    ({"optimizer": "adamq"}, "unknown transformer optimizer 'adamq'"),
    ({"steps": 0}, "steps must be"),
    ({"batch_size": 6, "grad_accum": 4}, "not divisible by grad_accum"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"seeds": []}, "seeds must be"),
    ({"seeds": [1, 1]}, "seed twice"),
    ({"betas": [0.9]}, "betas must be"),
    ({"compute_dtype": "fp8"}, "unknown compute_dtype"),
    ({"schedule": "linear"}, "unknown schedule"),
    ({"schedule": "wsd", "warmup_frac": 0.9, "decay_frac": 0.2}, r"warmup_frac \+ decay_frac"),
    ({"model": "gpt5"}, "unknown GPT-2 config"),
])
def test_impossible_configs_fail_in_one_line(over, needle):
    with pytest.raises(UserError, match=needle) as e:
        TrainLMConfig(**over).validate()
    assert "\n" not in str(e.value)


def test_config_files_load(tmp_path):
    here = os.path.join(os.path.dirname(__file__), "..", "experiments")
    for name in ("gpt2_tiny.toml", "gpt2_seed_paper.toml"):
        config.load(TrainLMConfig, os.path.join(here, name))
    toml = tmp_path / "c.toml"
    toml.write_text('[train_lm]\nseeds = [2, 5]\nbetas = [0.85, 0.999]\n[train_lm.model_overrides]\nn_layer = 1\n')
    cfg = config.load(TrainLMConfig, str(toml))
    assert cfg.seeds == [2, 5] and cfg.betas == [0.85, 0.999] and cfg.model_overrides == {"n_layer": 1}
    assert cfg.model_config().n_layer == 1
    with pytest.raises(UserError, match="unknown option 'widths'"):
        config.from_dict({"widths": [2]}, "x", cls=TrainLMConfig)
