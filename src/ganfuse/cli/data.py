"""``ganfuse data``: export embedded datasets as image files, pack datasets into tar shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.errors import UserError

EXPORTABLE = ("digits", "shapes")


def register(subparsers) -> None:
    p = add_command(subparsers, "data", "Work with datasets.", "ganfuse data export digits --num 100 --out digits/")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    e = add_command(sub, "export", "Write N real images of a dataset as PNGs plus labels.jsonl or captions.jsonl.",
                    "ganfuse data export shapes --num 500 --out shapes/")
    e.add_argument("name", choices=EXPORTABLE, help="dataset")
    e.add_argument("--num", type=int, required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--image-size", type=int, default=32)
    e.set_defaults(func=export)
    k = add_command(sub, "pack", "Write WebDataset tar shards (image .png, caption .txt, label .cls) plus a "
                    "shards.json index, for training with --set data.name=shards --set data.path=DIR.",
                    "ganfuse data pack shapes --out shards/shapes --shard-size 1000")
    k.add_argument("source", help=f"an embedded dataset ({', '.join(EXPORTABLE)}) or an image folder (class = "
                   "sub-folder; captions.jsonl or captions.csv optional); write ./NAME for a folder named like a dataset")
    k.add_argument("--out", required=True, help="empty folder for the shards")
    k.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    k.add_argument("--image-size", type=int,
                   help="side of the stored square images; unset: 32 for embedded datasets, each image's own side for folders")
    k.add_argument("--num", type=int, help="embedded datasets: number of samples; unset: all 1797 digits, 10000 shapes")
    k.add_argument("--seed", type=int, default=0, help="seed of the sample order (and of the shapes generated)")
    k.set_defaults(func=pack)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def export(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.name == "shapes":
        from ganfuse.data.shapes import export_shapes

        written = export_shapes(args.num, out, seed=args.seed, image_size=args.image_size)
        print(f"wrote {written} images and captions.jsonl to {out}")
        return 0
    from torchvision.utils import save_image

    from ganfuse.data.digits import DigitsDataset

    ds = DigitsDataset(args.image_size)
    if args.num > len(ds):
        raise UserError(f"digits has {len(ds)} images; --num must be at most that")
    with open(out / "labels.jsonl", "w", encoding="utf-8") as f:
        for i in range(args.num):
            image, label = ds[i]
            name = f"{i:05d}.png"
            save_image(image, out / name, normalize=True, value_range=(-1, 1))
            f.write(json.dumps({"file": name, "label": label, "class": ds.class_names[label]}) + "\n")
    print(f"wrote {args.num} images and labels.jsonl to {out}")
    return 0


def pack(args: argparse.Namespace) -> int:
    from ganfuse.data import pack as packing

    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size must be >= 1, got {args.image_size}")
    if args.source in EXPORTABLE:
        packer = packing.pack_digits if args.source == "digits" else packing.pack_shapes
        summary = packer(args.out, args.shard_size, args.image_size or 32, args.num, args.seed)
    else:
        if args.num is not None:
            raise UserError("--num applies to embedded datasets only; a folder is packed whole")
        summary = packing.pack_folder(args.source, args.out, args.shard_size, args.image_size, args.seed)
    print(f"wrote {summary.samples} samples in {summary.shards} shard(s) to {summary.out}"
          + (f" (skipped {summary.skipped})" if summary.skipped else ""))
    return 0
