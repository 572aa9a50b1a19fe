"""Files from someone else, one named malformation each, through the command line: every one ends in exit code 2,
one stderr line naming the file (no traceback), and nothing written. Hugging Face directories (``eval-lm``), token
files and text corpora (``train-lm --data``), ``.npz`` data (``width-sweep --data``), TOML configs (``--config``);
task files through :func:`connect.lm.tasks.make`."""

import contextlib
import io
import json
import os
import struct
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from connect import cli
from connect.errors import UserError
from connect.lm import huggingface as hf
from connect.lm import safetensors_file, tasks
from connect.models import gpt2

CFG = gpt2.config("tiny", vocab_size=8, n_positions=4, n_embd=4, n_layer=1, n_head=1, n_inner=4)
TRAIN_LM = ["--steps", "1", "--batch-size", "2", "--context", "4", "--quiet"]
#: Warning categories Python's default filters do not print outside ``__main__``.
_HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
WIDTH_SWEEP = ["--widths", "2", "--optimizers", "adamw", "--seeds", "2", "--steps", "1", "--path-steps", "1", "--quiet"]


def refused(argv: list[str], root) -> str:
    """Run ``connect ARGV`` and assert the user-error contract: exit code 2, nothing on stdout, one stderr line
    ``connect: error: …`` without a traceback or a warning a user would see, and no new file or directory under
    ``root``; returns the line."""
    before = _listing(root)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main([str(a) for a in argv])
    shown = [str(w.message) for w in caught if not issubclass(w.category, _HIDDEN_WARNINGS)]
    assert shown == [], shown  # Python would print these on stderr
    text = err.getvalue()
    assert code == 2, (code, text)
    assert text.startswith("connect: error: ") and text.count("\n") == 1 and text.endswith("\n"), repr(text)
    assert "Traceback" not in text and out.getvalue() == "", (text, out.getvalue())
    assert _listing(root) == before, sorted(_listing(root) ^ before)
    return text


def _listing(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


def model_files(cfg=CFG) -> dict[str, bytes]:
    """``config.json`` and ``model.safetensors`` of a tiny GPT-2 with random weights, as bytes."""
    shapes = jax.eval_shape(lambda key: gpt2.init(key, cfg), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32)), shapes)
    tensors = hf.params_to_hf(params, cfg)
    return {hf.CONFIG_FILE: json.dumps(hf.config_to_hf(cfg)).encode(),
            hf.WEIGHTS_FILE: safetensors.numpy.save(tensors, metadata={"format": "pt"})}


@pytest.fixture(scope="module")
def valid():
    return model_files()


