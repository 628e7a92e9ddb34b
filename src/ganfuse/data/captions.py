"""A captioned image folder: images plus ``captions.jsonl`` and/or ``captions.csv``.

``captions.jsonl`` holds one object per line, ``{"file": ..., "caption": ...}`` with optional
``"attributes"`` (as written by ``ganfuse data export shapes``). ``captions.csv`` has a header
with ``file`` and ``caption`` columns. An image may appear with several captions; each
``(image, caption)`` pair is one item.

Images are decoded by :func:`ganfuse.data.images.read_image` (centre crop, resize, size limit
against decompression bombs). A long run must not die on one bad entry: missing, unreadable or
oversized images, empty captions, non-UTF-8 text, malformed lines and CSV rows with missing
columns are counted, reported in one warning line and skipped; one line says what was read
(images, captions, skipped entries by reason). These are errors
(:class:`~ganfuse.errors.DataError`, one line naming the folder): a missing folder, fewer than
:data:`~ganfuse.data.images.MIN_TRAINING_IMAGES` usable images, and a ``captions.csv`` with a
quoted field that spans lines, which is how an unterminated quote reads (it swallows every
following row into one caption); a caption is one line of text, so the file is refused with the
line the quote opens on rather than trained on rows it no longer has.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganfuse.data.base import ImageDataset, uint8_to_float
from ganfuse.data.images import MIN_TRAINING_IMAGES, UnreadableImage, read_image
from ganfuse.data.shapes import ShapeAttributes
from ganfuse.errors import ConfigError, DataError, UserError

CAPTION_FILES: tuple[str, ...] = ("captions.jsonl", "captions.csv")

log = logging.getLogger("ganfuse")


@dataclass(frozen=True)
class CaptionRecord:
    """One ``(file, caption)`` pair as read from a captions file, before the image is opened."""

    file: str
    caption: str
    attributes: ShapeAttributes | None = None


def _decode_utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _parse_attributes(value: object) -> ShapeAttributes | None:
    if not isinstance(value, dict):
        return None
    try:
        return ShapeAttributes(**{k: str(value[k]) for k in ("color", "shape", "size", "position")})
    except (KeyError, UserError):
        return None


def read_jsonl_captions(path: Path, skips: Counter[str]) -> list[CaptionRecord]:
    """Records of a ``captions.jsonl``; bad lines are counted in ``skips`` by reason."""
    records = []
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        line = _decode_utf8(raw)
        if line is None:
            skips["bad utf-8"] += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            skips["bad json"] += 1
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("file"), str):
            skips["missing column"] += 1
            continue
        caption = obj.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            skips["empty caption"] += 1
            continue
        records.append(
            CaptionRecord(obj["file"], caption.strip(), _parse_attributes(obj.get("attributes")))
        )
    return records


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_csv_captions(path: Path, skips: Counter[str]) -> list[CaptionRecord]:
    """Records of a ``captions.csv`` with ``file`` and ``caption`` columns.

    Rows with non-UTF-8 bytes are skipped individually: the file is decoded with
    ``surrogateescape`` so one bad row does not cost the whole file. A header without the two
    columns skips the whole file (every row counted as ``missing column``).
    """
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # e.g. an unterminated quote that swallows the rest of the file
        skips["malformed csv"] += 1
        warnings.warn(f"{path}: not a readable CSV ({exc}); skipping this file", stacklevel=3)
        return []
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    if "file" not in header or "caption" not in header:
        skips["missing column"] += max(len(rows) - 1, 1)
        warnings.warn(
            f"{path}: the header must name 'file' and 'caption' columns, found {rows[0]}; "
            "skipping this file",
            stacklevel=3,
        )
        return []
    _refuse_multiline_fields(path, text)
    file_col, caption_col = header.index("file"), header.index("caption")
    records = []
    for row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(file_col, caption_col) or not row[file_col].strip():
            skips["missing column"] += 1
            continue
        if any(_has_surrogates(cell) for cell in row):
            skips["bad utf-8"] += 1
            continue
        caption = row[caption_col].strip()
        if not caption:
            skips["empty caption"] += 1
            continue
        records.append(CaptionRecord(row[file_col].strip(), caption))
    return records


def _refuse_multiline_fields(path: Path, text: str) -> None:
    """A :class:`DataError` naming the line where a quoted field that spans lines opens: an
    unterminated quote (or one closed by a stray quote rows later) reads as such a field."""
    reader = csv.reader(io.StringIO(text, newline=""))
    end_of_previous = 0
    for row in reader:
        if any("\n" in cell or "\r" in cell for cell in row):
            first, last = end_of_previous + 1, reader.line_num
            ends = "the end of the file" if last >= len(text.splitlines()) else f"line {last}"
            raise DataError(
                f"{path}: the quoted field that opens on line {first} runs to {ends}, swallowing "
                f"{last - first} line(s) of rows; a caption must be on one line: close the quote "
                'or write a quote inside a caption as ""'
            )
        end_of_previous = reader.line_num


def _iter_records(root: Path, skips: Counter[str]) -> Iterator[CaptionRecord]:
    for name in CAPTION_FILES:
        path = root / name
        if path.is_file():
            reader = read_jsonl_captions if name.endswith(".jsonl") else read_csv_captions
            yield from reader(path, skips)


class CaptionedFolderDataset(ImageDataset):
    """Every usable ``(image, caption)`` pair of a folder, decoded once and held in memory.

    Items are ``(image, -1, caption)`` with image float ``(3, S, S)`` in [-1, 1], like
    :class:`~ganfuse.data.shapes.ShapesDataset`. ``images`` is uint8 ``(N, 3, S, S)`` with one
    row per item (an image with k captions appears k times); ``files`` names each item's image
    relative to the folder. ``attributes`` holds the
    ``shapes`` attributes a jsonl line carried, else ``None``. ``skipped`` counts the entries
    left out and ``skip_reasons`` says why.
    """

    channels = 3
    num_classes = 0
    class_names: list[str] = []

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
    ):
        if image_size < 1:
            raise ConfigError(f"image_size must be positive, got {image_size}")
        self.root = Path(root)
        self.image_size = image_size
        self.name = self.root.name or "captions"
        if not self.root.is_dir():
            raise DataError(f"captioned folder {self.root} does not exist or is not a folder")
        if not any((self.root / name).is_file() for name in CAPTION_FILES):
            raise DataError(
                f"captioned folder {self.root} has no {' or '.join(CAPTION_FILES)}; "
                "add one with 'file' and 'caption' fields"
            )
        skips: Counter[str] = Counter()
        decoded: dict[str, np.ndarray | str] = {}  # file -> pixels, or why it is unusable
        images, captions, attributes, files = [], [], [], []
        for record in _iter_records(self.root, skips):
            if record.file not in decoded:
                decoded[record.file] = self._decode(record.file)
            pixels = decoded[record.file]
            if isinstance(pixels, str):
                skips[pixels] += 1
                continue
            images.append(pixels)
            captions.append(record.caption)
            attributes.append(record.attributes)
            files.append(record.file)
        self.skip_reasons: dict[str, int] = dict(skips)
        self.skipped = sum(skips.values())
        n_images = len(set(files))
        read = f"captioned folder {self.root}: {n_images} images with {len(captions)} captions"
        if self.skipped:
            details = ", ".join(f"{reason}: {n}" for reason, n in sorted(skips.items()))
            warnings.warn(f"{read}; skipped {self.skipped} entries ({details})", stacklevel=2)
        else:
            log.info("%s; nothing skipped", read)
        if not captions:
            raise DataError(
                f"captioned folder {self.root} has no usable (image, caption) pairs "
                f"({self.skipped} skipped)"
            )
        if n_images < MIN_TRAINING_IMAGES:
            raise DataError(
                f"captioned folder {self.root} has {n_images} usable image with a caption "
                f"({self.skipped} entries skipped); training needs at least "
                f"{MIN_TRAINING_IMAGES} different images"
            )
        self.images = torch.from_numpy(np.stack(images))
        self.captions: list[str] = captions
        self.attributes: list[ShapeAttributes | None] = attributes
        self.files: list[str] = files

    def _decode(self, file: str) -> np.ndarray | str:
        """Pixels uint8 ``(3, S, S)``, or the reason the file cannot be used."""
        path = self.root / file
        if not path.is_file():
            return "missing file"
        try:
            return read_image(path, self.image_size, channels=3)
        except UnreadableImage:
            return "unreadable image"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return uint8_to_float(self.images[index]), -1, self.captions[index]

    def float_images(self) -> torch.Tensor:
        """All images ``(N, 3, S, S)`` float32 in [-1, 1]."""
        return uint8_to_float(self.images)
