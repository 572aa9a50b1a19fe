"""Data: synthetic sets are determined by their seed; a user's .npz loads or fails with a
message that names the problem."""

import numpy as np
import pytest

from connect.errors import UserError
from connect.twolayer import data

SMALL = dict(n_train=16, n_test=24, d_in=3, teacher_width=4)


def _arrays(ds: data.Dataset):
    return [np.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test)]


@pytest.mark.parametrize("task", data.TASKS)
def test_synthetic_is_determined_by_the_seed(task):
    cfg = data.DataConfig(task=task, seed=3, **SMALL)
    first, again = data.make(cfg), data.make(data.DataConfig(task=task, seed=3, **SMALL))
    other = data.make(data.DataConfig(task=task, seed=4, **SMALL))
    assert first.task == task and first.d_in == 3
    shapes = [a.shape for a in _arrays(first)]
    assert shapes == [(16, 3), (16,), (24, 3), (24,)]
    assert all(a.dtype == np.float32 for a in _arrays(first))
    for a, b in zip(_arrays(first), _arrays(again)):
        assert np.array_equal(a, b)
    assert not np.array_equal(_arrays(first)[0], _arrays(other)[0])
    assert not np.array_equal(_arrays(first)[1], _arrays(other)[1])
    # train and test are disjoint draws
    assert not np.any(np.all(np.isclose(_arrays(first)[0][:, None, :], _arrays(first)[2][None, :, :]), axis=-1))


def test_synthetic_classification_labels_are_plus_minus_one():
    ds = data.make(data.DataConfig(task="classification", seed=0, **SMALL))
    for y in (np.asarray(ds.y_train), np.asarray(ds.y_test)):
        assert set(np.unique(y).tolist()) == {-1.0, 1.0}


def test_synthetic_regression_targets_are_standardised_teacher_plus_noise():
    ds = data.make(data.DataConfig(task="regression", seed=0, noise=0.0, **SMALL))
    y = np.concatenate([np.asarray(ds.y_train), np.asarray(ds.y_test)])
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1.0) < 1e-4  # noise 0: exactly the standardised teacher
    assert len(np.unique(y)) > len(y) // 2  # real-valued, not labels (ties: inputs where every teacher unit is off)
    noisy = data.make(data.DataConfig(task="regression", seed=0, noise=0.5, **SMALL))
    np.testing.assert_array_equal(noisy.x_train, ds.x_train)  # noise touches only the targets
    assert not np.allclose(noisy.y_train, ds.y_train)


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="unknown task"):
        data.make(data.DataConfig(task="ranking"))


def _save(tmp_path, name="d.npz", **arrays):
    path = str(tmp_path / name)
    np.savez(path, **arrays)
    return path


def _xy(n=10, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n)


def test_load_npz_valid_file(tmp_path):
    x, y = _xy()
    ds = data.load_npz(_save(tmp_path, X=x, y=y), test_fraction=0.2)
    assert ds.x_train.shape == (8, 3) and ds.y_train.shape == (8,)
    assert ds.x_test.shape == (2, 3) and ds.y_test.shape == (2,)
    assert ds.x_train.dtype == np.float32 and ds.task == "regression"
    # the rows are the file's rows, split without loss or duplication, X and y kept together
    rows = np.concatenate([np.asarray(ds.x_train), np.asarray(ds.x_test)])
    ys = np.concatenate([np.asarray(ds.y_train), np.asarray(ds.y_test)])
    order = np.argsort(rows[:, 0])
    np.testing.assert_array_equal(rows[order], x.astype(np.float32)[np.argsort(x[:, 0])])
    np.testing.assert_array_equal(ys[order], y.astype(np.float32)[np.argsort(x[:, 0])])
    # the split is seeded
    again = data.load_npz(str(tmp_path / "d.npz"), test_fraction=0.2)
    assert np.array_equal(np.asarray(again.x_test), np.asarray(ds.x_test))


