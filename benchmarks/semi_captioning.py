"""Captioning from partly paired ``shapes`` data (issue #17): 1%, 10% and 100% of the training
images captioned, with and without each unpaired term, at an equal wall-clock budget per run.

Prerequisites, for the cycle and pseudo-caption rows: a text-to-image run trained on the paired
share only, per fraction (``--t2i F=RUN``). ``--export F DIR`` writes that share as a captioned
folder, then

    ganfuse train shapes-t2i --out RUN --max-minutes 3 --set data.name=folder --set data.path=DIR

Each row trains one captioner (``threads=1``, ``max_minutes`` each) and reports exact match and
per-attribute accuracy on three image sets: ``test`` (new images of the colour-shape pairs
training has, what ``ganfuse fuse train --task caption`` reports), ``heldout`` (the four held-out
colour-shape pairs) and ``unpaired`` (the training images the run saw without captions). Rows are
appended to ``--out`` (JSON lines) as they finish; ``--table`` prints the markdown table.

    python benchmarks/semi_captioning.py --export 0.01 /tmp/semi/paired_0.01
    python benchmarks/semi_captioning.py --out rows.jsonl --fractions 0.01 --terms base,lm \\
        --t2i 0.01=/tmp/semi/t2i_0.01 --minutes 1.25
    python benchmarks/semi_captioning.py --t2i-scores /tmp/semi/t2i_0.01
    python benchmarks/semi_captioning.py --table rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ganfuse.multimodal.captioning import attribute_scores, caption_images, train_captioner
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.semi_captioning import caption_split, export_paired_folder
from ganfuse.multimodal.splits import config_split, shapes_split

# Each term's overrides; "base" is the paired teacher forcing alone.
TERMS: dict[str, list[str]] = {
    "base": [],
    "lm": ["lm_weight=1"],
    "cycle": ["cycle_weight=1"],
    "lm+cycle": ["lm_weight=1", "cycle_weight=1"],
    "pseudo": ["pseudo_weight=1", "pseudo_threshold=0.9", "pseudo_every=100"],
    "cycle+pseudo": ["cycle_weight=1", "pseudo_weight=1", "pseudo_threshold=0.9",
                     "pseudo_every=100"],
}
NEEDS_T2I = ("cycle", "pseudo")
HELDOUT_IMAGES = 1000
SCORED = ("exact_match", "color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy")


def scores(model, images: torch.Tensor, attributes) -> dict[str, float]:
    out = attribute_scores(caption_images(model, images), attributes)
    return {k: out[k] for k in SCORED}


def run_row(fraction: float, term: str, minutes: float, t2i: str | None, steps: int | None = None) -> dict:
    """One captioner: ``steps`` optimiser steps when given (equal work per row, what a loaded
    machine can compare), else ``minutes`` of wall clock."""
    budget = [f"steps={steps}"] if steps else [f"max_minutes={minutes}", "steps=100000"]
    overrides = [f"paired_fraction={fraction}", *budget, "threads=1", "precision=fp32", *TERMS[term]]
    if any(n in term for n in NEEDS_T2I):
        if t2i is None:
            raise SystemExit(f"row {fraction} {term} needs --t2i {fraction}=RUN")
        overrides.append(f"cycle_run={t2i}")
    config = make_config("caption", None, overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = train_captioner(config, out=Path(folder) / "run", progress=False)
        record = json.loads((Path(folder) / "run" / "metrics.json").read_text())
    model = result.model
    train = config_split(config, "train")
    split = caption_split(len(train), fraction, config.data_seed)
    heldout = shapes_split("heldout", HELDOUT_IMAGES, config.data_seed, config.image_size)
    row = {"fraction": fraction, "term": term, "steps": result.steps,
           "train_seconds": round(result.train_seconds, 1),
           "test": {k: result.metrics[k] for k in SCORED},
           "heldout": scores(model, heldout.float_images(), heldout.attributes)}
    if len(split.unpaired_images):
        rows = split.unpaired_images.tolist()
        row["unpaired"] = scores(model, train.float_images()[rows],
                                 [train.attributes[i] for i in rows])
    row["unpaired_terms"] = record.get("unpaired", {})
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    return row


def t2i_scores(run_dir: str) -> dict:
    """Attribute accuracy of a text-to-image run's images of 500 seen and 500 held-out prompts
    (what ``ganfuse evaluate`` reports for a shapes run; a folder-trained run is scored here)."""
    from ganfuse.metrics.t2i import evaluate_t2i_run, format_t2i
    from ganfuse.run import load_run

    run = load_run(run_dir)
    result = evaluate_t2i_run(run, num=500, seed=0)
    print(f"{run_dir} (step {run.step})\n{format_t2i(result)}")
    return result


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| paired | terms | steps | s | test exact | test colour/shape/size/pos | "
             "held-out pairs exact | unpaired images exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["fraction"], list(TERMS).index(r["term"]))):
        t = r["test"]
        attrs = "/".join(f"{100 * t[f'{k}_accuracy']:.0f}" for k in ("color", "shape", "size",
                                                                      "position"))
        unpaired = f"{100 * r['unpaired']['exact_match']:.1f}" if "unpaired" in r else "-"
        lines.append(f"| {100 * r['fraction']:g}% | {r['term']} | {r['steps']} | "
                     f"{r['train_seconds']:.0f} | {100 * t['exact_match']:.1f} | {attrs} | "
                     f"{100 * r['heldout']['exact_match']:.1f} | {unpaired} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON lines file the rows are appended to")
    parser.add_argument("--fractions", default="0.01,0.1,1.0")
    parser.add_argument("--terms", default="base,lm,cycle,lm+cycle")
    parser.add_argument("--minutes", type=float, default=1.25, help="wall-clock budget per run")
    parser.add_argument("--steps", type=int, help="train each row for this many steps instead of --minutes")
    parser.add_argument("--t2i", action="append", default=[], metavar="F=RUN")
    parser.add_argument("--export", nargs=2, metavar=("F", "DIR"))
    parser.add_argument("--t2i-scores", metavar="RUN")
    parser.add_argument("--table", type=Path, metavar="ROWS")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.export:
        config = make_config("caption", None, [f"paired_fraction={args.export[0]}"])
        print(f"wrote {export_paired_folder(config, args.export[1])} images to {args.export[1]}")
        return
    if args.t2i_scores:
        t2i_scores(args.t2i_scores)
        return
    if args.table:
        print(table(args.table))
        return
    runs = {float(f): r for f, r in (item.split("=", 1) for item in args.t2i)}
    for fraction in (float(f) for f in args.fractions.split(",")):
        for term in args.terms.split(","):
            if fraction == 1.0 and term != "base":
                continue  # nothing is unpaired
            row = run_row(fraction, term, args.minutes, runs.get(fraction), args.steps)
            print(json.dumps(row))
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
