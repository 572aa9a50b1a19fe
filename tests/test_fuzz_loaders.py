"""Property tests (hypothesis): random bytes, JSON and TOML thrown at every loader of a file from someone else.

Each loader either loads (and then what it returns is sane) or raises :class:`UserError` with a one-line message,
never another exception. Through the command line, a refused file gives exit code 2, one stderr line and nothing
written (``refused`` of ``test_outside_files``); the CLI is run only on inputs the loader refuses, so no example
trains anything. Examples are derandomized and no database is kept, so CI runs the same inputs every time.
"""

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import struct
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_outside_files import TRAIN_LM, WIDTH_SWEEP, model_files, refused

from connect import config
from connect.errors import UserError
from connect.lm import corpus, huggingface, safetensors_file, tasks
from connect.lm.config import TrainLMConfig
from connect.studies.finetune.config import FinetuneConfig
from connect.studies.gpt2_connectivity.config import PathsConfig, StudyConfig
from connect.studies.width_sweep.config import WidthSweepConfig
from connect.twolayer import data
from connect.twolayer.pair import BarrierConfig

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
CLI = settings(FUZZ, max_examples=100)
CONFIG_CLASSES = (WidthSweepConfig, TrainLMConfig, StudyConfig, PathsConfig, FinetuneConfig, BarrierConfig)
VALID = model_files()


@contextlib.contextmanager
def fresh(tmp_path):
    """A new empty directory under ``tmp_path`` for one example, removed afterwards."""
    d = tempfile.mkdtemp(dir=tmp_path)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def loads_or_refuses(load, *args, **kw):
    """``load(*args, **kw)``, or ``None`` if it raised a one-line UserError (any other exception fails the test)."""
    try:
        return load(*args, **kw)
    except UserError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return None


def write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


# --- strategies ----------------------------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.sampled_from([10**18, 2**64, 10**400]) | st.floats()
                | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                                   max_size=4), max_leaves=12)


def _json_bytes(value) -> bytes:
    return json.dumps(value).encode()


