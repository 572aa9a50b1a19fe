"""``connect train-lm`` / ``connect eval-lm``: a run directory that describes itself, eval-lm equal to
lm_training.evaluate on every kind of checkpoint, resume after Ctrl-C, one-line errors with nothing written."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy

from connect import checkpoints, cli
from connect.cli import options
from connect.lm import corpus, huggingface
from connect.lm import training as lm_training
from connect.lm.config import TrainLMConfig

OVERRIDES = ["n_layer=1", "n_embd=16", "n_head=2", "n_inner=32"]


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    """20 documents of a random order-1 Markov byte chain."""
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"abcdefgh ijklmn\nopq", dtype=np.uint8)
    trans = rng.dirichlet(np.full(alphabet.size, 0.3), size=alphabet.size)
    d = tmp_path_factory.mktemp("corpus")
    for i in range(20):
        state, out = 0, []
        for _ in range(400):
            state = rng.choice(alphabet.size, p=trans[state])
            out.append(alphabet[state])
        (d / f"doc{i:02d}.txt").write_bytes(bytes(out))
    return str(d)


def _train_argv(text_dir, *extra):
    return ["train-lm", "--data", text_dir, "--val-fraction", "0.2", "--model-overrides", *OVERRIDES, "--context", "16",
            "--batch-size", "4", "--steps", "4", "--eval-every", "2", "--eval-batches", "2", "--checkpoint-every", "2",
            "--log-every", "1", "--compute-dtype", "float32", "--optimizer", "adamw", "--quiet", *extra]


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.fixture(scope="module")
def run(text_dir, tmp_path_factory):
    """A 4-step run with the default --out (runs/OPTIMIZER-SEED under a fresh working directory) and its stdout."""
    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert cli.main(_train_argv(text_dir, "--seed", "2")) == 0
    finally:
        os.chdir(old)
    return str(cwd / "runs" / "adamw-2")


def test_train_lm_writes_a_self_describing_run(run, text_dir, capsys):
    stored = json.loads(open(os.path.join(run, "config.json")).read())
    assert stored["model_overrides"] == {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_inner": 32}
    assert stored["seeds"] == [2] and stored["steps"] == 4 and stored["context"] == 16 and stored["val_fraction"] == 0.2
    assert stored["resolved"]["model_config"]["n_embd"] == 16
    assert checkpoints.complete_steps(os.path.join(run, "seed-2", "ckpt")) == [2, 4]
    rows = _rows(os.path.join(run, "seed-2", "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert "val_loss" in rows[2] and "val_loss" in rows[4] and "val_loss" not in rows[3]


def test_train_lm_summary_prints_the_logged_losses_and_the_entropy(text_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, stdout, _ = _run(_train_argv(text_dir, "--seeds", "0", "1", "--steps", "2", "--out", out), capsys)
    assert code == 0
    val = corpus.load(text_dir, val_fraction=0.2).val
    p = np.unique(np.asarray(val), return_counts=True)[1] / val.size  # independent of corpus.unigram_entropy
    assert f"val unigram entropy {-np.sum(p * np.log(p)):.4f} nats" in stdout
    lines = stdout.splitlines()
    for s in (0, 1):
        last = _rows(os.path.join(out, f"seed-{s}", "metrics.jsonl"))[-1]
        assert [f"{s}", f"{last['loss']:.4f}", f"{last['val_loss']:.4f}"] in [line.split() for line in lines]


def _eval_loss(stdout):
    assert stdout.startswith("val loss ")
    return float(stdout.split()[2])


def test_eval_lm_equals_evaluate_for_every_kind_of_checkpoint(run, text_dir, tmp_path, capsys):
    params, model_cfg = lm_training.load(os.path.join(run, "seed-2", "ckpt", "step-00000004"))
    val = corpus.load(text_dir, val_fraction=0.2).val
    want = lm_training.evaluate(params, model_cfg, val, batch_size=4, context=16, max_batches=2)
    assert want == pytest.approx(_rows(os.path.join(run, "seed-2", "metrics.jsonl"))[-1]["val_loss"], rel=1e-6)
    huggingface.save_pretrained(params, model_cfg, str(tmp_path / "hf"))
    flags = ["--data", text_dir, "--val-fraction", "0.2", "--batch-size", "4", "--context", "16", "--max-batches", "2"]
    for ckpt in (run, os.path.join(run, "seed-2"), os.path.join(run, "seed-2", "ckpt"),
                 checkpoints.step_dir(os.path.join(run, "seed-2", "ckpt"), 4), str(tmp_path / "hf")):
        code, stdout, _ = _run(["eval-lm", ckpt, *flags], capsys)
        assert code == 0
        assert _eval_loss(stdout) == pytest.approx(want, abs=2e-6), ckpt
    # the older checkpoint is another model; the whole split (default) is another average
    code, stdout, _ = _run(["eval-lm", checkpoints.step_dir(os.path.join(run, "seed-2", "ckpt"), 2), *flags], capsys)
    assert _eval_loss(stdout) != pytest.approx(want, abs=1e-4)
    code, stdout, _ = _run(["eval-lm", run, *flags[:-2]], capsys)
    assert _eval_loss(stdout) == pytest.approx(lm_training.evaluate(params, model_cfg, val, batch_size=4, context=16), abs=2e-6)


def test_rerun_after_ctrl_c_resumes_to_the_same_parameters(run, text_dir, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "cut")
    argv = _train_argv(text_dir, "--seed", "2", "--out", out)
    prune = checkpoints.prune

    def prune_then_interrupt(directory, keep):
        prune(directory, keep)
        raise KeyboardInterrupt  # Ctrl-C right after the step-2 checkpoint

    monkeypatch.setattr(checkpoints, "prune", prune_then_interrupt)
    code, _, err = _run(argv, capsys)
    assert code == 130 and "rerun the same command to resume" in err
    assert checkpoints.complete_steps(os.path.join(out, "seed-2", "ckpt")) == [2]
    monkeypatch.setattr(checkpoints, "prune", prune)
    code, stdout, _ = _run(argv, capsys)
    assert code == 0
    a, _ = lm_training.load(run)
    b, _ = lm_training.load(out)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert _rows(os.path.join(out, "seed-2", "metrics.jsonl"))[-1]["loss"] == _rows(os.path.join(run, "seed-2", "metrics.jsonl"))[-1]["loss"]
    # the schedule spans `steps`, so a finished run is not extended: more steps is a new run
    code, _, err = _run([*argv, "--steps", "6"], capsys)
    assert code == 2 and "steps = 4, not 6" in err and err.count("\n") == 1


def test_help_documents_every_option_and_resuming(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train-lm", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in TrainLMConfig().to_dict():
        assert "--" + f.replace("_", "-") in out, f
    assert "Rerunning the same command on the same --out resumes" in out


def test_flags_override_the_config_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[train_lm]\noptimizer = "muon"\nsteps = 7\nseeds = [4, 5]\n[train_lm.model_overrides]\nn_layer = 1\n')
    args = cli.build_parser().parse_args(["train-lm", "--config", str(toml), "--model-overrides", "n_embd=16",
                                          "--betas", "0.8", "0.99", "--steps", "9"])
    cfg = options.config_from_args(args, TrainLMConfig)
    assert cfg.optimizer == "muon" and cfg.steps == 9 and cfg.seeds == [4, 5] and cfg.betas == [0.8, 0.99]
    assert cfg.model_overrides == {"n_layer": 1, "n_embd": 16}
    assert cfg.lr == TrainLMConfig().lr


def _bin_dir(tmp_path, train_ids, val_ids, dtype):
    d = tmp_path / "bin"
    d.mkdir()
    np.asarray(train_ids, dtype=dtype).tofile(d / "train.bin")
    np.asarray(val_ids, dtype=dtype).tofile(d / "val.bin")
    return str(d)


@pytest.mark.parametrize("case, needle", [
    ("optimizer", "unknown transformer optimizer 'adamq'"),
    ("context", "context 65 is longer than the model's n_positions=64"),
    ("bin_dtype", "looks like 32- or 64-bit ids"),
    ("bin_short", "shorter than one window of context + 1 = 17 tokens"),
    ("no_text", "has no text files"),
    ("seed_twice", "pass --seed or --seeds, not both"),
    ("override", "is not NAME=VALUE"),
])
def test_bad_train_input_fails_in_one_line_and_writes_nothing(text_dir, tmp_path, capsys, case, needle):
    rng = np.random.default_rng(1)
    extra = {
        "optimizer": ["--optimizer", "adamq"],
        "context": ["--context", "65"],
        "bin_dtype": lambda: ["--data", _bin_dir(tmp_path, rng.integers(0, 200, 500), rng.integers(0, 200, 500), np.uint32)],
        "bin_short": lambda: ["--data", _bin_dir(tmp_path, rng.integers(0, 200, 10), rng.integers(0, 200, 500), np.uint16)],
        "no_text": lambda: ["--data", _binary_only_dir(tmp_path)],
        "seed_twice": ["--seed", "0", "--seeds", "1"],
        "override": ["--model-overrides", "n_layer"],
    }[case]
    out = tmp_path / "run"
    code, _, err = _run(_train_argv(text_dir, "--out", str(out), *(extra() if callable(extra) else extra)), capsys)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def _binary_only_dir(tmp_path):
    d = tmp_path / "binary"
    d.mkdir()
    (d / "blob.dat").write_bytes(b"\0\1\2" * 100)
    return str(d)


def test_bad_eval_input_fails_in_one_line(run, text_dir, tmp_path, capsys):
    params, model_cfg = lm_training.load(run)
    hf = tmp_path / "hf"
    huggingface.save_pretrained(params, model_cfg, str(hf))
    tensors = safetensors.numpy.load_file(str(hf / "model.safetensors"))
    tensors["transformer.wpe.weight"] = np.ascontiguousarray(tensors["transformer.wpe.weight"][:-1])
    safetensors.numpy.save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})
    two_seeds = tmp_path / "two"
    for s in (0, 1):
        (two_seeds / f"seed-{s}").mkdir(parents=True)
    cases = [
        ([str(tmp_path / "missing")], "not found"),
        ([str(hf)], "key 'transformer.wpe.weight' has shape (63, 16), expected (64, 16)"),
        ([str(two_seeds)], "holds 2 seeds"),
        ([run, "--context", "65"], "context 65 is longer than the model's n_positions=64"),
        ([run, "--data", _binary_only_dir(tmp_path)], "has no text files"),
        ([run, "--batch-size", "0"], "--batch-size and --context must be ≥ 1"),
    ]
    for argv, needle in cases:
        code, out, err = _run(["eval-lm", *argv], capsys)
        assert code == 2 and out == ""
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_run_written_before_families_resumes_as_gpt2_and_refuses_another_family(run, text_dir, tmp_path, capsys):
    """A config.json without ``family`` (runs from before the Llama and GPT-NeoX families) is a GPT-2 run: the same
    command resumes it (to more steps), ``--family llama`` on it is refused in one line."""
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(run, old)
    path = os.path.join(old, "config.json")
    stored = json.loads(open(path).read())
    del stored["family"]
    open(path, "w").write(json.dumps(stored))
    llama = ["--family", "llama", "--model-overrides", "hidden_size=16", "intermediate_size=32", "num_attention_heads=2",
             "num_key_value_heads=2", "num_hidden_layers=1"]
    code, _, err = _run(_train_argv(text_dir, "--seed", "2", "--out", old, *llama), capsys)
    assert code == 2 and "was started with family = None, not 'llama'" in err
    assert cli.main(_train_argv(text_dir, "--seed", "2", "--out", old)) == 0
    assert "family" not in json.loads(open(path).read())  # the stored config is kept as written
