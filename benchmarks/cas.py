"""Generated data as training data: the Classification Accuracy Score (CAS) of runs, and label
efficiency with generated images (figures and commands in ``benchmarks/cas.md``).

    python benchmarks/cas.py cas RUN [RUN ...] [--num N] [--seed 0] [--epochs E] [--json out.json]
    python benchmarks/cas.py label-efficiency RUN [--fraction 0.01] [--num-generated N]
        [--share 0.5] [--steps 2000] [--seed 0] [--json out.json]

``cas``: for each run (a class-conditional ``digits`` run, or a text-to-image ``shapes`` or
``scenes`` run) the classifier trained on its generated images against the same classifier
trained on as many real ones (:func:`ganfuse.metrics.cas.cas_of_run`), tested on real images.

``label-efficiency``: attribute classifiers from scratch on ``shapes`` with ``--fraction`` of the
labels alone, the same labels plus images the ``shapes`` text-to-image RUN drew for the captions
of the other training images (labelled by what each caption states), generated images alone, and
100% of the labels (:func:`ganfuse.multimodal.label_efficiency.generated_label_efficiency`); the
figure is the share of the gap from ``--fraction`` to 100% that the generated images close.

One torch thread (``--threads``); each result is printed as a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ganfuse.metrics.cas import cas_of_run, format_cas, prompt_sampler
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.label_efficiency import generated_label_efficiency
from ganfuse.run import load_run


def _write(path: str | None, record: object) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)


def run_cas(args: argparse.Namespace) -> None:
    records = []
    for path in args.runs:
        run = load_run(path)
        start = time.perf_counter()
        result = cas_of_run(run, num=args.num, seed=args.seed, epochs=args.epochs)
        result["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{path} (step {run.step}), {result['seconds']} s")
        print(format_cas(result))
        print(json.dumps(result))
        records.append(result)
    _write(args.json, records)


def format_label_efficiency(result: dict) -> str:
    """One row per training set: labels, generated images, accuracy per attribute, in percent."""
    keys = ("color", "shape", "size", "position", "mean")
    lines = [f"{'trained on':<26} {'labels':>6} {'generated':>9} " + " ".join(f"{k:>8}" for k in keys)
             + f" {'seconds':>8}"]
    for name, row in result["rows"].items():
        cells = " ".join(f"{100 * row[f'{k}_accuracy']:8.1f}" for k in keys)
        lines.append(f"{name:<26} {int(row['labels']):>6} {int(row['generated']):>9} {cells} "
                     f"{row['train_seconds']:8.1f}")
    lines.append(f"share of the {result['fraction']:.0%} -> 100% gap closed by the generated images: "
                 f"{result['gap_closed']:.3f} (generated alone: {result['gap_closed_generated_only']:.3f})")
    return "\n".join(lines)


def run_label_efficiency(args: argparse.Namespace) -> None:
    run = load_run(args.run)
    config = make_config("multitask", None, [f"steps={args.steps}", f"seed={args.seed}",
                                             f"threads={args.threads}", "precision=fp32"])
    start = time.perf_counter()
    result = generated_label_efficiency(config, prompt_sampler(run), args.fraction, args.num_generated,
                                        args.share, args.seed, progress=False)
    record = {"run": args.run, "step": run.step, "steps": args.steps,
              "seconds": round(time.perf_counter() - start, 1), **result}
    print(f"{args.run} (step {run.step}), {args.steps} steps per classifier, {record['seconds']} s")
    print(format_label_efficiency(result))
    print(json.dumps(record))
    _write(args.json, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cas", help="CAS of runs")
    c.add_argument("runs", nargs="+")
    c.add_argument("--num", type=int, default=None, help="generated (= real) training images; default per world")
    c.add_argument("--epochs", type=int, default=None, help="default: the shipped classifier's recipe")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json")
    c.set_defaults(func=run_cas)
    e = sub.add_parser("label-efficiency", help="1%% labels + generated images against 1%% and 100%%")
    e.add_argument("run", help="a shapes text-to-image run")
    e.add_argument("--fraction", type=float, default=0.01)
    e.add_argument("--num-generated", type=int, default=None, help="default: one per unlabelled image")
    e.add_argument("--share", type=float, default=0.5, help="share of each batch from generated images")
    e.add_argument("--steps", type=int, default=2000, help="steps of each classifier")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json")
    e.set_defaults(func=run_label_efficiency)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.func(args)


if __name__ == "__main__":
    main()
