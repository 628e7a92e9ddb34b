"""``ganfuse data pack``: turn an image folder or an embedded dataset into WebDataset shards.

Samples are written in a seeded random order, so that a reader's shuffle buffer (which only mixes
nearby samples) never sees long runs of one class, as a folder sorted by class sub-folder would
give. Each sample's key is its position in the source (``00000042``) and its ``.json`` says
where it came from (``file``, ``class``, ``shapes`` attributes). A folder keeps its captions
(Hugging Face ``imagefolder`` metadata or ``captions.jsonl``/``.csv``) as ``.txt`` and its labels
as ``.cls``, so packed shards train with captions as the folder does. The format is described in
:mod:`ganfuse.data.shards`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ganfuse.data.base import to_uint8
from ganfuse.data.captions import (
    CAPTION_FILES,
    find_metadata,
    read_csv_captions,
    read_jsonl_captions,
    scan_folder,
)
from ganfuse.data.digits import load_digits_tensors
from ganfuse.data.images import UnreadableImage, list_images, read_image
from ganfuse.data.shapes import (
    DEFAULT_SPLIT_SIZES,
    ShapesDataset,
    attribute_labels,
    generate_shapes,
)
from ganfuse.data.shards import ShardWriter
from ganfuse.errors import DataError, UserError

log = logging.getLogger("ganfuse")


@dataclass
class PackSummary:
    out: Path
    samples: int
    shards: int
    skipped: int


def _shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _finish(
    writer: ShardWriter, name: str, class_names: list[str], skipped: Counter[str]
) -> PackSummary:
    index = writer.close(name, class_names)
    total = sum(skipped.values())
    if total:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
        log.warning("pack %s: skipped %d item(s) (%s)", name, total, reasons)
    return PackSummary(writer.out, index["samples"], len(index["shards"]), total)


def pack_digits(
    out: str | Path, shard_size: int, image_size: int = 32, num: int | None = None, seed: int = 0
) -> PackSummary:
    """Shards of scikit-learn's digits (1 channel, labels 0-9), in a seeded random order."""
    images, labels = load_digits_tensors(image_size)
    num = len(images) if num is None else num
    if not 1 <= num <= len(images):
        raise UserError(f"digits has {len(images)} images; --num must be between 1 and that")
    pixels = to_uint8(images[:num]).numpy()
    writer = ShardWriter(out, shard_size)
    for i in _shuffled(num, seed):
        writer.write(f"{i:08d}", pixels[i], int(labels[i]), meta={"class": str(int(labels[i]))})
    return _finish(writer, "digits", [str(d) for d in range(10)], Counter())


def pack_shapes(
    out: str | Path, shard_size: int, image_size: int = 32, num: int | None = None, seed: int = 0
) -> PackSummary:
    """Shards of the ``shapes`` train split: captions, colour-shape labels and attributes."""
    num = DEFAULT_SPLIT_SIZES["train"] if num is None else num
    if num < 1:
        raise UserError(f"--num must be >= 1, got {num}")
    images, attributes, captions = generate_shapes(num, seed, "train", image_size)
    labels = attribute_labels(attributes)["color_shape"]
    names = list(ShapesDataset.class_names)
    writer = ShardWriter(out, shard_size)
    for i in _shuffled(num, seed):
        label = int(labels[i])
        writer.write(
            f"{i:08d}",
            images[i].transpose(2, 0, 1),
            label,
            captions[i],
            meta={"class": names[label], "attributes": attributes[i].as_dict()},
        )
    return _finish(writer, "shapes", names, Counter())


def _square_size(path: Path) -> int:
    """The side of the largest centred square of an image, read from its header."""
    try:
        with Image.open(path) as img:
            return min(img.size)
    except Exception as exc:  # any parser failure means the file is unusable
        raise UnreadableImage(str(exc) or exc.__class__.__name__) from None


def _folder_items(
    root: Path, caption_column: str, label_column: str, skipped: Counter[str]
) -> tuple[list[tuple[str, str | None, object]], dict[str, str], list[str]]:
    """What a folder packs: ``(file, caption or None, shapes attributes or None)`` items, each
    file's class name, and the class names in label order.

    Hugging Face ``imagefolder`` metadata (``metadata.jsonl``/``metadata.csv``) comes first, read
    as training reads it (:func:`~ganfuse.data.captions.scan_folder`): each ``(image, caption)``
    pair of ``caption_column`` is a sample, labels from ``label_column`` (or a ``label`` column,
    or the sub-folders), rows it leaves out counted in ``skipped``; metadata without the caption
    column packs every image with its label. Else ``captions.jsonl``/``captions.csv``, else every
    image; classes are then the first-level sub-folders when every image lies in one."""
    if find_metadata(root):
        contents = scan_folder(root, caption_column, label_column)
        skipped.update(contents.problems.counts)
        if caption_column in contents.columns:
            items = [(f, text, None) for f, texts in contents.captions.items() for text in texts]
        else:
            items = [(file, None, None) for file in contents.images]
        return items, contents.labels, contents.class_names
    caption_files = [root / name for name in CAPTION_FILES if (root / name).is_file()]
    if caption_files:
        items = []
        for path in caption_files:
            reader = read_jsonl_captions if path.suffix == ".jsonl" else read_csv_captions
            items += [(r.file, r.caption, r.attributes) for r in reader(path, skipped)]
    else:
        items = [(p.relative_to(root).as_posix(), None, None) for p in list_images(root)]
    parts = {file: Path(file).parts for file, _, _ in items}
    if not all(len(p) > 1 for p in parts.values()):
        return items, {}, []
    labels = {file: p[0] for file, p in parts.items()}
    return items, labels, sorted(set(labels.values()))


def pack_folder(
    root: str | Path,
    out: str | Path,
    shard_size: int,
    image_size: int | None = None,
    seed: int = 0,
    caption_column: str = "text",
    label_column: str = "",
) -> PackSummary:
    """Shards of an image folder, read one image at a time (the folder may exceed memory).

    Captions and labels are read as training reads the folder (:func:`_folder_items`): with
    Hugging Face ``imagefolder`` metadata or a ``captions.jsonl``/``captions.csv`` each
    ``(image, caption)`` pair becomes a sample (its ``.txt``) and uncaptioned images are left out;
    the class (its ``.cls``, and ``class`` in its ``.json``) is the metadata's label column or the
    first-level sub-folder when every image lies in one (as for ``data.name=folder``). Images are
    stored as RGB PNGs, centre-cropped to a square and resized to ``image_size`` (kept at their
    own side when None).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    skipped: Counter[str] = Counter()
    items, label_of, class_names = _folder_items(root, caption_column, label_column, skipped)
    if not items:
        raise DataError(f"no images (png/jpg/webp/bmp) or caption records found under {root}")
    class_index = {name: i for i, name in enumerate(class_names)}

    writer = ShardWriter(out, shard_size)
    for i in _shuffled(len(items), seed):
        file, caption, attributes = items[i]
        path = root / file
        if not path.is_file():
            skipped["missing file"] += 1
            continue
        try:
            side = image_size or _square_size(path)
            pixels = read_image(path, side, 3)
        except UnreadableImage:
            skipped["unreadable image"] += 1
            continue
        meta: dict = {"file": file}
        label = -1
        if file in label_of:
            label = class_index[label_of[file]]
            meta["class"] = label_of[file]
        if attributes is not None:
            meta["attributes"] = attributes.as_dict()
        writer.write(f"{i:08d}", pixels, label, caption, meta)
    return _finish(writer, f"folder:{root}", class_names, skipped)
