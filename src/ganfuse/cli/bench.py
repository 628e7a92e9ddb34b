"""``ganfuse bench``: measure training throughput of a preset."""

from __future__ import annotations

import argparse
import json

from ganfuse.cli import add_command
from ganfuse.inputs import MAX_SECONDS, check_seconds


def register(subparsers) -> None:
    p = add_command(subparsers, "bench", "Measure throughput.", "ganfuse bench train digits-dcgan --seconds 20")
    sub = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    t = add_command(sub, "train", "Train a preset for S seconds and report img/s, device, precision, steps.",
                    "ganfuse bench train digits-dcgan --seconds 20 --json")
    t.add_argument("preset", metavar="PRESET_OR_YAML")
    t.add_argument("--seconds", type=float, default=20.0, help=f"timed seconds, > 0 and at most {MAX_SECONDS:g}")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--json", action="store_true", help="print only the JSON object")
    t.set_defaults(func=run)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run(args: argparse.Namespace) -> int:
    seconds = check_seconds(args.seconds)

    from ganfuse.bench import bench_train

    result = bench_train(args.preset, seconds, args.overrides)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    return 0
