"""The width sweep end to end on a tiny configuration: run directory, rows, resume."""

import csv
import json
import os

import numpy as np
import pytest
import safetensors.numpy

from connect import checkpoints, config
from connect.models import relu
from connect.studies.width_sweep import plots
from connect.studies.width_sweep import run as sweep
from connect.studies.width_sweep.config import WidthSweepConfig
from connect.twolayer import losses

TINY = {"widths": [2, 8], "optimizers": ["adamw", "muon"], "seeds": 2, "steps": 200, "path_steps": 30, "t_points": 5}


def _cfg(**over):
    return config.from_dict({**TINY, **over}, cls=WidthSweepConfig)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("sweep") / "run")
    rows = sweep.run(_cfg(), run_dir, progress=False)
    plots.plot_run(run_dir)
    return run_dir, rows


def test_run_directory_describes_itself(full_run):
    run_dir, rows = full_run
    for name in ("config.json", "metrics.jsonl", "results.json", "results.csv"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f) == _cfg().to_dict()
    for fig in ("barrier_vs_width", "loss_along_t", "spectrum_along_path", "constraint_norms"):
        for ext in ("png", "pdf"):
            assert os.path.getsize(os.path.join(run_dir, "figures", f"{fig}.{ext}")) > 1000
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 2 * 2 * 2  # widths × optimizers × seeds


