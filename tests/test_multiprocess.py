"""Multi-process runs: two local processes joined by ``jax.distributed`` compute what one process computes.

Each worker process has 4 simulated CPU devices (``--xla_force_host_platform_device_count=4``), so the
global ``data`` mesh has 8 devices in 2 processes, and cross-process collectives go through gloo (jax's
CPU collectives). A third process, alone with 8 simulated devices, is the reference. Compared:

* ``connect train-lm`` (the CLI, as the README's two-host recipe runs it) on the 8-device mesh: process 0
  writes its run directory, process 1 writes nothing (its ``--out`` stays absent, as on another host's
  disk); the run is then interrupted (process 0's last checkpoints removed) and resumed, process 1 from
  process 0's state. Its checkpoints and metrics equal the reference's;
* :func:`connect.lm.paths.evaluate_path` (losses along a path, barriers, ensembles) over the 8-device mesh
  equals the reference's on its 8-device mesh and unsharded.

Every address is loopback (the coordinator binds 127.0.0.1, gloo is pinned to it); every wait is bounded and
the processes are killed, whatever happens, before the test ends.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

WORKER = textwrap.dedent("""
    import json, shutil, sys
    import jax
    jax.config.update("jax_numpy_rank_promotion", "raise")
    pid, port, text_dir, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if pid >= 0:  # worker `pid` of 2; -1: the single-process reference
        addr = f"127.0.0.1:{port}"
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=addr, num_processes=2, process_id=pid, coordinator_bind_address=addr,
                                   initialization_timeout=60, shutdown_timeout_seconds=30)
        try:  # gloo listens on the address of the machine's hostname by default: pin it to loopback (jax internals)
            from jax._src import distributed, xla_bridge
            from jax._src.lib import _jax
            gloo = lambda: _jax.make_gloo_tcp_collectives(distributed_client=distributed.global_state.client, hostname="127.0.0.1")
            xla_bridge.register_backend_factory("cpu", lambda: xla_bridge.make_cpu_client(collectives=gloo()), priority=0,
                                                fail_quietly=False)
        except (ImportError, AttributeError):
            pass
        assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4), jax.devices()
    else:
        assert jax.device_count() == 8, jax.devices()

    import numpy as np
    from jax.sharding import Mesh
    from connect import paths
    from connect.cli import main
    from connect.lm import paths as lm_paths
    from connect.lm import run_dir
    from connect.models import gpt2

    # (a) training: the README's recipe, then an interrupted run resumed
    out = f"{tmp}/" + {-1: "ref", 0: "run", 1: "run-p1"}[pid]
    argv = ["train-lm", "--data", text_dir, "--out", out, "--quiet", "--model-overrides", "n_layer=1", "n_embd=32", "n_head=2",
            "n_inner=64", "--val-fraction", "0.2", "--context", "16", "--batch-size", "16", "--grad-accum", "2", "--steps", "3",
            "--eval-every", "2", "--eval-batches", "2", "--checkpoint-every", "2", "--log-every", "1", "--seeds", "0", "1",
            "--compute-dtype", "float32", "--optimizer", "momentum", "--lr", "0.1", "--clip-norm", "0"]
    assert main(argv) == 0
    if pid >= 0:
        if pid == 0:  # killed after step 2's checkpoint: step 3's never finished
            for s in (0, 1):
                shutil.rmtree(f"{out}/seed-{s}/ckpt/step-00000003")
            assert run_dir.resume_step(out, [0, 1]) == 2
        assert main(argv) == 0  # resumes at step 2 (process 0's checkpoints; process 1 has none)

    # (b) losses along a path, barriers and ensembles, the batch sharded over the 8 devices
    cfg = gpt2.config("tiny", vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2, n_inner=32)
    a, b, m = (gpt2.init(jax.random.key(s), cfg) for s in range(3))
    nodes = paths.stack_nodes(a, jax.tree.map(lambda x: 3 * x[None], m), b)
    tokens = np.random.default_rng(0).integers(0, 32, 8 * 20 + 1).astype(np.uint16)  # 20 windows: 8, 8 and a short 4
    kw = dict(batch_size=8, context=8, t_chunk=3)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    result = {"sharded": lm_paths.evaluate_path("polychain", nodes, cfg, tokens, [0.0, 0.4, 1.0], mesh=mesh, **kw)}
    if pid < 0:
        result["unsharded"] = lm_paths.evaluate_path("polychain", nodes, cfg, tokens, [0.0, 0.4, 1.0], **kw)
    print("RESULT" + json.dumps(result), flush=True)
