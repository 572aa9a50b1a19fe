"""Data parallelism: a training run sharded over 8 simulated CPU devices equals the single-device run.

The device count is fixed when jax starts, so the comparison runs in a subprocess whose
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` is set before jax is imported.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from connect import config
    from connect.lm.config import TrainLMConfig
    from connect.lm import training as lm_training

    text_dir, out = sys.argv[1], sys.argv[2]
    assert jax.device_count() == 8, jax.devices()
    cfg = TrainLMConfig(model_overrides={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_inner": 64}, data=text_dir,
                               val_fraction=0.2, context=16, batch_size=16, grad_accum=2, steps=3, eval_every=0,
                               eval_batches=2, checkpoint_every=0, log_every=1, seeds=[0, 1], compute_dtype="float32",
                               optimizer="momentum", lr=0.1, clip_norm=0.0)
    eight = lm_training.train(cfg, out + "/eight", progress=False)
    one = lm_training.train(cfg, out + "/one", progress=False, devices=jax.devices()[:1])
    result = {"n_devices": [eight["n_devices"], one["n_devices"]], "loss": [[eight["seeds"][s]["loss"], one["seeds"][s]["loss"]] for s in (0, 1)]}
    for s in (0, 1):
        pa, _ = lm_training.load(f"{out}/eight/seed-{s}")
        pb, _ = lm_training.load(f"{out}/one/seed-{s}")
        result[f"maxdiff{s}"] = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))
        result[f"maxabs{s}"] = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(pa))
    print("RESULT" + json.dumps(result))
""")


def test_eight_device_data_parallel_run_equals_one_device_run(tmp_path, letters_corpus):
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "OPENBLAS_NUM_THREADS": "1", "CONNECT_JAX_CACHE": ""}
    root = os.path.join(os.path.dirname(__file__), "..")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, letters_corpus, str(tmp_path)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["n_devices"] == [8, 1]
    for s in (0, 1):
        a, b = result["loss"][s]
        assert abs(a - b) <= 1e-5 * abs(b)
        assert result[f"maxdiff{s}"] <= 1e-5 * result[f"maxabs{s}"]

