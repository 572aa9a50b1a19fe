"""Run directories a reader without connect can check: checkpoint arrays as safetensors, the data as .npz."""

import os

import numpy as np
import pytest
import safetensors.numpy

from connect import checkpoints, io
from connect.errors import UserError
from connect.studies.width_sweep import run as sweep
from connect.twolayer import data

PARAMS = {"W": np.arange(6, dtype=np.float32).reshape(3, 2), "h": {"ln": {"scale": np.ones(2, np.float32)}}}


def test_exported_arrays_have_dotted_keys_and_equal_the_checkpoint(tmp_path):
    path = str(tmp_path / "ckpt")
    checkpoints.save_checkpoint(path, PARAMS, {"model": "test"}, export_arrays=True)
    arrays = safetensors.numpy.load_file(os.path.join(path, checkpoints.ARRAYS_FILE))
    assert sorted(arrays) == ["W", "h.ln.scale"]
    loaded, _ = checkpoints.load_checkpoint(path)
    np.testing.assert_array_equal(arrays["W"], loaded["W"])
    np.testing.assert_array_equal(arrays["h.ln.scale"], loaded["h"]["ln"]["scale"])
    checkpoints.save_checkpoint(path, PARAMS, {"model": "test"})  # replaced; without export no arrays file
    assert not os.path.exists(os.path.join(path, checkpoints.ARRAYS_FILE))


def test_a_save_killed_after_the_arrays_is_incomplete_and_replaced(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(path, PARAMS, {"model": "test"}, export_arrays=True)
    monkeypatch.setattr(checkpoints, "write_json_atomic", io.write_json_atomic)
    assert os.path.isfile(os.path.join(path, checkpoints.ARRAYS_FILE)) and not checkpoints.is_complete(path)
    checkpoints.save_checkpoint(path, PARAMS, {"model": "test"}, export_arrays=True)
    assert checkpoints.is_complete(path)


def test_data_file_is_written_once_and_a_changed_data_set_is_refused(tmp_path):
    ds = data.make(data.DataConfig(n_train=8, n_test=4, d_in=3))
    sweep._write_data(str(tmp_path), ds)
    with np.load(tmp_path / sweep.DATA_FILE, allow_pickle=False) as z:
        assert sorted(z.files) == ["X", "X_test", "y", "y_test"]
        np.testing.assert_array_equal(z["X_test"], np.asarray(ds.x_test))
    assert data.load_npz(str(tmp_path / sweep.DATA_FILE)).x_train.shape == (8, 3)  # a user's data file, too
    mtime = os.stat(tmp_path / sweep.DATA_FILE).st_mtime_ns
    sweep._write_data(str(tmp_path), ds)  # a rerun leaves it alone
    assert os.stat(tmp_path / sweep.DATA_FILE).st_mtime_ns == mtime
    with pytest.raises(UserError, match="other data"):
        sweep._write_data(str(tmp_path), data.make(data.DataConfig(n_train=8, n_test=4, d_in=3, seed=1)))
