"""The command line: options from flags and config files, one-line errors, nothing half-written."""

import os
import subprocess
import sys

import numpy as np
import pytest

from connect import cli, config
from connect.cli import width_sweep as cli_width_sweep
from connect.studies.width_sweep import config as ws_config

TINY = ["--widths", "2", "--optimizers", "adamw", "muon", "--seeds", "2", "--steps", "100", "--path-steps", "20", "--t-points", "5", "--quiet"]


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["width-sweep", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in ws_config.FIELDS:
        assert "--" + f.replace("_", "-") in out, f


def test_flags_override_config_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[width_sweep]\nwidths = [4, 16]\nseeds = 5\nsteps = 7\n[width_sweep.lr]\nadamw = 0.5\n')
    args = cli.build_parser().parse_args(["width-sweep", "--config", str(toml), "--widths", "8", "64", "--lr", "muon=0.2"])
    cfg = cli_width_sweep.sweep_config(args)
    assert cfg.widths == [8, 64] and cfg.seeds == 5 and cfg.steps == 7
    assert cfg.lr == {"adamw": 0.5, "muon": 0.2}
    assert cfg.optimizers == ws_config.WidthSweepConfig().optimizers


def test_experiment_config_loads():
    here = os.path.dirname(__file__)
    cfg = config.load(ws_config.WidthSweepConfig, os.path.join(here, "..", "experiments", "width_sweep.toml"))
    assert cfg.widths[0] == 2 and cfg.widths[-1] == 256


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--widths", "-4", "8"], "width -4"),
        (["--optimizers", "adamw", "adamq"], "unknown optimizer 'adamq'"),
        (["--seeds", "1"], "seeds must be"),
        (["--weight-decay", "-1"], "weight_decay"),
        (["--lr", "adamw"], "NAME=VALUE"),
        (["--config", "/nonexistent.toml"], "not found"),
    ],
)
def test_bad_sweep_options_fail_in_one_line(tmp_path, capsys, extra, needle):
    run_dir = tmp_path / "run"
    code, _, err = _run(["width-sweep", "--run-dir", str(run_dir), *TINY, *extra], capsys)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"X": np.ones((10, 3))}, "lacks y"),
        ({"X": np.full((10, 3), np.nan), "y": np.ones(10)}, "NaN"),
        ({"X": np.ones((10, 3)), "y": np.ones(7)}, "must have shape"),
    ],
)
def test_bad_data_file_fails_in_one_line(tmp_path, capsys, arrays, needle):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    run_dir = tmp_path / "run"
    code, _, err = _run(["width-sweep", "--run-dir", str(run_dir), "--data", str(path), *TINY], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("cli") / "run")
    assert cli.main(["width-sweep", "--run-dir", run_dir, "--widths", "2", "4", *TINY[2:]]) == 0
    return run_dir


def test_barrier_command_on_saved_checkpoints(tiny_run, tmp_path, capsys):
    out_json = tmp_path / "b.json"
    a, b = (os.path.join(tiny_run, "checkpoints", n) for n in ("w0004_adamw_s0", "w0004_adamw_s1"))
    code, out, _ = _run(["barrier", a, b, "--path-steps", "20", "--out", str(out_json)], capsys)
    assert code == 0 and "polychain" in out and out_json.is_file()
    code, out, _ = _run(["barrier", a, a, "--paths", "linear"], capsys)
    assert code == 0
    assert [line.split()[2] for line in out.splitlines()[1:3]] == ["0.00000", "0.00000"]  # self-barrier


def test_barrier_command_errors(tiny_run, tmp_path, capsys):
    ck = lambda n: os.path.join(tiny_run, "checkpoints", n)  # noqa: E731
    cases = [
        ([ck("w0002_adamw_s0"), ck("w0004_adamw_s0")], "different architectures"),
        ([ck("w0002_adamw_s0"), str(tmp_path / "missing")], "not found"),
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    (broken / "params").mkdir()
    cases.append(([ck("w0002_adamw_s0"), str(broken)], "corrupt"))
    for argv, needle in cases:
        code, _, err = _run(["barrier", *argv], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, err


def test_plot_errors_on_missing_run_dir(tmp_path, capsys):
    code, _, err = _run(["plot", str(tmp_path / "nope")], capsys)
    assert code == 2 and "not found" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The installed entry point: a user error is one stderr line and exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "connect.cli", "width-sweep", "--run-dir", str(tmp_path / "r"), "--widths", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("connect: error:") and proc.stderr.count("\n") == 1
