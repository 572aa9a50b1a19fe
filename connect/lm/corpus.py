"""Token corpora for the language-model studies, all offline, and the batches drawn from them.

A :class:`Corpus` is a train and a val array of integer token ids. Three sources:

* the **embedded** corpus (:func:`embedded`, ``load(None)``): the running interpreter's own standard
  library — its ``.py`` files in sorted order, capped at the first ``EMBEDDED_MAX_BYTES`` (8 MiB) of
  whole files, then the ``pydoc_data.topics`` help texts in sorted key order — read as bytes
  (vocabulary 256). Nothing is downloaded or cached; its name carries the Python version because the
  text differs between versions;
* **text**: one file or a directory of text files, read as UTF-8 bytes (vocabulary 256), or encoded
  with a Hugging Face ``tokenizers`` ``tokenizer.json`` (an optional dependency);
* **pre-tokenised** nanoGPT ``train.bin`` / ``val.bin``: raw little-endian ``uint16`` ids with no
  header, opened as ``np.memmap`` (never read whole); files with llm.c's 1024-byte header
  (magic 20240520, version 1) are read past it (:mod:`connect.lm.tokenfiles`). ``val_fraction`` does not
  apply: the files are the split.

Train/val split of text (:func:`_split`): a directory whose file names mark the splits (``train`` and
``valid``/``val``/…, as WikiText's ``wiki.train.raw``/``wiki.valid.raw`` or TinyStories'
``-train.txt``/``-valid.txt``) uses them and leaves ``test`` and unmarked files out
(:func:`_named_roles`). Otherwise the documents (files, help topics) in order, document ``i`` goes to
val iff ``⌊(i+1)·f⌋ > ⌊i·f⌋`` for ``f = val_fraction`` — every ``1/f``-th document, spread through the
corpus, and no val text is part of train. With too few documents for that to give both splits
(``n < 1/f``, e.g. a single file such as enwik8), the concatenation is cut instead and its last
``round(f·n_tokens)`` tokens are val.

Batches (:func:`batch`) are a pure function of ``(seed, step)``, so a resumed run sees the batches an
uninterrupted one would; every window lies inside the array it is drawn from, so train batches never
touch val.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from connect.errors import UserError
from connect.lm import tokenfiles

#: The embedded corpus keeps the standard library's ``.py`` files, in sorted order, up to this many bytes.
EMBEDDED_MAX_BYTES = 8 * 2**20
#: Directories of the standard library left out of the embedded corpus (tests, IDLE, installed packages, build files).
_STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib-dynload"})
#: Tokens per chunk when scanning large arrays (bounds the memory of ``np.bincount``'s int64 copy).
_CHUNK = 2**24
#: Characters per ``tokenizers`` encoding call; texts are cut at line ends near this length.
_ENCODE_CHARS = 2**16
#: Words in a file's path that name its split (WikiText's ``wiki.valid.raw``, TinyStories' ``-train.txt``).
_TRAIN_WORDS = frozenset({"train", "training"})
_VAL_WORDS = frozenset({"val", "valid", "validation", "dev", "heldout"})


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Train and val token ids of one data set, with the vocabulary size a model needs for them."""

    name: str  # "stdlib-py3.11" for the embedded corpus; else the file's stem or the directory's name
    train: np.ndarray  # (N,) integer ids; np.memmap for .bin files
    val: np.ndarray  # (M,)
    vocab_size: int  # 256 for bytes; the tokenizer's vocabulary; max id + 1 rounded up to 64 for .bin (or as given)
    tokenizer: str  # "bytes", the tokenizer.json path, or "pretokenized"


def embedded(val_fraction: float = 0.05) -> Corpus:
    """The standard library's source and help texts as bytes (see the module docstring); deterministic per Python version."""
    return load(None, val_fraction=val_fraction)


