"""``ganfuse report``: one self-contained HTML page of one or several runs (wiring only; the
page is built by :mod:`ganfuse.report.build`)."""

from __future__ import annotations

import argparse

from ganfuse.cli import add_command


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "report",
        "Write one self-contained HTML report (curves, sample timeline, interpolation, class grid, "
        "metrics, fusion benchmark) of one or several runs; several runs share the chart axes.",
        "ganfuse report runs/digits runs/digits-cond bench/fusion --out compare.html",
    )
    p.add_argument(
        "runs",
        metavar="RUN",
        nargs="+",
        help="run folders (ganfuse train, fuse train) or fuse benchmark folders",
    )
    p.add_argument(
        "--out",
        metavar="FILE.html",
        help="output file (default: RUN/report.html for one run, ./report.html for several)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--device", default="cpu", help="device the generators run on")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganfuse.report.build import build_report

    out = build_report(args.runs, args.out, seed=args.seed, device=args.device)
    print(f"report written to {out.resolve()}")
    return 0
