"""Corpus loading and batching: determinism in (seed, step), windows inside their split, .bin memmaps, errors."""

import math
import sys

import numpy as np
import pytest

from connect.errors import UserError
from connect.lm import corpus


def _write_bin(d, train, val):
    d.mkdir(exist_ok=True)
    np.asarray(train).tofile(d / "train.bin")
    np.asarray(val).tofile(d / "val.bin")
    return d


# --- batches -----------------------------------------------------------------------------------


def test_batch_pure_in_seed_and_step():
    tokens = np.arange(5000, dtype=np.int32)
    x, y = corpus.batch(tokens, seed=3, step=7, batch_size=8, context=16)
    x2, y2 = corpus.batch(tokens, seed=3, step=7, batch_size=8, context=16)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, corpus.batch(tokens, seed=4, step=7, batch_size=8, context=16)[0])
    assert not np.array_equal(x, corpus.batch(tokens, seed=3, step=8, batch_size=8, context=16)[0])


def test_batch_is_windows_shifted_by_one():
    # Distinct ids: each row must be a contiguous slice tokens[s:s+T], and y the slice one further.
    rng = np.random.default_rng(0)
    tokens = rng.permutation(4000).astype(np.uint16)
    x, y = corpus.batch(tokens, seed=0, step=0, batch_size=16, context=32)
    pos = np.argsort(tokens)
    for xb, yb in zip(x, y):
        s = pos[xb[0]]
        np.testing.assert_array_equal(xb, tokens[s : s + 32])
        np.testing.assert_array_equal(yb, tokens[s + 1 : s + 33])


def test_batch_at_step_k_equals_kth_batch_of_sequential_run():
    tokens = np.arange(3000, dtype=np.int32)
    run = [corpus.batch(tokens, seed=1, step=k, batch_size=4, context=8)[0] for k in range(6)]
    resumed = corpus.batch(tokens, seed=1, step=4, batch_size=4, context=8)[0]  # a fresh process resuming at step 4
    np.testing.assert_array_equal(resumed, run[4])
    assert len({r.tobytes() for r in run}) == 6


def test_batch_starts_cover_exactly_the_windows_inside_the_array():
    # n = T + 4 tokens: the valid starts are 0..3; many draws must hit all four and nothing else.
    T = 10
    tokens = np.arange(T + 4, dtype=np.int32)
    starts = set()
    for step in range(40):
        x, y = corpus.batch(tokens, seed=0, step=step, batch_size=8, context=T)
        starts |= set(x[:, 0].tolist())
        assert y.max() <= T + 3
    assert starts == {0, 1, 2, 3}


def test_train_batches_never_touch_val(tmp_path):
    sentinel = 60000
    c = corpus.load(_write_bin(tmp_path / "d", np.arange(200, dtype=np.uint16) % 97, np.full(64, sentinel, np.uint16)))
    seen = np.concatenate([np.concatenate(corpus.batch(c.train, 5, s, 16, 32)) for s in range(50)])
    assert seen.max() == 96 and sentinel not in seen
    xv, _ = corpus.batch(c.val, 5, 0, 4, 32)
    assert np.all(xv == sentinel)


def test_text_split_by_document(tmp_path):
    # 20 files, f = 0.1: floor((i+1)/10) > floor(i/10) for i = 9 and 19 only; those two files are val.
    d = tmp_path / "txt"
    d.mkdir()
    for i in range(20):
        (d / f"f{i:02d}.txt").write_bytes((b"\xff" if i in (9, 19) else b"a") * 50)  # 0xff: valid as bytes
    c = corpus.load(d, val_fraction=0.1)
    assert c.name == "txt" and c.tokenizer == "bytes" and c.vocab_size == 256
    assert c.train.size == 18 * 50 and np.all(c.train == ord("a"))
    assert c.val.size == 2 * 50 and np.all(c.val == 0xFF)


def test_single_text_file_split_at_tail(tmp_path):
    f = tmp_path / "enwik8"
    data = bytes(range(256)) * 4
    f.write_bytes(data)
    c = corpus.load(f, val_fraction=0.25)
    assert c.name == "enwik8"
    np.testing.assert_array_equal(c.train, np.frombuffer(data[:768], np.uint8))
    np.testing.assert_array_equal(c.val, np.frombuffer(data[768:], np.uint8))


