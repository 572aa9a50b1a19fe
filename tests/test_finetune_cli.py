"""``connect study finetune``: flags over the TOML table over the defaults; a tiny run prints the
least-forgetting ranking and writes its points and figures; bad input is one line and exit code 2."""

import json
import os

import jax
import numpy as np
import pytest

from connect import checkpoints, cli
from connect.cli import finetune as finetune_commands
from connect.models import gpt2
from connect.studies.finetune import analysis

MODEL = gpt2.config("tiny", n_layer=1, n_embd=16, n_head=2, n_inner=32, n_positions=32)
SMALL = ["--n-train", "8", "--n-heldout", "4", "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--path-points", "2",
         "--top-k", "2", "--eval-batches", "1", "--context", "32", "--lora-rank", "2", "--quiet"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftcli")
    run = root / "muon-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"optimizer": "muon"}))
    params = jax.jit(gpt2.init, static_argnums=1)(jax.random.key(0), MODEL)
    checkpoints.save_checkpoint(checkpoints.step_dir(str(run / "seed-0" / "ckpt"), 3), params,
                                {"model": "gpt2", "model_config": MODEL.to_dict(), "optimizer": "muon"})
    rng = np.random.default_rng(0)
    (root / "corpus.txt").write_text(" ".join("".join(rng.choice(list("abcdefgh"), 5)) for _ in range(2000)))
    return root


def _args(argv):
    return cli.build_parser().parse_args(["study", "finetune", *argv])


def test_flags_override_the_table_and_lrs_merge(tmp_path):
    toml = tmp_path / "ft.toml"
    toml.write_text('[tiny]\ntask = "modadd"\nsteps = 7\nmethods = ["adamw", "muon"]\ndata_sizes = [8, 16]\n'
                    '[tiny.lrs]\nadamw = [1e-3]\n')
    cfg = finetune_commands.study_config(_args(["--config", str(toml), "--table", "tiny", "--pretrained", "x",
                                                "--steps", "3", "--lrs", "muon=1e-3,3e-3", "--data-sizes", "4"]))
    assert (cfg.task, cfg.steps, cfg.data_sizes) == ("modadd", 3, [4])
    assert cfg.lrs["adamw"] == [1e-3] and cfg.lrs["muon"] == [1e-3, 3e-3]  # the file's grid kept, the flag's added


def test_tiny_run_prints_the_ranking(pretrained, capsys):
    out = str(pretrained / "out")
    argv = ["study", "finetune", "--pretrained", str(pretrained / "muon-run"), "--corpus", str(pretrained / "corpus.txt"),
            "--methods", "adamw", "muon", "--lrs", "adamw=1e-3", "muon=1e-3", "--out", out, *SMALL]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "2 points" in text and "pretrained muon, arithmetic" in text
    points = analysis.load_points(out)
    study = json.load(open(os.path.join(out, "summary.json")))["studies"][0]
    first = text.splitlines()[1]  # at equal task loss, least forgetting first
    assert "task_loss" in first and first.split(": ", 1)[1].split()[0] == study["at_equal_loss"]["best_interpolated"]
    assert {p["method"] for p in points} == {"adamw", "muon"}
    assert os.path.isfile(os.path.join(out, "figures", "pareto.png"))  # the command draws what run() wrote


@pytest.mark.parametrize("extra, needle", [
    (["--task", "sudoku"], "task"),
    (["--lora-rank", "64", "--methods", "lora"], "rank"),
    (["--lrs", "adamw=-1e-3", "--methods", "adamw"], "not positive"),
    (["--lrs", "adamw"], "NAME=VALUE"),
    (["--table", "tiny"], "--config"),
])
def test_bad_input_is_one_line(pretrained, tmp_path, capsys, extra, needle):
    out = tmp_path / "bad"
    argv = ["study", "finetune", "--pretrained", str(pretrained / "muon-run"), "--corpus", str(pretrained / "corpus.txt"),
            "--out", str(out), *SMALL, *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not (out / "points").exists() or not os.listdir(out / "points")
