"""Learning-rate schedules by name, as optax schedules ``step -> lr`` (jit-safe in the step).

A run of ``T`` optimizer steps uses ``η_t`` at step ``t = 0, …, T−1``. With
``W = ⌊warmup_frac·T⌋`` warmup steps, ``D = ⌊decay_frac·T⌋`` decay steps, peak ``η`` and final
value ``η_f = final_frac·η``:

- warmup (every schedule): ``η_t = η·(t+1)/W`` for ``t < W``, so the first step already moves
  and step ``W−1`` is at the peak (nanoGPT's linear warmup, shifted by one so no step is wasted);
- ``constant``: ``η_t = η`` for ``t ≥ W``;
- ``cosine`` (Loshchilov & Hutter 2017, SGDR, without restarts):
  ``η_t = η_f + (η − η_f)·½(1 + cos(π (t−W)/(T−W)))`` for ``W ≤ t ≤ T``;
- ``wsd``, warmup–stable–decay (Zhai et al. 2022; Hägele et al., arXiv 2405.18392):
  ``η_t = η`` for ``W ≤ t < T−D``, then linear ``η_t = η − (η − η_f)(t − (T−D))/D`` for
  ``T−D ≤ t ≤ T``.

Decays reach ``η_f`` at ``t = T``, one past the last step, so every one of the ``T`` steps has
a non-zero rate when ``final_frac = 0``; steps beyond ``T`` stay at ``η_f``.
"""

from __future__ import annotations

import math
import numbers

import jax.numpy as jnp
import optax

from connect.errors import UserError

NAMES = ("constant", "cosine", "wsd")


def make(name: str, peak: float, total_steps: int, warmup_frac: float = 0.05, decay_frac: float = 0.2,
         final_frac: float = 0.0) -> optax.Schedule:
    """The schedule ``name`` (module docstring) for a run of ``total_steps`` steps peaking at ``peak``."""
    if name not in NAMES:
        raise UserError(f"unknown learning-rate schedule {name!r}: choose from {', '.join(NAMES)}")
    if not (isinstance(peak, numbers.Real) and math.isfinite(peak) and peak > 0):
        raise UserError(f"peak learning rate must be a positive number, got {peak!r}")
    if not (isinstance(total_steps, numbers.Integral) and total_steps >= 1):
        raise UserError(f"total_steps of the {name} schedule must be an integer >= 1, got {total_steps!r}")
    for label, frac in (("warmup_frac", warmup_frac), ("decay_frac", decay_frac), ("final_frac", final_frac)):
        if not 0.0 <= frac <= 1.0:
            raise UserError(f"{label} must lie in [0, 1], got {frac!r}")
    if name == "wsd" and warmup_frac + decay_frac > 1.0:
        raise UserError(f"warmup_frac + decay_frac = {warmup_frac + decay_frac} > 1 for the wsd schedule: make them sum to at most 1")

    peak, final, total_steps = float(peak), float(final_frac) * float(peak), int(total_steps)
    warmup = _steps(warmup_frac, total_steps)
    decay_start = total_steps - _steps(decay_frac, total_steps) if name == "wsd" else warmup

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        warm = peak * (t + 1.0) / max(warmup, 1)
        if name == "constant":
            after = jnp.full_like(t, peak)
        else:
            span = max(total_steps - decay_start, 1)
            progress = jnp.clip((t - decay_start) / span, 0.0, 1.0)
            shape = 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) if name == "cosine" else 1.0 - progress
            after = final + (peak - final) * shape
        return jnp.where(t < warmup, warm, after)

    return schedule


def _steps(frac: float, total_steps: int) -> int:
    # floor, with slack for binary fractions such as 0.29·100 = 28.999…; ⌊aT⌋ + ⌊bT⌋ ≤ T when a + b ≤ 1
    return int(math.floor(frac * total_steps + 1e-9))