def test_eval_batches_consecutive_windows():
    n, T, B = 103, 10, 4  # W = floor(102/10) = 10 windows: batches of 4, 4, 2
    tokens = np.arange(n, dtype=np.int32)
    got = list(corpus.eval_batches(tokens, B, T))
    assert [x.shape[0] for x, _ in got] == [4, 4, 2]
    x = np.concatenate([b[0] for b in got])
    y = np.concatenate([b[1] for b in got])
    np.testing.assert_array_equal(x, np.arange(100).reshape(10, 10))
    np.testing.assert_array_equal(y, x + 1)
    assert len(list(corpus.eval_batches(tokens, B, T, max_batches=2))) == 2
    np.testing.assert_array_equal(next(corpus.eval_batches(tokens, B, T))[0], got[0][0])


def test_split_shorter_than_one_window_raises():
    tokens = np.arange(16, dtype=np.int32)
    corpus.batch(tokens, 0, 0, 2, 15)  # exactly context + 1 tokens is enough
    list(corpus.eval_batches(tokens, 2, 15))
    with pytest.raises(UserError, match="shorter than one window"):
        corpus.batch(tokens, 0, 0, 2, 16)
    with pytest.raises(UserError, match="shorter than one window"):
        corpus.eval_batches(tokens, 2, 16)  # raised at the call, before any iteration


# --- entropy -----------------------------------------------------------------------------------


def test_unigram_entropy_by_hand():
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 · 1/4 ln 4 = 1.5 ln 2.
    assert corpus.unigram_entropy(np.array([7, 7, 1, 3], dtype=np.uint16)) == pytest.approx(1.5 * math.log(2), rel=1e-12)
    assert corpus.unigram_entropy(np.array([5, 5, 5])) == 0.0


def test_unigram_entropy_chunked_matches_scipy(monkeypatch):
    from scipy.stats import entropy

    tokens = np.random.default_rng(1).integers(0, 50, size=1001).astype(np.uint16)
    expected = entropy(np.bincount(tokens))
    monkeypatch.setattr(corpus, "_CHUNK", 64)  # exercise the chunked counting
    assert corpus.unigram_entropy(tokens) == pytest.approx(expected, rel=1e-12)


# --- .bin --------------------------------------------------------------------------------------


def test_bin_is_memmap_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 65535, size=1000).astype(np.uint16)
    val = rng.integers(0, 65535, size=100).astype(np.uint16)
    c = corpus.load(_write_bin(tmp_path / "owt", train, val))
    assert isinstance(c.train, np.memmap) and isinstance(c.val, np.memmap)
    assert c.train.dtype == np.uint16 and c.name == "owt" and c.tokenizer == "pretokenized"
    np.testing.assert_array_equal(c.train, train)
    np.testing.assert_array_equal(c.val, val)
    top = int(max(train.max(), val.max()))
    assert c.vocab_size % 64 == 0 and top < c.vocab_size <= top + 64
    assert corpus.load(tmp_path / "owt", vocab_size=65536).vocab_size == 65536


@pytest.mark.parametrize("dtype", [np.uint32, np.int64])
def test_bin_of_wider_dtype_raises(tmp_path, dtype):
    d = _write_bin(tmp_path / "d", np.arange(1, 200, dtype=dtype), np.arange(1, 50, dtype=dtype))
    with pytest.raises(UserError, match="32- or 64-bit"):
        corpus.load(d)


def test_bin_errors(tmp_path):
    d = _write_bin(tmp_path / "odd", np.arange(100, dtype=np.uint16), np.arange(50, dtype=np.uint16))
    (d / "val.bin").write_bytes((d / "val.bin").read_bytes() + b"\x01")
    with pytest.raises(UserError, match="val.bin is 101 bytes"):
        corpus.load(d)
    d = _write_bin(tmp_path / "noval", np.arange(100, dtype=np.uint16), np.arange(50, dtype=np.uint16))
    (d / "val.bin").unlink()
    with pytest.raises(UserError, match="no val.bin"):
        corpus.load(d)
    d = _write_bin(tmp_path / "big", np.arange(100, dtype=np.uint16) + 300, np.arange(50, dtype=np.uint16))
    with pytest.raises(UserError, match="token id 399"):
        corpus.load(d, vocab_size=256)
    with pytest.raises(UserError, match="pass the directory"):
        corpus.load(d / "train.bin")


# --- text errors and tokenizers ------------------------------------------------------------------


def test_path_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        corpus.load(tmp_path / "nope")
    d = tmp_path / "empty"
    d.mkdir()
    (d / "weights.npy").write_bytes(b"\x93NUMPY\x00\x00")  # binary: NUL byte
    (d / ".hidden.txt").write_text("skipped")
    with pytest.raises(UserError, match="no text files"):
        corpus.load(d)
    with pytest.raises(UserError, match="val_fraction"):
        corpus.load(d, val_fraction=1.0)
    (tmp_path / "a.txt").write_bytes(b"ab\xff\xfe")
    with pytest.raises(UserError, match="vocab_size 200"):
        corpus.load(tmp_path / "a.txt", vocab_size=200)