def _header_of(weights: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", weights[:8])
    return json.loads(weights[8:8 + n]), weights[8 + n:]


@st.composite
def safetensors_bytes(draw, valid: bytes = VALID[huggingface.WEIGHTS_FILE]):
    """A safetensors file mutated one way: random bytes, a random declared length, a random JSON header, a tensor
    entry with random fields, or the valid file cut or with bytes flipped."""
    header, body = _header_of(valid)
    kind = draw(st.sampled_from(["bytes", "length", "header", "entry", "cut", "flip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "length":
        raw = valid[8:]
        n = draw(st.integers(0, 2**64 - 1) | st.integers(len(raw) - 64, len(raw) + 64).filter(lambda k: k >= 0))
        return struct.pack("<Q", n) + raw
    if kind == "header":
        head = _json_bytes(draw(json_values))
        return struct.pack("<Q", len(head)) + head + draw(st.sampled_from([body, b"", body[: len(body) // 2]]))
    if kind == "entry":
        name = draw(st.sampled_from(sorted(header)))
        entry = dict(header[name]) if isinstance(header[name], dict) else {}
        entry.update(draw(st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets"]),
                                          json_values | st.sampled_from(["F32", "BF16", "F8_E4M3", "C64", "I64", "BOOL"])
                                          | st.lists(st.integers(-2, 2**40), max_size=3), min_size=1)))
        head = _json_bytes({**header, name: entry})
        return struct.pack("<Q", len(head)) + head + body
    if kind == "cut":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    at = draw(st.lists(st.integers(0, len(valid) - 1), min_size=1, max_size=4))
    out = bytearray(valid)
    for i in at:
        out[i] ^= draw(st.integers(1, 255))
    return bytes(out)


# --- Hugging Face: safetensors files, config.json, index.json -------------------------------------------------------


@FUZZ
@given(blob=safetensors_bytes())
def test_safetensors_file_loads_or_refuses(tmp_path, blob):
    with fresh(tmp_path) as d:
        tensors = loads_or_refuses(safetensors_file.read, write(os.path.join(d, "w.safetensors"), blob))
    if tensors is not None:
        assert all(isinstance(v, np.ndarray) for v in tensors.values())


config_overrides = st.dictionaries(
    st.sampled_from(["model_type", "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                     "layer_norm_epsilon", "tie_word_embeddings", "scale_attn_weights", "add_cross_attention"]),
    json_values | st.integers(-3, 70), min_size=1, max_size=3)


def malformed_json(structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A JSON file: ``structured`` (the right shape, random contents), any JSON value, or random bytes."""
    return structured | json_values.map(_json_bytes) | st.binary(max_size=100)


#: A config.json: the valid config with random field values, or anything.
config_json = malformed_json(config_overrides.map(lambda fields: _json_bytes({**json.loads(VALID[huggingface.CONFIG_FILE]), **fields})))


@FUZZ
@given(config_bytes=config_json, weights=st.none() | safetensors_bytes())
def test_hugging_face_directory_loads_or_refuses(tmp_path, config_bytes, weights):
    with fresh(tmp_path) as d:
        write(os.path.join(d, huggingface.CONFIG_FILE), config_bytes)
        write(os.path.join(d, huggingface.WEIGHTS_FILE), VALID[huggingface.WEIGHTS_FILE] if weights is None else weights)
        loaded = loads_or_refuses(huggingface.load_pretrained, d)
    if loaded is not None:
        params, cfg = loaded
        assert params["wte"].shape == (cfg.vocab_size, cfg.n_embd)


#: Shard names: inside, escaping by ``..``, absolute, a symlink out, odd text.
shard_names = st.sampled_from(["shard.safetensors", "./shard.safetensors", "sub/../shard.safetensors", "../outside.safetensors",
                               "sub/../../outside.safetensors", "OUTSIDE_ABS", "link.safetensors", "missing.safetensors",
                               "", ".", "..", "/", "shard.safetensors\n"]) | st.text(max_size=10)
TENSOR_NAMES = sorted(_header_of(VALID[huggingface.WEIGHTS_FILE])[0])


#: An index.json: a weight_map of random tensor names to shard names, or anything.
index_json = malformed_json(st.dictionaries(st.sampled_from(TENSOR_NAMES) | st.text(max_size=8), shard_names | json_scalars, max_size=6)
                            .map(lambda names: _json_bytes({"metadata": {}, "weight_map": names})))


def _sharded_dir(d: str, index: bytes) -> tuple[str, bytes]:
    """``d/m``: config.json, shard.safetensors (the whole model), a symlink out, and ``index`` (``OUTSIDE_ABS``
    replaced by the absolute path of a complete model outside the directory); returns ``m`` and that index."""
    outside = write(os.path.join(d, "outside.safetensors"), VALID[huggingface.WEIGHTS_FILE])
    m = os.path.join(d, "m")
    write(os.path.join(m, huggingface.CONFIG_FILE), VALID[huggingface.CONFIG_FILE])
    write(os.path.join(m, "shard.safetensors"), VALID[huggingface.WEIGHTS_FILE])
    os.symlink(outside, os.path.join(m, "link.safetensors"))
    index = index.replace(b"OUTSIDE_ABS", outside.encode())
    write(os.path.join(m, huggingface.INDEX_FILE), index)
    return m, index


def _escapes(m: str, index: bytes) -> bool:
    """Whether the index names any shard whose real path lies outside ``m``."""
    try:
        names = json.loads(index)["weight_map"].values()
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    home = os.path.realpath(m)
    return any(isinstance(n, str) and n and os.path.commonpath([os.path.realpath(os.path.join(m, n)), home]) != home
               for n in names)


@FUZZ
@given(index=index_json)
def test_sharded_directory_never_reads_outside(tmp_path, index):
    with fresh(tmp_path) as d:
        m, index = _sharded_dir(d, index)
        loaded = loads_or_refuses(huggingface.load_pretrained, m)
        assert loaded is None or not _escapes(m, index), index


@CLI
@given(config_bytes=config_json, weights=st.none() | safetensors_bytes(), index=st.none() | index_json)
def test_eval_lm_refuses_malformed_directories_in_one_line(tmp_path, config_bytes, weights, index):
    with fresh(tmp_path) as d:
        if index is None:
            m = os.path.join(d, "m")
            write(os.path.join(m, huggingface.CONFIG_FILE), config_bytes)
            write(os.path.join(m, huggingface.WEIGHTS_FILE), VALID[huggingface.WEIGHTS_FILE] if weights is None else weights)
        else:
            m, _ = _sharded_dir(d, index)
        assume(loads_or_refuses(huggingface.load_pretrained, m) is None)
        refused(["eval-lm", m], d)


# --- token files and text corpora -------------------------------------------------------------------------------


@st.composite
def token_file(draw) -> bytes:
    """A .bin: random bytes, ids of a random integer dtype, or an llm.c-like header (random version and count)."""
    kind = draw(st.sampled_from(["bytes", "ids", "llmc"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    ids = draw(hnp.arrays(draw(st.sampled_from(["<u2", "<u4", "<i8", ">u2", "<f4", "<f2"])), st.integers(0, 200)))
    if kind == "ids":
        return ids.tobytes()
    header = np.zeros(256, "<i4")
    header[:3] = (20240520, draw(st.integers(-1, 3)), draw(st.integers(-(2**31), 2**31 - 1) | st.just(ids.nbytes // 2)))
    return (header.tobytes() + ids.tobytes())[: draw(st.integers(0, 1024 + ids.nbytes))]


@FUZZ
@given(train=token_file(), val=token_file())
def test_token_files_load_or_refuse(tmp_path, train, val):
    with fresh(tmp_path) as d:
        write(os.path.join(d, "train.bin"), train)
        write(os.path.join(d, "val.bin"), val)
        c = loads_or_refuses(corpus.load, d)
        if c is not None:
            assert c.train.dtype == c.val.dtype == np.uint16 and c.train.size > 0 and c.val.size > 0
            assert max(int(c.train.max()), int(c.val.max())) < c.vocab_size
            del c  # close the memmaps before the directory goes


text_files = st.dictionaries(st.sampled_from(["a.txt", "train.txt", "valid.txt", "test.txt", ".hidden", "sub/b.raw", "x.bin"]),
                             st.binary(max_size=80) | st.text(max_size=40).map(str.encode), max_size=4)


@FUZZ
@given(files=text_files, single=st.booleans())
def test_text_corpora_load_or_refuse(tmp_path, files, single):
    with fresh(tmp_path) as d:
        for name, blob in files.items():
            write(os.path.join(d, "c", name), blob)
        os.makedirs(os.path.join(d, "c"), exist_ok=True)
        source = os.path.join(d, "c", next(iter(files))) if single and files else os.path.join(d, "c")
        c = loads_or_refuses(corpus.load, source)
        if c is not None:
            assert c.vocab_size == 256 and c.train.size + c.val.size > 0


@CLI
@given(train=token_file(), val=token_file(), files=text_files, bins=st.booleans())
def test_train_lm_refuses_malformed_corpora_in_one_line(tmp_path, train, val, files, bins):
    with fresh(tmp_path) as d:
        c = os.path.join(d, "c")
        os.makedirs(c)
        for name, blob in ({"train.bin": train, "val.bin": val} if bins else files).items():
            write(os.path.join(c, name), blob)
        assume(loads_or_refuses(corpus.load, c) is None)
        refused(["train-lm", "--data", c, "--out", os.path.join(d, "run"), *TRAIN_LM], d)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("tokenizers"), reason="tokenizers not installed")
@settings(FUZZ, max_examples=100)
@given(blob=st.binary(max_size=200) | json_values.map(_json_bytes))
def test_tokenizer_json_loads_or_refuses(tmp_path, blob):
    with fresh(tmp_path) as d:
        text = write(os.path.join(d, "a.txt"), b"hello world\n" * 20)
        loads_or_refuses(corpus.load, text, tokenizer=write(os.path.join(d, "tokenizer.json"), blob))


# --- .npz data files -----------------------------------------------------------------------------------------------

npz_dtypes = st.sampled_from([np.dtype(t) for t in ("<f8", "<f4", "<f2", ">f8", "<i8", "u1", "<u8", "?", "<c8", "<U2", "S2", "<M8[s]")]
                             + [np.dtype([("a", "<f4"), ("b", "u1")])])


@st.composite
def npz_file(draw) -> bytes:
    """An .npz: random bytes, random arrays under the names load_npz reads (any dtype and shape, NaN and inf
    included), or a zip whose members are not .npy files."""
    kind = draw(st.sampled_from(["arrays", "arrays", "arrays", "bytes", "zip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for name, blob in draw(st.dictionaries(st.sampled_from(["X", "X.npy", "y.npy", "y"]), st.binary(max_size=40))).items():
                z.writestr(name, blob)
    else:
        names = draw(st.lists(st.sampled_from(["X", "y", "X_test", "y_test", "Z"]), unique=True, max_size=5))
        np.savez(buf, **{n: draw(hnp.arrays(draw(npz_dtypes), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
                         for n in names})
    return buf.getvalue()


@FUZZ
@given(blob=npz_file(), task=st.sampled_from(data.TASKS))
def test_npz_loads_or_refuses(tmp_path, blob, task):
    with fresh(tmp_path) as d:
        ds = loads_or_refuses(data.load_npz, write(os.path.join(d, "d.npz"), blob), task=task)
    if ds is not None:
        for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
            assert a.dtype == np.float32 and bool(np.all(np.isfinite(np.asarray(a))))
        assert ds.x_train.ndim == 2 and ds.x_train.shape[1] >= 1 and ds.x_test.shape[1] == ds.x_train.shape[1]
        assert ds.y_train.shape == ds.x_train.shape[:1] and ds.y_test.shape == ds.x_test.shape[:1]


@CLI
@given(blob=npz_file())
def test_width_sweep_refuses_malformed_npz_in_one_line(tmp_path, blob):
    with fresh(tmp_path) as d:
        path = write(os.path.join(d, "d.npz"), blob)
        assume(loads_or_refuses(data.load_npz, path) is None)
        refused(["width-sweep", "--data", path, "--run-dir", os.path.join(d, "run"), *WIDTH_SWEEP], d)


# --- task files ----------------------------------------------------------------------------------------------------

task_lines = st.lists(st.binary(max_size=20) | st.tuples(st.text(max_size=8), st.text(max_size=8)).map(lambda pa: "\t".join(pa).encode()),
                      max_size=8).map(b"\n".join)


@FUZZ
@given(blob=st.binary(max_size=200) | task_lines, n_train=st.integers(1, 5), n_heldout=st.integers(1, 5))
def test_task_files_load_or_refuse(tmp_path, blob, n_train, n_heldout):
    with fresh(tmp_path) as d:
        task = loads_or_refuses(tasks.make, write(os.path.join(d, "task.txt"), blob), n_train=n_train, n_heldout=n_heldout)
    if task is not None:
        assert task.train and task.heldout and all(p and a.endswith(b"\n") for p, a in task.train + task.heldout)
        loads_or_refuses(tasks.encode, task.train + task.heldout, 16)


# --- TOML config files ---------------------------------------------------------------------------------------------

TABLES = [*config.COMMAND_TABLES, *config.VARIANTS, "other"]


def _toml_string(s: str) -> str:
    return '"' + "".join(f"\\u{ord(c):04x}" if c < " " or c in '"\\\x7f' else c for c in s) + '"'


def _toml_float(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)


toml_scalars = (st.integers(-(2**63), 2**63 - 1).map(str) | st.floats().map(_toml_float) | st.booleans().map(lambda b: "true" if b else "false")
                | st.text(max_size=10).map(_toml_string) | st.sampled_from(["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"]))


def toml_values(keys) -> st.SearchStrategy[str]:
    """TOML values of any type: scalars, arrays and inline tables (keys from ``keys``), and arrays nested deep."""
    nested = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3).map(lambda v: "[" + ", ".join(v) + "]")
                          | st.dictionaries(keys, inner, max_size=3).map(lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"),
                          max_leaves=6)
    return nested | st.integers(1, 3000).map(lambda k: "[" * k + "]" * k)


@st.composite
def toml_file(draw, cls) -> bytes:
    """A config file for ``cls``: well-formed TOML whose keys are mostly ``cls``'s fields, in its table, other
    tables or none, with values of any type; or random text or bytes."""
    kind = draw(st.sampled_from(["toml", "toml", "toml", "text", "bytes"]))
    if kind == "text":
        return draw(st.text(max_size=80)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    keys = st.sampled_from([f.name for f in dataclasses.fields(cls)]) | st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True)
    body = st.dictionaries(keys, toml_values(keys), max_size=4).map(lambda d: "".join(f"{k} = {v}\n" for k, v in d.items()))
    tables = draw(st.dictionaries(st.sampled_from([cls.TABLE, cls.TABLE, *TABLES]), body, max_size=3))
    return (draw(body) + "".join(f"[{t}]\n{b}" for t, b in tables.items())).encode()


@FUZZ
@given(choice=st.data(), cls=st.sampled_from(CONFIG_CLASSES), variant=st.sampled_from([None, "tiny"]))
def test_toml_configs_load_or_refuse(tmp_path, choice, cls, variant):
    blob = choice.draw(toml_file(cls))
    with fresh(tmp_path) as d:
        cfg = loads_or_refuses(config.load, cls, write(os.path.join(d, "c.toml"), blob), variant=variant)
    assert cfg is None or isinstance(cfg, cls)


@CLI
@given(choice=st.data(), command=st.sampled_from(["train-lm", "width-sweep"]))
def test_commands_refuse_malformed_toml_in_one_line(tmp_path, choice, command):
    cls, out = (TrainLMConfig, "--out") if command == "train-lm" else (WidthSweepConfig, "--run-dir")
    blob = choice.draw(toml_file(cls))
    with fresh(tmp_path) as d:
        path = write(os.path.join(d, "c.toml"), blob)
        assume(loads_or_refuses(config.load, cls, path) is None)
        refused([command, "--config", path, out, os.path.join(d, "run"), "--quiet"], d)
