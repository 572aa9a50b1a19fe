"""Data sets for the two-layer studies: synthetic ones fully determined by a seed, or a user's arrays.

Every data set is a :class:`Dataset` of float32 arrays with a train and a held-out split.
Two tasks:

* ``regression`` — targets are real numbers, loss ``½·mean (f(x) − y)²``;
* ``classification`` — binary labels ``y ∈ {−1, +1}``, logistic loss ``mean log(1 + e^{−y f(x)})``
  and error rate ``mean[sign f(x) ≠ y]``.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from connect.errors import UserError
from connect.models import relu

TASKS = ("regression", "classification")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["x_train", "y_train", "x_test", "y_test"], meta_fields=["task"])
@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and held-out arrays; a pytree whose ``task`` is static (passes through ``jit``)."""

    x_train: jax.Array  # (N, D)
    y_train: jax.Array  # (N,)
    x_test: jax.Array  # (M, D)
    y_test: jax.Array  # (M,)
    task: str

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[1])


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data come from. ``path`` set: a user's ``.npz``; otherwise synthetic."""

    task: str = "regression"
    n_train: int = 32
    n_test: int = 256
    d_in: int = 8
    teacher_width: int = 16
    noise: float = 0.5
    seed: int = 0
    path: str | None = None
    test_fraction: float = 0.2


def make(cfg: DataConfig) -> Dataset:
    """Build the data set a :class:`DataConfig` describes."""
    if cfg.task not in TASKS:
        raise UserError(f"unknown task {cfg.task!r}: use one of {', '.join(TASKS)}")
    if cfg.path:
        return load_npz(cfg.path, task=cfg.task, seed=cfg.seed, test_fraction=cfg.test_fraction)
    return synthetic(cfg)


def synthetic(cfg: DataConfig) -> Dataset:
    """Teacher-student data: ``x ~ N(0, I)``, ``y = teacher(x) + noise·ε`` (regression)
    or ``y = sign(teacher(x) + noise·ε)`` (classification), the teacher output standardised; the teacher is a random
    two-layer ReLU network of width ``teacher_width``. Fully determined by ``cfg.seed``."""
    key = jax.random.key(cfg.seed)
    k_t, k_x, k_e = jax.random.split(key, 3)
    teacher = relu.init(k_t, relu.ReluConfig(cfg.d_in, cfg.teacher_width, bias=True))
    teacher["b"] = 0.1 * jax.random.normal(jax.random.fold_in(k_t, 1), (cfg.teacher_width,))
    n = cfg.n_train + cfg.n_test
    x_NxD = jax.random.normal(k_x, (n, cfg.d_in))
    f_N = relu.apply(teacher, x_NxD)
    f_N = (f_N - f_N.mean()) / (f_N.std() + 1e-12)
    y_N = f_N + cfg.noise * jax.random.normal(k_e, (n,))
    if cfg.task == "classification":
        y_N = jnp.where(y_N >= 0, 1.0, -1.0)
    x_NxD = x_NxD.astype(jnp.float32)
    y_N = y_N.astype(jnp.float32)
    return Dataset(x_NxD[: cfg.n_train], y_N[: cfg.n_train], x_NxD[cfg.n_train :], y_N[cfg.n_train :], cfg.task)


