"""One analysis core over model families: the same path, barrier and spectra functions serve the two-layer
ReLU family and GPT-2, and every study reaches them."""

import functools

import jax
import numpy as np
import pytest

from connect import barrier, optimizers, paths, spectra
from connect.models import gpt2, relu

CFG = gpt2.config("tiny", n_layer=2, n_embd=16, n_head=2, n_inner=32, n_positions=16, vocab_size=32)
TS = np.array([0.0, 0.25, 0.5, 1.0], np.float32)


def _relu_pair():
    cfg = relu.ReluConfig(d_in=5, width=7)
    return relu.init(jax.random.key(0), cfg), relu.init(jax.random.key(1), cfg), cfg


def _gpt2_pair():
    return gpt2.init(jax.random.key(0), CFG), gpt2.init(jax.random.key(1), CFG), CFG


@pytest.mark.parametrize("family, pair", [(relu, _relu_pair), (gpt2, _gpt2_pair)], ids=["relu", "gpt2"])
def test_spectra_along_a_path_equal_numpy_for_every_family(family, pair):
    a, b, cfg = pair()
    nodes = paths.stack_nodes(a, paths.init_free(a, b, 1), b)
    names = tuple(family.matrix_names(cfg))
    fn = functools.partial(family.matrices, cfg=cfg, names=names)
    sets = {"adamw": optimizers.constraint("adamw", 0.1)}
    out = spectra.along_path("polychain", nodes, TS, fn, constraint_sets=sets)
    assert out["names"] == list(names)
    for k, t in enumerate(TS):
        point = jax.tree.map(lambda x: np.asarray(x, np.float64), paths.point("polychain", nodes, t))
        for name, w in fn(point).items():
            w = np.asarray(w)
            np.testing.assert_allclose(out["matrices"][name]["singular_values"][k], np.linalg.svd(w, compute_uv=False),
                                       rtol=2e-4, atol=1e-6)
            np.testing.assert_allclose(out["matrices"][name]["adamw_rel"][k], 0.1 * np.abs(w).max(), rtol=1e-5)
    med = np.median([out["matrices"][n]["stable_rank"] for n in names], axis=0)
    np.testing.assert_allclose(out["median"]["stable_rank"], med, rtol=1e-6)


def test_family_matrices_are_fan_out_by_fan_in():
    a, _, cfg = _gpt2_pair()
    m = gpt2.matrices(a, cfg)
    d, f = cfg.n_embd, cfg.n_inner
    assert m["h.0.attn.q"].shape == (d, d) and m["h.1.mlp.c_fc"].shape == (f, d) and m["h.1.mlp.c_proj"].shape == (d, f)
    np.testing.assert_array_equal(m["h.1.attn.v"], np.asarray(a["h"]["attn"]["c_attn"]["kernel"][1][:, 2 * d:]).T)
    r, _, rcfg = _relu_pair()
    assert relu.matrices(r, rcfg)["W"].shape == (rcfg.width, rcfg.d_in)


@pytest.mark.parametrize("pair", [_relu_pair, _gpt2_pair], ids=["relu", "gpt2"])
def test_curve_of_a_path_to_itself_is_flat_and_its_barrier_zero(pair):
    a, _, cfg = pair()
    nodes = paths.stack_nodes(a, paths.init_free(a, a, 0), a)
    loss = (lambda p: jax.numpy.sum(relu.apply(p, np.ones((3, cfg.d_in), np.float32)) ** 2)) if isinstance(cfg, relu.ReluConfig) \
        else (lambda p: gpt2.loss(p, np.zeros((1, 4), np.int32), np.ones((1, 4), np.int32), cfg))
    c = barrier.curve(TS, np.asarray(paths.evaluate("linear", loss, nodes, TS)))
    assert set(c) == {"t", "loss", "barrier", "max_barrier"}
    assert c["barrier"] == 0.0 and c["max_barrier"] == 0.0 and len(set(c["loss"])) == 1


def _spy(monkeypatch):
    """Count the calls of the core's spectra and curve functions (jit caches cleared so traces rerun)."""
    calls = {"matrix_summaries": 0, "curve": 0}

    def wrap(module, name):
        real = getattr(module, name)

        def spy(*a, **kw):
            calls[name] += 1
            return real(*a, **kw)

        monkeypatch.setattr(module, name, spy)

    wrap(spectra, "matrix_summaries")
    wrap(barrier, "curve")
    jax.clear_caches()
    spectra._along_program.cache_clear()
    return calls


