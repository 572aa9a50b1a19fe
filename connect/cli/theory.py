"""``connect theory …``: the command line of :mod:`theory` (wired into :mod:`connect.cli`).

Subcommands: ``verify`` (every claim of THEORY.md §F; exit 1 when one FAILs, a FINDING does
not fail it), ``constraint-sets RUN`` (which optimizer's set each checkpoint lies in),
``optimum`` (the convex programs of §C on a user's data), ``connect A B`` (CONNECT of §D
between two checkpoints) and ``example`` (the §E example).
Each is a thin wrapper over a module function; user mistakes raise
:class:`connect.errors.UserError` (one line, exit 2). Constraint names (optimizers or set
kinds) are resolved by :mod:`theory.names`.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from connect.errors import UserError

DEFAULT_OUT = os.path.join("runs", "theory")
DEFAULT_EXAMPLE_OUT = os.path.join("runs", "theory", "example")


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 1 when a claim FAILs; PASS and FINDING rows exit 0 (THEORY.md §F.2)."""
    from connect.io import check_output_dir, run_lock
    from theory import report, verify

    check_output_dir(args.out)
    with run_lock(args.out):  # one writer of the report directory
        rows = verify.verify(args.out, only=args.only, progress=not args.quiet)
    print("\n".join(report.console_lines(rows, args.out)))
    return 1 if report.failed(rows) else 0


def cmd_constraint_sets(args: argparse.Namespace) -> int:
    from theory import membership

    if not os.path.isdir(args.run_dir):
        raise UserError(f"run directory {args.run_dir} not found: pass the --run-dir of a `connect width-sweep`")
    rows = membership.analyse(args.run_dir, muon_full=args.muon_full)
    print(f"{'width':>6} {'trained by':<11}{'set of':<11}{'kind':<10}{'n':>4}{'inside':>9}{'orbit inside':>14}")
    for s in membership.summary(rows):
        print(f"{s['width']:>6} {s['optimizer']:<11}{s['set_of']:<11}{s['kind']:<10}{s['n']:>4}{s['inside']:>9.0%}{s['orbit_inside']:>14.0%}")
    print(f"wrote {os.path.join(args.run_dir, 'constraint_sets.md')} and constraint_sets.json")
    return 0


