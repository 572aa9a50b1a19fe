"""connect — optimizer-induced mode connectivity in JAX.

The public surface: models (two-layer ReLU, GPT-2), data and corpora, optimizers and
schedules, training (width sweep, language models), checkpoints and Hugging Face
interchange, paths (GPT-2 paths, planes, the connectivity study), alignment, barriers,
spectra, constraint sets, finetuning (LoRA, tasks). The figure modules (``connect.plots``,
``connect.lm_plots``) import matplotlib and are imported on use.
"""

from connect import (
    alignment,
    barrier,
    batching,
    config,
    constraints,
    corpus,
    data,
    finetune,
    huggingface,
    lm_paths,
    lm_study,
    lm_training,
    lora,
    losses,
    measure,
    optimizers,
    paths,
    planes,
    schedules,
    spectra,
    sweep,
    tasks,
    training,
)
from connect.alignment import align
from connect.barrier import barrier as barrier_height
from connect.barrier import max_barrier
from connect.checkpoints import load_checkpoint, save_checkpoint
from connect.config import TrainLMConfig, WidthSweepConfig
from connect.constraints import ConstraintSet
from connect.data import DataConfig, Dataset
from connect.errors import UserError
from connect.measure import PathSettings, measure_pairs
from connect.models import gpt2, relu
from connect.spectra import summarize as spectrum

__version__ = "0.1.0"

__all__ = [
    "ConstraintSet", "DataConfig", "Dataset", "PathSettings", "TrainLMConfig", "UserError", "WidthSweepConfig",
    "align", "alignment", "barrier", "barrier_height", "batching", "config", "constraints", "corpus", "data",
    "finetune", "gpt2", "huggingface", "lm_paths", "lm_study", "lm_training", "load_checkpoint", "lora", "losses", "max_barrier", "measure",
    "measure_pairs", "optimizers", "paths", "planes", "relu", "save_checkpoint", "schedules", "spectra", "spectrum", "sweep",
    "tasks", "training",
]
