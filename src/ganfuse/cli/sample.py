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
    check_psi,
    check_seed,
    check_truncation,
)

GRID_LIMIT = 1024  # a grid beyond 32x32 images is unreadable
WALK_FRAMES = 32
MAX_FRAMES = 2000  # all frames of a walk are held in memory before they are written
ANIMATION_SUFFIXES = (".gif", ".mp4")  # as ganfuse.run_images.ANIMATION_SUFFIXES (that imports torch)


def register(subparsers) -> None:
    p = add_command(subparsers, "sample", "Write N generated images (and optionally a grid) from a run.",
                    "ganfuse sample runs/digits --num 64 --out samples/ --grid grid.png\n"
                    "  ganfuse sample runs/digits --interpolate --num 48 --psi 0.7 --out walk.gif")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--num", type=int, help=f"number of images, 1 to {MAX_IMAGES} (required); "
                   f"with --interpolate the number of frames (default {WALK_FRAMES})")
    p.add_argument("--out", required=True, help="folder for the PNG files; with --interpolate the "
                   "animation file (.gif, or .mp4 where imageio-ffmpeg is installed)")
    p.add_argument("--seed", type=int, default=0, help="0 to 2**32-1")
    p.add_argument("--class", dest="class_label", type=int, help="class index, for class-conditional runs")
    p.add_argument("--grid", help=f"also write the first {GRID_LIMIT} images as one grid ({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --grid file")
    p.add_argument("--truncation", type=float, help="clamp latents to [-t, t], t > 0")
    p.add_argument("--psi", type=float, help="truncation psi from 0 (the mean image) to 1 (no "
                   "truncation): latents are pulled towards the mean latent, z' = psi * z")
    p.add_argument("--interpolate", action="store_true", help="write a looping latent walk as an "
                   "animation to --out instead of PNG files")
    p.add_argument("--keyframes", type=int, default=4, help="latents the walk passes through (2 to 64)")
    p.add_argument("--fps", type=float, default=12.0, help="frames per second of the animation")
    p.add_argument("--prompt", metavar="TEXT", help="the prompt held fixed along the walk "
                   "(text-to-image runs, with --interpolate)")
    p.add_argument("--latent", metavar="FILE", help="render the latents of a latent file (from ganfuse "
                   "project) as PNG files in --out (a folder, or one .png file for one latent)")
    p.add_argument("--latents", nargs=2, metavar=("A", "B"), help="with --interpolate: walk from latent "
                   "file A to latent file B and back (--num frames)")
    p.add_argument("--device", default="cpu", help="auto, cpu, mps, cuda or cuda:N")
    p.set_defaults(func=run)


def walk(args: argparse.Namespace) -> int:
    """``--interpolate``: a looping latent walk written as a GIF or MP4."""
    frames = WALK_FRAMES if args.num is None else check_count("--num", args.num, MAX_FRAMES, minimum=2)
    keyframes = check_count("--keyframes", args.keyframes, 64, minimum=2)
    out = check_output_file(args.out, ANIMATION_SUFFIXES, name="--out", overwrite=args.overwrite)
    if not (0 < args.fps <= 60):
        raise UserError(f"--fps must be a number > 0 and at most 60, got {args.fps:g}")
    if args.grid:
        raise UserError("--grid does not apply with --interpolate")
    seed, psi, truncation = check_seed(args.seed), check_psi(args.psi), check_truncation(args.truncation)
    device = check_device(args.device)

    from ganfuse.run import TextToImageRun, load_run
    from ganfuse.run_images import from_latents, mp4_writer_available, walk_latents, write_animation

    if out.suffix.lower() == ".mp4" and not mp4_writer_available():
        raise UserError(f"no MP4 writer installed for {out} (pip install imageio imageio-ffmpeg); "
                        "write a .gif instead")
    gan = load_run(args.run, device=device)
    if isinstance(gan, TextToImageRun) and not args.prompt and not args.latents:
        raise UserError(f"the run in {args.run} is text-to-image: give the walk a --prompt TEXT")
    if args.prompt and not isinstance(gan, TextToImageRun):
        raise UserError(f"--prompt applies to text-to-image runs; the run in {args.run} is not one")
    if args.latents:
        from ganfuse.project import load_latent, walk_between

        a, b = (load_latent(f, gan.z_dim) for f in args.latents)
        if (a.class_label, a.prompt) != (b.class_label, b.prompt) and args.class_label is None and not args.prompt:
            raise UserError("the two latents go with different classes or prompts; choose one with --class or --prompt")
        args.class_label = a.class_label if args.class_label is None else args.class_label
        args.prompt = args.prompt or a.prompt
        z = walk_between(a.z[0], b.z[0], frames)
    else:
        z = walk_latents(gan.z_dim, frames, seed, keyframes, psi)
    if truncation is not None:
        z = z.clamp(-truncation, truncation)
    images = from_latents(gan, z, args.class_label, args.prompt)
    try:
        written = write_animation(images, out, fps=args.fps)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote a {written}-frame latent walk through {keyframes} latents to {out} (step {gan.step})")
    return 0


def render_latent(args: argparse.Namespace) -> int:
    """``--latent FILE``: the images of saved latents (``ganfuse project``'s latent.safetensors)."""
    if args.grid or args.num is not None:
        raise UserError("--latent renders the file's latents: leave out --num and --grid")
    device = check_device(args.device)
    single = str(args.out).lower().endswith(".png")
    out = check_output_file(args.out, (".png",), name="--out", overwrite=args.overwrite) if single \
        else check_output_dir(args.out)

    from ganfuse.project import load_latent
    from ganfuse.run import TextToImageRun, load_run
    from ganfuse.run_images import from_latents, grid_image

    gan = load_run(args.run, device=device)
    latent = load_latent(args.latent, gan.z_dim)
    label = latent.class_label if args.class_label is None else args.class_label
    prompt = args.prompt or latent.prompt
    if isinstance(gan, TextToImageRun) and not prompt:
        raise UserError(f"the run in {args.run} is text-to-image: give the latent's caption with --prompt TEXT")
    if prompt and not isinstance(gan, TextToImageRun):
        raise UserError(f"--prompt applies to text-to-image runs; the run in {args.run} is not one")
    if single and len(latent.z) != 1:
        raise UserError(f"{args.latent} holds {len(latent.z)} latents; give --out a folder")
    images = from_latents(gan, latent.z, label, prompt)
    try:
        if single:
            grid_image(images, 1, scale=1, padding=0).save(out)
        else:
            out.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                grid_image(image[None], 1, scale=1, padding=0).save(out / f"{i:05d}.png")
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    print(f"wrote {len(images)} image(s) from {args.latent} to {out} (step {gan.step})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.latents and not args.interpolate:
        raise UserError("--latents A B is for --interpolate; to render one latent file use --latent FILE")
    if args.latent:
        if args.interpolate:
            raise UserError("--latent renders a latent file; for a walk between two use --interpolate --latents A B")
        return render_latent(args)
    if args.interpolate:
        return walk(args)
    if args.prompt:
        raise UserError("--prompt applies to --interpolate; for images from prompts use ganfuse generate")
    if args.num is None:
        raise UserError(f"--num is required: a whole number from 1 to {MAX_IMAGES}")
    num = check_count("--num", args.num, MAX_IMAGES)
    seed = check_seed(args.seed)
    truncation = check_truncation(args.truncation)
    psi = check_psi(args.psi)
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
        for batch in gan.sample_batches(num, seed=seed, class_label=args.class_label, truncation=truncation,
                                        psi=psi):
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
