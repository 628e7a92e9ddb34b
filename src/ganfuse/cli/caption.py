"""``ganfuse caption``: describe images with a trained caption run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganfuse.cli import add_command

# ganfuse.data.scenes imports torch, which ``ganfuse --help`` must not wait for.
CAPTION_KINDS: tuple[str, ...] = ("list", "relation", "count", "single")


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "caption",
        "Write a caption for each image with a trained caption run (ganfuse fuse train --task caption).",
        "ganfuse caption runs/caption --image shape.png\n"
        "  ganfuse caption runs/scenes-caption --image scene.png --kind all\n"
        "  ganfuse caption runs/caption --cycle runs/shapes-t2i --num 200",
    )
    parser.add_argument("run", type=Path, help="caption run folder")
    parser.add_argument("--image", type=Path, action="append", help="image file, repeatable")
    parser.add_argument(
        "--kind",
        choices=(*CAPTION_KINDS, "all"),
        default=None,
        help="scenes runs: the kind of caption (default list, the full description; all: one of "
        "each kind the run was trained on)",
    )
    parser.add_argument(
        "--cycle",
        type=Path,
        metavar="T2I_RUN",
        help="instead of images: the cycle check caption(generate(prompt)) of a text-to-image run, "
        "scored against each prompt's attributes on seen and held-out prompts",
    )
    parser.add_argument("--num", type=int, default=200, help="--cycle: prompts per set")
    parser.add_argument("--seed", type=int, default=0, help="--cycle: prompt and latent seed")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per image)")
    parser.set_defaults(func=_caption)


def _caption(args: argparse.Namespace) -> int:
    import torch

    from ganfuse.errors import CheckpointError, UserError
    from ganfuse.multimodal.captioning import load_captioner
    from ganfuse.multimodal.checkpoint import read_run
    from ganfuse.multimodal.predict import load_image

    if bool(args.image) == bool(args.cycle):
        raise UserError("give either --image FILE (repeatable) or --cycle T2I_RUN")
    record = read_run(args.run)
    if record.kind != "caption":
        raise CheckpointError(
            f"{args.run} is a {record.kind!r} run; ganfuse caption needs a caption run"
        )
    if args.cycle:
        if record.config.world != "shapes":
            raise UserError(
                f"--cycle checks shapes text-to-image runs; {args.run} is a "
                f"{record.config.world} caption run"
            )
        if args.kind is not None:
            raise UserError("--kind applies to --image, not to --cycle")
        return _cycle(args, record)
    cfg = record.config
    images = torch.cat([load_image(path, cfg.image_size, cfg.background, cfg.fit) for path in args.image])
    captioner = load_captioner(record.path)
    if args.kind is not None and not captioner.kinds:
        raise UserError(f"{args.run} writes one kind of caption (a shapes run); leave out --kind")
    kinds = (
        list(captioner.kinds)
        if args.kind == "all"
        else [args.kind if args.kind is not None else captioner.default_kind]
    )
    rows = []  # (path, kind, caption), image by image
    by_kind = {kind: captioner.caption(images, kind=kind) for kind in kinds}
    for index, path in enumerate(args.image):
        rows += [(path, kind, by_kind[kind][index]) for kind in kinds]
    several = len(args.image) > 1
    for path, kind, caption in rows:
        if args.json:
            print(json.dumps({"image": str(path), "kind": kind, "caption": caption}))
            continue
        label = ", ".join([str(path)] * several + [kind] * (len(kinds) > 1))
        print(f"{label}: {caption}" if label else caption)
    return 0


def _cycle(args: argparse.Namespace, record) -> int:
    """caption(generate(prompt)) for real captions of seen and held-out colour-shape pairs."""
    from ganfuse.errors import UserError
    from ganfuse.metrics.t2i import parse_holdout, shapes_prompt_sets
    from ganfuse.multimodal.captioning import cycle_accuracy, load_captioner
    from ganfuse.run import load_run

    if args.num < 2:
        raise UserError(f"--num must be at least 2, got {args.num}")
    run = load_run(args.cycle)
    if not hasattr(run, "prompt_encoder"):
        raise UserError(f"{args.cycle} is not a text-to-image run (model.arch t2i-*)")
    captioner = load_captioner(record.path)
    holdout = parse_holdout(run.config.data.holdout)
    sets = shapes_prompt_sets(
        args.num, args.seed, run.config.data.image_size, **({"holdout": holdout} if holdout else {})
    )
    result = {
        name: cycle_accuracy(
            lambda prompts: run.sample(1, seed=args.seed, prompts=prompts),
            captioner,
            prompt_set.prompts,
        )
        for name, prompt_set in sets.items()
    }
    if args.json:
        print(
            json.dumps(
                {
                    "caption_run": str(args.run),
                    "t2i_run": str(args.cycle),
                    "step": run.step,
                    "num_per_set": args.num,
                    "sets": result,
                },
                indent=2,
            )
        )
        return 0
    keys = ("color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy", "exact_match")
    print(
        f"cycle check: caption(generate(prompt)) of {args.cycle} (step {run.step}), {args.num} prompts per set"
    )
    print("set       " + " ".join(f"{k.replace('_accuracy', ''):>11}" for k in keys))
    for name, row in result.items():
        print(f"{name:<9} " + " ".join(f"{100 * row[k]:11.1f}" for k in keys))
    return 0
