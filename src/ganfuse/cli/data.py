"""``ganfuse data``: export embedded datasets as image files, pack datasets into tar shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import (
    MAX_EXPORT_IMAGES,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    check_count,
    check_image_size,
    check_output_dir,
    check_seed,
)

EXPORTABLE = ("digits", "shapes")
DIGITS_IMAGES = 1797  # scikit-learn's digits


def register(subparsers) -> None:
    p = add_command(subparsers, "data", "Work with datasets.", "ganfuse data export digits --num 100 --out digits/")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    e = add_command(sub, "export", "Write N real images of a dataset as PNGs plus labels.jsonl or captions.jsonl.",
                    "ganfuse data export shapes --num 500 --out shapes/")
    e.add_argument("name", choices=(*EXPORTABLE, "scenes"), help="dataset (scenes: --image-size 32 or 64)")
    e.add_argument("--num", type=int, required=True, help=f"1 to {MAX_EXPORT_IMAGES} (digits: at most 1797)")
    e.add_argument("--out", required=True, help="folder for the PNG files")
    e.add_argument("--seed", type=int, default=0, help="0 to 2**32-1")
    e.add_argument("--image-size", type=int, default=32, help=f"side in pixels, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    e.set_defaults(func=export)
    k = add_command(sub, "pack", "Write WebDataset tar shards (image .png, caption .txt, label .cls) plus a "
                    "shards.json index, for training with --set data.name=shards --set data.path=DIR.",
                    "ganfuse data pack shapes --out shards/shapes --shard-size 1000")
    k.add_argument("source", help=f"an embedded dataset ({', '.join(EXPORTABLE)}) or an image folder (class = "
                   "sub-folder; captions.jsonl or captions.csv optional); write ./NAME for a folder named like a dataset")
    k.add_argument("--out", required=True, help="empty folder for the shards")
    k.add_argument("--shard-size", type=int, default=1000, help=f"samples per shard, 1 to {MAX_EXPORT_IMAGES}")
    k.add_argument("--image-size", type=int,
                   help=f"side of the stored square images, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}; "
                   "unset: 32 for embedded datasets, each image's own side for folders")
    k.add_argument("--num", type=int, help=f"embedded datasets: number of samples, 1 to {MAX_EXPORT_IMAGES}; "
                   "unset: all 1797 digits, 10000 shapes")
    k.add_argument("--seed", type=int, default=0, help="seed of the sample order (and of the shapes generated)")
    k.set_defaults(func=pack)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def export(args: argparse.Namespace) -> int:
    num = check_count("--num", args.num, DIGITS_IMAGES if args.name == "digits" else MAX_EXPORT_IMAGES)
    seed, image_size = check_seed(args.seed), check_image_size(args.image_size)
    out = check_output_dir(args.out)
    try:
        return _export(args.name, num, out, seed, image_size)
    except OSError as exc:  # the disk filled up or went away while writing
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None


def _export(name: str, num: int, out: Path, seed: int, image_size: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    if name == "scenes":
        from ganfuse.data.scenes import export_scenes

        written = export_scenes(num, out, seed=seed, image_size=image_size)
        print(f"wrote {written} images and scenes.jsonl to {out}")
        return 0
    if name == "shapes":
        from ganfuse.data.shapes import export_shapes

        written = export_shapes(num, out, seed=seed, image_size=image_size)
        print(f"wrote {written} images and captions.jsonl to {out}")
        return 0
    from torchvision.utils import save_image

    from ganfuse.data.digits import DigitsDataset

    ds = DigitsDataset(image_size)
    with open(out / "labels.jsonl", "w", encoding="utf-8") as f:
        for i in range(num):
            image, label = ds[i]
            file = f"{i:05d}.png"
            save_image(image, out / file, normalize=True, value_range=(-1, 1))
            f.write(json.dumps({"file": file, "label": label, "class": ds.class_names[label]}) + "\n")
    print(f"wrote {num} images and labels.jsonl to {out}")
    return 0


def pack(args: argparse.Namespace) -> int:
    shard_size = check_count("--shard-size", args.shard_size, MAX_EXPORT_IMAGES)
    image_size = None if args.image_size is None else check_image_size(args.image_size)
    seed = check_seed(args.seed)
    if args.source not in EXPORTABLE and args.num is not None:
        raise UserError("--num applies to embedded datasets only; a folder is packed whole")
    num = None if args.num is None else check_count("--num", args.num, MAX_EXPORT_IMAGES)
    out = check_output_dir(args.out)

    from ganfuse.data import pack as packing

    if args.source in EXPORTABLE:
        packer = packing.pack_digits if args.source == "digits" else packing.pack_shapes
        summary = packer(out, shard_size, image_size or 32, num, seed)
    else:
        summary = packing.pack_folder(args.source, out, shard_size, image_size, seed)
    print(f"wrote {summary.samples} samples in {summary.shards} shard(s) to {summary.out}"
          + (f" (skipped {summary.skipped})" if summary.skipped else ""))
    return 0
