"""Strict settings for every test: rank promotion raises, 32-bit floats, one BLAS thread.

``OPENBLAS_NUM_THREADS`` must be set before numpy is first imported (it avoids rare
30x stalls of large CPU SVDs on the 2-core machines), hence before anything else.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Tests compile far more than they compute: XLA's CPU backend at -O0 without its expensive LLVM
# passes compiles about a third faster, and with its older (non-MLIR) fusion emitters about half
# as fast again (jax 0.10: a tiny GPT-2 Muon step 1.38 -> 0.67 s) — the same operations and
# dtypes; every tolerance still applies. Users' runs keep XLA's defaults. Read when the backend
# starts, so set before jax.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                  "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *TEST_XLA_FLAGS]).strip()

import jax  # noqa: E402

# Implicit broadcasting of arrays of different ranks is an error in tests (as in equinox's
# conftest): library code must broadcast explicitly, e.g. ``b[None, :]``.
jax.config.update("jax_numpy_rank_promotion", "raise")
# Tests run in the dtype users get: float32 (x64 stays off).
jax.config.update("jax_enable_x64", False)

# The CLI keeps a persistent compilation cache in ~/.cache; tests leave the user's home alone.
os.environ["CONNECT_JAX_CACHE"] = ""


import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def letters_corpus(tmp_path):
    """A directory of 20 documents of 1000 random letters a–j: a text corpus for subprocess runs."""
    rng = np.random.default_rng(1)
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(20):
        (d / f"doc{i:02d}.txt").write_bytes(bytes(rng.integers(97, 107, 1000, dtype=np.uint8)))
    return str(d)
