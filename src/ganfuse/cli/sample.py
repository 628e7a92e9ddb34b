"""``ganfuse sample``: write images from a run's latest checkpoint."""

from __future__ import annotations

import argparse

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import (
    IMAGE_SUFFIXES,
    MAX_IMAGES,
    check_count,
    check_device,
    check_output_dir,
    check_output_file,
    check_seed,
    check_truncation,
)

GRID_LIMIT = 1024  # a grid beyond 32x32 images is unreadable


def register(subparsers) -> None:
    p = add_command(subparsers, "sample", "Write N generated images (and optionally a grid) from a run.",
                    "ganfuse sample runs/digits --num 64 --out samples/ --grid grid.png")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--num", type=int, required=True, help=f"number of images, 1 to {MAX_IMAGES}")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--seed", type=int, default=0, help="0 to 2**32-1")
    p.add_argument("--class", dest="class_label", type=int, help="class index, for class-conditional runs")
    p.add_argument("--grid", help=f"also write the first {GRID_LIMIT} images as one grid ({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --grid file")
    p.add_argument("--truncation", type=float, help="clamp latents to [-t, t], t > 0")
    p.add_argument("--device", default="cpu", help="auto, cpu, mps, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    num = check_count("--num", args.num, MAX_IMAGES)
    seed = check_seed(args.seed)
    truncation = check_truncation(args.truncation)
    out = check_output_dir(args.out)
    grid = check_output_file(args.grid, overwrite=args.overwrite) if args.grid else None
    device = check_device(args.device)

    import torch
    from torchvision.utils import save_image

    from ganfuse.run import load_run

    gan = load_run(args.run, device=device)
    grid_images = []
    index = 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        for batch in gan.sample_batches(num, seed=seed, class_label=args.class_label, truncation=truncation):
            for image in batch:
                save_image(image, out / f"{index:05d}.png", normalize=True, value_range=(-1, 1))
                index += 1
            if grid and sum(len(b) for b in grid_images) < GRID_LIMIT:
                grid_images.append(batch)
        if grid:
            images = torch.cat(grid_images)[:GRID_LIMIT]
            save_image(images, grid, nrow=max(1, int(len(images) ** 0.5)), normalize=True, value_range=(-1, 1))
    except OSError as exc:  # the disk filled up or went away while writing
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    print(f"wrote {index} images to {out} (step {gan.step})" + (f" and a grid to {grid}" if grid else ""))
    return 0
