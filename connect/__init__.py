"""connect — optimizer-induced mode connectivity in JAX.

The public surface: models, data, optimizers, training, checkpoints, paths,
alignment, barriers, spectra, constraint sets, the width sweep, plots.
"""

from connect import (
    alignment,
    barrier,
    batching,
    config,
    constraints,
    data,
    losses,
    measure,
    optimizers,
    paths,
    spectra,
    sweep,
    training,
)
from connect.alignment import align
from connect.barrier import barrier as barrier_height
from connect.barrier import max_barrier
from connect.checkpoints import load_checkpoint, save_checkpoint
from connect.config import WidthSweepConfig
from connect.constraints import ConstraintSet
from connect.data import DataConfig, Dataset
from connect.errors import UserError
from connect.measure import PathSettings, measure_pairs
from connect.models import relu
from connect.spectra import summarize as spectrum

__version__ = "0.1.0"

__all__ = [
    "ConstraintSet", "DataConfig", "Dataset", "PathSettings", "UserError", "WidthSweepConfig",
    "align", "alignment", "barrier", "barrier_height", "batching", "config", "constraints", "data",
    "load_checkpoint", "losses", "max_barrier", "measure", "measure_pairs", "optimizers",
    "paths", "relu", "save_checkpoint", "spectra", "spectrum", "sweep", "training",
]
