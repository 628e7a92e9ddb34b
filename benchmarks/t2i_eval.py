"""Text-to-image evaluation of a run on ``shapes``: attribute accuracy of generated images against
their prompts, for seen and held-out colour-shape pairs, and FD in the attribute classifier's
features; optionally a grid of prompts x samples.

    python benchmarks/t2i_eval.py RUN [--num 500] [--seed 0] [--json out.json] [--grid grid.png]

Prints the table and one JSON line ``{"run", "step", "num", "seen": {...}, "heldout": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import time

from torchvision.utils import save_image

from ganfuse.generate import generate
from ganfuse.metrics.t2i import evaluate_t2i_run, format_t2i
from ganfuse.run import load_run
from ganfuse.train.objectives import GRID_PROMPTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--num", type=int, default=500, help="prompts per set (seen, held-out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--grid", help="write a grid PNG: a row per prompt of GRID_PROMPTS")
    parser.add_argument("--grid-samples", type=int, default=10)
    args = parser.parse_args()

    run = load_run(args.run)
    start = time.perf_counter()
    result = evaluate_t2i_run(run, args.num, args.seed)
    print(format_t2i(result))
    record = {"run": args.run, "step": run.step, "num": args.num, "seconds": round(time.perf_counter() - start, 1),
              **result}
    print(json.dumps(record))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
    if args.grid:
        images = generate(run, list(GRID_PROMPTS), args.grid_samples, seed=args.seed)
        save_image(images, args.grid, nrow=args.grid_samples, normalize=True, value_range=(-1, 1), padding=1)
        print(f"grid: {args.grid} (rows: {'; '.join(GRID_PROMPTS)})")


if __name__ == "__main__":
    main()
