"""``ganfuse caption``: describe images with a trained caption run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganfuse.cli import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "caption",
        "Write a caption for each image with a trained caption run (ganfuse fuse train --task caption).",
        "ganfuse caption runs/caption --image shape.png",
    )
    parser.add_argument("run", type=Path, help="caption run folder")
    parser.add_argument(
        "--image", required=True, type=Path, action="append", help="image file, repeatable"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.set_defaults(func=_caption)


def _caption(args: argparse.Namespace) -> int:
    import torch

    from ganfuse.errors import CheckpointError
    from ganfuse.multimodal.captioning import load_captioner
    from ganfuse.multimodal.checkpoint import read_run
    from ganfuse.multimodal.predict import load_image

    record = read_run(args.run)
    if record.kind != "caption":
        raise CheckpointError(
            f"{args.run} is a {record.kind!r} run; ganfuse caption needs a caption run"
        )
    images = torch.cat([load_image(path, record.config.image_size) for path in args.image])
    captions = load_captioner(record.path).caption(images)
    for path, caption in zip(args.image, captions, strict=True):
        if args.json:
            print(json.dumps({"image": str(path), "caption": caption}))
        else:
            print(caption if len(args.image) == 1 else f"{path}: {caption}")
    return 0
