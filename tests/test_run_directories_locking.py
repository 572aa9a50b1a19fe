"""One writer per run directory (``connect.io.run_lock``): a command on a run directory that another process
writes is refused in one line naming that process, before it writes anything, and the first writer's
directory stays intact; a writer killed with SIGKILL leaves no lock behind; figures drawn by several
processes into one directory never share a temporary file."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import matplotlib
import pytest
from test_bad_inputs import argv_of, make_inputs

from connect import checkpoints, cli
from connect.errors import UserError
from connect.io import HOLDER_FILE, LOCK_FILE, run_lock

matplotlib.use("Agg")

HOLD = "import sys, time\nfrom connect.io import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def train_argv(inputs, out, steps="4"):
    return argv_of("train-lm", out, inputs, "--steps", steps)


@contextlib.contextmanager
def held(out):
    """A helper process holding ``out``'s lock until the block ends (then killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _snapshot(d):
    return {os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(d) for f in fs}


def _run(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _steps(path):
    with open(path) as f:
        return [json.loads(line)["step"] for line in f]


def test_run_lock_names_its_holder_and_a_sigkilled_holder_does_not_block(tmp_path):
    out = tmp_path / "run"
    with held(out) as proc:
        with pytest.raises(UserError, match=f"{out} is being written by process {proc.pid}: wait"):
            with run_lock(str(out)):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert (out / HOLDER_FILE).read_text().strip() == str(proc.pid)  # the killed holder's side file stays behind
        with run_lock(str(out)):  # the OS released its lock
            assert (out / HOLDER_FILE).read_text().strip() == str(os.getpid())
            with pytest.raises(UserError, match=r"process \d+ \(this one\)"):
                with run_lock(str(out)):
                    pass
    assert sorted(os.listdir(out)) == [LOCK_FILE]


@pytest.mark.parametrize("command", ["train-lm", "width-sweep", "study gpt2", "study finetune"])
def test_a_second_writer_is_refused_before_it_writes(command, inputs, tmp_path, capsys):
    out = tmp_path / "run"
    with held(out) as proc:
        before = _snapshot(out)
        code, err = _run(argv_of(command, out, inputs), capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"is being written by process {proc.pid}" in err
        assert _snapshot(out) == before  # nothing written: the lock is taken before any write


def test_a_killed_writer_leaves_no_lock_behind(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    with held(out) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, err = _run(train_argv(inputs, out), capsys)
    assert code == 0, err
    assert _steps(out / "seed-0" / "metrics.jsonl") == [1, 2, 3, 4]
    assert not (out / HOLDER_FILE).exists()


def test_two_train_lm_on_one_out_one_refused_and_the_run_intact(inputs, tmp_path, capsys):
    """The issue's case: the second ``train-lm`` on a running ``--out`` exits 2 naming the first; the first
    finishes with every step logged once, in order."""
    out = tmp_path / "run"
    argv = train_argv(inputs, out, "100")
    first = subprocess.Popen([sys.executable, "-m", "connect.cli", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / HOLDER_FILE).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert (out / HOLDER_FILE).read_text().strip() == str(first.pid)
        code, err = _run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and f"is being written by process {first.pid}" in err, err
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert _steps(out / "seed-0" / "metrics.jsonl") == list(range(1, 101))
    assert checkpoints.complete_steps(str(out / "seed-0" / "ckpt"))[-1] == 100


def test_figures_of_two_processes_never_share_a_temporary_file(tmp_path, monkeypatch):
    """``save_figure`` writes through a temporary file of a name unique to each call, in the figure's directory."""
    import matplotlib.pyplot as plt

    from connect import io, plotting

    names = []
    real = io.tempfile.mkstemp
    monkeypatch.setattr(io.tempfile, "mkstemp", lambda **kw: names.append(real(**kw)) or names[-1])
    for _ in range(2):
        plotting.save_figure(plt.figure(), str(tmp_path), "same")
    tmps = [path for _, path in names]
    assert len(set(tmps)) == 4 and all(os.path.dirname(p) == str(tmp_path / "figures") for p in tmps)
    assert sorted(os.listdir(tmp_path / "figures")) == ["same.pdf", "same.png"]
