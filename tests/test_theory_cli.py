"""``connect theory …`` as a user runs it: reports written, exit codes, one-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from connect import checkpoints, cli, optimizers
from connect.models import relu
from connect.twolayer import losses, training
from theory import connectivity, verify


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, needle):
    assert code == 2 and needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_verify_writes_a_report(tmp_path, capsys):
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--only", "F.7", "--quiet"], capsys)
    assert code == 0 and "PASS F.7" in out and "1/1 claims PASS, 0 FINDING, 0 FAIL" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["claim"] for r in report["claims"]] == ["F.7"] and report["claims"][0]["passed"]
    assert report["claims"][0]["status"] == "PASS" and report["counts"] == {"PASS": 1, "FINDING": 0, "FAIL": 0}
    md = (tmp_path / "report.md").read_text()
    assert "1/1 claims PASS, 0 FINDING, 0 FAIL" in md and "| item | status | claim | time (s) |" in md and "| F.7 | PASS |" in md


def _adamw_runs_outside(monkeypatch):
    """AdamW's F.2 row without the training: its runs end at λ‖θ‖∞ = 1.022, 1.044, 1.255 (the finding)."""
    from theory import optimizer_sets

    def run(name, *, steps, seeds):
        by_seed = [1.022, 1.044, 1.255][: len(seeds)]
        return {"spectral": None, "linf": max(by_seed), "linf_by_seed": by_seed, "seeds": list(seeds), "final_loss": 0.0,
                "eta_lambda": 0.006}

    monkeypatch.setattr(optimizer_sets, "run", run)
    monkeypatch.setattr(verify, "FIGURES", [])


def test_a_finding_is_reported_and_does_not_fail_verify(tmp_path, monkeypatch, capsys):
    _adamw_runs_outside(monkeypatch)
    monkeypatch.setattr(verify, "CLAIMS", [("F.2", "theory.optimizer_sets", "claim_optimizer_ball", {"names": ("adamw",)}),
                                           ("F.7", "theory.constructive", "claim_sqrt_schedule", {})])
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, out
    assert "FINDING F.2" in out and "1.022, 1.044, 1.255" in out and "PASS F.7" in out
    assert "1/2 claims PASS, 1 FINDING, 0 FAIL" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["status"] for r in report["claims"]] == ["FINDING", "PASS"] and not report["claims"][0]["passed"]
    assert report["counts"] == {"PASS": 1, "FINDING": 1, "FAIL": 0}
    md = (tmp_path / "report.md").read_text()
    assert "| F.2 | FINDING | adamw is not ball-invariant" in md and "| F.7 | PASS |" in md
    assert "- **F.2** FINDING `theory.optimizer_sets.claim_optimizer_ball`" in md


def test_a_failure_beside_a_finding_fails_verify(tmp_path, monkeypatch, capsys):
    _adamw_runs_outside(monkeypatch)
    monkeypatch.setattr(verify, "CLAIMS", [("F.2", "theory.optimizer_sets", "claim_optimizer_ball", {"names": ("adamw",)}),
                                           ("F.0", "theory.constructive", "claim_sqrt_schedule", {"no_such_argument": 1})])
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and "FINDING F.2" in out and "FAIL F.0" in out and "0/2 claims PASS, 1 FINDING, 1 FAIL" in out
    assert "| F.0 | FAIL |" in (tmp_path / "report.md").read_text()


def test_a_crashing_claim_is_a_reported_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(verify, "CLAIMS", [("F.0", "theory.constructive", "claim_sqrt_schedule", {"no_such_argument": 1})])
    monkeypatch.setattr(verify, "FIGURES", [])
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and "FAIL F.0" in out
    row = json.loads((tmp_path / "report.json").read_text())["claims"][0]
    assert not row["passed"] and row["status"] == "FAIL" and "no_such_argument" in row["numbers"]["error"]


