"""``connect theory …``: the command line of :mod:`theory` (wired into :mod:`connect.cli`).

Subcommands: ``verify`` (every claim of THEORY.md §F), ``constraint-sets RUN`` (which
optimizer's set each checkpoint lies in). Each is a thin wrapper over a module function;
user mistakes raise :class:`connect.errors.UserError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import os

DEFAULT_OUT = os.path.join("runs", "theory")


def cmd_verify(args: argparse.Namespace) -> int:
    from theory import verify

    rows = verify.verify(args.out, only=args.only, progress=not args.quiet)
    for r in rows:
        print(f"{'PASS' if r['passed'] else 'FAIL'} {r['claim']:<5}{r['seconds']:7.1f}s  {r['statement']}")
    n_pass = sum(r["passed"] for r in rows)
    print(f"{n_pass}/{len(rows)} PASS; wrote {os.path.join(args.out, 'report.md')} and report.json")
    return 0 if n_pass == len(rows) else 1


def cmd_constraint_sets(args: argparse.Namespace) -> int:
    from theory import membership

    if not os.path.isdir(args.run_dir):
        from connect.errors import UserError

        raise UserError(f"run directory {args.run_dir} not found: pass the --run-dir of a `connect width-sweep`")
    rows = membership.analyse(args.run_dir, muon_full=args.muon_full)
    print(f"{'width':>6} {'trained by':<11}{'set of':<11}{'kind':<10}{'n':>4}{'inside':>9}{'orbit inside':>14}")
    for s in membership.summary(rows):
        print(f"{s['width']:>6} {s['optimizer']:<11}{s['set_of']:<11}{s['kind']:<10}{s['n']:>4}{s['inside']:>9.0%}{s['orbit_inside']:>14.0%}")
    print(f"wrote {os.path.join(args.run_dir, 'constraint_sets.md')} and constraint_sets.json")
    return 0


def add_parser(sub) -> None:
    """Register ``theory`` and its subcommands on the ``connect`` subparsers ``sub``."""
    t = sub.add_parser("theory", help="two-layer ReLU theory: verify THEORY.md's claims, constraint sets, convex optima, constructive paths",
                       description="Executable claims of the two-layer ReLU theory (THEORY.md).")
    tsub = t.add_subparsers(dest="theory_command", required=True)

    v = tsub.add_parser("verify", help="run every claim of THEORY.md §F; write report.md, report.json and figures")
    v.add_argument("--out", default=DEFAULT_OUT, help=f"report directory (default: {DEFAULT_OUT})")
    v.add_argument("--only", nargs="+", metavar="ITEM", help="only these items, e.g. --only F.3 F.7")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_verify)

    c = tsub.add_parser("constraint-sets", help="which optimizer's set (and orbit) each checkpoint of a run lies in")
    c.add_argument("run_dir", help="a run directory of `connect width-sweep`")
    c.add_argument("--muon-full", action="store_true", help="also the Muon-full set and its orbit (an SDP per checkpoint; needs cvxpy)")
    c.set_defaults(func=cmd_constraint_sets)
