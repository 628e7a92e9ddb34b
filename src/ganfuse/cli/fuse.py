"""``ganfuse fuse``: train, evaluate, query and benchmark multimodal models on ``shapes``,
``scenes``, the shipped ``emoji`` and the user's own captioned folder (``world=folder``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.errors import ConfigError

TASK_HELP = (
    "matching, vqa, multitask, color, shape, size, position, zeroshot or caption (on shapes); "
    "scenes-vqa or scenes-matching (on scenes); zeroshot and caption on scenes with "
    "--set world=scenes; matching (or match), zeroshot and caption on the shipped emoji with "
    "--set world=emoji and on your own captioned folder (Hugging Face imagefolder "
    "metadata.jsonl/.csv) with --set world=folder --set data=DIR"
)
FUSION_HELP = (
    "early, late-mean, late-weighted, late-stacking, cross-attention, gated, film or low-rank"
)


def register(subparsers) -> None:
    fuse = add_command(
        subparsers,
        "fuse",
        "Multimodal fusion: train, evaluate, predict, benchmark.",
        "ganfuse fuse train --task matching --fusion film --out runs/match-film --max-minutes 5",
    )
    fuse.set_defaults(func=lambda args: fuse.print_help() or 2)
    actions = fuse.add_subparsers(dest="fuse_command", metavar="ACTION")

    train = add_command(
        actions,
        "train",
        "Train one model: a fusion model, the zero-shot dual encoder or the captioner.",
        "ganfuse fuse train --task vqa --fusion cross-attention --out runs/vqa --set steps=800",
    )
    train.add_argument("--task", required=True, help=TASK_HELP)
    train.add_argument(
        "--fusion", default=None, help=f"{FUSION_HELP} (fusion tasks only; default from the config)"
    )
    train.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run folder to write (a folder that already holds a run is refused)",
    )
    train.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock limit of training"
    )
    train.add_argument(
        "--paired-fraction",
        type=float,
        default=None,
        metavar="F",
        help="zeroshot and caption only: share of training images (0 < F <= 1) that keep their "
        "captions; the rest are used unpaired (same as --set paired_fraction=F)",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, repeatable",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    evaluate = add_command(
        actions,
        "evaluate",
        "Score a run on its test split (held-out pairs too for zero-shot), or on other splits.",
        "ganfuse fuse evaluate runs/cogent-film --split cogent-a-test,cogent-b",
    )
    evaluate.add_argument("run", type=Path, help="run folder")
    evaluate.add_argument(
        "--split",
        default=None,
        help="comma-separated splits of the run's world to score a fusion run on, side by side "
        "(e.g. cogent-a-test,cogent-b); default: the split it was tested on",
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(func=_evaluate)

    predict = add_command(
        actions,
        "predict",
        "Answer a run's task for one image and one text, with the answer's probability.",
        'ganfuse fuse predict runs/match-film --image shape.png --text "a small red circle in the center"',
    )
    predict.add_argument("run", type=Path, help="run folder")
    predict.add_argument("--image", required=True, type=Path, help="image file")
    predict.add_argument(
        "--text", default=None, help="caption or question (not needed by caption runs)"
    )
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(func=_predict)

    bench = add_command(
        actions,
        "benchmark",
        "Train every fusion method on every task within a time budget; write results.json/.md/.png.",
        "ganfuse fuse benchmark --out bench/fusion --max-minutes 15",
    )
    bench.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder for the results (one that holds earlier results is refused)",
    )
    bench.add_argument("--max-minutes", type=float, default=15.0, help="total wall-clock budget")
    bench.add_argument(
        "--world",
        default="shapes",
        help="shapes (default), scenes (scenes-vqa, scenes-matching, cogent, with baselines), "
        "emoji or folder (matching on image-caption pairs, with --set data=DIR for folder)",
    )
    bench.add_argument(
        "--tasks", default=None, help="comma-separated subset of the world's benchmark tasks"
    )
    bench.add_argument("--fusions", default=None, help="comma-separated subset of the fusions")
    bench.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every run",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=_benchmark)


def _split(value: str | None, option: str) -> list[str] | None:
    """A comma-separated list; None when the option is not given, an error when it names nothing."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{option} names nothing ({value!r}); give a comma-separated list or leave it out")
    return items


def _train(args: argparse.Namespace) -> int:
    from ganfuse.multimodal.config import FUSION_TASKS, make_config

    overrides = list(args.overrides)
    if args.max_minutes is not None:
        if args.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be positive, got {args.max_minutes}")
        overrides.append(f"max_minutes={args.max_minutes}")
    if args.paired_fraction is not None:
        if args.task not in ("zeroshot", "caption"):
            raise ConfigError(
                f"--paired-fraction applies to --task zeroshot or caption only, not to task {args.task!r}"
            )
        overrides.append(f"paired_fraction={args.paired_fraction}")
    config = make_config(args.task, args.fusion, overrides)
    if args.fusion is not None and config.task not in FUSION_TASKS:
        raise ConfigError(f"--fusion applies to the fusion tasks only, not to task {args.task!r}")
    from ganfuse.multimodal.runs import train_task

    metrics, seconds, steps = train_task(config, args.out, progress=not args.quiet)
    print(
        f"trained {config.task} ({config.fusion}) for {steps} steps in {seconds:.0f}s -> {args.out}"
    )
    _print_metrics(metrics)
    return 0


def _print_metrics(metrics: dict[str, float]) -> None:
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.4f}")


def _evaluate(args: argparse.Namespace) -> int:
    from ganfuse.multimodal.evaluate import evaluate_run

    splits = _split(args.split, "--split")
    metrics = evaluate_run(args.run, splits)
    if args.json:
        print(json.dumps(metrics, indent=2))
    elif splits is None:
        _print_metrics(metrics)
    else:
        _print_split_metrics(metrics)
    return 0


def _print_split_metrics(by_split: dict[str, dict[str, float]]) -> None:
    """One row per metric, one column per split."""
    names = list(dict.fromkeys(k for metrics in by_split.values() for k in metrics))
    width = max(len(k) for k in names)
    columns = [max(len(split), 6) for split in by_split]
    print(
        " " * (width + 4) + "  ".join(f"{s:>{c}}" for s, c in zip(by_split, columns, strict=True))
    )
    for name in names:
        cells = [
            f"{m[name]:>{c}.4f}" if name in m else " " * c
            for m, c in zip(by_split.values(), columns, strict=True)
        ]
        print(f"  {name:<{width}}  " + "  ".join(cells))


def _predict(args: argparse.Namespace) -> int:
    from ganfuse.multimodal.predict import predict

    answer = predict(args.run, args.image, args.text)
    if args.json:
        print(json.dumps({k: v for k, v in answer.items() if k != "lines"}, indent=2))
    else:
        print("\n".join(answer["lines"]))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from ganfuse.models.fusion import FUSION_LEVELS
    from ganfuse.multimodal.benchmark import run_benchmark

    run_benchmark(
        args.out,
        max_minutes=args.max_minutes,
        tasks=_split(args.tasks, "--tasks"),
        fusions=_split(args.fusions, "--fusions") or tuple(FUSION_LEVELS),
        overrides=args.overrides,
        progress=not args.quiet,
        world=args.world,
    )
    print(f"wrote {args.out / 'results.json'}, results.md and results.png")
    return 0
