"""Projection benchmark: on held-out real digits, the projected image's error in the digits
classifier's features against a random sample's (target: median ratio at most 1/3).

The sklearn digits have no split, so the script makes one: the first 1497 images (written as PNG
files, read back as ``data.name=folder``) train a `digits` preset run for ``--minutes``; the last
300 are never trained on, and ``--num`` of them are projected (``ganfuse.project.project``, with the
``digits`` extractor's features as the perceptual loss). Per image it records
``feature_error / random_feature_error`` (relative feature distance of the projection, over the
median of 64 random samples'); the median ratio is printed and written to ``--out``/result.json
with a grid of real (top) vs projected (bottom) images.

    OMP_NUM_THREADS=1 python benchmarks/projection.py --minutes 3 --num 50 --out bench_out/projection
    OMP_NUM_THREADS=1 python benchmarks/projection.py --run runs/x --num 50 --out ...   # an existing run

``--data emoji --run RUN``: RUN is an emoji run trained with ``data.holdout=[Flags]`` (as
``benchmarks/fewshot_emoji.py``'s source), and the targets are the first ``--num`` Flags emoji
by a hash of their name: real emoji of a group the generator never saw, scored in the ``emoji``
extractor's features.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from ganfuse.config import load_config
from ganfuse.data.base import to_uint8, uint8_to_float
from ganfuse.data.digits import DigitsDataset
from ganfuse.project import feature_loss_for, project
from ganfuse.run import load_run
from ganfuse.run_images import grid_image
from ganfuse.train.loop import train

TRAIN = 1497  # the first TRAIN digits are the training set, the rest held out


def flag_targets() -> torch.Tensor:
    """The Flags emoji uint8 ``(N, 3, 64, 64)``, ordered by a hash of their name (as
    ``fewshot_emoji.target_split`` orders them)."""
    from fewshot_emoji import target_split

    target, others, _ = target_split()
    return torch.cat([target, others])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--run", help="an existing run trained on the first 1497 digits (else one is trained)"
    )
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--num", type=int, default=50)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", choices=("digits", "emoji"), default="digits")
    args = ap.parse_args()
    if args.data == "emoji" and not args.run:
        ap.error("--data emoji needs --run: an emoji run trained with data.holdout=[Flags]")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    digits = DigitsDataset(32).images  # (1797, 1, 32, 32) float in [-1, 1]
    run_dir = Path(args.run) if args.run else out / "run"
    if not args.run:
        folder = out / "train_images"
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(to_uint8(digits[:TRAIN])):
            Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
        config = load_config(
            "digits",
            ["data.name=folder", f"data.path={folder}", "train.precision=fp32", "train.device=cpu"],
        )
        train(config, run_dir, progress=False, max_minutes=args.minutes)
    run = load_run(run_dir)
    floss = feature_loss_for(run, args.data)
    channels = int(run.manifest["channels"])
    if args.data == "emoji":
        if "Flags" not in (run.config.data.holdout or []):
            raise SystemExit(f"{run_dir} trained on the Flags emoji; train one with data.holdout=[Flags]")
        held = uint8_to_float(flag_targets()[: args.num])
    else:
        held = digits[TRAIN:][: args.num]
    ratios, reals, fakes = [], [], []
    start = time.time()
    for i, image in enumerate(held):
        target = image.expand(channels, -1, -1).clone()
        result = project(
            run, target, steps=args.steps, restarts=args.restarts, feature_loss=floss, seed=i
        )
        ratios.append(result.feature_error / result.random_feature_error)
        reals.append(target)
        fakes.append(result.image)
        print(
            f"{i}: feature error {result.feature_error:.3f} random {result.random_feature_error:.3f} "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    shown = min(16, len(reals))
    grid_image(torch.stack(reals[:shown] + fakes[:shown]), shown, scale=2).save(
        out / "real_vs_projected.png"
    )
    summary = {
        "median_ratio": statistics.median(ratios),
        "target": 1 / 3,
        "num": len(ratios),
        "steps": args.steps,
        "restarts": args.restarts,
        "run": str(run_dir),
        "run_step": run.step,
        "seconds": round(time.time() - start, 1),
        "ratios": ratios,
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"median feature-error ratio (projected / random) over {len(ratios)} held-out {args.data}: "
        f"{summary['median_ratio']:.3f} (target <= 0.333)"
    )


if __name__ == "__main__":
    main()
