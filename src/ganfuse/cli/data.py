"""``ganfuse data``: export embedded datasets as image files, pack datasets into tar shards, check
a folder of the user's images and preview the training augmentations on it."""

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
    check_output_file,
    check_seed,
)

EXPORTABLE = ("digits", "shapes")
DIGITS_IMAGES = 1797  # scikit-learn's digits
EMOJI_IMAGES = 3664  # the shipped Noto Color Emoji


def register(subparsers) -> None:
    p = add_command(subparsers, "data", "Work with datasets.", "ganfuse data export digits --num 100 --out digits/")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    e = add_command(sub, "export", "Write N real images of a dataset as PNGs plus labels.jsonl or captions.jsonl.",
                    "ganfuse data export shapes --num 500 --out shapes/")
    e.add_argument("name", choices=(*EXPORTABLE, "scenes", "emoji"),
                   help="dataset (scenes: --image-size 32 or 64; emoji: 32, 64 or 128, at most 3664)")
    e.add_argument("--num", type=int, required=True, help=f"1 to {MAX_EXPORT_IMAGES} (digits: at most 1797)")
    e.add_argument("--out", required=True, help="folder for the PNG files")
    e.add_argument("--seed", type=int, default=0, help="0 to 2**32-1")
    e.add_argument("--image-size", type=int, default=32, help=f"side in pixels, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    e.set_defaults(func=export)
    k = add_command(sub, "pack", "Write WebDataset tar shards (image .png, caption .txt, label .cls) plus a "
                    "shards.json index, for training with --set data.name=shards --set data.path=DIR.",
                    "ganfuse data pack shapes --out shards/shapes --shard-size 1000")
    k.add_argument("source", help=f"an embedded dataset ({', '.join(EXPORTABLE)}) or an image folder (class = "
                   "sub-folder or metadata label column; captions from Hugging Face metadata.jsonl/metadata.csv "
                   "or captions.jsonl/captions.csv, optional); write ./NAME for a folder named like a dataset")
    k.add_argument("--out", required=True, help="empty folder for the shards")
    k.add_argument("--shard-size", type=int, default=1000, help=f"samples per shard, 1 to {MAX_EXPORT_IMAGES}")
    k.add_argument("--image-size", type=int,
                   help=f"side of the stored square images, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}; "
                   "unset: 32 for embedded datasets, each image's own side for folders")
    k.add_argument("--num", type=int, help=f"embedded datasets: number of samples, 1 to {MAX_EXPORT_IMAGES}; "
                   "unset: all 1797 digits, 10000 shapes")
    k.add_argument("--seed", type=int, default=0, help="seed of the sample order (and of the shapes generated)")
    k.add_argument("--caption-column", default="text",
                   help="folders with metadata.jsonl/.csv: the caption column (default text)")
    k.add_argument("--label-column", default="",
                   help="folders with metadata.jsonl/.csv: the label column (default: label, if there is one)")
    k.set_defaults(func=pack)
    _register_check(sub)
    _register_preview(sub)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def export(args: argparse.Namespace) -> int:
    num = check_count("--num", args.num, {"digits": DIGITS_IMAGES, "emoji": EMOJI_IMAGES}.get(args.name, MAX_EXPORT_IMAGES))
    seed, image_size = check_seed(args.seed), check_image_size(args.image_size)
    out = check_output_dir(args.out)
    try:
        return _export(args.name, num, out, seed, image_size)
    except OSError as exc:  # the disk filled up or went away while writing
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None


def _export(name: str, num: int, out: Path, seed: int, image_size: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    if name == "emoji":
        from ganfuse.data.emoji import export_emoji

        written = export_emoji(num, out, seed=seed, image_size=image_size)
        print(f"wrote {written} images and captions.jsonl to {out}")
        return 0
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
    if args.source in EXPORTABLE and (args.caption_column != "text" or args.label_column):
        raise UserError("--caption-column and --label-column apply to image folders only")
    num = None if args.num is None else check_count("--num", args.num, MAX_EXPORT_IMAGES)
    out = check_output_dir(args.out)

    from ganfuse.data import pack as packing

    if args.source in EXPORTABLE:
        packer = packing.pack_digits if args.source == "digits" else packing.pack_shapes
        summary = packer(out, shard_size, image_size or 32, num, seed)
    else:
        summary = packing.pack_folder(args.source, out, shard_size, image_size, seed,
                                      caption_column=args.caption_column, label_column=args.label_column)
    print(f"wrote {summary.samples} samples in {summary.shards} shard(s) to {summary.out}"
          + (f" (skipped {summary.skipped})" if summary.skipped else ""))
    return 0


# ------------------------------------------------------------------ the user's own folder

PREVIEW_COLUMNS = 8  # the original and 7 augmented draws of each image
MAX_PREVIEW_IMAGES = 64
GRID_PADDING = 2  # pixels between and around the tiles of a preview grid


def _folder_options(p: argparse.ArgumentParser, image_size: int) -> None:
    p.add_argument("folder", help="a folder of images (sub-folders = classes), optionally with "
                   "metadata.jsonl or metadata.csv (file_name, text, label columns)")
    p.add_argument("--image-size", type=int, default=image_size,
                   help=f"training side in pixels, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    p.add_argument("--caption-column", default="text", help="metadata column with the caption (data.caption_column)")
    p.add_argument("--label-column", default="",
                   help="metadata column with the class (data.label_column); unset: 'label' if present, else sub-folders")
    p.add_argument("--background", default="white",
                   help="colour under transparent pixels and around --fit pad: a name, '#rrggbb' or 'rgb(r,g,b)'")
    p.add_argument("--fit", choices=("crop", "pad"), default="crop", help="non-square images: centre crop or pad")


def _register_check(sub) -> None:
    c = add_command(sub, "check", "Say what training would use from a folder of images: counts, sizes, modes, "
                    "captions, classes and every problem; exit 2 when fewer than 2 images are usable.",
                    "ganfuse data check photos/ --image-size 64")
    _folder_options(c, 64)
    c.set_defaults(func=check)


def _register_preview(sub) -> None:
    v = add_command(sub, "preview", "Write a grid of a folder's images as training sees them: each row one image, "
                    f"then {PREVIEW_COLUMNS - 1} random draws of the DiffAugment ops (translation, cutout, color).",
                    "ganfuse data preview photos/ --out preview.png --augment translation,cutout")
    _folder_options(v, 64)
    v.add_argument("--out", required=True, help="the PNG (or .jpg/.webp/.bmp) file to write")
    v.add_argument("--num", type=int, default=8, help=f"images (rows), 1 to {MAX_PREVIEW_IMAGES}")
    v.add_argument("--augment", default=None,
                   help="comma-separated ops of train.augment: translation, cutout, color; "
                   "unset: those of --config, else all three")
    v.add_argument("--config", default=None,
                   help="a preset or YAML config whose train.augment and train.augment_p to preview")
    v.add_argument("--seed", type=int, default=0, help="0 to 2**32-1: which images and which draws")
    v.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    v.set_defaults(func=preview)


def _shown(text: str, limit: int = 70) -> str:
    """``text`` safe to print on any terminal: undecodable bytes of file names escaped, one line,
    at most ``limit`` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\n", " ")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _histogram(counts, top: int = 6) -> str:
    items = counts.most_common()
    shown = ", ".join(f"{_shown(str(key), 30)}: {n}" for key, n in items[:top])
    return shown + (f", ... ({len(items) - top} more)" if len(items) > top else "")


def _reading(args: argparse.Namespace) -> dict:
    from ganfuse.data.images import parse_colour

    try:
        background = parse_colour(args.background)
    except ValueError as exc:
        raise UserError(f"--background {exc}") from None
    caption_column = args.caption_column.strip()
    if not caption_column:
        raise UserError("--caption-column must name a metadata column (default text)")
    return {"caption_column": caption_column, "label_column": args.label_column.strip(),
            "background": background, "fit": args.fit}


def _folder(path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{_shown(path)} is not a folder" if folder.exists() else f"folder not found: {_shown(path)}")
    return folder


def check(args: argparse.Namespace) -> int:
    image_size = check_image_size(args.image_size)
    options = _reading(args)
    folder = _folder(args.folder)

    from ganfuse.data.folder import inspect_folder
    from ganfuse.data.images import MIN_TRAINING_IMAGES

    report = inspect_folder(folder, image_size, **options)
    for line in check_lines(report, args.background):
        print(line)
    if report.usable < MIN_TRAINING_IMAGES:
        raise UserError(f"{_shown(str(folder))}: {report.usable} usable image(s) of {report.files} files; "
                        f"training needs at least {MIN_TRAINING_IMAGES}")
    return 0


def check_lines(report, background: str) -> list[str]:
    """The lines ``ganfuse data check`` prints for an :class:`~ganfuse.data.folder.FolderReport`."""
    contents = report.contents
    lines = [f"folder: {_shown(str(report.root), 200)}",
             f"image files: {report.files}, usable: {report.usable} (at {report.image_size} px)"]
    if report.usable:
        lines += [f"sizes: {_histogram(report.sizes)}", f"modes: {_histogram(report.modes)}",
                  f"formats: {_histogram(report.formats)}"]
    if report.transparent:
        lines.append(f"transparent: {report.transparent} (composited on {_shown(background, 30)})")
    if report.reduced:
        lines.append(f"large JPEGs decoded at reduced scale: {report.reduced}")
    if report.small:
        lines.append(f"smaller than {report.image_size} px on the short side (upscaled): {report.small}")
    sources = contents.metadata_files or contents.caption_files
    lines.append(f"metadata: {', '.join(_shown(s, 60) for s in sources) or 'none'}"
                 + (f" (columns: {_shown(', '.join(contents.columns), 120)})" if contents.columns else ""))
    if report.num_captions:
        column = f"column {contents.caption_column!r}" if contents.metadata_files else "captions file"
        lines.append(f"captions: {report.num_captions} on {report.captioned} usable images ({_shown(column, 40)})")
        lines += [f"  {_shown(file, 40)}: {_shown(repr(text), 80)}" for file, text in report.examples]
    else:
        lines.append("captions: none (text-to-image training needs a caption column)")
    if contents.label_source:
        lines.append(f"labels: {_shown(contents.label_source, 40)}, {len(report.classes)} classes: "
                     f"{_histogram(report.classes, 8)}")
    else:
        lines.append("labels: none (unconditional training only)")
    if report.problems:
        lines.append(f"problems: {sum(report.problems.values())}")
        lines += [f"  {reason}: {n} (first: {_shown(report.first[reason], 90)})"
                  for reason, n in sorted(report.problems.items())]
    else:
        lines.append("problems: none")
    return lines


def preview(args: argparse.Namespace) -> int:
    image_size = check_image_size(args.image_size)
    num = check_count("--num", args.num, MAX_PREVIEW_IMAGES)
    seed = check_seed(args.seed)
    options = _reading(args)
    folder = _folder(args.folder)
    out = check_output_file(args.out, name="--out", overwrite=args.overwrite)
    ops, p = _preview_ops(args)

    import numpy as np
    import torch
    from PIL import Image

    from ganfuse.data.base import to_uint8, uint8_to_float
    from ganfuse.data.captions import scan_folder
    from ganfuse.data.images import UnreadableImage, read_image
    from ganfuse.train.augment import diff_augment

    del options["caption_column"]
    contents = scan_folder(folder, label_column=options.pop("label_column"), use_labels=False)
    order = np.random.default_rng(seed).permutation(len(contents.images))
    images = []
    for i in order:
        try:
            images.append(read_image(folder / contents.images[i], image_size, 3, **options))
        except UnreadableImage:
            continue
        if len(images) == num:
            break
    if not images:
        raise UserError(f"{_shown(str(folder))}: none of its {len(contents.images)} image files could be read")
    real = uint8_to_float(torch.from_numpy(np.stack(images)))
    generator = torch.Generator().manual_seed(seed)
    columns = [real] + [diff_augment(real, ops, p, generator) for _ in range(PREVIEW_COLUMNS - 1)]
    tiles = to_uint8(torch.stack(columns, dim=1)).permute(0, 1, 3, 4, 2).numpy()  # (N, cols, S, S, 3)
    step = image_size + GRID_PADDING
    grid = np.full((len(images) * step + GRID_PADDING, PREVIEW_COLUMNS * step + GRID_PADDING, 3), 128, np.uint8)
    for row, tile_row in enumerate(tiles):
        for col, tile in enumerate(tile_row):
            y, x = GRID_PADDING + row * step, GRID_PADDING + col * step
            grid[y : y + image_size, x : x + image_size] = tile
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out}: {len(images)} images, the original then {PREVIEW_COLUMNS - 1} draws of "
          f"{', '.join(ops) or 'no augmentation'} (p={p:g}) each")
    return 0


def _preview_ops(args: argparse.Namespace) -> tuple[list[str], float]:
    """The DiffAugment ops and probability to preview, from --augment, else --config, else all."""
    from ganfuse.config import AUGMENTS, load_config

    p = 1.0
    ops = list(AUGMENTS)
    if args.config is not None:
        config = load_config(args.config)
        ops, p = list(config.train.augment), config.train.augment_p
        if config.train.ada_target is not None:
            p = 1.0  # ADA moves p during training; the preview shows what a draw does
    if args.augment is not None:
        ops = [op.strip() for op in args.augment.split(",") if op.strip()]
        unknown = [op for op in ops if op not in AUGMENTS]
        if unknown:
            raise UserError(f"--augment must list some of {', '.join(AUGMENTS)}, got {_shown(', '.join(unknown))}")
    return ops, p
