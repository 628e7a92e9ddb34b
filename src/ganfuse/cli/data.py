"""``ganfuse data``: export embedded datasets as image files."""

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
