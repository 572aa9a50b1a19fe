"""Every tutorial in ``notebooks/`` runs top to bottom without an error (so none of them rots).

Each notebook is executed with nbclient in a fresh ``python3`` kernel — the ipykernel of
this interpreter's environment — in a temporary working directory, with
``OPENBLAS_NUM_THREADS=1`` in the kernel's environment (see ``conftest.py``).
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

try:  # the test extra; missing, the notebook tests fail (a skip would let the notebooks rot unseen)
    import nbclient
    import nbformat
except ImportError as e:  # pragma: no cover
    nbclient = nbformat = None
    _MISSING = f"{e}: install the test extra, pip install -e '.[test]'"

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
KERNEL = "python3"


def _require_nbclient():
    if nbclient is None:
        pytest.fail(_MISSING, pytrace=False)


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_saved_clean(path: pathlib.Path):
    """Notebooks are committed without outputs (the repository stays small; the tests run them)."""
    _require_nbclient()
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL, f"{path.name} must use the {KERNEL} kernel"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name} has outputs in cells {dirty}: clear them (jupyter nbconvert --clear-output --inplace {path})"


def _kernel_manager_class():
    """The kernel manager of ``python3``, its command pinned to *this* interpreter so the kernel
    sees the same environment (and the same editable ``connect``) as the tests — even when the
    kernelspec found first names another Python by absolute path."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import AsyncKernelManager

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(
            f"Jupyter kernel {KERNEL!r} not found for {sys.executable}: install ipykernel into this "
            "environment (pip install -e '.[test]'), or register it: python -m ipykernel install --sys-prefix",
            pytrace=False,
        )

    class ThisInterpreterKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            if cmd and os.path.basename(cmd[0]).startswith("python"):
                cmd[0] = sys.executable
            return cmd

    return ThisInterpreterKernelManager


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: pathlib.Path, tmp_path: pathlib.Path, monkeypatch):
    _require_nbclient()
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this process's environment.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silence a debugger warning on stderr
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        kernel_name=KERNEL,
        kernel_manager_class=_kernel_manager_class(),
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as e:
        pytest.fail(f"{path.name}: a cell ran longer than {CELL_TIMEOUT_S} s:\n{e}", pytrace=False)
