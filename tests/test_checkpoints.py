"""Checkpoints: a bitwise round trip with metadata, and a UserError for every broken directory."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from connect import checkpoints
from connect.errors import UserError

# A failed orbax restore can leave a tensorstore callback that later posts to orbax's closed
# asyncio loop ("RuntimeError: Event loop is closed", ignored in a thread): harmless noise
# from orbax-checkpoint 0.12, not from connect, so it is not reported as a test warning.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

META = {"model": "relu", "model_config": {"d_in": 3, "width": 4, "bias": True}, "optimizer": "muon",
        "weight_decay": 0.1, "seed": 7, "final_train_loss": 0.123456789}


def _params():
    k_w, k_b, k_a = jax.random.split(jax.random.key(0), 3)
    return {"W": jax.random.normal(k_w, (4, 3)), "b": jax.random.normal(k_b, (4,)), "a": jax.random.normal(k_a, (4,))}


@pytest.fixture
def saved(tmp_path):
    path = str(tmp_path / "ckpt")
    checkpoints.save_checkpoint(path, _params(), META)
    return path


def test_round_trip_is_bitwise(saved):
    assert checkpoints.is_complete(saved)
    params, meta = checkpoints.load_checkpoint(saved)
    want = _params()
    assert set(params) == set(want)
    for k in want:
        assert isinstance(params[k], np.ndarray)
        assert params[k].dtype == np.float32 and params[k].shape == want[k].shape
        assert params[k].tobytes() == np.asarray(want[k]).tobytes()
    assert meta == {**META, "format": checkpoints.FORMAT}
    assert meta["final_train_loss"] == 0.123456789  # floats survive JSON exactly


def test_save_replaces_an_existing_checkpoint(saved):
    other = jax.tree.map(lambda x: x + 1.0, _params())
    checkpoints.save_checkpoint(saved, other, {"seed": 8})
    params, meta = checkpoints.load_checkpoint(saved)
    assert np.array_equal(params["W"], np.asarray(other["W"]))
    assert meta == {"seed": 8, "format": checkpoints.FORMAT}


def test_save_accepts_numpy_and_nested_trees(tmp_path):
    path = str(tmp_path / "nested")
    tree = {"layer": {"W": np.arange(6, dtype=np.float32).reshape(2, 3)}, "step": np.array(3, dtype=np.int32)}
    checkpoints.save_checkpoint(path, tree, {})
    params, _ = checkpoints.load_checkpoint(path)
    assert np.array_equal(params["layer"]["W"], tree["layer"]["W"])
    assert params["step"] == 3 and params["step"].dtype == np.int32


def test_save_refuses_to_overwrite_a_foreign_directory(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a checkpoint directory"):
        checkpoints.save_checkpoint(str(foreign), _params(), {})
    assert (foreign / "thesis.tex").read_text() == "precious"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="not a checkpoint directory"):
        checkpoints.save_checkpoint(str(a_file), _params(), {})


def test_save_replaces_an_interrupted_checkpoint(saved):
    os.remove(os.path.join(saved, "metadata.json"))  # killed before the metadata was written
    assert not checkpoints.is_complete(saved)
    checkpoints.save_checkpoint(saved, _params(), {"seed": 1})
    assert checkpoints.is_complete(saved)


def _assert_user_error(path, word):
    with pytest.raises(UserError) as err:
        checkpoints.load_checkpoint(path)
    assert word in str(err.value)
    assert str(path) in str(err.value)


def test_missing_directory(tmp_path):
    _assert_user_error(str(tmp_path / "nope"), "not found")


def test_directory_without_metadata(saved):
    os.remove(os.path.join(saved, "metadata.json"))
    _assert_user_error(saved, "incomplete")


def test_empty_directory(tmp_path):
    _assert_user_error(str(tmp_path), "incomplete")


@pytest.mark.parametrize(
    "text,word",
    [
        ("{not json", "corrupt metadata.json"),
        ("", "corrupt metadata.json"),
        ("[1, 2]", "corrupt metadata.json"),
        ('{"seed": 1}', "not a connect checkpoint"),
        ('{"format": "connect-checkpoint/0"}', "not a connect checkpoint"),
    ],
)
def test_bad_metadata(saved, text, word):
    with open(os.path.join(saved, "metadata.json"), "w") as f:
        f.write(text)
    _assert_user_error(saved, word)


def test_params_deleted(saved):
    shutil.rmtree(os.path.join(saved, "params"))
    _assert_user_error(saved, "unreadable parameters")


def test_params_emptied(saved):
    shutil.rmtree(os.path.join(saved, "params"))
    os.makedirs(os.path.join(saved, "params"))
    _assert_user_error(saved, "unreadable parameters")


def test_params_data_garbled(saved):
    # the array data live in the OCDBT data files params/d/*
    data_files = glob.glob(os.path.join(saved, "params", "d", "*"))
    assert data_files
    for f in data_files:
        with open(f, "r+b") as fh:
            raw = bytearray(fh.read())
            raw[len(raw) // 2] ^= 0xFF
            fh.seek(0)
            fh.write(bytes(raw))
    _assert_user_error(saved, "unreadable parameters")


def test_params_tree_metadata_garbled(saved):
    with open(os.path.join(saved, "params", "_METADATA"), "w") as f:
        f.write("{garbage")
    _assert_user_error(saved, "unreadable parameters")


def test_metadata_is_json_read_by_anyone(saved):
    with open(os.path.join(saved, "metadata.json")) as f:
        assert json.load(f)["optimizer"] == "muon"


def test_recorded_optimizer_of_checkpoint_seed_run_and_foreign_directories(tmp_path, saved):
    assert checkpoints.recorded_optimizer(saved) == "muon"  # a checkpoint directory: its own metadata.json
    run = tmp_path / "run"
    ckpt = run / "seed-0" / "ckpt"
    ckpt.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"optimizer": "lion"}))
    assert checkpoints.recorded_optimizer(str(ckpt)) == "lion"  # no checkpoint yet: the run's config.json, two levels up
    for step, optimizer in ((900, "sgd"), (1000, "adamw")):
        os.makedirs(checkpoints.step_dir(str(ckpt), step))
        with open(os.path.join(checkpoints.step_dir(str(ckpt), step), "metadata.json"), "w") as f:
            json.dump({"step": step, "optimizer": optimizer}, f)
    assert [checkpoints.recorded_optimizer(str(p)) for p in (run, run / "seed-0", ckpt)] == ["adamw"] * 3  # the newest step's
    assert checkpoints.recorded_optimizer(checkpoints.step_dir(str(ckpt), 900)) == "sgd"
    hf = tmp_path / "hf"  # a Hugging Face directory: a config.json without an optimizer
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 16}))
    assert checkpoints.recorded_optimizer(str(hf)) is None