def test_one_row_per_pair_path_alignment(full_run):
    run_dir, rows = full_run
    n_pairs = 6  # C(4, 2) solutions of one width
    assert len(rows) == 2 * n_pairs * 3 * 2
    with open(os.path.join(run_dir, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {r["pair_type"] for r in table} == {"adamw-adamw", "adamw-muon", "muon-muon"}
    assert {(r["path"], r["alignment"]) for r in table} == {(p, a) for p in ("linear", "bezier", "polychain") for a in ("raw", "aligned")}
    cross = [r for r in rows if r["pair_type"] == "adamw-muon" and r["path"] != "linear"]
    assert {r["path_optimizer"] for r in cross} == {"adamw"}
    assert {r["path_optimizer"] for r in rows if r["pair_type"] == "muon-muon" and r["path"] != "linear"} == {"muon"}
    for r in rows:
        assert r["barrier_train"] >= 0 and r["max_barrier_train"] >= 0
        assert r["curve"]["t"][0] == 0.0 and r["curve"]["t"][-1] == 1.0 and r["spectra"]["t"] == r["curve"]["t"]
        assert set(r["curve"]) == {"t", "loss", "barrier", "max_barrier", "test"}  # the one curve schema
        assert r["curve"]["barrier"] == r["barrier_train"] and r["curve"]["test"]["max_barrier"] == r["max_barrier_test"]


def test_path_endpoints_are_the_checkpoints(full_run):
    """Endpoint losses in every row equal the loss of the saved checkpoint (alignment keeps B's function)."""
    run_dir, rows = full_run
    from connect.twolayer import data

    ds = data.make(_cfg().data_config())
    loss = {}
    for r in rows:
        for side in ("a", "b"):
            name = sweep.checkpoint_name(r["width"], r[f"opt_{side}"], r[f"seed_{side}"])
            if name not in loss:
                params, meta = checkpoints.load_checkpoint(os.path.join(run_dir, "checkpoints", name))
                loss[name] = float(losses.mse(relu.apply(params, ds.x_train), ds.y_train))
                assert meta["model_config"]["width"] == r["width"]
            np.testing.assert_allclose(r[f"loss_{side}_train"], loss[name], rtol=1e-5, atol=1e-7)


def test_killed_and_resumed_sweep_gives_the_same_results(full_run, tmp_path, monkeypatch):
    run_dir_full, _ = full_run
    run_dir = str(tmp_path / "resumed")
    # Kill 1: in the middle of saving the second width's checkpoints.
    real_save, saved = checkpoints.save_checkpoint, []

    def dying_save(path, params, metadata, **kw):
        if len(saved) == 5:
            raise KeyboardInterrupt
        saved.append(path)
        real_save(path, params, metadata, **kw)

    monkeypatch.setattr(checkpoints, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(_cfg(), run_dir, progress=False)
    monkeypatch.setattr(checkpoints, "save_checkpoint", real_save)
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    finished = {p: _mtimes(p) for p in saved}  # resuming never rewrites these
    # Kill 2: while measuring the second width's pairs.
    real_measured = sweep.measured

    def dying_measured(cfg, dataset, rd, width, params):
        if width == 8:
            raise KeyboardInterrupt
        return real_measured(cfg, dataset, rd, width, params)

    monkeypatch.setattr(sweep, "measured", dying_measured)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(_cfg(), run_dir, progress=False)
    monkeypatch.setattr(sweep, "measured", real_measured)
    assert os.path.isfile(os.path.join(run_dir, "pairs", "w0002.json"))
    assert not os.path.exists(os.path.join(run_dir, "pairs", "w0008.json"))
    # Resume: nothing already saved is redone (no training call), and results match.
    mtime = os.path.getmtime(os.path.join(run_dir, "pairs", "w0002.json"))
    sweep.run(_cfg(), run_dir, progress=False)
    assert os.path.getmtime(os.path.join(run_dir, "pairs", "w0002.json")) == mtime
    for name in ("results.json", "results.csv"):
        with open(os.path.join(run_dir_full, name)) as f1, open(os.path.join(run_dir, name)) as f2:
            assert f1.read() == f2.read(), name
    # the training log lost nothing and holds no network twice
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        keys = [(e["width"], e["optimizer"], e["seed"]) for e in map(json.loads, f)]
    assert sorted(keys) == sorted({(w, o, s) for w in (2, 8) for o in ("adamw", "muon") for s in (0, 1)})
    assert {p: _mtimes(p) for p in finished} == finished
    for name in os.listdir(os.path.join(run_dir_full, "checkpoints")):  # bit-identical arrays, readable without connect
        with open(os.path.join(run_dir_full, "checkpoints", name, "params.safetensors"), "rb") as f1, \
                open(os.path.join(run_dir, "checkpoints", name, "params.safetensors"), "rb") as f2:
            assert f1.read() == f2.read(), name
    with np.load(os.path.join(run_dir_full, "data.npz")) as z1, np.load(os.path.join(run_dir, "data.npz")) as z2:
        assert z1.files == z2.files and all(np.array_equal(z1[k], z2[k]) for k in z1.files)


def _mtimes(directory):
    return {e: os.stat(os.path.join(directory, e)).st_mtime_ns for e in sorted(os.listdir(directory))}


def test_run_directory_is_checkable_without_connect(full_run):
    """numpy + safetensors alone recompute every checkpoint's training loss from data.npz and params.safetensors."""
    run_dir, _ = full_run
    with np.load(os.path.join(run_dir, "data.npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert sorted(arrays) == ["X", "X_test", "y", "y_test"] and all(v.dtype == np.float32 for v in arrays.values())
    from connect.twolayer import data

    ds = data.make(_cfg().data_config())  # exactly the arrays trained on
    for key, trained_on in (("X", ds.x_train), ("y", ds.y_train), ("X_test", ds.x_test), ("y_test", ds.y_test)):
        np.testing.assert_array_equal(arrays[key], np.asarray(trained_on))
    names = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    assert len(names) == 2 * 2 * 2
    x, y = arrays["X"].astype(np.float64), arrays["y"].astype(np.float64)
    for name in names:
        ckpt = os.path.join(run_dir, "checkpoints", name)
        p = safetensors.numpy.load_file(os.path.join(ckpt, "params.safetensors"))
        assert sorted(p) == ["W", "a", "b"]
        with open(os.path.join(ckpt, "metadata.json")) as f:
            meta = json.load(f)
        w, a, b = (p[k].astype(np.float64) for k in ("W", "a", "b"))
        f_N = np.maximum(x @ w.T + b, 0.0) @ a
        np.testing.assert_allclose(0.5 * np.mean((f_N - y) ** 2), meta["final_train_loss"], rtol=1e-6, atol=1e-6)
        params, _ = checkpoints.load_checkpoint(ckpt)
        assert params.keys() == p.keys() and all(np.array_equal(params[k], p[k]) for k in p)
        assert all(params[k].dtype == p[k].dtype for k in p)


def test_rerun_with_other_config_is_refused(full_run):
    from connect.errors import UserError

    run_dir, _ = full_run
    with pytest.raises(UserError, match="was started with steps = 200, not 201"):
        sweep.run(_cfg(steps=201), run_dir, progress=False)


def test_user_classification_data(tmp_path):
    """A user's .npz, classification: error-rate barriers appear, and the split is the user's."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.sign(x[:, 0] * x[:, 1] + 0.1).astype(np.float32)
    path = tmp_path / "xor.npz"
    np.savez(path, X=x[:30], y=y[:30], X_test=x[30:], y_test=y[30:])
    cfg = _cfg(widths=[4], optimizers=["adamw"], task="classification", data=str(path), steps=100, path_steps=10)
    rows = sweep.run(cfg, str(tmp_path / "run"), progress=False)
    assert len(rows) == 1 * 3 * 2  # one pair × paths × alignments
    for r in rows:
        assert {"err_barrier_train", "err_barrier_test", "err_max_barrier_test"} <= set(r)
        errs = np.asarray(r["curve"]["err_test"]["loss"])
        assert np.all((errs >= 0) & (errs <= 1)) and np.allclose(errs * 10, np.round(errs * 10))  # 10 test points
    with open(tmp_path / "run" / "results.csv") as f:
        assert "err_barrier_train" in f.readline()
