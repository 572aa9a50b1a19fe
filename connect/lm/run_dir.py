"""The run directory of :func:`connect.lm.training.train`: where each seed's metrics and checkpoints live,
claiming it, resuming in it, cleaning up a run that failed before its first checkpoint, and its summary.

Layout (see :mod:`connect.lm.training`)::

    OUT/config.json                    the TrainLMConfig (a rerun must match it) + "resolved" facts
    OUT/seed-{s}/metrics.jsonl         one JSON line per logged step
    OUT/seed-{s}/ckpt/step-{k:08d}/    params + optimizer state + metadata.json (connect.checkpoints)
    OUT/.lock, OUT/.lock.pid           the one-writer lock and its holder's pid (connect.io.run_lock)

In a ``jax.distributed`` run only process 0 writes ``OUT`` (:func:`writes`); the others compute the same steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Sequence

import jax

from connect import checkpoints
from connect.errors import UserError
from connect.io import HOLDER_FILE, LOCK_FILE, check_directory, claim_directory, run_lock, write_text_atomic
from connect.lm import corpus


def writes() -> bool:
    """Whether this process writes run directories: process 0 of a ``jax.distributed`` run, the only process otherwise."""
    return jax.process_index() == 0


def ckpt_dir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed-{seed}", "ckpt")


def metrics_path(out: str, seed: int) -> str:
    return os.path.join(out, f"seed-{seed}", "metrics.jsonl")


#: Fields added to the config after runs were written, with the value every earlier run had: a stored config
#: without the field resumes when the value asked for is that one.
ADDED_FIELDS = {"family": "gpt2"}


def check(out: str, cfg) -> None:
    """Check, writing nothing, that ``out`` can hold a run of ``cfg`` (:func:`connect.io.check_directory`)."""
    check_directory(out, cfg.to_dict(), allowed=(), ignore=_older(out, cfg))


def claim(out: str, cfg, resolved: dict) -> None:
    """Write ``config.json`` (with the ``resolved`` facts), or check that the stored one matches ``cfg``."""
    claim_directory(out, cfg.to_dict(), allowed=(), extra={"resolved": resolved}, ignore=_older(out, cfg))


def _older(out: str, cfg) -> tuple[str, ...]:
    """The :data:`ADDED_FIELDS` that ``out``'s stored config lacks while ``cfg`` has their old value."""
    try:
        with open(os.path.join(out, "config.json")) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return ()  # absent or unreadable: check_directory says so
    return tuple(k for k, v in ADDED_FIELDS.items() if isinstance(stored, dict) and k not in stored and getattr(cfg, k) == v)


@contextlib.contextmanager
def locked(out: str, seeds: Sequence[int]):
    """Hold ``out``'s :func:`connect.io.run_lock` for the block. On a :class:`UserError` in it while no seed has
    a complete checkpoint, remove (still holding the lock) what the block created — all of ``out`` if it was
    absent before, else only the entries it added, so a user's own directory stays — and re-raise: the
    corrected command reruns on the same ``out``."""
    before = set(os.listdir(out)) if os.path.isdir(out) else None
    with run_lock(out):
        try:
            yield
        except UserError:
            if not any(checkpoints.complete_steps(ckpt_dir(out, s)) for s in seeds):
                _remove_new(out, before)
            raise


def _remove_new(out: str, before: set | None) -> None:
    if before is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in set(os.listdir(out)) - before - {LOCK_FILE, HOLDER_FILE}:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def diverged(out: str, cfg, seed: int, step: int, what: str = "training loss") -> UserError:
    """The one-line error of a run whose ``what`` (of ``seed``) stopped being finite at ``step``."""
    lr_flags = "--lr, and --aux-lr for Muon's AdamW part" if cfg.optimizer == "muon" else "--lr"
    kept = resume_step(out, cfg.seeds)
    where = (f"the last finite checkpoint, step {kept}, is kept in {ckpt_dir(out, seed)} (rerun with a new --out)" if kept
             else "no checkpoint was saved, so nothing of the run is kept")
    return UserError(f"training diverged at step {step}: seed {seed}'s {what} is not finite ({cfg.optimizer}, lr {cfg.lr:g}): "
                     f"lower the learning rate ({lr_flags}); {where}")


def write_rows(out: str, seeds: Sequence[int], shared: dict, per_seed: dict) -> None:
    """Append one metrics line per seed: ``shared`` plus seed ``i``'s entry of every ``per_seed`` array (process 0 only)."""
    for i, s in enumerate(seeds if writes() else ()):
        row = {**shared, **{k: float(v[i]) for k, v in per_seed.items()}}
        path = metrics_path(out, s)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def resume_step(out: str, seeds: Sequence[int]) -> int:
    """The newest step with a complete checkpoint for every seed (0: none)."""
    common = set.intersection(*(set(checkpoints.complete_steps(ckpt_dir(out, s))) for s in seeds))
    return max(common, default=0)


def truncate_metrics(path: str, step: int) -> None:
    """Keep the lines of steps ≤ ``step`` (none when ``step`` is 0), so a resumed run logs no step twice."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if step and row.get("step", step + 1) <= step:
                kept.append(json.dumps(row) + "\n")
    write_text_atomic(path, "".join(kept))


def summary(out: str, cfg, data: corpus.Corpus, n_dev: int, last: dict) -> dict:
    """The last logged loss and val loss of every seed (read back from metrics.jsonl; on a process that writes
    nothing, :func:`writes`, the last values it computed, ``last``), the corpus's val unigram entropy and the
    throughput of the last logged interval."""
    per_seed = {}
    for i, s in enumerate(cfg.seeds):
        if not writes():
            per_seed[s] = {k: float(last[k][i]) if k in last else None for k in ("loss", "val_loss")}
            continue
        loss = val = None
        with open(metrics_path(out, s)) as f:
            for line in f:
                row = json.loads(line)
                loss = row.get("loss", loss)
                val = row.get("val_loss", val)
        per_seed[s] = {"loss": loss, "val_loss": val}
    return {"out": out, "steps": cfg.steps, "seeds": per_seed, "corpus": data.name,
            "unigram_entropy": corpus.unigram_entropy(data.val), "n_devices": n_dev,
            "tokens_per_s": last.get("tokens_per_s"), "mfu": last.get("mfu")}
