"""``ganfuse bench``: measure training throughput of a preset."""

from __future__ import annotations

import argparse
import json

from ganfuse.cli import add_command
from ganfuse.inputs import MAX_SECONDS, check_count, check_seconds

MAX_THREADS = 1024


def register(subparsers) -> None:
    p = add_command(
        subparsers, "bench", "Measure throughput.", "ganfuse bench train digits-dcgan --seconds 20"
    )
    sub = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    t = add_command(
        sub,
        "train",
        "Train a preset for S seconds and report img/s, FLOPs per image, the "
        "measured peak GEMM FLOP/s, utilisation, precision (and why), threads, CPU.",
        "ganfuse bench train digits-dcgan --seconds 20 --threads 2 --json",
    )
    t.add_argument("preset", metavar="PRESET_OR_YAML")
    t.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help=f"timed seconds, > 0 and at most {MAX_SECONDS:g}",
    )
    t.add_argument(
        "--threads",
        type=int,
        default=0,
        help=f"torch CPU threads for the bench, 1 to {MAX_THREADS}; 0 (default): torch's setting",
    )
    t.add_argument(
        "--no-flops",
        action="store_true",
        help="skip the FLOP count and the peak GEMM measurement",
    )
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--json", action="store_true", help="print only the JSON object")
    t.set_defaults(func=run)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run(args: argparse.Namespace) -> int:
    seconds = check_seconds(args.seconds)
    threads = check_count("--threads", args.threads, MAX_THREADS, minimum=0)

    from ganfuse.bench import bench_train, format_result

    result = bench_train(
        args.preset, seconds, args.overrides, threads=threads, flops=not args.no_flops
    )
    print(json.dumps(result) if args.json else "\n".join(format_result(result)))
    return 0
