"""Typed reading of a Hugging Face ``config.json`` from an untrusted source.

Every field a family reads goes through :class:`Fields`: a wrong type, a value out of range or a
feature connect does not implement is one :class:`UserError` line naming the file, the field, the
value found (cut to 60 characters) and the fix.
"""

from __future__ import annotations

import sys

from connect.errors import UserError

#: Marks a field without a default: absent means the file is refused.
REQUIRED = object()
_FIX = "fix the field or re-save the model with `save_pretrained`"


def shown(value) -> str:
    """``repr(value)`` cut to 60 characters, for messages about untrusted values."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


class Fields:
    """The fields of one ``config.json`` dict ``hf`` read from ``source``, each checked as it is read."""

    def __init__(self, hf: dict, source: str, what: str):
        if not isinstance(hf, dict):
            raise UserError(f"{source} holds a JSON {json_type(hf)}, not an object: pass the config.json `save_pretrained` writes")
        self.hf, self.source, self.what = hf, source, what

    def _value(self, key: str, default):
        if key in self.hf and self.hf[key] is not None:
            return self.hf[key]
        if default is REQUIRED:
            raise UserError(f"{self.source} lacks {key}: pass a {self.what} config.json written by `save_pretrained`")
        return default

    def refuse(self, key: str, want: str) -> UserError:
        return UserError(f"{self.source} field {key} = {shown(self.hf.get(key))} is not {want}: {_FIX}")

    def int(self, key: str, default=REQUIRED, *, minimum: int = 1) -> int:
        """An integer ``≥ minimum`` (booleans refused)."""
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.refuse(key, "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}")
        return value

    def bool(self, key: str, default=REQUIRED) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            raise self.refuse(key, "a boolean (true or false)")
        return value

    def float(self, key: str, default=REQUIRED, *, positive: bool = True) -> float:
        """A finite number (``> 0`` when ``positive``); NaN and infinities refused."""
        value = self._value(key, default)
        want = "a finite positive number" if positive else "a finite number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -sys.float_info.max <= value <= sys.float_info.max:
            raise self.refuse(key, want)
        if positive and not value > 0:
            raise self.refuse(key, want)
        return float(value)

    def str(self, key: str, default=REQUIRED) -> str:
        value = self._value(key, default)
        if not isinstance(value, str):
            raise self.refuse(key, "a string")
        return value

    def dict(self, key: str) -> dict | None:
        """A JSON object, or None when the field is absent or null."""
        value = self.hf.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.refuse(key, "a JSON object")
        return value

    def unsupported(self, key: str, value, supported: str) -> UserError:
        """The error for a field whose value selects something connect does not implement."""
        return UserError(f"{self.source} sets {key}={shown(value)}, which connect's {self.what} does not implement: "
                         f"use a checkpoint with {supported}")
