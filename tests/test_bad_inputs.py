"""Every command checks all its inputs before it creates anything or starts any work: a bad output location
(a file, a path under a file, an unwritable directory, a settings file that is not a JSON object), a missing
corpus or checkpoint, a value given twice, ends with exit code 2, one stderr line naming the problem and no
traceback, and nothing written; a user's own directory is never deleted; ``train-lm`` that diverges stops
with exit code 2 at the first non-finite loss and keeps its last finite checkpoint."""

import json
import os

import jax
import numpy as np
import pytest

from connect import checkpoints, cli
from connect.lm import training as lm_training
from connect.models import gpt2

MODEL = {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_inner": 32, "n_positions": 16}
OVERRIDES = [f"{k}={v}" for k, v in MODEL.items()]
STUDY_TOML = os.path.join(os.path.dirname(__file__), "..", "experiments", "gpt2_connectivity.toml")
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
COMMANDS = ["train-lm", "width-sweep", "study gpt2", "study finetune"]
SETTINGS_FILE = {"train-lm": "config.json", "width-sweep": "config.json", "study gpt2": "study.json", "study finetune": "config.json"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def make_inputs(root) -> dict:
    """A small text corpus and a micro GPT-2 checkpoint under ``root``."""
    rng = np.random.default_rng(0)
    (root / "corpus").mkdir()
    for i in range(20):
        (root / "corpus" / f"doc{i:02d}.txt").write_bytes(bytes(rng.choice(np.frombuffer(b"abcdefgh ijklmn\nopq", np.uint8), 400)))
    model = gpt2.config("tiny", n_layer=1, n_embd=16, n_head=2, n_inner=32, n_positions=32)
    params = jax.jit(gpt2.init, static_argnums=1)(jax.random.key(0), model)
    checkpoints.save_checkpoint(checkpoints.step_dir(str(root / "pre" / "seed-0" / "ckpt"), 1), params,
                                {"model": "gpt2", "model_config": model.to_dict(), "optimizer": "adamw"})
    return {"corpus": str(root / "corpus"), "pretrained": str(root / "pre")}


def _toml(v):
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def argv_of(command, out, inputs, *extra, lr="4e-3", checkpoint_every="2"):
    """``command`` with micro settings writing ``out``, then ``extra`` (flags; ``--set`` values for study gpt2)."""
    corpus = inputs["corpus"]
    if command == "train-lm":
        return ["train-lm", "--data", corpus, "--val-fraction", "0.2", "--model-overrides", *OVERRIDES, "--context", "16",
                "--batch-size", "4", "--steps", "4", "--eval-every", "0", "--eval-batches", "1", "--checkpoint-every", checkpoint_every,
                "--log-every", "1", "--compute-dtype", "float32", "--lr", lr, "--quiet", "--out", str(out), *extra]
    if command == "width-sweep":
        return ["width-sweep", "--run-dir", str(out), "--widths", "2", "--optimizers", "adamw", "--seeds", "2", "--steps", "10",
                "--path-steps", "2", "--t-points", "3", "--quiet", *extra]
    if command == "study gpt2":
        settings = {"seeds": 2, "pairs_per_type": 1, "path_steps": 1, "t_points": 3, "spectra_matrix": "h.0.mlp.c_fc",
                    "train.steps": 2, "train.batch_size": 4, "train.context": 16, "train.data": corpus, "train.val_fraction": 0.2,
                    "train.model_overrides": MODEL}
        return ["study", "gpt2", "--config", STUDY_TOML, "--tiny", "--out", str(out), "--quiet",
                "--set", *[f"{k}={_toml(v)}" for k, v in settings.items()], *extra]
    return ["study", "finetune", "--pretrained", inputs["pretrained"], "--corpus", corpus, "--methods", "adamw",
            "--lrs", "adamw=1e-3", "--n-train", "8", "--n-heldout", "4", "--steps", "1", "--batch-size", "4", "--path-points", "2",
            "--eval-batches", "1", "--context", "32", "--out", str(out), "--quiet", *extra]


def _snapshot(d):
    if os.path.isfile(d):
        return open(d, "rb").read()
    return {os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(d) for f in fs} | {
        os.path.relpath(os.path.join(r, x), d) + "/": None for r, xs, _ in os.walk(d) for x in xs}


def _fails_in_one_line(argv, capsys, needle):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


def _out_is_file(tmp_path):
    (tmp_path / "out").write_text("my notes\n")
    return tmp_path / "out", "is a file"


def _out_under_file(tmp_path):
    (tmp_path / "notes").write_text("my notes\n")
    return tmp_path / "notes" / "run", "cannot be created: "


def _out_unwritable(tmp_path):
    if ROOT:
        pytest.skip("permissions do not apply to root")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    return tmp_path / "ro" / "run", "is not writable"


@pytest.mark.parametrize("kind", ["file", "under_file", "unwritable"])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_location_that_cannot_be_written_is_refused_first(command, kind, inputs, tmp_path, capsys):
    out, needle = {"file": _out_is_file, "under_file": _out_under_file, "unwritable": _out_unwritable}[kind](tmp_path)
    before = _snapshot(tmp_path)
    _fails_in_one_line(argv_of(command, out, inputs), capsys, needle)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("content", ["[1, 2]", "{"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_settings_file_that_is_not_an_object_is_refused_and_kept(command, content, inputs, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / SETTINGS_FILE[command]).write_text(content)
    _fails_in_one_line(argv_of(command, out, inputs), capsys, "not a settings file" if content.startswith("[") else "unreadable")
    assert _snapshot(out) == {SETTINGS_FILE[command]: content.encode()}


@pytest.mark.parametrize("command, extra, needle", [
    ("train-lm", ["--seeds", "0", "0"], "seeds lists a seed twice"),
    ("width-sweep", ["--widths", "2", "2"], "widths lists a width twice"),
    ("width-sweep", ["--optimizers", "adamw", "adamw"], "optimizers lists a name twice"),
    ("study finetune", ["--seeds", "0", "0"], "seeds lists 0 twice"),
    ("study finetune", ["--methods", "adamw", "adamw"], "methods lists adamw twice"),
    ("study finetune", ["--lrs", "adamw=1e-3,0.001"], "lrs.adamw lists 0.001 twice"),
    ("study finetune", ["--pretrained", "PRE", "PRE"], "--pretrained lists PRE twice: give each checkpoint once"),
    ("study finetune", ["--pretrained", "PRE", "PRE/"], "--pretrained lists PRE twice (as PRE and PRE/)"),
    ("study finetune", ["--pretrained", "MISSING"], "not found"),
    ("study finetune", ["--context", "64"], "exceeds"),
    ("study finetune", ["--methods", "lora", "--lrs", "lora=1e-3", "--lora-rank", "64"], "LoRA rank 64 exceeds"),
    ("study gpt2", ["ood_data='/nonexistent/ood'"], "corpus /nonexistent/ood not found"),
    ("study gpt2", ["spectra_matrix='h.3.mlp.c_fc'"], "no matrix 'h.3.mlp.c_fc'"),
    ("study gpt2", ["train.data='/nonexistent/corpus'"], "corpus /nonexistent/corpus not found"),
])
def test_bad_values_fail_before_anything_is_written(command, extra, needle, inputs, tmp_path, capsys):
    """Nothing is created — in particular ``study gpt2`` trains nothing (no ``OUT/train``) before its
    out-of-distribution corpus and spectra matrix are checked."""
    out = tmp_path / "run"
    names = lambda arg: arg.replace("PRE", inputs["pretrained"]).replace("MISSING", str(tmp_path / "missing"))
    _fails_in_one_line(argv_of(command, out, inputs, *map(names, extra)), capsys, names(needle))
    assert not out.exists()


@pytest.mark.parametrize("command", [["paths", "{m}", "{m}", "--quiet"], ["barrier", "{m}", "{m}"], ["theory", "connect", "{m}", "{m}"],
                                     ["theory", "optimum", "--data", "{m}", "--constraint", "adamw", "--lam", "1"]],
                         ids=["paths", "barrier", "theory-connect", "theory-optimum"])
@pytest.mark.parametrize("where, needle", [("dir", "is a directory"), ("under_file", "cannot be created")])
def test_result_files_are_checked_before_loading_anything(command, where, needle, tmp_path, capsys):
    (tmp_path / "notes").write_text("x")
    out = {"dir": tmp_path, "under_file": tmp_path / "notes" / "p.json"}[where]
    missing = str(tmp_path / "no-such-checkpoint")  # loading it would fail: the --out error comes first
    _fails_in_one_line([c.format(m=missing) for c in command] + ["--out", str(out)], capsys, needle)


def test_train_lm_with_bad_data_leaves_a_users_empty_directory(inputs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    _fails_in_one_line(argv_of("train-lm", out, inputs, "--data", str(short)), capsys, "shorter than one window")
    assert out.is_dir() and os.listdir(out) == []


def test_train_lm_that_diverges_stops_and_keeps_the_last_finite_checkpoint(inputs, tmp_path, capsys):
    """Heavy-ball momentum at lr 1000 on the micro model: a finite loss for two steps, then NaN."""
    out = tmp_path / "run"
    argv = argv_of("train-lm", out, inputs, "--optimizer", "momentum", "--steps", "8", lr="1000", checkpoint_every="1")
    err = _fails_in_one_line(argv, capsys, "training diverged at step ")
    step = int(err.split("at step ")[1].split(":")[0])
    assert "lower the learning rate (--lr)" in err and f"the last finite checkpoint, step {step - 1}," in err
    ckpt = os.path.join(out, "seed-0", "ckpt")
    assert checkpoints.complete_steps(ckpt)[-1] == step - 1
    params, _ = lm_training.load(str(out / "seed-0"))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    with open(out / "seed-0" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == list(range(1, step)) and all(np.isfinite(r["loss"]) for r in rows)


def test_train_lm_that_diverges_before_a_checkpoint_leaves_the_users_directory_for_the_rerun(inputs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    argv = argv_of("train-lm", out, inputs, "--optimizer", "momentum", "--steps", "8", lr="1000", checkpoint_every="0")
    _fails_in_one_line(argv, capsys, "no checkpoint was saved, so nothing of the run is kept")
    assert out.is_dir() and not {"config.json", "seed-0"} & set(os.listdir(out))
    assert cli.main(argv_of("train-lm", out, inputs, "--optimizer", "momentum", "--steps", "8", lr="0.1", checkpoint_every="0")) == 0