def load_npz(path: str, task: str = "regression", seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """A user's arrays: an ``.npz`` with ``X`` (n, d) and ``y`` (n,), optionally ``X_test``/``y_test``.

    Without a test split, a seeded random ``test_fraction`` of the rows is held out.
    ``allow_pickle`` stays off: object arrays are refused. Only these four arrays are read; any malformed
    file or array is a one-line :class:`UserError` naming the file and the fix.
    """
    arrays = _read_npz(path)
    x, y = _checked_xy(path, arrays["X"], arrays["y"], "X", "y")
    if task == "classification":
        labels = np.unique(y)
        if not set(labels.tolist()) <= {-1.0, 1.0, 0.0}:
            raise UserError(f"data file {path}: classification labels must be ±1 (or 0/1), found {labels[:5].tolist()}: "
                            "relabel y, or use the regression task")
        y = np.where(y > 0, 1.0, -1.0).astype(np.float32)
    if "X_test" in arrays or "y_test" in arrays:
        if "X_test" not in arrays or "y_test" not in arrays:
            raise UserError(f"data file {path} has only one of X_test/y_test: give both or neither")
        x_te, y_te = _checked_xy(path, arrays["X_test"], arrays["y_test"], "X_test", "y_test")
        if x_te.shape[1] != x.shape[1]:
            raise UserError(f"data file {path}: X_test has {x_te.shape[1]} features but X has {x.shape[1]}: give both as many columns")
        if task == "classification":
            y_te = np.where(y_te > 0, 1.0, -1.0).astype(np.float32)
        return Dataset(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_te), jnp.asarray(y_te), task)
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, int(round(test_fraction * len(y))))
    if n_test >= len(y):
        raise UserError(f"data file {path} has {len(y)} rows, too few to hold out a test split: add rows or X_test/y_test")
    perm = np.asarray(jax.random.permutation(jax.random.key(seed), len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return Dataset(jnp.asarray(x[tr]), jnp.asarray(y[tr]), jnp.asarray(x[te]), jnp.asarray(y[te]), task)


#: The arrays :func:`load_npz` reads from a user's ``.npz``; other members are left unread.
_NPZ_KEYS = ("X", "y", "X_test", "y_test")
_NPZ_FIX = "save it with numpy.savez(path, X=X, y=y)"


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of :data:`_NPZ_KEYS` in the ``.npz`` file ``path`` (``X`` and ``y`` present, each an array)."""
    if not os.path.isfile(path):
        raise UserError(f"data file {path} not found: pass an .npz with arrays X (n, d) and y (n,)")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if not magic.startswith((b"PK", b"\x93NUMPY")):  # numpy would call anything else a pickle
            raise UserError(f"data file {path} is not a readable .npz (no zip signature at its start): {_NPZ_FIX}")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy: one unnamed array
            raise UserError(f"data file {path} holds a single {type(loaded).__name__} (an .npy), not named arrays: {_NPZ_FIX}")
        with loaded as z:
            names = list(z.files)
            arrays = {k: z[k] for k in _NPZ_KEYS if k in names}
    except UserError:
        raise
    except Exception as e:  # zip, format, dtype and memory errors
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"data file {path} is not a readable .npz ({why}): {_NPZ_FIX}") from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        shown = sorted(names)[:8] + (["…"] if len(names) > 8 else [])
        raise UserError(f"data file {path} lacks {' and '.join(missing)} (has {shown}): {_NPZ_FIX}")
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise UserError(f"data file {path}: member {key} is not an .npy array: {_NPZ_FIX}")
    return arrays


def _checked_xy(path: str, x: np.ndarray, y: np.ndarray, xn: str, yn: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (n, d) and ``y`` (n,) as float32 after checking dtypes, shapes and that every value is finite in float32."""
    if x.dtype.kind not in "fiu" or y.dtype.kind not in "fiub":
        raise UserError(f"data file {path}: {xn} and {yn} must be numeric, got {x.dtype} and {y.dtype}: {_NPZ_FIX} with real numbers")
    if x.ndim != 2 or x.shape[1] < 1:
        raise UserError(f"data file {path}: {xn} must be 2-D (n, d) with d ≥ 1, got shape {x.shape}: {_NPZ_FIX}")
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"data file {path}: {yn} must have shape ({len(x)},), got {y.shape}: give one target per row of {xn}")
    if len(x) < 2:
        raise UserError(f"data file {path}: {xn} has {len(x)} rows, need at least 2: add rows")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        x32, y32 = x.astype(np.float32), y.astype(np.float32)
    for name, arr in ((xn, x32), (yn, y32)):
        if not np.all(np.isfinite(arr)):
            raise UserError(f"data file {path}: {name} contains NaN or inf values (or values beyond float32's range): "
                            "clean or drop those rows")
    return x32, y32