""")

TIMEOUT_S = 100


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_all(tmp_path, text_dir) -> dict:
    """Start workers 0 and 1 and the reference (-1) at once; wait at most TIMEOUT_S; kill what is left. Their logs."""
    root = os.path.join(os.path.dirname(__file__), "..")
    port, procs, logs = _free_port(), {}, {}
    try:
        for pid, n_dev in ((0, 4), (1, 4), (-1, 8)):
            env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_dev}",
                   "JAX_PLATFORMS": "cpu", "OPENBLAS_NUM_THREADS": "1", "CONNECT_JAX_CACHE": ""}
            with open(tmp_path / f"log{pid}.txt", "w") as log:
                procs[pid] = subprocess.Popen([sys.executable, "-c", WORKER, str(pid), str(port), text_dir, str(tmp_path)],
                                              env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT_S
        for p in procs.values():
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for pid, p in procs.items():
        logs[pid] = (tmp_path / f"log{pid}.txt").read_text()
        assert p.returncode == 0, f"process {pid} exited with {p.returncode} (killed after {TIMEOUT_S} s if -9):\n{logs[pid][-3000:]}"
    return {pid: json.loads(log.split("RESULT", 1)[1].splitlines()[0]) for pid, log in logs.items()}


def _metrics(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.skipif("jax_cpu_collectives_implementation" not in jax.config.values,
                    reason="this jax has no cross-process CPU collectives (no jax_cpu_collectives_implementation option)")
def test_two_processes_train_and_evaluate_paths_as_one_process(tmp_path, letters_corpus):
    from connect.lm import training as lm_training

    results = _run_all(tmp_path, letters_corpus)

    # (a) process 0 wrote the run directory, process 1 nothing; the resumed run equals the reference's
    assert (tmp_path / "run" / "config.json").is_file() and not (tmp_path / "run-p1").exists()
    for s in (0, 1):
        got, want = _metrics(tmp_path / "run" / f"seed-{s}" / "metrics.jsonl"), _metrics(tmp_path / "ref" / f"seed-{s}" / "metrics.jsonl")
        assert [r["step"] for r in got] == [r["step"] for r in want] == [0, 1, 2, 3]
        for key in ("loss", "grad_norm", "val_loss"):
            np.testing.assert_allclose([r.get(key, np.nan) for r in got], [r.get(key, np.nan) for r in want], rtol=1e-5)
        assert want[1]["loss"] - want[3]["loss"] > 0.01  # it trained
        pa, _ = lm_training.load(str(tmp_path / "run" / f"seed-{s}"))
        pb, _ = lm_training.load(str(tmp_path / "ref" / f"seed-{s}"))
        maxdiff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))
        assert maxdiff <= 1e-5 * max(float(np.max(np.abs(b))) for b in jax.tree.leaves(pb))

    # (b) both processes get the same path record, the reference's (8 devices in one process, and unsharded)
    assert results[0]["sharded"] == results[1]["sharded"]
    got = results[0]["sharded"]
    for want in (results[-1]["sharded"], results[-1]["unsharded"]):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
        for key in ("barrier", "max_barrier"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6)
        for key in ("endpoints", "endpoints_and_best"):
            assert got["ensemble"][key] == pytest.approx(want["ensemble"][key], rel=1e-6)
    assert np.ptp(got["loss"]) > 0.01
