"""connect — optimizer-induced mode connectivity in JAX.

The package is layered (DESIGN.md, Architecture): the analysis core at the top level (``paths``,
``barrier``, ``spectra``, ``symmetry``, ``constraints``, ``optimizers``, ``schedules``, ``planes``, ``batching``,
``checkpoints``, ``config``, ``io``, ``errors``), one file per model family in ``connect.models``
(``relu``, ``gpt2``), the two-layer work in ``connect.twolayer``, the language-model work in
``connect.lm``, the studies in ``connect.studies`` and the command line in ``connect.cli``.

Every name below is imported on first use (PEP 562), so ``import connect`` loads neither
matplotlib nor any study.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public modules: attribute -> module path.
_MODULES = {
    "barrier": "connect.barrier", "batching": "connect.batching", "checkpoints": "connect.checkpoints",
    "config": "connect.config", "constraints": "connect.constraints", "errors": "connect.errors",
    "io": "connect.io", "optimizers": "connect.optimizers", "paths": "connect.paths", "planes": "connect.planes",
    "schedules": "connect.schedules", "spectra": "connect.spectra", "symmetry": "connect.symmetry", "models": "connect.models",
    "relu": "connect.models.relu", "gpt2": "connect.models.gpt2", "twolayer": "connect.twolayer", "lm": "connect.lm",
    "studies": "connect.studies",
}
#: Public functions and classes: attribute -> (module path, name there).
_NAMES = {
    "UserError": ("connect.errors", "UserError"),
    "ConstraintSet": ("connect.constraints", "ConstraintSet"),
    "barrier_height": ("connect.barrier", "barrier"),
    "max_barrier": ("connect.barrier", "max_barrier"),
    "spectrum": ("connect.spectra", "summarize"),
    "load_checkpoint": ("connect.checkpoints", "load_checkpoint"),
    "save_checkpoint": ("connect.checkpoints", "save_checkpoint"),
    "align": ("connect.twolayer.alignment", "align"),
    "DataConfig": ("connect.twolayer.data", "DataConfig"),
    "Dataset": ("connect.twolayer.data", "Dataset"),
    "PathSettings": ("connect.twolayer.measure", "PathSettings"),
    "measure_pairs": ("connect.twolayer.measure", "measure_pairs"),
    "TrainLMConfig": ("connect.lm.config", "TrainLMConfig"),
    "WidthSweepConfig": ("connect.studies.width_sweep.config", "WidthSweepConfig"),
}

__all__ = sorted([*_MODULES, *_NAMES])


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _NAMES:
        module, attr = _NAMES[name]
        value = getattr(importlib.import_module(module), attr)
    else:
        raise AttributeError(f"module 'connect' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