def test_a_failing_figure_is_a_reported_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(verify, "CLAIMS", [("F.7", "theory.constructive", "claim_sqrt_schedule", {})])
    monkeypatch.setattr(verify, "FIGURES", [("theory.example_report", "no_such_figure")])
    code, out, _ = _run(["theory", "verify", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and "PASS F.7" in out and "FAIL figure" in out
    rows = json.loads((tmp_path / "report.json").read_text())["claims"]
    assert [r["claim"] for r in rows] == ["F.7", "figure"] and "no_such_figure" in rows[1]["numbers"]["error"]


def test_constraint_sets_on_a_missing_run_is_one_line(tmp_path, capsys):
    code, _, err = _run(["theory", "constraint-sets", str(tmp_path / "nope")], capsys)
    assert code == 2 and "not found" in err and err.count("\n") == 1
    code, _, err = _run(["theory", "constraint-sets", str(tmp_path)], capsys)
    assert code == 2 and "config.json" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "constraint_sets.json")


# ---- optimum ---------------------------------------------------------------------------


def _circle_npz(path, n=4, seed=0, **extra):
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, n)
    x, y = np.stack([np.cos(ang), np.sin(ang)], axis=1), rng.normal(size=n)
    np.savez(path, X=x, y=y, **extra)
    return x, y


def _numpy_forward(net, x):
    return np.maximum(x @ np.asarray(net["W"]).T, 0.0) @ np.asarray(net["a"])


