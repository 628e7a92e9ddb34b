"""``ganfuse sample``: write images from a run's latest checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.errors import UserError


def register(subparsers) -> None:
    p = add_command(subparsers, "sample", "Write N generated images (and optionally a grid) from a run.",
                    "ganfuse sample runs/digits --num 64 --out samples/ --grid grid.png")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="class_label", type=int, help="class index, for class-conditional runs")
    p.add_argument("--grid", help="also write all images as one grid PNG")
    p.add_argument("--truncation", type=float, help="clamp latents to [-t, t]")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import save_image

    from ganfuse.run import load_run

    if args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    gan = load_run(args.run, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_images = []
    index = 0
    for batch in gan.sample_batches(args.num, seed=args.seed, class_label=args.class_label,
                                    truncation=args.truncation):
        for image in batch:
            save_image(image, out / f"{index:05d}.png", normalize=True, value_range=(-1, 1))
            index += 1
        if args.grid and sum(len(b) for b in grid_images) < 1024:  # a grid beyond 32x32 images is unreadable
            grid_images.append(batch)
    if args.grid:
        images = torch.cat(grid_images)[:1024]
        save_image(images, args.grid, nrow=max(1, int(len(images) ** 0.5)), normalize=True, value_range=(-1, 1))
    print(f"wrote {index} images to {out} (step {gan.step})" + (f" and a grid to {args.grid}" if args.grid else ""))
    return 0
