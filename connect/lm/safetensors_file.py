"""One safetensors file from an untrusted source, read as numpy arrays after its header is checked.

The format (huggingface/safetensors): 8 bytes little-endian ``N``, then ``N`` bytes of UTF-8 JSON, then the
data buffer of ``B = size − 8 − N`` bytes::

    {"NAME": {"dtype": "F32", "shape": [d₀, …], "data_offsets": [begin, end]}, …, "__metadata__": {str: str}}

Before anything large is read, :func:`read_header` checks what a truncated, mistyped or hostile file could get
wrong: ``N ≤ min(MAX_HEADER_BYTES, size − 8)``; the header a JSON object; per tensor a dtype of
:data:`DTYPES`, a shape of non-negative ints, ``0 ≤ begin ≤ end ≤ B`` and ``end − begin = itemsize·∏dᵢ``;
the tensors tiling the buffer without gaps or overlaps and the metadata strings (as the library requires).
Every failure is one :class:`UserError` line naming the file; only then is the file read, by
``safetensors.numpy`` or, when it holds bfloat16 (which numpy lacks), decoded here.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import safetensors
import safetensors.numpy

from connect.errors import UserError

#: The safetensors library's own limit on the JSON header (bytes).
MAX_HEADER_BYTES = 100_000_000
#: safetensors dtype -> little-endian numpy dtype (BF16 read as its 16 raw bits, then widened exactly).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_FIX = "re-save the model with `save_pretrained`"


def read(path: str) -> dict[str, np.ndarray]:
    """The tensors of the safetensors file ``path`` (bfloat16 upcast to float32 exactly); a UserError if malformed."""
    header = read_header(path)
    try:
        if not any(spec["dtype"] == "BF16" for name, spec in header.items() if name != "__metadata__"):
            return safetensors.numpy.load_file(path)
        with open(path, "rb") as f:
            return _decode(header, f.read())
    except (OSError, ValueError, TypeError, safetensors.SafetensorError) as e:
        raise _bad(path, repr(e)) from None


def read_header(path: str) -> dict:
    """The checked JSON header of ``path`` (see the module docstring), read without reading the data."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _bad(path, f"{size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n > min(MAX_HEADER_BYTES, size - 8):
                limit = f"only {size - 8} bytes follow" if n > size - 8 else f"the limit is {MAX_HEADER_BYTES}"
                raise _bad(path, f"declares a {n}-byte header but {limit}")
            raw = f.read(n)
    except OSError as e:
        raise _bad(path, f"unreadable: {e.strerror or type(e).__name__}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(path, "its header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, f"its header is a JSON {type(header).__name__}, not an object")
    _check_entries(path, header, size - 8 - n)
    return header


def _check_entries(path: str, header: dict, buffer: int) -> None:
    """Every tensor entry well typed and inside the ``buffer`` bytes, the entries tiling it; metadata strings."""
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(path, "its __metadata__ is not an object of strings")
    spans = []
    for name, spec in header.items():
        if name != "__metadata__":
            spans.append((*_span(path, name, spec, buffer), name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise _bad(path, f"tensor {name[:80]!r} starts at byte {begin} of the data, not at {end} (a gap or an overlap)")
        end = stop
    if end != buffer:
        raise _bad(path, f"its tensors cover {end} of the {buffer} data bytes")


def _span(path: str, name: str, spec, buffer: int) -> tuple[int, int]:
    """``(begin, end)`` of one tensor entry after checking its dtype, shape and offsets."""
    what = f"tensor {name[:80]!r}"
    if not isinstance(spec, dict):
        raise _bad(path, f"{what} is described by a JSON {type(spec).__name__}, not an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _bad(path, f"{what} has dtype {str(dtype)[:20]!r}, not one of {' '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _bad(path, f"{what} has shape {str(shape)[:40]}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= buffer):
        raise _bad(path, f"{what} has data_offsets {str(offsets)[:40]}, not [begin, end] within the {buffer} data bytes")
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise _bad(path, f"{what} spans {offsets[1] - offsets[0]} bytes but {dtype} of shape {tuple(shape)} takes {nbytes}")
    return offsets[0], offsets[1]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _decode(header: dict, data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a checked header from the file's bytes; BF16 is the top half of an IEEE float32, so
    shifting its bits up 16 is exact."""
    (n,) = struct.unpack("<Q", data[:8])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        raw = np.frombuffer(body[start:end], dtype=DTYPES[spec["dtype"]]).reshape(spec["shape"])
        out[name] = (raw.astype(np.uint32) << 16).view(np.float32) if spec["dtype"] == "BF16" else raw
    return out


def _bad(path: str, why: str) -> UserError:
    return UserError(f"{path} is not a readable safetensors file ({why}): {_FIX}")
