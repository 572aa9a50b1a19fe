"""The one configuration loader: a typed dataclass per command, filled from defaults < a TOML table < the
command line.

Each command's config is a dataclass whose fields are made by :func:`option` (default and help text; the
help becomes the ``--help`` of the CLI flag of the same name, underscores become dashes) and whose
``TABLE`` names its TOML table and ``EXAMPLE`` an example file: ``WidthSweepConfig``
(:mod:`connect.studies.width_sweep.config`), ``TrainLMConfig`` (:mod:`connect.lm.config`), the GPT-2
study's and the finetuning study's (:mod:`connect.studies`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from connect.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def option(default, help: str, **kw):
    """A dataclass field with ``default`` (lists and dicts copied per instance) and its ``help`` text."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def from_dict(values: dict[str, Any], source: str = "config", base=None, cls: type | None = None):
    """``base`` (default: the defaults of ``cls``; ``cls`` defaults to ``type(base)``) overridden by
    ``values``; unknown keys and wrong types are user errors naming ``source``."""
    if cls is None and base is None:
        raise TypeError("from_dict needs base or cls")
    cls = cls or type(base)
    cfg = dataclasses.replace(base) if base is not None else cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, val in values.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise UserError(f"{source}: unknown option {key!r}; valid options: {', '.join(fields)}")
        setattr(cfg, key, _coerce(cls, key, val, source))
    return cfg


def read_toml(path: str, example: str) -> dict:
    """The parsed TOML file ``path``; a missing file (the hint names ``example``) or invalid TOML is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found: pass a TOML file such as {example}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid TOML ({e})") from None
    except RecursionError:
        raise UserError(f"config file {path} is not valid TOML (arrays or tables nested too deeply)") from None


#: The TOML table of every command's config; a file may hold several of them, any other table is refused.
COMMAND_TABLES = ("width_sweep", "barrier", "train_lm", "paths", "gpt2_study", "finetune")
#: Variant tables, applied over a command's own table when asked for (the recipes' tiny versions).
VARIANTS = ("tiny",)


def load(cls: type, path: str | None = None, *, variant: str | None = None, overrides: dict[str, Any] | None = None):
    """The one way every command builds its config: the defaults of dataclass ``cls`` < the ``[cls.TABLE]`` table of
    TOML file ``path`` (updated by its ``[variant]`` table when given; a file without ``[cls.TABLE]`` may hold the
    options at its top level) < ``overrides`` (flags and ``--set KEY=VALUE``; dotted keys reach into tables, e.g.
    ``train.steps``; a table-valued override updates the file's table key by key). Unknown tables, unknown keys
    and values of the wrong type are user errors naming where they came from. Returns ``cls(...).validate()``."""
    base = from_dict(toml_values(path, cls, variant), path, cls=cls) if path else cls()
    over: dict = {}
    for key, val in (overrides or {}).items():
        over = merge(over, _nested(key.replace("-", "_").split("."), val))
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(getattr(base, key, None), dict):
            over[key] = merge(getattr(base, key), val)
    return from_dict(over, "command line", base=base).validate()


def toml_values(path: str, cls: type, variant: str | None = None) -> dict:
    """The options for ``cls`` in TOML file ``path`` (see :func:`load`), before typing."""
    doc = read_toml(path, cls.EXAMPLE or f"one with a [{cls.TABLE}] table")
    dict_fields = {f.name for f in dataclasses.fields(cls) if isinstance(getattr(cls(), f.name), dict)}
    top_level = cls.TABLE not in doc
    for key, val in doc.items():
        known = key in COMMAND_TABLES or key in VARIANTS or key == variant or (top_level and (key in dict_fields or not isinstance(val, dict)))
        if not known:
            where = f"table [{key}]" if isinstance(val, dict) else f"key {key!r} outside a table"
            raise UserError(f"config file {path} has an unknown {where}: put {cls.__name__}'s options in [{cls.TABLE}]"
                            f"{' or [' + '], ['.join(VARIANTS) + ']' if VARIANTS else ''}")
    values = ({k: v for k, v in doc.items() if k not in COMMAND_TABLES and k not in VARIANTS and k != variant} if top_level
              else dict(doc[cls.TABLE]))
    if variant:
        if not isinstance(doc.get(variant), dict):
            raise UserError(f"config file {path} has no [{variant}] table: drop the variant or add the table")
        values = merge(values, doc[variant])
    return values


def merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, tables merged key by key (neither is modified)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nested(keys: list[str], val) -> dict:
    return {keys[0]: val} if len(keys) == 1 else {keys[0]: _nested(keys[1:], val)}


def _coerce(cls: type, key: str, val: Any, source: str):
    default = getattr(cls(), key)
    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    if default is None:  # an optional value: None, or the field's ``type``
        default = None if val is None else field.metadata["type"]()
        if default is None:
            return None
    try:
        if isinstance(default, bool):
            if isinstance(val, str):
                if val.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(val)
                return val.lower() in ("true", "1", "yes")
            return bool(val)
        if isinstance(default, list):
            items = list(val) if isinstance(val, (list, tuple)) else [val]
            item = field.metadata.get("item", type(default[0]) if default else None)
            if item is int:  # non-integers are kept for validate() to name
                return [_as_int(x) for x in items]
            if item is str and not all(isinstance(x, str) for x in items):  # names: a nested list or table is no name
                raise ValueError(val)
            return [float(x) for x in items] if item is float else items
        if isinstance(default, dict):
            if not isinstance(val, dict):
                raise ValueError(val)
            value_type = field.metadata.get("value_type", float)
            if value_type == "table":  # a nested table typed by whoever reads it (e.g. TrainLMConfig fields)
                return {str(k): v for k, v in val.items()}
            return {str(k): value_type(v) if value_type else _number_or_bool(v) for k, v in val.items()}
        if isinstance(default, int):
            if isinstance(val, bool) or (isinstance(val, float) and not val.is_integer()):
                raise ValueError(val)
            return int(val)
        if isinstance(default, float):
            return float(val)
        return str(val)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{source}: option {key} = {val!r} is not a valid {type(default).__name__}") from None


def _as_int(x: Any):
    """``x`` as an int when it is an integral number or numeric string, else unchanged."""
    try:
        return x if isinstance(x, bool) else int(x) if float(x) == int(float(x)) else x
    except (TypeError, ValueError, OverflowError):
        return x


def _number_or_bool(val: Any):
    """A TOML/CLI value as int, float or bool (strings such as ``"2"``, ``"1e-5"``, ``"true"`` parsed)."""
    if isinstance(val, list):
        return [_number_or_bool(v) for v in val]
    if not isinstance(val, str):
        return val
    if val.lower() in ("true", "false"):
        return val.lower() == "true"
    try:
        return int(val)
    except ValueError:
        return float(val)
