"""Command-line options from config dataclasses: one flag per field plus ``--set``, and the one precedence
rule defaults < ``--config`` TOML table < flags < ``--set`` (:func:`connect.config.load` does the merging,
typing and checking)."""

from __future__ import annotations

import argparse
import dataclasses

from connect.errors import UserError


def add_config_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the config dataclass ``cls`` (underscores become dashes), its help text the field's."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_ = f"{f.metadata['help']}" + ("" if default is None else f" (default: {default})")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(default, dict):
            p.add_argument(flag, nargs="+", metavar="NAME=VALUE", default=None, help=help_)
        elif isinstance(default, list):
            item = f.metadata.get("item") or (type(default[0]) if default and not isinstance(default[0], bool) else str)
            p.add_argument(flag, nargs="+", type=item, default=None, metavar=f.name.rstrip("s").upper(), help=help_)
        else:
            p.add_argument(flag, type=f.metadata.get("type") or type(default), default=None, help=help_)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override options after the flags, values in TOML syntax, dotted keys for tables (e.g. lr.muon=0.02)")


def parse_named(items: list[str], key: str) -> dict:
    """``["adamw=0.01", "muon=2e-3,4e-3"]`` → ``{"adamw": "0.01", "muon": ["2e-3", "4e-3"]}`` (a comma makes a
    list; values typed by :func:`connect.config.from_dict`)."""
    flag = "--" + key.replace("_", "-")
    out = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not (sep and name and val):
            raise UserError(f"{flag} {item!r} is not NAME=VALUE[,VALUE…], e.g. {flag} adamw=0.01 muon=0.02")
        out[name] = val.split(",") if "," in val else val
    return out


def config_from_args(args: argparse.Namespace, cls: type, *, variant: str | None = None):
    """The ``cls`` config of a command by :func:`connect.config.load`: defaults < ``--config`` file (its
    ``[cls.TABLE]``, with ``[variant]`` over it) < flags < ``--set KEY=VALUE`` (a dict flag adds to the file's
    dict), validated."""
    from connect import config

    defaults = cls()
    flags = {}
    for f in dataclasses.fields(cls):
        val = getattr(args, f.name, None)
        if val is not None:
            flags[f.name] = parse_named(val, f.name) if isinstance(getattr(defaults, f.name), dict) else val
    overrides = {**flags, **parse_set(getattr(args, "set", None) or [])}
    return config.load(cls, getattr(args, "config", None), variant=variant, overrides=overrides)


def parse_set(items: list[str]) -> dict:
    """``["seeds=2", "train.steps=50"]`` → ``{"seeds": 2, "train.steps": 50}``, values read as TOML (bare words as strings)."""
    from connect.config import tomllib  # tomli on Python 3.10

    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not (sep and key and val):
            raise UserError(f"--set {item!r} is not KEY=VALUE, e.g. --set seeds=2 train.steps=50")
        try:
            out[key] = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = val
    return out
