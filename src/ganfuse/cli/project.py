"""``ganfuse project``: find the latent whose generated image reproduces a real image."""

from __future__ import annotations

import argparse
import json

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import check_count, check_device, check_output_dir, check_seed

MAX_STEPS = 100_000  # as ganfuse.project.MAX_STEPS (that module imports torch)
MAX_RESTARTS = 256


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "project",
        "Project a real image into a run's latent space: writes the projected image, the "
        "latent (safetensors), a progress strip and the losses.",
        "ganfuse project runs/digits --image seven.png --out proj/ --steps 300 --restarts 4",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--image", required=True, help="the real image (png, jpg, webp, bmp)")
    p.add_argument(
        "--out",
        required=True,
        help="folder for projected.png, comparison.png (real | "
        "projected), latent.safetensors, progress.png and projection.json",
    )
    p.add_argument("--steps", type=int, default=300, help=f"Adam steps, 1 to {MAX_STEPS}")
    p.add_argument(
        "--restarts", type=int, default=4, help=f"random starts, the best kept, 1 to {MAX_RESTARTS}"
    )
    p.add_argument(
        "--class",
        dest="class_label",
        type=int,
        help="class-conditional runs: the class to project with (default: every class is tried)",
    )
    p.add_argument(
        "--prompt",
        metavar="TEXT",
        help="text-to-image runs: the caption to project with (required)",
    )
    p.add_argument("--seed", type=int, default=0, help="0 to 2**32-1")
    p.add_argument("--device", default="cpu", help="auto, cpu, mps, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    steps = check_count("--steps", args.steps, MAX_STEPS)
    restarts = check_count("--restarts", args.restarts, MAX_RESTARTS)
    seed, device = check_seed(args.seed), check_device(args.device)
    out = check_output_dir(args.out)

    from ganfuse.data.base import uint8_to_float
    from ganfuse.data.images import UnreadableImage, read_image
    from ganfuse.project import project, save_latent
    from ganfuse.run import load_run
    from ganfuse.run_images import grid_image

    gan = load_run(args.run, device=device)
    channels, size = int(gan.manifest.get("channels", 3)), gan.config.data.image_size
    try:
        import torch

        target = uint8_to_float(torch.from_numpy(read_image(args.image, size, channels).copy()))
    except UnreadableImage as exc:
        raise UserError(f"cannot read --image {args.image}: {exc}") from None
    result = project(
        gan,
        target,
        steps=steps,
        restarts=restarts,
        class_label=args.class_label,
        prompt=args.prompt,
        seed=seed,
    )
    summary = {
        "image": str(args.image),
        "run": str(args.run),
        "run_step": gan.step,
        **result.summary(),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        grid_image(result.image[None], 1, scale=1, padding=0).save(out / "projected.png")
        grid_image(torch.stack([target, result.image]), 2, scale=4).save(out / "comparison.png")
        grid_image(
            torch.cat([result.progress, target[None]]), len(result.progress) + 1, scale=3
        ).save(out / "progress.png")
        save_latent(
            out / "latent.safetensors",
            gan,
            result.z,
            result.class_label,
            result.prompt,
            {"feature_error": result.feature_error, "image": str(args.image)},
        )
        (out / "projection.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    fe = (
        ""
        if result.feature_error is None
        else (
            f"; feature error {result.feature_error:.3f} vs {result.random_feature_error:.3f} for a random sample"
        )
    )
    print(f"projected {args.image} into {out} (pixel MSE {result.pixel_mse:.4f}{fe})")
    return 0
