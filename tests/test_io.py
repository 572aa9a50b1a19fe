"""connect.io: atomic writes and the settings file of a resumable run directory."""

import json
import os

import pytest

from connect.errors import UserError
from connect.io import claim_directory, write_json_atomic


def test_write_json_atomic_leaves_no_temporary_file(tmp_path):
    write_json_atomic(str(tmp_path / "a" / "r.json"), {"x": [1, 2]})
    assert json.load(open(tmp_path / "a" / "r.json")) == {"x": [1, 2]}
    assert os.listdir(tmp_path / "a") == ["r.json"]


def test_claim_directory_writes_then_checks_every_setting(tmp_path):
    out = str(tmp_path / "run")
    claim_directory(out, {"lr": 0.1, "steps": 5}, extra={"resolved": {"n": 3}})
    assert json.load(open(os.path.join(out, "config.json"))) == {"lr": 0.1, "steps": 5, "resolved": {"n": 3}}
    claim_directory(out, {"lr": 0.1, "steps": 5})  # same settings: resumes
    with pytest.raises(UserError, match="started with steps = 5, not 6"):
        claim_directory(out, {"lr": 0.1, "steps": 6})
    claim_directory(out, {"lr": 0.1, "steps": 5, "grid": [1]}, ignore=("grid",), rewrite=True)
    claim_directory(out, {"lr": 0.1, "steps": 5, "grid": [1, 2]}, ignore=("grid",), rewrite=True)  # a grid may grow
    assert json.load(open(os.path.join(out, "config.json")))["grid"] == [1, 2]


def test_claim_directory_refuses_foreign_and_unreadable(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    claim_directory(str(foreign), {"a": 1}, filename="study.json", allowed=("train",))  # OUT/train alone is reused
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not written by this command"):
        claim_directory(str(foreign / ".."), {"a": 1}, allowed=())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{")
    with pytest.raises(UserError, match="unreadable"):
        claim_directory(str(bad), {"a": 1})
