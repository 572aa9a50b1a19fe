#!/usr/bin/env python
"""The GPU suite: one command that measures, on one GPU in under 8 minutes, what the library's GPU figures need.

Sections (each in a child process of its own, killed at its time cap; see ``CAPS_S``):

1. ``train_gpt2``   GPT-2 124M training (bf16, AdamW, B = 2 × 8 × T = 1024, one seed): tokens/s and MFU of the
                    library's jitted step, timed as ``lm_training.py`` times it (random tokens, no corpus);
2. ``study_train``  the connectivity study's 20 models (10 seeds × AdamW and Muon, one vmapped program per
                    optimizer) at ``experiments/gpt2_connectivity.toml``'s ``[gpt2_study.train]`` recipe: tokens/s,
                    MFU and the projected wall time of the recipe's training steps;
3. ``path_eval``    the study's model along a one-bend chain at 11 t (``lm_paths.path_losses``, t-chunk vmapped):
                    point·tokens/s and MFU (forward FLOPs ``2N + 4·L·T·D`` per token), against a loop;
4. ``spectra``      singular values of every 124M matrix at 11 t (``lm_paths.spectra_along_path``): seconds;
5. ``width_sweep``  two-layer training of 64 seeds at widths 16 … 4096, vmap against a loop (``width_sweep.py``);
6. ``certificate``  the §E barrier certificate at N = 4096 (``theory.certificate``, staged as ``theory_certificate.py``).

Every section records its device, shapes, compile time and steady-state time (best of interleaved timed calls
after one warm-up, :func:`width_sweep.timed_group`) and a cheap check of correctness. A section stops on its own
before its cap (no new timed round, width or stage that would not fit), recording ``cut``; one still running
at the cap is killed and keeps what it had recorded. The sections' caps are clipped to ``--budget`` in all.
Writes ``--out`` (JSON; default ``results/gpu_suite_<device>.json``) and the markdown table beside it (``.md``).

    python benchmarks/gpu_suite.py                       # on the GPU machine (≈ 7.5 minutes)
    python benchmarks/gpu_suite.py --dry-run             # every section at tiny sizes on CPU (≈ 30 s on 2 cores)
    python benchmarks/gpu_suite.py --sections spectra certificate --cap spectra=120
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _suite_report import Recorder, dumps, markdown  # noqa: E402  (light: no jax in the parent)

SECTIONS = ("train_gpt2", "study_train", "path_eval", "spectra", "width_sweep", "certificate")
#: Seconds per section on the GPU, child start-up (jax import, backend init) and compilation included; 435 in all.
CAPS_S = {"train_gpt2": 70, "study_train": 90, "path_eval": 55, "spectra": 100, "width_sweep": 75, "certificate": 45}
BUDGET_S = 450.0
DRY_CAP_S, DRY_BUDGET_S = 120, 600.0
MIN_START_S = 10.0  # a section is not started with less of the budget left
#: Sizes per section: the GPU run's, and the dry run's (tiny GPT-2, 2 seeds, widths 2–8, N = 32).
SIZES = {
    # B = 16 × 1024 tokens per step in 2 micro-batches: XLA's memory analysis (CPU) puts one batch of 16 at 50 GB of
    # temporaries (the attention matrices are materialised), 2 × 8 at 26 GB, within the 60 GB jax preallocates
    # on an H100 (75 % of 80 GB).
    "train_gpt2": {"model": "gpt2", "batch_size": 16, "grad_accum": 2, "context": 1024, "steps_per_call": 10},
    "study_train": {"variant": None, "seeds": None, "steps_per_call": 5},
    "path_eval": {"variant": None},
    "spectra": {"model": "gpt2", "t_points": 11},
    "width_sweep": {"widths": [4096, 1024, 256, 16], "seeds": 64, "steps": 500, "optimizers": ["adamw", "muon"],
                    "timing": (2, 0.0)},  # the loop runs 64 trainings per call: 2 timed calls, to fit 8 (width, optimizer)
    "certificate": {"n": 4096},
}
DRY_SIZES = {
    "train_gpt2": {"model": "tiny", "batch_size": 8, "grad_accum": 2, "context": 64, "steps_per_call": 3},
    "study_train": {"variant": "tiny", "seeds": 2, "steps_per_call": 3},
    "path_eval": {"variant": "tiny", "eval_batches": 2},
    "spectra": {"model": "tiny", "t_points": 11},
    "width_sweep": {"widths": [8, 2], "seeds": 2, "steps": 20, "optimizers": ["adamw", "muon"]},
    "certificate": {"n": 32},
}
#: The MFU reference, connect.lm.flops.PEAK_FLOPS["H100"] (dense bf16), written out: the parent never imports jax.
PEAK_FLOPS = 989e12
#: XLA's CPU backend without its expensive passes and with its older fusion emitters compiles about 2-3x faster
#: (tests/conftest.py's TEST_XLA_FLAGS).
DRY_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                 "--xla_cpu_use_fusion_emitters=false")
TIMING, DRY_TIMING = (5, 1.0), (1, 0.0)  # (timed calls at least, seconds of timed rounds at least)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="every section at tiny sizes, on CPU unless JAX_PLATFORMS says otherwise")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run, in this order")
    p.add_argument("--cap", action="append", default=[], metavar="SECTION=SECONDS", help="override a section's time cap")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for the whole run (default {BUDGET_S:g}; dry run {DRY_BUDGET_S:g})")
    p.add_argument("--out", default=None,
                   help="JSON path (the .md beside it) or a directory (default results/gpu_suite_<device>[_dry-run].json)")
    p.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)  # internal: run one section
    p.add_argument("--partial", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    caps = dict.fromkeys(SECTIONS, DRY_CAP_S) if args.dry_run else dict(CAPS_S)
    for item in args.cap:
        name, _, sec = item.partition("=")
        if name not in SECTIONS or not re.fullmatch(r"\d+(\.\d*)?", sec):
            p.error(f"--cap {item!r}: use SECTION=SECONDS with SECTION one of {', '.join(SECTIONS)}")
        caps[name] = float(sec)
    args.caps = caps
    args.budget = args.budget or (DRY_BUDGET_S if args.dry_run else BUDGET_S)
    return args


# --------------------------------------------------------------------------- child: one section


def child_main(args) -> int:
    """Run section ``args.child`` in this process, recording into ``args.partial``; exit code 1 on an error."""
    reserve = max(2.0, 0.05 * (args.deadline - time.time()))
    rec = Recorder(args.partial, args.deadline, reserve)
    watchdog = threading.Timer(max(0.0, args.deadline + 1.0 - time.time()), os._exit, args=(124,))
    watchdog.daemon = True  # past its cap the section ends itself, even when the parent is gone
    watchdog.start()
    try:
        import _suite_lm
        import _suite_twolayer
        from width_sweep import machine

        fn = getattr(_suite_lm, args.child, None) or getattr(_suite_twolayer, args.child)
        size = (DRY_SIZES if args.dry_run else SIZES)[args.child]
        timing = size.get("timing") or (DRY_TIMING if args.dry_run else TIMING)
        rec.update(machine=machine(), size=size, repeats=timing[0], min_time=timing[1])
        fn(rec, size, (*timing, rec.deadline))
    except Exception:  # recorded for the report, and shown
        rec.update(status="error", error=traceback.format_exc())
        traceback.print_exc()
        return 1
    rec.update(status="cut" if rec.record["cut"] or _any_cut(rec.record) else "ok")
    return 0


def _any_cut(record: dict) -> bool:
    """Whether a timing anywhere in the record was stopped by the deadline (``timed_group``'s ``cut``)."""
    if isinstance(record, dict):
        return record.get("cut") is True or any(_any_cut(v) for v in record.values())
    if isinstance(record, list):
        return any(_any_cut(v) for v in record)
    return False


# --------------------------------------------------------------------------- parent: every section


def run_section(name: str, cap: float, args, tmp: Path) -> dict:
    """Section ``name`` in a child process, killed after ``cap`` seconds (and it exits by itself then, should this
    process be gone)."""
    partial, t0 = tmp / f"{name}.json", time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--partial", str(partial),
           "--deadline", repr(t0 + cap)] + (["--dry-run"] if args.dry_run else [])
    env = dict(os.environ)
    if args.dry_run:  # CPU, compiled cheaply as the tests compile (timings mean nothing in a dry run)
        env.setdefault("JAX_PLATFORMS", "cpu")
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = " ".join([flags, *(f for f in DRY_XLA_FLAGS if f.split("=")[0] not in flags)]).strip()
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.Popen(cmd, env=env)
    killed = False
    try:
        proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        killed = True
    finally:
        if proc.poll() is None:  # our child, by its pid (it starts no processes of its own)
            proc.kill()
            proc.wait()
    record = json.loads(partial.read_text()) if partial.exists() else {"rows": [], "cut_reasons": []}
    record.update(cap_s=cap, wall_s=time.time() - t0, exit_code=proc.returncode)
    if killed:
        record.update(status="cut", cut=True)
        record.setdefault("cut_reasons", []).append(f"killed at its cap of {cap:.0f} s (what it recorded before is kept)")
    elif proc.returncode != 0 and record.get("status") != "error":
        record.update(status="error", error=record.get("error") or f"the section's process exited with code {proc.returncode}")
    return record


