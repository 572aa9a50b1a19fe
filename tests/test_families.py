"""Every analysis for every family: ``connect train-lm`` trains a tiny Llama and a tiny GPT-NeoX with any optimizer
of the registry, ``connect paths`` joins two Llama seeds (raw and aligned), ``connect eval-lm`` reads a Hugging Face
directory written by ``transformers``, and the val loss along a linear path equals ``transformers``' loss of the
interpolated weights."""

import json

import numpy as np
import pytest
import torch
import transformers

from connect import cli, models, paths
from connect.lm import corpus, huggingface
from connect.lm import paths as lm_paths
from connect.lm import training as lm_training

LLAMA = ["hidden_size=32", "intermediate_size=48", "num_attention_heads=4", "num_key_value_heads=2", "num_hidden_layers=2"]
NEOX = ["hidden_size=32", "intermediate_size=64", "num_attention_heads=4", "num_hidden_layers=2"]


def _train(out, family, overrides, optimizer, seeds=("0",)):
    argv = ["train-lm", "--family", family, "--model-overrides", *overrides, "--optimizer", optimizer, "--context", "16",
            "--batch-size", "4", "--steps", "6", "--eval-every", "0", "--checkpoint-every", "0", "--log-every", "2",
            "--compute-dtype", "float32", "--seeds", *seeds, "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0


@pytest.mark.parametrize("family, overrides, optimizer", [("llama", LLAMA, "muon"), ("gpt_neox", NEOX, "lion")])
def test_train_lm_trains_each_family_and_records_it(tmp_path, capsys, family, overrides, optimizer):
    _train(tmp_path / "run", family, overrides, optimizer)
    params, cfg = lm_training.load(str(tmp_path / "run" / "seed-0"))
    assert models.family(cfg).FAMILY == family and cfg.d_model == 32 and cfg.n_layers == 2
    rows = [json.loads(line) for line in open(tmp_path / "run" / "seed-0" / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # it learns
    assert "val_loss" in capsys.readouterr().out


def test_paths_between_two_llama_seeds_raw_and_aligned(tmp_path, capsys):
    _train(tmp_path / "run", "llama", LLAMA, "adamw", seeds=("0", "1"))
    capsys.readouterr()
    out = tmp_path / "paths.json"
    assert cli.main(["paths", str(tmp_path / "run" / "seed-0"), str(tmp_path / "run" / "seed-1"), "--quiet", "--align",
                     "--path", "linear", "--t-grid", "0", "0.5", "1", "--max-batches", "2", "--context", "16",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(p["path"], p["alignment"]): p for p in result["paths"]}
    assert set(rows) == {("linear", "raw"), ("linear", "aligned")}
    raw, aligned = rows["linear", "raw"]["curve"], rows["linear", "aligned"]["curve"]
    assert raw["loss"][0] == pytest.approx(aligned["loss"][0], rel=1e-4)  # alignment keeps both functions
    assert raw["loss"][-1] == pytest.approx(aligned["loss"][-1], rel=1e-4)
    assert rows["linear", "raw"]["spectra"]["matrix"]["name"] == "layers.0.mlp.gate_proj"  # the family default
    assert "linear" in capsys.readouterr().out


def _hf_pair(family, seed, vocab=64):
    """Two random ``transformers`` models of one tiny config (weights perturbed so nothing sits at init values)."""
    if family == "llama":
        config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                          tie_word_embeddings=False)
    else:
        config = transformers.GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, max_position_embeddings=32, rotary_pct=0.5)
    out = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        out.append(model)
    return out


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_linear_path_val_loss_equals_transformers_on_interpolated_weights(tmp_path, family):
    model_a, model_b = _hf_pair(family, 0)
    model_a.save_pretrained(str(tmp_path / "a"))
    model_b.save_pretrained(str(tmp_path / "b"))
    theta_a, cfg = huggingface.load_pretrained(str(tmp_path / "a"))
    theta_b, _ = huggingface.load_pretrained(str(tmp_path / "b"))
    tokens = np.random.default_rng(1).integers(0, 64, size=4 * 16 + 1).astype(np.int32)
    ts = np.array([0.0, 0.3, 1.0], np.float32)
    ours = lm_paths.path_losses("linear", paths.stack_nodes(theta_a, paths.init_free(theta_a, theta_b, 0), theta_b), cfg,
                                tokens, ts, batch_size=4, context=16)
    sa, sb = model_a.state_dict(), model_b.state_dict()
    mixed = transformers.AutoModelForCausalLM.from_config(model_a.config).eval()
    x, y = next(corpus.eval_batches(tokens, 4, 16, None))
    for t, loss in zip(ts, ours):
        mixed.load_state_dict({k: (1 - float(t)) * sa[k] + float(t) * sb[k] for k in sa})  # the seed study's way
        with torch.no_grad():
            logits = mixed(torch.tensor(x, dtype=torch.long)).logits
            theirs = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), torch.tensor(y, dtype=torch.long).reshape(-1))
        assert abs(float(theirs) - loss) <= 1e-5 * abs(loss), (t, float(theirs), loss)


def test_eval_lm_reads_a_transformers_directory(tmp_path, capsys):
    """eval-lm's number is the mean loss over the embedded corpus's val windows, as lm.training.evaluate gives it."""
    model, _ = _hf_pair("llama", 3, vocab=256)  # byte-level corpus: 256 tokens
    model.save_pretrained(str(tmp_path / "hf"))
    assert cli.main(["eval-lm", str(tmp_path / "hf"), "--context", "16", "--max-batches", "2"]) == 0
    printed = capsys.readouterr().out
    params, cfg = lm_training.load(str(tmp_path / "hf"))
    want = lm_training.evaluate(params, cfg, corpus.load(None).val, batch_size=16, context=16, max_batches=2)
    assert f"{want:.4f}" in printed, printed