def load_xy(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` in float64 from an ``.npz`` with ``X`` (or ``x``) of shape (n, d) and ``y`` (n,),
    read with ``allow_pickle=False``; shapes and values are checked by the caller's program."""
    if not os.path.isfile(path):
        raise UserError(f"data file {path} not found: pass an .npz with arrays X (n, d) and y (n,)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zip, format or object-array errors
        raise UserError(f"data file {path} is not a readable .npz ({e}): save it with numpy.savez(path, X=X, y=y)") from None
    x_key = "X" if "X" in arrays else "x"
    if x_key not in arrays or "y" not in arrays:
        raise UserError(f"data file {path} needs arrays X (n, d) and y (n,), has {sorted(arrays)}: save it with numpy.savez(path, X=X, y=y)")
    x, y = arrays[x_key], arrays["y"]
    if x.dtype.kind not in "fiu" or y.dtype.kind not in "fiub":
        raise UserError(f"data file {path}: X and y must be numeric, got {x.dtype} and {y.dtype}")
    return x.astype(np.float64), y.astype(np.float64)


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def cmd_optimum(args: argparse.Namespace) -> int:
    from connect.io import check_output_file, write_json_atomic
    from theory import convex

    if args.out:
        check_output_file(args.out)  # before any work
    x, y = load_xy(args.data)
    res = convex.optimum(x, y, args.constraint, args.lam, loss=args.loss, n_gates=args.gates, seed=args.seed, width=args.width)
    b = res.bracket
    print(f"{args.constraint} (set {res.constraint}) at λ = {res.lam:g}, {res.loss} loss, n = {len(y)}, d = {x.shape[1]}: "
          f"{res.n_patterns} patterns {res.patterns}, solver {res.solver}")
    print(f"  value                  {res.value:.10g}")
    print(f"  m*, M*                 {_fmt(res.m_star)}, {_fmt(res.M_star)}")
    print(f"  staircase width        {_fmt(b.get('connected_width'))}  (optimal set connected from this width)")
    lo, hi = b.get("value_lower"), b.get("value_upper")
    bracket = "—" if lo is None else f"[{lo:.10g}, {hi:.10g}] at width {b['width']}"
    print(f"  value bracket          {bracket}")
    iw = b.get("interpolation_width")
    interp = "—" if iw is None else f"{iw[0]} ≤ m_int ≤ {iw[1]} (τ* = {b['tau_star']:.6g})"
    print(f"  interpolation bracket  {interp}")
    print(f"  network width          {len(res.network['a'])}")
    print(f"  exact                  {'yes' if res.exact else 'no'}: {res.notes}")
    if args.out:
        write_json_atomic(args.out, {"data": args.data, "name": args.constraint, **res.to_dict()})
        print(f"wrote {args.out}")
    return 0


def _curve(rep: dict) -> dict:
    return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in rep.items()}


def cmd_connect(args: argparse.Namespace) -> int:
    from connect.io import check_output_file, write_json_atomic
    from connect.models import relu
    from connect.twolayer import pair
    from theory import connectivity, names

    if args.t_points < 2 or not args.tol >= 0:
        raise UserError(f"need --t-points ≥ 2 and --tol ≥ 0, got {args.t_points} and {args.tol}")
    if args.out:
        check_output_file(args.out)  # before any work
    params_a, meta_a, params_b, _ = pair.load_pair(args.ckpt_a, args.ckpt_b)
    name = args.constraint or meta_a.get("optimizer")
    lam = args.lam if args.lam is not None else meta_a.get("weight_decay")
    if name is None or lam is None:
        raise UserError(f"checkpoint {args.ckpt_a} records no optimizer or weight decay: pass --constraint and --lam")
    cset = names.constraint_set(name, lam, relu.MUON_MATRICES)
    dataset = pair.dataset_of(args.ckpt_a, meta_a, relu.config_of(params_a).d_in, args.data)
    loss = "logistic" if dataset.task == "classification" else "squared"
    x, y = np.asarray(dataset.x_train, np.float64), np.asarray(dataset.y_train, np.float64)
    pa, pb = ({k: np.asarray(v, np.float64) for k, v in p.items()} for p in (params_a, params_b))  # W, a and b if any
    folded = "b" in pa
    if folded:  # THEORY.md §A: a bias is an extra input column (exact for the box and weight decay only)
        (pa, xf), (pb, _) = connectivity.fold_bias(pa, x, cset), connectivity.fold_bias(pb, x, cset)
        x = xf
    moved = [0.0, 0.0]
    if args.project:
        import jax

        with jax.enable_x64(True):
            for i, p in enumerate((pa, pb)):
                moved[i] = float(cset.distance(p))
            pa, pb = ({k: np.asarray(v) for k, v in cset.project(p).items()} for p in (pa, pb))
    out = connectivity.connect_pair(pa, pb, x, y, cset, loss=loss, tol=args.tol)
    line = connectivity.path_report(connectivity.linear_path(pa, pb), x, y, cset, np.linspace(0.0, 1.0, args.t_points), loss)
    result = {"ckpt_a": args.ckpt_a, "ckpt_b": args.ckpt_b, "constraint": name, "kind": cset.kind, "lam": cset.lam, "loss": loss,
              "bias_folded": folded, "projection_distance": moved, "tol": args.tol, "linear": _curve(line)}
    if isinstance(out, connectivity.Inconclusive):
        print(f"INCONCLUSIVE: {out.reason}")
        result.update(result="INCONCLUSIVE", reason=out.reason, k_a=out.k_a, k_b=out.k_b, width=out.width, numbers=out.numbers)
    else:
        ts = np.linspace(0.0, 1.0, (args.t_points - 1) * len(out.segments) + 1)
        rep = connectivity.path_report(out, x, y, cset, ts, loss)
        print(f"CONNECTED barrier={rep['max_barrier']:.3g} max norm along path={rep['max_relative_norm']:.6g} "
              f"segments={len(out.segments)} (k_A={out.numbers['k_a']}, k_B={out.numbers['k_b']}, width {out.numbers['width']}; "
              f"straight line barrier={line['max_barrier']:.3g})")
        result.update(result="CONNECTED", segments=out.names, numbers=out.numbers, path=_curve(rep))
    if args.out:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from theory import example, example_report

    if any(w < 2 for w in args.widths) or 2 not in args.widths:
        raise UserError(f"--widths {' '.join(map(str, args.widths))}: give widths ≥ 2 including 2 (the certified width), e.g. --widths 2 3 4")
    if any(n < 4 for n in args.grid):
        raise UserError(f"--grid {' '.join(map(str, args.grid))}: grid sizes must be ≥ 4, e.g. --grid 64 128 256 512")
    if args.seeds < 0 or args.steps < 1:
        raise UserError(f"need --seeds ≥ 0 and --steps ≥ 1, got {args.seeds} and {args.steps}")
    bad = [o for o in args.optimizers if o not in example.DEFAULT_LAM]
    if bad:
        raise UserError(f"--optimizers {' '.join(bad)}: the example trains {', '.join(example.DEFAULT_LAM)}")
    from connect.io import check_output_dir, run_lock

    check_output_dir(args.out)
    with run_lock(args.out):  # one writer of the output directory
        summary, paths = example_report.write_report(args.out, n_grids=tuple(sorted(args.grid)), widths=tuple(sorted(set(args.widths))),
                                                     optimizers=tuple(args.optimizers) if args.seeds else (),
                                                     seeds=tuple(range(args.seeds)), steps=args.steps)
    print(f"{'config':>6} {'c':>22} {'φ (deg)':>22} {'box':>8} {'Muon-full':>10} {'hybrid':>8}   (orbit norm/radius, ≤ 1: inside)")
    for i, k in enumerate(summary["configs"]):
        c = ", ".join(f"{v:.4f}" for v in k["c"])
        phi = ", ".join(f"{v:.2f}" for v in k["phi_deg"])
        print(f"{i:>6} {c:>22} {phi:>22} {k['box']:>8.4f} {k['muon_full']:>10.4f} {k['hybrid']:>8.4f}")
    print(f"{'N':>6} {'certified lower':>16} {'grid minimax':>14} {'upper (path)':>14}")
    for bnd in summary["bounds"]:
        print(f"{bnd['n_grid']:>6} {bnd['lower']:>16.6g} {bnd['grid_minimax']:>14.6g} {bnd['upper']:>14.6g}")
    print(f"{'width':>6} {'barrier lower':>16} {'upper':>14}")
    for m, bnd in summary["barrier_by_width"].items():
        print(f"{m:>6} {bnd['lower']:>16.6g} {bnd['upper']:>14.6g}")
    for opt, r in summary["runs"].items():
        print(f"{opt}: λ = {r['lam']:.4f}, runs nearest each config {r['nearest_counts']}, median final loss {np.median(r['final_losses']):.3g}")
    print(f"wrote {os.path.join(args.out, 'summary.json')} and {len(paths)} figure files")
    return 0


def add_parser(sub) -> None:
    """Register ``theory`` and its subcommands on the ``connect`` subparsers ``sub``."""
    t = sub.add_parser("theory", help="two-layer ReLU theory: verify THEORY.md's claims, constraint sets, convex optima, constructive paths",
                       description="Executable claims of the two-layer ReLU theory (THEORY.md).")
    tsub = t.add_subparsers(dest="theory_command", required=True)

    v = tsub.add_parser("verify", help="run every claim of THEORY.md §F (PASS, FINDING or FAIL; exit 1 on a FAIL); "
                        "write report.md, report.json and figures")
    v.add_argument("--out", default=DEFAULT_OUT, help=f"report directory (default: {DEFAULT_OUT})")
    v.add_argument("--only", nargs="+", metavar="ITEM", help="only these items, e.g. --only F.3 F.7")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_verify)

    c = tsub.add_parser("constraint-sets", help="which optimizer's set (and orbit) each checkpoint of a run lies in")
    c.add_argument("run_dir", help="a run directory of `connect width-sweep`")
    c.add_argument("--muon-full", action="store_true", help="also the Muon-full set and its orbit (an SDP per checkpoint; needs cvxpy)")
    c.set_defaults(func=cmd_constraint_sets)

    from theory import names

    choices = ", ".join(names.names())
    o = tsub.add_parser("optimum", help="global optimum of a two-layer ReLU net in an optimizer's set (convex programs, THEORY.md §C)")
    o.add_argument("--data", required=True, help="an .npz with X (n, d) and y (n,)")
    o.add_argument("--constraint", required=True, help=f"optimizer or set kind: {choices}")
    o.add_argument("--lam", type=float, required=True, help="the decay λ > 0 (radius 1/λ)")
    o.add_argument("--loss", default="squared", choices=("squared", "logistic"), help="squared ½(ŷ − y)² or logistic (y = ±1)")
    o.add_argument("--gates", "--n-gates", dest="gates", type=int, default=1000, help="Gaussian gates sampling patterns when d > 2 (default 1000)")
    o.add_argument("--seed", type=int, default=0, help="seed of the gates")
    o.add_argument("--width", type=int, default=None, help="network width for the box and Muon sets (default 2n; Muon-full: any)")
    o.add_argument("--out", default=None, help="write the result (network included) to this JSON file")
    o.set_defaults(func=cmd_optimum)

    k = tsub.add_parser("connect", help="CONNECT (THEORY.md §D): a path inside the set between two checkpoints, or INCONCLUSIVE")
    k.add_argument("ckpt_a")
    k.add_argument("ckpt_b")
    k.add_argument("--constraint", default=None, help=f"optimizer or set kind (default: A's optimizer): {choices}")
    k.add_argument("--lam", type=float, default=None, help="the decay λ > 0 (default: A's weight decay)")
    k.add_argument("--data", default=None, help="an .npz with X and y (default: the data A was trained on)")
    k.add_argument("--project", action="store_true", help="project both endpoints onto the set first (reports how far they moved)")
    k.add_argument("--tol", type=float, default=1e-9, help="allowed loss excess and relative-norm excess along the path")
    k.add_argument("--t-points", type=int, default=33, help="points per path segment in the report (default 33)")
    k.add_argument("--out", default=None, help="write the result and the loss curves to this JSON file")
    k.set_defaults(func=cmd_connect)

    e = tsub.add_parser("example", help="the small-width example of THEORY.md §E: zero-loss points, regions, certified barrier, runs, figures")
    e.add_argument("--widths", type=int, nargs="+", default=[2, 3, 4], help="widths (2 is certified, ≥ 3 get an explicit path)")
    e.add_argument("--grid", type=int, nargs="+", default=[64, 128, 256, 512], help="certificate grid sizes N")
    e.add_argument("--seeds", type=int, default=16, help="training seeds per optimizer (0: no runs)")
    e.add_argument("--steps", type=int, default=4000, help="full-batch steps per run")
    e.add_argument("--optimizers", nargs="+", default=["adamw", "muon_exact", "muon", "muon_full"], help="optimizers to train")
    e.add_argument("--out", default=DEFAULT_EXAMPLE_OUT, help=f"output directory (default: {DEFAULT_EXAMPLE_OUT})")
    e.set_defaults(func=cmd_example)