def test_the_width_sweep_measures_through_the_core(monkeypatch):
    from connect.twolayer import data, measure

    calls = _spy(monkeypatch)
    ds = data.make(data.DataConfig(n_train=8, n_test=8, d_in=5, teacher_width=3))
    a, b, _ = _relu_pair()
    rows = measure.measure_raw_and_aligned([a], [b], ds, optimizers.make("adamw", 0.01, 0.1, relu.MUON_MATRICES), 0.1,
                                           jax.random.key(0), measure.PathSettings(kinds=("linear",), steps=2, t_points=3))
    assert calls["matrix_summaries"] >= 1 and calls["curve"] >= 2 and rows[0]["spectra"]["stable_rank"]


def test_the_gpt2_study_measures_through_the_core(monkeypatch):
    from connect.lm import corpus
    from connect.studies.gpt2_connectivity import config as study_config
    from connect.studies.gpt2_connectivity import run

    calls = _spy(monkeypatch)
    a, b, cfg = _gpt2_pair()
    tokens = np.arange(400, dtype=np.int32) % cfg.vocab_size
    data = corpus.Corpus("counting", tokens, tokens, cfg.vocab_size, "bytes")
    scfg = study_config.StudyConfig(paths=["linear"], align=False, eval_batch_size=2, eval_batches=1)
    rec = run.measure_pair(a, b, cfg, data, scfg, path_optimizer="adamw", context=8, ts_T=TS)
    assert calls["matrix_summaries"] >= 1 and calls["curve"] >= 1
    assert set(rec["paths"][0]["curve"]) >= {"t", "loss", "barrier", "max_barrier"}


def test_the_finetune_study_measures_through_the_core(monkeypatch, tmp_path):
    import json

    from connect import checkpoints
    from connect.studies.finetune import run
    from connect.studies.finetune.config import FinetuneConfig

    model = gpt2.config("tiny", n_layer=1, n_embd=16, n_head=2, n_inner=32, n_positions=32)
    pre = tmp_path / "adamw-run"
    pre.mkdir()
    (pre / "config.json").write_text(json.dumps({"optimizer": "adamw"}))
    checkpoints.save_checkpoint(checkpoints.step_dir(str(pre / "seed-0" / "ckpt"), 1), gpt2.init(jax.random.key(0), model),
                                {"model": "gpt2", "model_config": model.to_dict(), "optimizer": "adamw"})
    (tmp_path / "corpus.txt").write_text("abcdefgh " * 400)
    cfg = FinetuneConfig(pretrained=[str(pre)], methods=["adamw"], lrs={"adamw": [1e-3]}, n_train=8, n_heldout=4, steps=1,
                         batch_size=4, eval_every=1, path_points=3, top_k=2, eval_batches=1, context=32, corpus=str(tmp_path / "corpus.txt"))
    calls = _spy(monkeypatch)
    run.run(cfg, str(tmp_path / "out"), progress=False)
    assert calls["matrix_summaries"] >= 2 and calls["curve"] >= 2  # ΔW and the path's spectra; corpus and task curves


def test_checkpoints_tell_families_apart(tmp_path, capsys):
    """A checkpoint of one family passed to the other family's loader or command: one line naming both."""
    from connect import checkpoints, cli
    from connect.errors import UserError
    from connect.lm import training
    from connect.twolayer import pair

    r, _, rcfg = _relu_pair()
    g, _, gcfg = _gpt2_pair()
    checkpoints.save_checkpoint(str(tmp_path / "relu"), r, {"model": "relu", "model_config": rcfg.to_dict()})
    checkpoints.save_checkpoint(str(tmp_path / "run" / "seed-0" / "ckpt" / "step-00000001"), g,
                                {"model": "gpt2", "model_config": gcfg.to_dict()})
    assert checkpoints.family(str(tmp_path / "relu")) == "relu" and checkpoints.family(str(tmp_path / "run")) == "gpt2"
    with pytest.raises(UserError, match="holds a relu model, not a gpt2, llama or gpt_neox one: pass it to connect barrier"):
        training.load(str(tmp_path / "relu"))
    with pytest.raises(UserError, match="holds a gpt2 model, not a relu one: pass it to connect paths"):
        pair.load_pair(str(tmp_path / "run"), str(tmp_path / "relu"))
    assert cli.main(["barrier", str(tmp_path / "run" / "seed-0"), str(tmp_path / "relu")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpt2 model" in err
