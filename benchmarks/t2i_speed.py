"""Generation throughput of a text-to-image run once loaded: images/s at its resolution.

    python benchmarks/t2i_speed.py RUN [--images 4096] [--batch 256 1024] [--rounds 3]
    python benchmarks/t2i_speed.py --preset shapes-t2i   # untrained weights of a preset, same cost

Timed: latents, the generator on CPU (fp32) and the copy of the images to CPU, for ``--prompts``
distinct prompts encoded once beforehand (what ``ganfuse generate`` does per prompt). Loading the
run and the text encoder is not timed. Prints one JSON line per batch size with the median of
``--rounds`` and the machine's load average, which matters on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from ganfuse.train.t2i import GRID_PROMPTS

from ganfuse.run import TextToImageRun


def preset_run(preset: str, overrides: list[str]) -> TextToImageRun:
    """A run object with a preset's untrained generator (same cost as a trained one), conditioned
    on random embeddings: measures speed without a training run or the text encoder."""
    from pathlib import Path

    from ganfuse.config import load_config
    from ganfuse.models.build import build_t2i
    from ganfuse.text.prompts import PromptEncoder, TextSpec

    config = load_config(preset, overrides)
    spec = TextSpec(config.text.encoder, 384, ["word"], config.text.max_words)
    g, _ = build_t2i(config, spec)
    g.eval()

    class RandomPrompts(PromptEncoder):
        def __call__(self, prompts):
            gen = torch.Generator().manual_seed(len(prompts))
            if spec.kind == "tokens":
                return torch.randint(1, 3, (len(prompts), 12), generator=gen)
            return torch.randn(len(prompts), spec.embed_dim, generator=gen)

    return TextToImageRun(Path(preset), config, 0, g, 0, [], {}, torch.device("cpu"), RandomPrompts(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--preset", help="time a preset's untrained generator instead of a run")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        from ganfuse.run import load_run

        run = load_run(args.run)
    elif args.preset:
        run = preset_run(args.preset, args.overrides)
    else:
        parser.error("give a RUN or --preset")
    prompts = [GRID_PROMPTS[i % len(GRID_PROMPTS)] + ("" if i < len(GRID_PROMPTS) else f" {i}")
               for i in range(args.prompts)]
    cond = run.conditions(prompts)  # encoded once, outside the timing
    run.conditions = lambda p, cond=cond: cond  # sample_batches reuses them
    per_prompt = max(1, args.images // len(prompts))
    for batch in args.batch:
        for _ in run.sample_batches(min(per_prompt, 64), batch, 0, prompts=prompts):
            pass  # warm-up
        rates = []
        for r in range(args.rounds):
            start = time.perf_counter()
            n = sum(b.shape[0] for b in run.sample_batches(per_prompt, batch, r, prompts=prompts))
            rates.append(n / (time.perf_counter() - start))
        print(json.dumps({"run": args.run or args.preset, "batch": batch, "images": n,
                          "img_per_s": round(statistics.median(rates), 1),
                          "rounds": [round(x, 1) for x in rates], "threads": torch.get_num_threads(),
                          "loadavg": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
