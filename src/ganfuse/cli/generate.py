"""``ganfuse generate``: images from prompts with a text-to-image run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.errors import UserError


def register(subparsers) -> None:
    p = add_command(subparsers, "generate", "Write N images per prompt from a text-to-image run.",
                    "ganfuse generate runs/shapes-t2i --prompt 'a large red circle in the center' --num 8 --out out/")
    p.add_argument("run", metavar="RUN", help="run directory of a text-to-image run (model.arch t2i-*)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="what to draw (repeatable)")
    p.add_argument("--prompts-file", metavar="F", help="UTF-8 text file, one prompt per line")
    p.add_argument("--num", type=int, required=True, help="images per prompt")
    p.add_argument("--out", required=True, help="folder for the PNG files and prompts.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", help="also write all images as one grid PNG, a row per prompt")
    p.add_argument("--truncation", type=float, help="clamp latents to [-t, t]")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image

    from ganfuse.generate import generate, read_prompts_file
    from ganfuse.run import load_run

    if args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    prompts = list(args.prompt) + (read_prompts_file(args.prompts_file) if args.prompts_file else [])
    if not prompts:
        raise UserError("give at least one --prompt TEXT or a --prompts-file")
    gan = load_run(args.run, device=args.device)
    images = generate(gan, prompts, args.num, seed=args.seed, truncation=args.truncation)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    with open(out / "prompts.jsonl", "w", encoding="utf-8") as index:
        for i, image in enumerate(images):
            file = f"{i:0{width}d}.png"
            save_image(image, out / file, normalize=True, value_range=(-1, 1))
            record = {"file": file, "prompt": prompts[i // args.num], "sample": i % args.num, "seed": args.seed}
            index.write(json.dumps(record, ensure_ascii=False) + "\n")
    if args.grid:
        save_image(images[:1024], args.grid, nrow=min(args.num, 32), normalize=True, value_range=(-1, 1))
    print(f"wrote {len(images)} images for {len(prompts)} prompt(s) to {out} (step {gan.step})"
          + (f" and a grid to {args.grid}" if args.grid else ""))
    return 0