def _write(directory, files: dict[str, bytes]):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def _header(tensors_bytes: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", tensors_bytes[:8])
    return json.loads(tensors_bytes[8:8 + n]), tensors_bytes[8 + n:]


def _with_header(header, body: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


# --- Hugging Face directories: eval-lm DIR -----------------------------------------------------------------------


def test_valid_directory_still_loads(tmp_path, valid):
    params, cfg = hf.load_pretrained(str(_write(tmp_path / "m", valid)))
    assert cfg == CFG and params["wte"].shape == (8, 4)


def _weights_case(case: str, weights: bytes) -> tuple[bytes, str]:
    """``model.safetensors`` malformed as ``case``, and a piece of the expected message."""
    header, body = _header(weights)
    first = next(k for k in header if k != "__metadata__")
    entry = dict(header[first])
    size = len(weights)
    cases = {
        "huge_length": (_with_header(b"{}", body, length=2**62), "declares a 4611686018427387904-byte header"),
        "length_past_end": (_with_header(b"{}", b"", length=size), f"declares a {size}-byte header"),
        "too_short": (weights[:5], "shorter than the 8-byte header length"),
        "not_json": (_with_header(b"\xff\xfe{", body), "header is not UTF-8 JSON"),
        "header_list": (_with_header([1, 2], body), "header is a JSON list, not an object"),
        "unknown_dtype": (_with_header({**header, first: {**entry, "dtype": "F8_E4M3"}}, body), "has dtype 'F8_E4M3'"),
        "negative_shape": (_with_header({**header, first: {**entry, "shape": [-1, 4]}}, body), "not a list of non-negative"),
        "offsets_outside": (_with_header({**header, first: {**entry, "data_offsets": [0, 10**9]}}, body), "within the"),
        "offsets_vs_shape": (_with_header({**header, first: {**entry, "shape": [3]}}, body), "takes 12"),
        "truncated_data": (weights[:-4], "not a readable safetensors file"),
        "metadata_not_strings": (_with_header({**header, "__metadata__": {"format": 1}}, body), "__metadata__"),
    }
    return cases[case]


@pytest.mark.parametrize("case", ["huge_length", "length_past_end", "too_short", "not_json", "header_list", "unknown_dtype",
                                  "negative_shape", "offsets_outside", "offsets_vs_shape", "truncated_data",
                                  "metadata_not_strings"])
def test_malformed_safetensors_is_one_line(tmp_path, valid, case):
    weights, needle = _weights_case(case, valid[hf.WEIGHTS_FILE])
    d = _write(tmp_path / "m", {**valid, hf.WEIGHTS_FILE: weights})
    line = refused(["eval-lm", d], tmp_path)
    assert needle in line and "model.safetensors" in line and "save_pretrained" in line, line


def test_header_over_the_cap_is_refused_before_it_is_read(tmp_path, valid, monkeypatch):
    monkeypatch.setattr(safetensors_file, "MAX_HEADER_BYTES", 16)  # the real cap, 100 MB, would need a 100 MB file
    d = _write(tmp_path / "m", valid)
    assert "header but the limit is 16" in refused(["eval-lm", d], tmp_path)


@pytest.mark.parametrize("config, needle", [
    ([1, 2], "holds a JSON array, not an object"),
    ("gpt2", "holds a JSON string, not an object"),
    (None, "holds a JSON null, not an object"),
    ({"model_type": "bert"}, "has model_type 'bert', which connect does not read"),
    ({"model_type": 3}, "field model_type = 3 is not a string"),
    ({"n_embd": "4"}, "field n_embd = '4' is not a positive integer"),
    ({"n_layer": 1.0}, "field n_layer = 1.0 is not a positive integer"),
    ({"n_head": True}, "field n_head = True is not a positive integer"),
    ({"vocab_size": -8}, "field vocab_size = -8 is not a positive integer"),
    ({"n_inner": 0}, "field n_inner = 0 is not a positive integer"),
    ({"tie_word_embeddings": "false"}, "field tie_word_embeddings = 'false' is not a boolean"),
    ({"scale_attn_weights": 1}, "field scale_attn_weights = 1 is not a boolean"),
    ({"layer_norm_epsilon": float("nan")}, "field layer_norm_epsilon = nan is not a finite positive number"),
    ({"layer_norm_epsilon": "1e-5"}, "field layer_norm_epsilon = '1e-5' is not a finite positive number"),
    ({"activation_function": ["gelu_new"]}, "field activation_function = ['gelu_new'] is not a string"),
    ({"layer_norm_epsilon": 10**400}, "is not a finite positive number"),
    ({"n_layer": 10**18}, "holds the weights of 1 layers but its config.json says 1000000000000000000 layers"),
    ({"n_positions": 10**30}, "has shape"),  # well typed, but the weights disagree
])
def test_mistyped_config_json_names_the_field(tmp_path, valid, config, needle):
    text = json.dumps({**json.loads(valid[hf.CONFIG_FILE]), **config} if isinstance(config, dict) else config)
    d = _write(tmp_path / "m", {**valid, hf.CONFIG_FILE: text.encode()})
    line = refused(["eval-lm", d], tmp_path)
    assert needle in line and (hf.CONFIG_FILE in line or needle == "has shape"), line


@pytest.mark.parametrize("text, needle", [
    (b"{\"n_embd\": ", "not readable JSON (Expecting value"),
    (b"\xff\xfe\x00", "not readable JSON (not UTF-8)"),
    (b"[" * 100_000, "not readable JSON (nested too deeply)"),
])
def test_unparseable_config_json(tmp_path, valid, text, needle):
    d = _write(tmp_path / "m", {**valid, hf.CONFIG_FILE: text})
    assert needle in refused(["eval-lm", d], tmp_path)


def _sharded(tmp_path, valid, weight_map) -> str:
    """A directory whose index maps every tensor to the shard names of ``weight_map`` (a file ``shard.safetensors``
    inside, and a complete model ``outside.safetensors`` beside the directory)."""
    _write(tmp_path, {"outside.safetensors": valid[hf.WEIGHTS_FILE]})
    d = _write(tmp_path / "m", {hf.CONFIG_FILE: valid[hf.CONFIG_FILE], "shard.safetensors": valid[hf.WEIGHTS_FILE]})
    (d / hf.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d


@pytest.mark.parametrize("name, needle", [
    ("../outside.safetensors", "not a file name inside the model directory"),
    ("sub/../../outside.safetensors", "not a file name inside the model directory"),
    ("ABSOLUTE", "not a file name inside the model directory"),
    ("link.safetensors", "outside the model directory"),  # a symlink escaping the directory
    ("shard.safetensors\nx", "not a file name inside the model directory"),
])
def test_shard_names_are_confined_to_the_directory(tmp_path, valid, name, needle):
    name = str(tmp_path / "outside.safetensors") if name == "ABSOLUTE" else name
    d = _sharded(tmp_path, valid, {"transformer.wte.weight": name, "transformer.wpe.weight": "shard.safetensors"})
    os.symlink(tmp_path / "outside.safetensors", d / "link.safetensors")
    assert needle in refused(["eval-lm", d], tmp_path)


@pytest.mark.parametrize("index, needle", [
    ([], "not a safetensors index with a 'weight_map' object"),
    ({"weight_map": ["shard.safetensors"]}, "not a safetensors index with a 'weight_map' object"),
    ({"weight_map": {"transformer.wte.weight": 7}}, "maps a tensor to 7, not a shard file name"),
    ({"weight_map": {"transformer.wte.weight": ""}}, "maps a tensor to '', not a shard file name"),
])
def test_malformed_index_is_one_line(tmp_path, valid, index, needle):
    d = _sharded(tmp_path, valid, {})
    (d / hf.INDEX_FILE).write_text(json.dumps(index))
    assert needle in refused(["eval-lm", d], tmp_path)


def test_inside_shards_and_a_cache_snapshot_still_load(tmp_path, valid):
    d = _sharded(tmp_path, valid, {"transformer.wte.weight": "./shard.safetensors", "lm_head.weight": "shard.safetensors"})
    assert hf.load_pretrained(str(d))[1] == CFG
    # the Hugging Face cache: snapshots/REV/NAME -> ../../blobs/HASH
    blobs, snap = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc"
    _write(blobs, {"w": valid[hf.WEIGHTS_FILE]})
    _write(snap, {hf.CONFIG_FILE: valid[hf.CONFIG_FILE]})
    (snap / hf.INDEX_FILE).write_text(json.dumps({"weight_map": {"transformer.wte.weight": "model-1.safetensors"}}))
    os.symlink(os.path.join("..", "..", "blobs", "w"), snap / "model-1.safetensors")
    assert hf.load_pretrained(str(snap))[1] == CFG


# --- token files and text corpora: train-lm --data ---------------------------------------------------------------


def _llmc(version, count, ids) -> bytes:
    header = np.zeros(256, "<i4")
    header[:3] = (20240520, version, count)
    return header.tobytes() + np.asarray(ids, "<u2").tobytes()


@pytest.mark.parametrize("train, needle", [
    (np.arange(1, 200, dtype=np.uint32).tobytes(), "looks like 32- or 64-bit ids"),
    (np.arange(1, 200, dtype=np.int64).tobytes(), "looks like 32- or 64-bit ids"),
    (b"\x01\x02\x03", "is 3 bytes, not a positive whole number of uint16 ids"),
    (b"", "is 0 bytes"),
    (_llmc(2, 100, np.arange(100)), "llm.c header with version 2"),
    (_llmc(1, 999, np.arange(100)), "llm.c header with version 1 and 999 tokens"),
    (_llmc(1, 100, np.arange(100))[:40], "llm.c header"),  # a header cut short
])
def test_malformed_token_files(tmp_path, train, needle):
    d = _write(tmp_path / "bin", {"train.bin": train, "val.bin": np.arange(50, dtype=np.uint16).tobytes()})
    line = refused(["train-lm", "--data", d, "--out", tmp_path / "run", *TRAIN_LM], tmp_path)
    assert needle in line and "train.bin" in line, line


def test_token_file_with_ids_above_the_vocabulary(tmp_path):
    d = _write(tmp_path / "bin", {"train.bin": np.full(100, 9000, np.uint16).tobytes(),
                                  "val.bin": np.arange(50, dtype=np.uint16).tobytes()})
    assert "vocab_size" in refused(["train-lm", "--data", d, "--out", tmp_path / "run", *TRAIN_LM], tmp_path)


@pytest.mark.parametrize("files, needle", [
    ({"a.txt": b""}, "is empty"),
    ({"d/a.bin": b"\x00\x01" * 50}, "has no text files"),
    ({"d/.hidden": b"text"}, "has no text files"),
])
def test_empty_or_binary_text(tmp_path, files, needle):
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    source = tmp_path / next(iter(files)).split("/")[0]
    assert needle in refused(["train-lm", "--data", source, "--out", tmp_path / "run", *TRAIN_LM], tmp_path)


def test_unparseable_tokenizer_json(tmp_path):
    import tokenizers  # noqa: F401  (the test extra installs it, with transformers)
    (tmp_path / "a.txt").write_text("hello world\n" * 50)
    (tmp_path / "tok.json").write_bytes(b'{"version": "1.0", "model": [')
    line = refused(["train-lm", "--data", tmp_path / "a.txt", "--tokenizer", tmp_path / "tok.json", "--out", tmp_path / "run",
                    *TRAIN_LM], tmp_path)
    assert "is not a readable tokenizer.json" in line


# --- .npz data: width-sweep --data -------------------------------------------------------------------------------


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _npz_case(path, case: str) -> str:
    x, y = np.ones((6, 2)), np.zeros(6)
    if case == "random_bytes":
        path.write_bytes(b"\x00garbage" * 10)
        return "no zip signature"
    if case == "npy":
        with open(path, "wb") as f:
            np.save(f, x)
        return "holds a single ndarray (an .npy), not named arrays"
    if case == "raw_member":
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("X", b"1,2\n3,4")
            z.writestr("y.npy", b"\x93NUMPY")
        return "not a readable .npz"
    arrays = {
        "object": {"X": np.array([[1.0, None]] * 6, dtype=object), "y": y},
        "x_1d": {"X": np.ones(6), "y": y},
        "x_no_features": {"X": np.ones((6, 0)), "y": y},
        "nan": {"X": np.where(np.eye(6, 2) > 0, np.nan, 1.0), "y": y},
        "overflow": {"X": np.full((6, 2), 1e300), "y": y},
        "missing_y": {"X": x},
        "strings": {"X": np.array([["a", "b"]] * 6), "y": y},
        "y_wrong_length": {"X": x, "y": np.zeros(5)},
    }[case]
    _npz(path, **arrays)
    return {"object": "pickle", "x_1d": "must be 2-D", "x_no_features": "d ≥ 1", "nan": "NaN or inf",
            "overflow": "beyond float32's range", "missing_y": "lacks y", "strings": "must be numeric",
            "y_wrong_length": "must have shape (6,)"}[case]


@pytest.mark.parametrize("case", ["random_bytes", "npy", "raw_member", "object", "x_1d", "x_no_features", "nan", "overflow",
                                  "missing_y", "strings", "y_wrong_length"])
def test_malformed_npz(tmp_path, case):
    path = tmp_path / "d.npz"
    needle = _npz_case(path, case)
    line = refused(["width-sweep", "--data", path, "--run-dir", tmp_path / "run", *WIDTH_SWEEP], tmp_path)
    assert needle in line and str(path) in line, line


# --- TOML configs: --config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    (b"[train_lm\nsteps = 1", "is not valid TOML"),
    (b"\xff\xfe\x00binary", "is not valid TOML"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"[train_lm]\nsteps = 'many'", "option steps = 'many' is not a valid int"),
    (b"[train_lm]\nstepz = 1", "unknown option 'stepz'"),
    (b"[somewhere]\nsteps = 1", "unknown table [somewhere]"),
    (b"[train_lm]\nseeds = [{a = 1}]", "seeds must be"),
    (b"[train_lm]\nmodel_overrides = {n_layer = 'two'}", "n_layer"),
])
def test_malformed_toml_config(tmp_path, text, needle):
    (tmp_path / "c.toml").write_bytes(text)
    assert needle in refused(["train-lm", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", *TRAIN_LM], tmp_path)


# --- task files: tasks.make ----------------------------------------------------------------------------------------


#: A piece of the message -> the malformed task file that gives it.
TASK_FILES = {
    "line 1 has no tab": b"prompt without a tab\n",
    "line 2 has an empty prompt": b"a\tb\n\tno prompt\n",
    "holds 1 example(s)": b"only\tone\n",
    "holds 0 example(s)": b"",
    "line 2 has no tab": b"\x00\xff\t\xfe\n\x01\x02\n",
}


@pytest.mark.parametrize("needle", list(TASK_FILES))
def test_malformed_task_file(tmp_path, needle):
    (tmp_path / "task.txt").write_bytes(TASK_FILES[needle])
    with pytest.raises(UserError) as e:
        tasks.make(str(tmp_path / "task.txt"))
    assert needle in str(e.value) and "task.txt" in str(e.value) and "\n" not in str(e.value)