def test_optimum_weight_decay_and_muon_full(tmp_path, capsys):
    """The JSON network attains the printed value, recomputed in numpy: ``L + (λ/2)‖θ‖²`` for
    weight decay (with m* ≤ its width ≤ n), the plain loss inside ``‖W‖₂, ‖a‖₂ ≤ 1/λ`` for Muon-full."""
    x, y = _circle_npz(tmp_path / "d.npz")
    out_json = tmp_path / "wd.json"
    code, out, _ = _run(["theory", "optimum", "--data", str(tmp_path / "d.npz"), "--constraint", "sgd", "--lam", "0.1",
                         "--out", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    assert code == 0 and res["constraint"] == "weight_decay" and res["exact"]
    net = res["network"]
    objective = 0.5 * np.mean((_numpy_forward(net, x) - y) ** 2) + 0.05 * (np.sum(np.square(net["W"])) + np.sum(np.square(net["a"])))
    assert objective == pytest.approx(res["value"], rel=1e-6)
    assert f"{res['value']:.10g}" in out and res["m_star"] == len(net["a"]) <= len(y)
    out_json = tmp_path / "mf.json"
    code, out, _ = _run(["theory", "optimum", "--data", str(tmp_path / "d.npz"), "--constraint", "muon_full", "--lam", "2",
                         "--out", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    net = res["network"]
    assert code == 0 and res["constraint"] == "muon_full"
    assert 0.5 * np.mean((_numpy_forward(net, x) - y) ** 2) == pytest.approx(res["value"], rel=1e-6)
    assert 2 * np.linalg.norm(net["W"], 2) <= 1 + 1e-6 and 2 * np.linalg.norm(net["a"]) <= 1 + 1e-6


def test_optimum_box_brackets_its_value(tmp_path, capsys):
    x, y = _circle_npz(tmp_path / "d.npz", n=5, seed=1)
    out_json = tmp_path / "box.json"
    code, out, _ = _run(["theory", "optimum", "--data", str(tmp_path / "d.npz"), "--constraint", "adamw", "--lam", "1",
                         "--width", "8", "--out", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    net, b = res["network"], res["bracket"]
    assert code == 0 and "interpolation bracket" in out
    assert b["value_lower"] <= res["value"] == b["value_upper"]
    assert 0.5 * np.mean((_numpy_forward(net, x) - y) ** 2) == pytest.approx(res["value"], rel=1e-9)
    assert np.abs(net["W"]).max() <= 1 + 1e-12 and np.abs(net["a"]).max() <= 1 + 1e-12 and len(net["a"]) <= 8
    lo, hi = b["interpolation_width"]
    assert lo == int(np.ceil(b["tau_star"] * (1 - 1e-9))) and hi == int(np.floor(b["tau_star"] * (1 + 1e-9))) + 5


def _bad_data(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    rng = np.random.default_rng(0)
    if kind == "nan":
        x = rng.normal(size=(5, 2))
        x[2, 1] = np.nan
        np.savez(path, X=x, y=rng.normal(size=5))
    elif kind == "shape":
        np.savez(path, X=rng.normal(size=(5, 2)), y=rng.normal(size=4))
    elif kind == "no_y":
        np.savez(path, X=rng.normal(size=(5, 2)))
    elif kind == "many":  # n = 200 points in 10-d: far more patterns than the memory guard allows
        np.savez(path, X=rng.normal(size=(200, 10)), y=rng.normal(size=200))
    else:
        _circle_npz(path)
    return str(path)


@pytest.mark.parametrize("data, extra, needle", [
    ("ok", ["--constraint", "rmsprop", "--lam", "1"], "unknown constraint 'rmsprop': choose from sgd"),
    ("ok", ["--constraint", "adamw", "--lam", "0"], "λ must be a finite number > 0"),
    ("ok", ["--constraint", "muon", "--lam", "-0.5"], "λ must be a finite number > 0"),
    ("ok", ["--constraint", "l2", "--lam", "1"], "no convex program for the ℓ₂ ball"),
    ("nan", ["--constraint", "adamw", "--lam", "1"], "NaN"),
    ("shape", ["--constraint", "adamw", "--lam", "1"], "shape"),
    ("no_y", ["--constraint", "adamw", "--lam", "1"], "needs arrays X (n, d) and y (n,)"),
    ("missing", ["--constraint", "adamw", "--lam", "1"], "not found"),
    ("many", ["--constraint", "sgd", "--lam", "1"], "activation patterns on n=200, d=10 need about"),
])
def test_optimum_bad_input_is_one_line(tmp_path, capsys, data, extra, needle):
    path = str(tmp_path / "nope.npz") if data == "missing" else _bad_data(tmp_path, data)
    out_json = tmp_path / "o.json"
    code, _, err = _run(["theory", "optimum", "--data", path, *extra, "--out", str(out_json)], capsys)
    _one_line_error(code, err, needle)
    if data == "many":
        assert "fewer gates" in err
    assert not out_json.exists()


# ---- connect ---------------------------------------------------------------------------


def _save_pair(tmp_path, pa, pb, x, y, meta):
    """Two checkpoints and a data file holding all rows as training data (X_test given)."""
    data = tmp_path / "data.npz"
    np.savez(data, X=x, y=y, X_test=x[:2], y_test=y[:2])
    meta = {**meta, "data": {"path": str(data)}}
    paths = [str(tmp_path / "A"), str(tmp_path / "B")]
    for p, path in zip((pa, pb), paths):
        checkpoints.save_checkpoint(path, {k: np.asarray(v, np.float64) for k, v in p.items()}, meta)
    return paths


def _numpy_loss(p, x, y):
    pre = x @ np.asarray(p["W"], np.float64).T + (np.asarray(p["b"], np.float64)[None, :] if "b" in p else 0.0)
    return 0.5 * np.mean((np.maximum(pre, 0.0) @ np.asarray(p["a"], np.float64) - y) ** 2)


def test_connect_trained_adamw_pair(tmp_path, capsys):
    """Two AdamW-trained networks (projected onto their box, as F.6): CONNECTED, and the JSON's
    path starts at L_A and ends at L_B (numpy), never exceeds max(L_A, L_B) and stays in the box."""
    x, y, pa, pb, _, _ = connectivity.trained_pair("adamw", 4, 2, 16, lam=0.5, seed=0, steps=1000)
    a, b = _save_pair(tmp_path, pa, pb, x, y, {"optimizer": "adamw", "weight_decay": 0.5})
    out_json = tmp_path / "c.json"
    code, out, _ = _run(["theory", "connect", a, b, "--data", str(tmp_path / "data.npz"), "--out", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    assert code == 0 and out.startswith("CONNECTED barrier=") and res["result"] == "CONNECTED"
    assert res["kind"] == "linf" and res["lam"] == 0.5 and not res["bias_folded"]
    x, y = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)  # connect.twolayer.data reads float32
    loss_a, loss_b = _numpy_loss(pa, x, y), _numpy_loss(pb, x, y)
    curve = np.asarray(res["path"]["loss"])
    assert curve[0] == pytest.approx(loss_a, rel=1e-9) and curve[-1] == pytest.approx(loss_b, rel=1e-9)
    assert curve.max() <= max(loss_a, loss_b) + 1e-9 and res["path"]["max_relative_norm"] <= 1 + 1e-9
    assert res["linear"]["max_barrier"] > 1e-6  # the straight line between the same ends has a barrier


def test_connect_saturated_box_is_inconclusive(tmp_path, capsys):
    x, y, pa, pb = connectivity.saturated_box_pair(4, 2, 8, 1.0, seed=0)
    a, b = _save_pair(tmp_path, pa, pb, x, y, {})
    out_json = tmp_path / "c.json"
    code, out, _ = _run(["theory", "connect", a, b, "--data", str(tmp_path / "data.npz"), "--constraint", "lion", "--lam", "1", "--out", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    assert code == 0 and out.startswith("INCONCLUSIVE: supports after reduction")
    assert res["result"] == "INCONCLUSIVE" and res["k_a"] + res["k_b"] > res["width"] == 8


def test_connect_with_a_bias(tmp_path, capsys):
    """Networks with a bias: folded into W for the box (CONNECTED inside the box after projecting the
    ends, each moved by its ℓ∞-clip distance), refused for Muon (exit 2)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=5)
    cfg = relu.ReluConfig(d_in=2, width=12, bias=True)
    trained, _ = training.train(lambda k: relu.init(k, cfg), lambda p, xx, yy: losses.mse(relu.apply(p, xx), yy),
                                optimizers.make("adamw", 0.01, 0.5), [0, 1], jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 300)
    pa, pb = ({k: np.asarray(v[i], np.float64) for k, v in trained.items()} for i in range(2))
    a, b = _save_pair(tmp_path, pa, pb, x, y, {"optimizer": "adamw", "weight_decay": 0.5})
    out_json = tmp_path / "c.json"
    code, out, _ = _run(["theory", "connect", a, b, "--data", str(tmp_path / "data.npz"), "--project", "--out", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    assert code == 0 and res["bias_folded"] and res["result"] == "CONNECTED"
    with jax.enable_x64(True):
        expect = [float(optimizers.constraint("adamw", 0.5).distance({k: jnp.asarray(v) for k, v in p.items()})) for p in (pa, pb)]
    np.testing.assert_allclose(res["projection_distance"], expect, rtol=1e-9)  # W, b and a clipped together
    assert res["path"]["max_relative_norm"] <= 1 + 1e-9 and res["path"]["max_barrier"] <= 1e-9
    code, _, err = _run(["theory", "connect", a, b, "--data", str(tmp_path / "data.npz"), "--constraint", "muon", "--lam", "0.5"], capsys)
    _one_line_error(code, err, "with a bias is exact only for the box and weight decay")


@pytest.mark.parametrize("extra, needle", [
    (["--constraint", "adamq"], "unknown constraint 'adamq'"),
    (["--lam", "-1"], "λ must be a finite number > 0"),
    (["--missing"], "not found"),
])
def test_connect_bad_input_is_one_line(tmp_path, capsys, extra, needle):
    x, y, pa, pb = connectivity.saturated_box_pair(3, 2, 4, 1.0, seed=0)
    a, b = _save_pair(tmp_path, pa, pb, x, y, {"optimizer": "adamw", "weight_decay": 1.0})
    if extra == ["--missing"]:
        b, extra = str(tmp_path / "no_such_checkpoint"), []
    out_json = tmp_path / "c.json"
    code, _, err = _run(["theory", "connect", a, b, "--data", str(tmp_path / "data.npz"), *extra, "--out", str(out_json)], capsys)
    _one_line_error(code, err, needle)
    assert not out_json.exists()


# ---- example ---------------------------------------------------------------------------


def test_example_tiny(tmp_path, capsys):
    """Tiny sizes: summary.json and the figures written; the bounds ordered lower ≤ grid minimax ≤
    upper at each N; the width-3 path has no barrier; the printed table shows each N."""
    code, out, _ = _run(["theory", "example", "--widths", "2", "3", "--grid", "16", "32", "--seeds", "2", "--steps", "20",
                         "--optimizers", "adamw", "--out", str(tmp_path)], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [b["n_grid"] for b in summary["bounds"]] == [16, 32]
    for b in summary["bounds"]:
        assert b["lower"] <= b["grid_minimax"] <= b["upper"]
        assert any(line.split()[:1] == [str(b["n_grid"])] for line in out.splitlines())
    assert summary["barrier_by_width"]["3"]["upper"] <= 1e-12 and summary["barrier_by_width"]["2"]["upper"] > 0
    assert len(summary["runs"]["adamw"]["final_losses"]) == 2
    for name in ("example_landscape", "example_barrier", "example_runs"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize("extra, needle", [
    (["--widths", "1", "2"], "widths ≥ 2"),
    (["--grid", "2"], "grid sizes must be ≥ 4"),
    (["--optimizers", "sgd"], "the example trains adamw"),
])
def test_example_bad_input_is_one_line(tmp_path, capsys, extra, needle):
    code, _, err = _run(["theory", "example", "--out", str(tmp_path / "ex"), *extra], capsys)
    _one_line_error(code, err, needle)
    assert not (tmp_path / "ex").exists()
