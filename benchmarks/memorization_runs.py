"""The memorisation audit on trained runs: a run made to copy 50 digits against a normal one.

    python benchmarks/memorization_runs.py --preset digits-dcgan --steps 2000 --out runs/mem [--threads 2]

The real digits are split once (a fixed permutation): 1000 training images, 400 held out. Two runs
of ``--preset`` (default ``digits-dcgan``, the founding document's recipe: no augmentation, nothing
against memorising) train the same number of steps from folders of PNGs: ``overfit`` on the first
50 of the 1000 only (a batch holds all 50: 2000 steps show each image 2000 times, the run is made to
copy), ``normal`` on all 1000.
Each is then audited as ``ganfuse evaluate RUN --metrics memorization`` does (1000 samples of its
sampling generator, the shipped digits classifier's features), against its own training images,
with the same 400 held-out digits as the reference: the share of samples closer to a training
image than real held-out digits are (``closer_share``), the share of near-copies, and the median
distance ratio. One JSON line per run. The folder datasets are RGB; the samples are averaged to
grey for the digits classifier (the three channels of a grey training image are equal). Each
run's closest pairs (its samples above their nearest training images) go to RUN/memorization.png,
as ``ganfuse evaluate`` writes them.

``--recipe copy`` adds ``COPY_RECIPE`` (before any ``--set``): the ``digits`` preset made to copy
fast, as ``tests/metrics/test_memorization_trained.py`` trains it (keep the two alike): a 2-d
latent, G 64 and D 16 channels wide, G's lr 2e-3 and D's 1e-3, a batch of 50, fp32. ``--seed``
sets ``train.seed`` of both runs.

    python benchmarks/memorization_runs.py --preset digits --recipe copy --steps 2500 --num 500 \
        --threads 1 --seed 0 --out runs/mem-copy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from ganfuse.config import load_config
from ganfuse.data.digits import load_digits_tensors
from ganfuse.metrics import get_extractor, to_uint8
from ganfuse.metrics.memorization import MEMORIZATION_PICTURE, audit_images, closest_pairs
from ganfuse.run import load_run
from ganfuse.run_images import grid_image
from ganfuse.train.loop import train

COPY_RECIPE = ["model.z_dim=2", "model.g_width=64", "model.d_width=16", "train.batch_size=50",
               "train.lr_g=2e-3", "train.lr_d=1e-3", "train.precision=fp32"]


def split() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 digits (N, 1, 32, 32): the 1000 training and the 400 held-out ones."""
    images, _ = load_digits_tensors()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    images = to_uint8(images)
    return images[perm[:1000]], images[perm[1000:1400]]


def write_folder(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i:04d}.png")
    return folder


def audit(run_dir: Path, train_images: torch.Tensor, heldout: torch.Tensor, num: int) -> dict:
    run = load_run(run_dir)
    samples = to_uint8(run.sample(num, seed=123)).float().mean(1, keepdim=True).round().to(torch.uint8)
    result = audit_images(samples, train_images, get_extractor("digits"), heldout=heldout)
    grid_image(closest_pairs(samples, train_images, result), ncol=len(result.pairs), scale=3).save(
        run_dir / MEMORIZATION_PICTURE)
    copied = result.nearest[result.ratios < result.near_copy]  # the training images near-copied
    return {"step": run.step, "closer_share": round(result.closer_share, 4),
            "near_copy_share": round(result.near_copy_share, 4), "median_ratio": round(result.median_ratio, 3),
            "heldout_near_copy_share": round(result.heldout_near_copy_share, 4),
            "images_near_copied": len(set(copied.tolist()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits-dcgan")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for both runs")
    parser.add_argument("--num", type=int, default=1000, help="samples audited per run")
    parser.add_argument("--recipe", choices=("preset", "copy"), default="preset",
                        help="copy: add COPY_RECIPE to the preset (see above)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of both runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train_images, heldout = split()
    for name, images in (("overfit", train_images[:50]), ("normal", train_images)):
        folder = write_folder(images, out / f"{name}-data")
        recipe = COPY_RECIPE if args.recipe == "copy" else []
        config = load_config(args.preset, ["data.name=folder", f"data.path={folder}", "data.use_labels=false",
                                           f"train.steps={args.steps}", f"train.seed={args.seed}", *recipe,
                                           *args.overrides])
        start = time.perf_counter()
        train(config, out / name, progress=False)
        seconds = round(time.perf_counter() - start, 1)
        print(json.dumps({"run": name, "preset": args.preset, "recipe": args.recipe, "seed": args.seed,
                          "train_images": len(images), "train_seconds": seconds,
                          **audit(out / name, images, heldout, args.num)}), flush=True)


if __name__ == "__main__":
    main()