def load(
    source: str | os.PathLike | None,
    *,
    tokenizer: str | os.PathLike | None = None,
    val_fraction: float = 0.05,
    vocab_size: int | None = None,
) -> Corpus:
    """The corpus at ``source``: ``None`` (embedded), a text file, a directory of text files, or a directory
    with nanoGPT ``train.bin``/``val.bin``. ``tokenizer`` (a ``tokenizer.json``) encodes text instead of bytes;
    ``vocab_size`` overrides the vocabulary size and must exceed every id."""
    _check_fraction(val_fraction)
    if source is None:
        name, docs, roles = _embedded_name(), _embedded_documents(), None
    else:
        path = Path(source).expanduser()
        try:
            if _is_bin_dir(path, tokenizer):
                return _load_bin(path, vocab_size)
            name, docs, roles = _user_documents(path, tokenizer)
        except OSError as e:
            raise UserError(f"corpus file {e.filename or path} is not readable ({e.strerror or type(e).__name__}): "
                            "check the path and its permissions") from None
    if tokenizer is None:
        arrays, natural_vocab, kind = [np.frombuffer(d, dtype=np.uint8) for d in docs.values()], 256, "bytes"
    else:
        tok = _tokenizer(tokenizer)
        natural_vocab, kind = tok.get_vocab_size(), str(tokenizer)
        arrays = _encode(tok, docs, str(source or name))
    to_val = [roles[label] == "val" for label in docs] if roles is not None else _every_kth(len(docs), val_fraction)
    train, val = _split(arrays, to_val, val_fraction)
    return Corpus(name, train, val, _checked_vocab(name, train, val, natural_vocab, vocab_size), kind)


def _is_bin_dir(path: Path, tokenizer) -> bool:
    """Whether ``path`` is a directory of nanoGPT ``train.bin``/``val.bin`` (a UserError if it does not exist, or
    if it is one and a tokenizer is given)."""
    if not path.exists():
        raise UserError(
            f"corpus {path} not found: pass a text file, a directory of text files, or a directory with train.bin and val.bin"
        )
    if path.is_dir() and ((path / "train.bin").exists() or (path / "val.bin").exists()):
        if tokenizer is not None:
            raise UserError(f"corpus {path} holds pre-tokenised train.bin/val.bin: drop the tokenizer (pass vocab_size if needed)")
        return True
    return False


def _user_documents(path: Path, tokenizer) -> tuple[str, dict[str, bytes], dict[str, str] | None]:
    """The name, the documents and the split roles named by the file names (or ``None``) of a text corpus."""
    if path.is_file() and path.suffix == ".bin":
        raise UserError(f"corpus {path} is a .bin file: pass the directory that holds train.bin and val.bin")
    if not (path.is_file() or path.is_dir()):
        raise UserError(f"corpus {path} is neither a regular file nor a directory: pass a text file or a directory of them")
    name = path.resolve().name if path.is_dir() else path.stem
    docs = _text_documents(path, exclude=Path(tokenizer) if tokenizer is not None else None)
    roles = _named_roles(list(docs)) if path.is_dir() else None
    if roles is not None:
        docs = {label: data for label, data in docs.items() if roles[label]}
    return name, docs, roles


