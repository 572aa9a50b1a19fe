"""Pre-tokenised corpora on disk: nanoGPT's ``train.bin``/``val.bin`` and llm.c's token files.

* nanoGPT (``prepare.py``): raw little-endian ``uint16`` ids, no header;
* llm.c (``write_datafile``): a 1024-byte header of 256 little-endian ``int32`` — magic 20240520, version 1
  (``uint16`` ids), the token count — then the ids.

Both are opened as read-only ``np.memmap`` (never read whole). The files carry no dtype, so the checks are
heuristics (see :func:`open_split`); every failure is one :class:`UserError` line naming the file and the fix.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from connect.errors import UserError

#: llm.c's token files start with 256 int32: this magic number, a version, the token count.
LLMC_MAGIC, LLMC_HEADER_BYTES = 20240520, 1024
#: Leading ids inspected by the wider-dtype heuristic of :func:`open_split`.
_HEAD = 4096


def open_split(path: Path, split: str) -> np.memmap:
    """``{split}.bin`` under ``path`` as a read-only ``uint16`` memmap, refusing files of another dtype.

    The size after any header must be a positive multiple of 2 bytes; ids written as little-endian
    ``uint32``/``int64`` and read as ``uint16`` leave every odd position 0 (the high halves), so if among the
    first 4096 values (at least 32) one parity is all 0 and the other is not, the file is refused; a
    ``vocab_size`` given to :func:`connect.lm.corpus.load` refuses larger ids. ``float`` or big-endian files
    whose values stay below the vocabulary can slip through. A file that starts with llm.c's magic number
    must carry a whole llm.c header (version 1, a count matching the size) and is read past it.
    """
    file = path / f"{split}.bin"
    if not file.is_file():
        raise UserError(
            f"corpus {path} has no {split}.bin: write both train.bin and val.bin (uint16 token ids, nanoGPT's prepare.py)"
        )
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            prefix = f.read(12)
        offset = _header_bytes(file, size, prefix)
        if size == offset or (size - offset) % 2:
            raise UserError(
                f"{file} is {size - offset} bytes, not a positive whole number of uint16 ids: write the ids with np.uint16(ids).tofile"
            )
        tokens = np.memmap(file, dtype=np.uint16, mode="r", offset=offset)
        head = np.asarray(tokens[:_HEAD])
    except OSError as e:
        raise UserError(f"{file} is not readable ({e.strerror or type(e).__name__}): check the file and its permissions") from None
    if head.size >= 32 and head[0::2].any() != head[1::2].any():
        raise UserError(f"{file} looks like 32- or 64-bit ids (every other uint16 is 0): convert them with np.uint16(ids).tofile")
    return tokens


def _header_bytes(file: Path, size: int, prefix: bytes) -> int:
    """The bytes to skip: llm.c's header if ``prefix`` starts with its magic number (checked), else none."""
    if len(prefix) < 4 or struct.unpack("<i", prefix[:4])[0] != LLMC_MAGIC:
        return 0
    version, count = struct.unpack("<ii", prefix[4:12]) if len(prefix) == 12 else (None, None)
    if size < LLMC_HEADER_BYTES or version != 1 or LLMC_HEADER_BYTES + 2 * count != size:
        raise UserError(
            f"{file} has an llm.c header with version {version} and {count} tokens for {size} bytes: "
            "only version 1 (uint16 ids) with a matching count is read; rewrite it with llm.c's write_datafile"
        )
    return LLMC_HEADER_BYTES
