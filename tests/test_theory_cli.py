"""``connect theory …`` as a user runs it: reports written, exit codes, one-line errors."""

import json
import os

from connect import cli
from theory import verify


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_writes_a_report(tmp_path, capsys):
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--only", "F.7", "--quiet"], capsys)
    assert code == 0 and "PASS F.7" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["claim"] for r in report["claims"]] == ["F.7"] and report["claims"][0]["passed"]
    assert "1/1 claims PASS" in (tmp_path / "report.md").read_text()


def test_a_crashing_claim_is_a_reported_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(verify, "CLAIMS", [("F.0", "theory.constructive", "claim_sqrt_schedule", {"no_such_argument": 1})])
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and "FAIL F.0" in out
    row = json.loads((tmp_path / "report.json").read_text())["claims"][0]
    assert not row["passed"] and "no_such_argument" in row["numbers"]["error"]


def test_constraint_sets_on_a_missing_run_is_one_line(tmp_path, capsys):
    code, _, err = _run(["theory", "constraint-sets", str(tmp_path / "nope")], capsys)
    assert code == 2 and "not found" in err and err.count("\n") == 1
    code, _, err = _run(["theory", "constraint-sets", str(tmp_path)], capsys)
    assert code == 2 and "config.json" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "constraint_sets.json")