def batch(tokens: np.ndarray, seed: int, step: int, batch_size: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Random windows ``x_BxT = tokens[s_b : s_b + T]``, ``y_BxT = tokens[s_b + 1 : s_b + T + 1]`` (int32).

    The starts ``s_b`` are uniform on ``{0, …, N − T − 1}`` (so each window of ``T + 1`` tokens lies inside
    ``tokens``), drawn from ``jax.random.fold_in(jax.random.key(seed), step)`` as 64 random bits modulo
    ``N − T`` (bias below ``N / 2⁶⁴``; works past 2³¹ tokens): the batch of step ``k`` depends on
    ``(seed, k)`` only, so resuming at ``k`` gives what an uninterrupted run gives.
    """
    n = check_windows(tokens, batch_size, context)
    bits_Bx2 = np.asarray(_window_bits(seed, step, batch_size)).astype(np.uint64)
    starts_B = ((bits_Bx2[:, 0] << np.uint64(32)) | bits_Bx2[:, 1]) % np.uint64(n - context)
    idx_BxT1 = starts_B.astype(np.int64)[:, None] + np.arange(context + 1, dtype=np.int64)[None, :]
    w_BxT1 = np.asarray(tokens[idx_BxT1], dtype=np.int32)
    return w_BxT1[:, :-1], w_BxT1[:, 1:]


def eval_batches(
    tokens: np.ndarray, batch_size: int, context: int, max_batches: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive windows from the start, no randomness: window ``j`` is ``x = tokens[jT : jT + T]``,
    ``y = tokens[jT + 1 : jT + T + 1]``, so the inputs do not overlap and every token after the first
    is a target once, for the ``W = ⌊(N − 1)/T⌋`` whole windows. Batches of ``batch_size`` windows (int32);
    the last one holds the remaining ``W mod batch_size`` windows if any — weight batch means by
    ``x.shape[0]``. At most ``max_batches`` batches."""
    n = check_windows(tokens, batch_size, context)  # raises now, not at the first next()
    n_windows = (n - 1) // context
    n_batches = -(-n_windows // batch_size)
    return _windows(tokens, batch_size, context, n_windows, n_batches if max_batches is None else min(n_batches, max_batches))


def _windows(
    tokens: np.ndarray, batch_size: int, context: int, n_windows: int, n_batches: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(n_batches):
        rows = min(batch_size, n_windows - i * batch_size)
        lo = i * batch_size * context
        flat = np.asarray(tokens[lo : lo + rows * context + 1], dtype=np.int32)
        yield flat[:-1].reshape(rows, context), flat[1:].reshape(rows, context)


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats of the empirical token distribution, ``H = −Σ_v p_v ln p_v`` with ``p_v = count_v / N``:
    the loss of the best model that ignores context, the baseline a language model must beat."""
    tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
    if tokens.size == 0:
        raise ValueError("unigram_entropy of an empty array")
    counts = np.zeros(0, dtype=np.int64)
    for lo in range(0, tokens.size, _CHUNK):
        c = np.bincount(np.asarray(tokens[lo : lo + _CHUNK]).astype(np.int64))
        counts = np.pad(counts, (0, max(0, c.size - counts.size)))
        counts[: c.size] += c
    p = counts[counts > 0] / tokens.size
    return float(-np.sum(p * np.log(p)))


@functools.partial(jax.jit, static_argnums=2)
def _window_bits(seed, step, batch_size: int) -> jax.Array:
    """Two random 32-bit words per batch row from ``fold_in(key(seed), step)``."""
    return jax.random.bits(jax.random.fold_in(jax.random.key(seed), step), (batch_size, 2), jnp.uint32)


def check_windows(tokens: np.ndarray, batch_size: int, context: int) -> int:
    """The length of ``tokens`` after checking it holds one window of ``context + 1`` tokens."""
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if batch_size < 1 or context < 1:
        raise ValueError(f"batch_size and context must be positive, got {batch_size} and {context}")
    n = int(tokens.shape[0])
    if n < context + 1:
        raise UserError(
            f"a split of {n} tokens is shorter than one window of context + 1 = {context + 1} tokens: "
            "use a shorter context or more data (a larger val_fraction for val)"
        )
    return n


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")


def _every_kth(n: int, val_fraction: float) -> list[bool]:
    """Document ``i`` of ``n`` goes to val iff ``⌊(i+1)·f⌋ > ⌊i·f⌋``: every ``1/f``-th document."""
    return [math.floor((i + 1) * val_fraction) > math.floor(i * val_fraction) for i in range(n)]


def _split(docs: list[np.ndarray], to_val: list[bool], val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train and val: the documents flagged ``to_val`` and the others, or, unless both are non-empty, the
    concatenation cut before its last ``round(f·n)`` tokens."""
    if 0 < sum(to_val) < len(docs):
        train = np.concatenate([d for d, v in zip(docs, to_val) if not v])
        val = np.concatenate([d for d, v in zip(docs, to_val) if v])
        return train, val
    allt = np.concatenate(docs)
    cut = allt.size - int(round(val_fraction * allt.size))
    return allt[:cut], allt[cut:]


def _named_roles(labels: list[str]) -> dict[str, str] | None:
    """``"train"``, ``"val"`` or ``""`` (unused) per file from the words of its relative path, if the names
    mark at least one train and one val file; else ``None``.

    Words are the path's lower-case alphanumeric runs: ``train``/``training`` mark train,
    ``val``/``valid``/``validation``/``dev``/``heldout`` mark val; a file marked for neither, for both,
    or with ``test`` (``wiki.test.raw``, ``README``) is left out.
    """
    roles = {}
    for label in labels:
        words = set(re.split(r"[^a-z0-9]+", label.lower()))
        is_train, is_val = bool(words & _TRAIN_WORDS), bool(words & _VAL_WORDS)
        roles[label] = "train" if is_train and not is_val else "val" if is_val and not is_train else ""
        roles[label] = "" if "test" in words else roles[label]
    values = set(roles.values())
    return roles if {"train", "val"} <= values else None


def _embedded_name() -> str:
    return f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}"


def _embedded_documents() -> dict[str, bytes]:
    """The standard library's ``.py`` files (sorted, first ``EMBEDDED_MAX_BYTES``) then the pydoc topics, by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_EXCLUDED_DIRS and not d.startswith(("config-", "."))]
        rel = Path(dirpath).relative_to(root)
        files += [(rel / f).as_posix() for f in filenames if f.endswith(".py") and not f.startswith("_sysconfigdata")]
    docs, total = {}, 0
    for rel in sorted(files):
        data = (root / rel).read_bytes()
        if total + len(data) > EMBEDDED_MAX_BYTES:
            break
        docs[rel] = data
        total += len(data)
    from pydoc_data import topics

    docs |= {f"pydoc_data.topics[{k!r}]": topics.topics[k].encode("utf-8") for k in sorted(topics.topics)}
    return {label: data for label, data in docs.items() if data}


def _text_documents(path: Path, exclude: Path | None) -> dict[str, bytes]:
    """The bytes of a text file, or of every text file under a directory by relative path, in sorted order.

    In a directory, hidden files and directories are skipped, and so is any file with a NUL byte in its
    first 8000 bytes (git's test for binary files) and the tokenizer file itself.
    """
    if path.is_file():
        data = path.read_bytes()
        if not data:
            raise UserError(f"corpus file {path} is empty: pass a file with text in it")
        return {path.name: data}
    skip = exclude.resolve() if exclude is not None else None
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [(Path(dirpath) / f).relative_to(path).as_posix() for f in filenames if not f.startswith(".")]
    docs = {}
    for rel in sorted(files):
        file = path / rel
        if not file.is_file() or file.resolve() == skip:
            continue
        data = file.read_bytes()
        if data and b"\0" not in data[:8000]:
            docs[rel] = data
    if not docs:
        raise UserError(
            f"corpus directory {path} has no text files (nor train.bin/val.bin): add UTF-8 text files or nanoGPT .bin files"
        )
    return docs


def _tokenizer(path: str | os.PathLike):
    """A Hugging Face ``tokenizers.Tokenizer`` read from ``tokenizer.json``."""
    try:
        import tokenizers
    except ImportError:
        raise UserError(
            "a tokenizer.json needs the optional package `tokenizers`: pip install tokenizers (or drop the tokenizer to read bytes)"
        ) from None
    if not os.path.isfile(path):
        raise UserError(f"tokenizer {path} not found: pass the tokenizer.json file of a Hugging Face tokenizer")
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the Rust side raises Exceptions with multi-line messages, or panics (a BaseException)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"tokenizer {path} is not a readable tokenizer.json ({first}): pass the file save_pretrained writes"
        ) from None


def _encode(tok, docs: dict[str, bytes], where: str) -> list[np.ndarray]:
    """Token ids of each UTF-8 document, all encoded in one parallel ``encode_batch`` call on chunks of
    about ``_ENCODE_CHARS`` cut after line ends (tokenisation can differ from one whole-text call only
    where a chunk ends)."""
    chunks, owner = [], []
    for i, (label, data) in enumerate(docs.items()):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"{where}: {label} is not UTF-8 (byte {e.start}): re-encode it as UTF-8, or drop the tokenizer to read raw bytes"
            ) from None
        lo = 0
        while lo < len(text):
            hi = text.find("\n", lo + _ENCODE_CHARS)
            hi = len(text) if hi < 0 else hi + 1
            chunks.append(text[lo:hi])
            owner.append(i)
            lo = hi
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.int32
    ids = [[] for _ in docs]
    for i, enc in zip(owner, tok.encode_batch(chunks, add_special_tokens=False)):
        ids[i].append(np.asarray(enc.ids, dtype=dtype))
    return [np.concatenate(parts) if parts else np.zeros(0, dtype=dtype) for parts in ids]


def _checked_vocab(name: str, train: np.ndarray, val: np.ndarray, natural: int, given: int | None) -> int:
    """``given`` if every id is below it, else a UserError; ``natural`` when nothing is given."""
    if given is None:
        return natural
    top = max(_max_id(train), _max_id(val))
    if top >= given:
        raise UserError(
            f"corpus {name} holds token id {top} ≥ vocab_size {given}: check the data's dtype, or pass a vocab_size above {top} (or none)"
        )
    return int(given)


def _max_id(tokens: np.ndarray) -> int:
    return max((int(tokens[lo : lo + _CHUNK].max()) for lo in range(0, tokens.size, _CHUNK)), default=-1)


def _load_bin(path: Path, vocab_size: int | None) -> Corpus:
    """nanoGPT ``train.bin``/``val.bin`` as ``uint16`` memmaps; the vocabulary is ``vocab_size`` or the
    largest id + 1 rounded up to a multiple of 64 (as nanoGPT pads GPT-2's 50257 to 50304)."""
    train, val = (tokenfiles.open_split(path, split) for split in ("train", "val"))
    if vocab_size is None:
        vocab = -(-(max(_max_id(train), _max_id(val)) + 1) // 64) * 64
    else:
        vocab = _checked_vocab(str(path), train, val, 0, vocab_size)
    return Corpus(path.resolve().name, train, val, vocab, "pretokenized")