def run_all(args) -> dict:
    t_start = time.time()
    results = {"benchmark": "gpu_suite", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "commit": _commit(), "argv": sys.argv[1:], "dry_run": args.dry_run, "budget_s": args.budget, "caps_s": args.caps,
               "peak_flops": PEAK_FLOPS, "machine": None, "wall_s": 0.0, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmp:
        for name in args.sections:
            left = args.budget - (time.time() - t_start)
            cap = min(args.caps[name], left)
            print(f"== {name} (cap {cap:.0f} s)", flush=True)
            if left < MIN_START_S:
                rec = {"status": "cut", "cut": True, "rows": [], "cut_reasons": [f"not started: {left:.0f} s of the budget left"]}
            else:
                rec = run_section(name, cap, args, Path(tmp))
            machine = rec.pop("machine", None)  # the same in every section: kept once
            results["sections"][name], results["machine"] = rec, results["machine"] or machine
            results["wall_s"] = time.time() - t_start
            write(results, args)
            print(f"== {name}: {rec.get('status')} after {rec.get('wall_s', 0.0):.1f} s", flush=True)
    return results


def _out_path(results: dict, out: str | None) -> Path:
    m = results.get("machine") or {}
    kind = str(m.get("device_kind", "unknown")) if m.get("platform") != "cpu" else "cpu"
    kind = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")  # e.g. nvidia-h100-80gb-hbm3
    name = f"gpu_suite_{kind}{'_dry-run' if results['dry_run'] else ''}.json"
    if out is None:
        return HERE / "results" / name
    return Path(out) / name if out.endswith(os.sep) or Path(out).is_dir() else Path(out)


def write(results: dict, args) -> Path:
    """The JSON and, beside it, the markdown table (rewritten after every section)."""
    path = _out_path(results, args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(results))
    path.with_suffix(".md").write_text(markdown(results))
    return path


def _commit() -> str | None:
    """The checked-out commit, with ``+changes`` when the working tree differs from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE, timeout=10)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, cwd=HERE, timeout=10).returncode
        return (head.stdout.strip() + ("+changes" if dirty == 1 else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    results = run_all(args)
    path = write(results, args)
    print("\n" + markdown(results))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