def test_tokenizer_missing_package_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers → ImportError
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(UserError, match="pip install tokenizers"):
        corpus.load(tmp_path / "a.txt", tokenizer=tmp_path / "tokenizer.json")


def _tiny_tokenizer(path):
    import tokenizers
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        ["def foo(x):\n    return x + 1\n"] * 20, tokenizers.trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet)
    )
    tok.save(str(path))
    return tok


def test_tokenizer_encodes_text(tmp_path):
    tok = _tiny_tokenizer(tmp_path / "tokenizer.json")
    d = tmp_path / "code"
    d.mkdir()
    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(4)]
    for i, t in enumerate(texts):
        (d / f"{i}.py").write_text(t)
    c = corpus.load(d, tokenizer=tmp_path / "tokenizer.json", val_fraction=0.5)  # files 1 and 3 are val
    assert c.vocab_size == tok.get_vocab_size() and c.tokenizer == str(tmp_path / "tokenizer.json")
    np.testing.assert_array_equal(c.train, tok.encode(texts[0]).ids + tok.encode(texts[2]).ids)
    np.testing.assert_array_equal(c.val, tok.encode(texts[1]).ids + tok.encode(texts[3]).ids)


def test_tokenizer_rejects_non_utf8(tmp_path):
    _tiny_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        corpus.load(tmp_path / "latin1.txt", tokenizer=tmp_path / "tokenizer.json")
    as_bytes = corpus.load(tmp_path / "latin1.txt", val_fraction=0.25)  # as bytes it is fine
    np.testing.assert_array_equal(
        np.concatenate([as_bytes.train, as_bytes.val]), np.frombuffer("café".encode("latin-1"), np.uint8)
    )


# --- embedded ------------------------------------------------------------------------------------


def test_embedded_corpus_deterministic_and_sane():
    a, b = corpus.embedded(), corpus.load(None)
    assert a.name == b.name == f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}"
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    total = a.train.size + a.val.size
    assert 2e6 < total < corpus.EMBEDDED_MAX_BYTES + 2e6 and a.vocab_size == 256
    assert 0.02 < a.val.size / total < 0.1
    # Source code as bytes: measured 3.26 nats (train) and 3.32 (val) on CPython 3.11.7.
    assert 2.8 < corpus.unigram_entropy(a.train) < 3.8
    assert 2.8 < corpus.unigram_entropy(a.val) < 3.8
    # A val document's text does not occur in train (a 400-byte slice from the middle of val).
    mid = a.val.size // 2
    assert bytes(a.val[mid : mid + 400]) not in bytes(a.train)


def test_llmc_header_is_skipped(tmp_path):
    d = tmp_path / "fineweb"
    d.mkdir()
    ids = {"train": np.arange(100, 300, dtype=np.uint16), "val": np.arange(7, 47, dtype=np.uint16)}
    for split, tok in ids.items():
        header = np.zeros(256, dtype="<i4")
        header[:3] = (20240520, 1, tok.size)  # llm.c's write_datafile
        (d / f"{split}.bin").write_bytes(header.tobytes() + tok.tobytes())
    c = corpus.load(d)
    np.testing.assert_array_equal(c.train, ids["train"])
    np.testing.assert_array_equal(c.val, ids["val"])
    assert c.vocab_size == 320
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, 999)  # count does not match the size
    (d / "val.bin").write_bytes(header.tobytes() + ids["val"].tobytes())
    with pytest.raises(UserError, match="llm.c header"):
        corpus.load(d)


def test_directory_with_named_splits(tmp_path):
    # WikiText layout: train and valid files are the splits; test and README are left out.
    d = tmp_path / "wikitext-103"
    d.mkdir()
    (d / "wiki.train.raw").write_bytes(b"t" * 300)
    (d / "wiki.valid.raw").write_bytes(b"v" * 40)
    (d / "wiki.test.raw").write_bytes(b"x" * 40)
    (d / "README.txt").write_bytes(b"r" * 40)
    c = corpus.load(d, val_fraction=0.5)  # val_fraction does not apply to named splits
    assert c.name == "wikitext-103"
    np.testing.assert_array_equal(c.train, np.full(300, ord("t"), np.uint8))
    np.testing.assert_array_equal(c.val, np.full(40, ord("v"), np.uint8))
    (d / "wiki.valid.raw").unlink()  # no val file: the every-k-th rule over README, test, train (f = 0.5: file 1 to val)
    c = corpus.load(d, val_fraction=0.5)
    assert bytes(c.train) == b"r" * 40 + b"t" * 300 and bytes(c.val) == b"x" * 40
