"""The figure toolbox shared by every study's ``plots.py``: atomic PNG + PDF saving and first-seen ordering.

Only figure modules import this (it imports matplotlib).
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt

from connect.io import write_atomic


def save_figure(fig, run_dir: str, name: str, subdir: str = "figures", dpi: int = 130) -> list[str]:
    """Write ``fig`` as ``run_dir/subdir/name.{png,pdf}`` (each atomically, through a temporary file of a name
    unique to the call, so processes drawing into one directory never collide) and close it; the paths."""
    out = os.path.join(run_dir, subdir)
    os.makedirs(out, exist_ok=True)
    written = []
    for ext in ("png", "pdf"):
        final = os.path.join(out, f"{name}.{ext}")
        write_atomic(final, lambda f, ext=ext: fig.savefig(f, dpi=dpi, bbox_inches="tight", format=ext), binary=True)
        written.append(final)
    plt.close(fig)
    return written


def ordered(values):
    """The distinct values in first-seen order."""
    return list(dict.fromkeys(values))
