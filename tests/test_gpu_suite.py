"""``benchmarks/gpu_suite.py``: its dry run (every section at tiny sizes, on CPU) writes the JSON and the markdown
table with every section measured, checked and finite; a section past its cap is stopped and recorded as cut."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
SECTIONS = ("train_gpt2", "study_train", "path_eval", "spectra", "width_sweep", "certificate")
#: Per section, the headline figures (beyond compile_s and steady_s) that must be finite numbers.
HEADLINE = {"train_gpt2": ("tokens_per_s", "mfu"), "study_train": ("tokens_per_s", "mfu", "projected_train_wall_s"),
            "path_eval": ("point_tokens_per_s", "mfu"), "spectra": (), "width_sweep": (),
            "certificate": ("lower", "grid_minimax", "upper")}


def _run(*args, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(SUITE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _numbers(x):
    """Every number in a JSON document."""
    if isinstance(x, dict):
        return [n for v in x.values() for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite") / "suite.json"
    proc = _run("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_every_section_measured_checked_and_finite(dry_run):
    results, _ = dry_run
    assert results["dry_run"] is True and results["machine"]["platform"] == "cpu"
    assert list(results["sections"]) == list(SECTIONS)
    assert all(math.isfinite(n) for n in _numbers(results)), "a NaN or infinity in the JSON"
    for name, sec in results["sections"].items():
        assert sec["status"] == "ok" and not sec["cut"], (name, sec.get("error"), sec.get("cut_reasons"))
        assert sec["device"]["platform"] == "cpu" and sec["shapes"], name
        assert sec["check_ok"] is True, name
        assert sec["compile_s"] >= 0 and sec["steady_s"] > 0, name
        for key in HEADLINE[name]:
            assert isinstance(sec[key], float) and math.isfinite(sec[key]), (name, key)
        assert sec["rows"] and all(r["steady_s"] > 0 and r["throughput"] > 0 for r in sec["rows"]), name
    assert len(results["sections"]["study_train"]["rows"]) == 2  # AdamW and Muon seeds
    assert len(results["sections"]["width_sweep"]["rows"]) == 4  # widths 8 and 2 × AdamW and Muon


def test_markdown_table_has_a_line_per_row(dry_run):
    results, md = dry_run
    lines = md.splitlines()
    assert "| section | row | shapes | compile (s) | steady (s) | throughput | MFU | check | status |" in lines
    for name, sec in results["sections"].items():
        assert sum(line.startswith(f"| {name} |") for line in lines) == len(sec["rows"]), name


def test_a_section_past_its_cap_is_cut(tmp_path):
    out = tmp_path / "cut.json"
    proc = _run("--dry-run", "--sections", "certificate", "--cap", "certificate=3", "--out", str(out), timeout=60)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sec = json.loads(out.read_text())["sections"]["certificate"]
    assert sec["status"] == "cut" and sec["cut"] and sec["cut_reasons"], sec
    assert sec["wall_s"] < 3 + 2
