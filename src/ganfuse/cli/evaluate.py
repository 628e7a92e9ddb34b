"""``ganfuse evaluate``: score generated images against a reference (wiring only; the pipeline is
:mod:`ganfuse.metrics.evaluate`)."""

from __future__ import annotations

import argparse

from ganfuse.cli import add_command

_HELP = "Score a run or an image folder against a reference: FID, KID, IS, precision/recall, density/coverage."


def register(subparsers) -> None:
    from ganfuse.metrics.inception_weights import (
        INCEPTION_FILENAME,
        WEIGHTS_ENV,
        cached_weights_path,
    )
    from ganfuse.metrics.settings import (
        DEFAULT_METRICS,
        DEFAULT_NUM,
        DEFAULT_RESIZE,
        METRICS,
        RESIZE_MODES,
    )

    parser = add_command(
        subparsers,
        "evaluate",
        _HELP,
        "ganfuse evaluate runs/digits --ref digits --metrics fid,kid --num 2000",
    )
    parser.add_argument(
        "source", help="a run directory (samples generated in memory) or a folder of images"
    )
    parser.add_argument(
        "--ref", required=True, help="a dataset name (digits) or a folder of real images"
    )
    parser.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated, from {','.join(METRICS)}",
    )
    parser.add_argument(
        "--extractor",
        default=None,
        help="inception or a dataset's own (digits); default: inception when its weights are on disk, "
        "else the reference dataset's own",
    )
    parser.add_argument("--num", type=int, default=DEFAULT_NUM, help="images per side (at most)")
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of a table"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help=f"the Inception weights file {INCEPTION_FILENAME} (or set {WEIGHTS_ENV}); "
        f"looked for in {cached_weights_path()} otherwise",
    )
    parser.add_argument(
        "--resize",
        choices=sorted(RESIZE_MODES),
        default=None,
        help=f"Inception input resize, {DEFAULT_RESIZE} when not given: "
        + "; ".join(f"{name}: {what}" for name, what in RESIZE_MODES.items()),
    )
    parser.add_argument("--batch-size", type=int, default=None, help="images per extractor batch")
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed for runs and KID subsets"
    )
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import sys

    from ganfuse.metrics.evaluate import evaluate_source

    result = evaluate_source(
        args.source,
        args.ref,
        metrics=args.metrics,
        extractor=args.extractor,
        num=args.num,
        weights=args.weights,
        resize=args.resize,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.json and sys.stderr.isatty(),
    )
    print(result.to_json() if args.json else result.format_table())
    return 0
