"""``ganfuse generate``: images from prompts with a text-to-image run."""

from __future__ import annotations

import argparse
import json

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import (
    IMAGE_SUFFIXES,
    MAX_IMAGES,
    check_count,
    check_device,
    check_output_dir,
    check_output_file,
    check_psi,
    check_seed,
    check_truncation,
)

GRID_LIMIT = 1024  # a grid beyond 32x32 images is unreadable
DEFAULT_CANDIDATES = 8  # --rerank: candidates per image
MAX_CANDIDATES = 64


def register(subparsers) -> None:
    p = add_command(subparsers, "generate", "Write N images per prompt from a text-to-image run.",
                    "ganfuse generate runs/shapes-t2i --prompt 'a large red circle in the center' --num 8 --out out/")
    p.add_argument("run", metavar="RUN", help="run directory of a text-to-image run (model.arch t2i-*)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="what to draw (repeatable)")
    p.add_argument("--prompts-file", metavar="F", help="UTF-8 text file, one prompt per line")
    p.add_argument("--num", type=int, required=True,
                   help=f"images per prompt; at most {MAX_IMAGES} images in all")
    p.add_argument("--out", required=True, help="folder for the PNG files and prompts.jsonl")
    p.add_argument("--seed", type=int, default=0, help="0 to 2**32-1")
    p.add_argument("--grid", help=f"also write the first {GRID_LIMIT} images as one grid, a row per prompt "
                   f"({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --grid file")
    p.add_argument("--truncation", type=float, help="clamp latents to [-t, t], t > 0")
    p.add_argument("--psi", type=float, help="truncation psi from 0 (the mean image of each prompt) "
                   "to 1 (no truncation): latents are pulled towards the mean latent, z' = psi * z")
    add_rerank_arguments(p)
    p.add_argument("--device", default="cpu", help="auto, cpu, mps, cuda or cuda:N")
    p.set_defaults(func=run)


def add_rerank_arguments(p: argparse.ArgumentParser) -> None:
    """``--rerank JUDGE --candidates K`` (generate and evaluate)."""
    p.add_argument("--rerank", metavar="JUDGE", help="a matching or zeroshot run (ganfuse fuse train) on the "
                   "generator's data: each image is the best of --candidates drawn for it, as the judge reads them")
    p.add_argument("--candidates", type=int, help=f"candidates per image with --rerank (default "
                   f"{DEFAULT_CANDIDATES}, at most {MAX_CANDIDATES})")


def rerank_settings(args: argparse.Namespace) -> int | None:
    """The candidates per image asked for, or None without --rerank (checked before any loading)."""
    if args.rerank is None:
        if args.candidates is not None:
            raise UserError("--candidates needs --rerank JUDGE (the run that picks the best candidate)")
        return None
    return check_count("--candidates", DEFAULT_CANDIDATES if args.candidates is None else args.candidates,
                       MAX_CANDIDATES)


def reranked(gan, args: argparse.Namespace, candidates: int | None):
    """The run as it samples with ``--rerank``: each image the best of its candidates."""
    if candidates is None:
        return gan
    from ganfuse.generate import RerankedRun
    from ganfuse.multimodal.scoring import load_scorer

    return RerankedRun(gan, load_scorer(args.rerank), candidates)


def run(args: argparse.Namespace) -> int:
    num = check_count("--num", args.num, MAX_IMAGES)
    seed = check_seed(args.seed)
    truncation = check_truncation(args.truncation)
    psi = check_psi(args.psi)
    out = check_output_dir(args.out)
    grid = check_output_file(args.grid, overwrite=args.overwrite) if args.grid else None
    device = check_device(args.device)
    candidates = rerank_settings(args)

    import torch
    from torchvision.utils import save_image

    from ganfuse.generate import generate, read_prompts_file
    from ganfuse.run import TextToImageRun, load_run

    prompts = list(args.prompt) + (read_prompts_file(args.prompts_file) if args.prompts_file else [])
    if not prompts:
        raise UserError("give at least one --prompt TEXT or a --prompts-file")
    if num * len(prompts) > MAX_IMAGES:
        raise UserError(f"--num {num} for {len(prompts)} prompts is {num * len(prompts)} images; "
                        f"generate at most {MAX_IMAGES} per call")
    gan = load_run(args.run, device=device)
    if not isinstance(gan, TextToImageRun):
        generate(gan, prompts, num)  # refuses the run, saying which command samples it
    gan = reranked(gan, args, candidates)
    width = max(5, len(str(num * len(prompts) - 1)))
    grid_images, i = [], 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "prompts.jsonl", "w", encoding="utf-8") as index:
            # streamed batch by batch: the same images as generate(), never all of them in memory
            for batch in gan.sample_batches(num, seed=seed, truncation=truncation, prompts=prompts, psi=psi):
                for image in batch:
                    file = f"{i:0{width}d}.png"
                    save_image(image, out / file, normalize=True, value_range=(-1, 1))
                    record = {"file": file, "prompt": prompts[i // num], "sample": i % num, "seed": seed}
                    if candidates:
                        record.update(rerank=args.rerank, candidates=candidates)
                    index.write(json.dumps(record, ensure_ascii=False) + "\n")
                    i += 1
                if grid and sum(len(b) for b in grid_images) < GRID_LIMIT:
                    grid_images.append(batch)
        if grid:
            images = torch.cat(grid_images)[:GRID_LIMIT]
            save_image(images, grid, nrow=min(num, 32), normalize=True, value_range=(-1, 1))
    except OSError as exc:  # the disk filled up or went away while writing
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    print(f"wrote {i} images for {len(prompts)} prompt(s) to {out} (step {gan.step})"
          + (f" and a grid to {grid}" if grid else "")
          + (f", each the best of {candidates} by {args.rerank}" if candidates else ""))
    return 0