def test_load_npz_with_test_split_and_classification(tmp_path):
    x, _ = _xy(n=6)
    x_te, _ = _xy(n=4, seed=1)
    path = _save(tmp_path, X=x, y=np.array([0, 1, 1, 0, 1, 0]), X_test=x_te, y_test=np.array([1, 0, 0, 1]))
    ds = data.make(data.DataConfig(task="classification", path=path))
    assert ds.x_train.shape == (6, 3) and ds.x_test.shape == (4, 3)
    np.testing.assert_array_equal(ds.y_train, [-1, 1, 1, -1, 1, -1])  # 0/1 mapped to ±1
    np.testing.assert_array_equal(ds.y_test, [1, -1, -1, 1])
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))


def test_load_npz_column_vector_y(tmp_path):
    x, y = _xy()
    ds = data.load_npz(_save(tmp_path, X=x, y=y[:, None]))
    assert ds.y_train.ndim == 1


@pytest.mark.parametrize(
    "arrays,word",
    [
        ({"y": np.zeros(10)}, "lacks X"),
        ({"X": np.zeros((10, 3))}, "lacks y"),
        ({"Z": np.zeros(3)}, "lacks X and y"),
        ({"X": np.where(np.eye(10, 3) > 0, np.nan, 1.0), "y": np.zeros(10)}, "NaN"),
        ({"X": np.ones((10, 3)), "y": np.array([0.0] * 9 + [np.inf])}, "NaN or inf"),
        ({"X": np.zeros(10), "y": np.zeros(10)}, "2-D"),
        ({"X": np.zeros((10, 3, 1)), "y": np.zeros(10)}, "2-D"),
        ({"X": np.zeros((10, 3)), "y": np.zeros(9)}, "must have shape (10,)"),
        ({"X": np.zeros((10, 3)), "y": np.zeros((10, 2))}, "must have shape"),
        ({"X": np.array([["a", "b"]] * 10), "y": np.zeros(10)}, "numeric"),
        ({"X": np.zeros((10, 3), dtype=complex), "y": np.zeros(10)}, "numeric"),
        ({"X": np.zeros((1, 3)), "y": np.zeros(1)}, "at least 2"),
        ({"X": np.zeros((4, 3)), "y": np.zeros(4), "X_test": np.zeros((2, 3))}, "only one of X_test/y_test"),
        ({"X": np.zeros((4, 3)), "y": np.zeros(4), "X_test": np.zeros((2, 2)), "y_test": np.zeros(2)}, "features"),
    ],
)
def test_load_npz_bad_contents(tmp_path, arrays, word):
    path = _save(tmp_path, **arrays)
    with pytest.raises(UserError) as err:
        data.load_npz(path)
    assert word in str(err.value)
    assert path in str(err.value)


def test_load_npz_object_array(tmp_path):
    path = str(tmp_path / "obj.npz")
    np.savez(path, X=np.array([[1.0, "a"], [None, 2.0]], dtype=object), y=np.zeros(2))
    with pytest.raises(UserError, match="not a readable .npz") as err:
        data.load_npz(path)
    assert "pickle" in str(err.value)  # says why: object arrays need pickle, which stays off


def test_load_npz_bad_labels_for_classification(tmp_path):
    x, _ = _xy(n=4)
    with pytest.raises(UserError, match="labels must be"):
        data.load_npz(_save(tmp_path, X=x, y=np.array([0.0, 1.0, 2.0, 1.0])), task="classification")


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        data.load_npz(str(tmp_path / "nope.npz"))
    with pytest.raises(UserError, match="not found"):  # a directory is not a data file
        data.load_npz(str(tmp_path))


def test_load_npz_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"this is not a zip archive at all\n" * 10)
    with pytest.raises(UserError, match="not a readable .npz"):
        data.load_npz(str(path))
    truncated = tmp_path / "truncated.npz"
    x, y = _xy()
    np.savez(str(truncated), X=x, y=y)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(UserError, match="not a readable .npz"):
        data.load_npz(str(truncated))


def test_load_npz_bad_test_fraction(tmp_path):
    x, y = _xy()
    with pytest.raises(UserError, match="test_fraction"):
        data.load_npz(_save(tmp_path, X=x, y=y), test_fraction=1.0)
