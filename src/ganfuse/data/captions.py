"""A captioned image folder: images plus Hugging Face ``imagefolder`` metadata, or ganfuse's own
``captions.jsonl`` and/or ``captions.csv``.

Hugging Face ``imagefolder`` (read first, when the folder has one): ``metadata.jsonl`` (one JSON
object a line) or ``metadata.csv`` (a header line) beside the images, in the folder or in any
sub-folder, with a ``file_name`` column (relative to the metadata file's folder), the caption in
``text`` (or the column ``data.caption_column`` names) and optional label columns (``label``, or
the one ``data.label_column`` names). Other columns are ignored. Rows that are not UTF-8 or not
JSON, name a missing file or a path outside the folder, or have an empty caption are skipped and
counted with the first file and line of each reason (:func:`scan_folder`).

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
import posixpath
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ganfuse.data.base import ImageDataset, uint8_to_float
from ganfuse.data.images import MIN_TRAINING_IMAGES, WHITE, UnreadableImage, list_images, read_image
from ganfuse.data.shapes import ShapeAttributes
from ganfuse.errors import ConfigError, DataError, UserError

CAPTION_FILES: tuple[str, ...] = ("captions.jsonl", "captions.csv")
METADATA_FILES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv")

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


# ---------------------------------------------------------------------------------------------
# Hugging Face ``imagefolder`` metadata: metadata.jsonl / metadata.csv beside the images


@dataclass(frozen=True)
class MetadataRow:
    """One row of a ``metadata.jsonl``/``metadata.csv``: ``file`` is the image's path relative to
    the dataset root (POSIX), ``columns`` every other column as text (null, list and object
    values left out), ``where`` the file and line it came from (for messages)."""

    file: str
    columns: dict[str, str]
    where: str


class Problems:
    """What was left out, counted by reason, with the first place each reason was seen."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, reason: str, where: str, n: int = 1) -> None:
        self.counts[reason] += n
        self.first.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``"missing file: 2 (first: metadata.csv line 3: gone.png), ..."``, by reason."""
        return ", ".join(
            f"{reason}: {n} (first: {self.first[reason]})"
            for reason, n in sorted(self.counts.items())
        )


def find_metadata(root: Path) -> list[Path]:
    """Every ``metadata.jsonl`` / ``metadata.csv`` under ``root`` (sub-folders included), sorted."""
    return sorted(p for name in METADATA_FILES for p in root.rglob(name) if p.is_file())


def _scalar_text(value: object) -> str | None:
    """A JSON value as column text: strings as they are, numbers and booleans as JSON writes
    them (``3``, ``2.5``, ``true``); None for null, lists and objects (not a column value)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return None


def _image_path(root: Path, metadata: Path, file_name: str) -> str | None:
    """``file_name`` (relative to the metadata file's folder) as a POSIX path relative to ``root``,
    or None when it is empty, absolute or leads outside ``root``."""
    name = file_name.strip().replace("\\", "/")
    if not name or name.startswith("/") or "\x00" in name:
        return None
    base = metadata.parent.relative_to(root).as_posix()
    joined = posixpath.normpath(posixpath.join(base, name))
    if joined == "." or joined == ".." or joined.startswith("../"):
        return None
    return joined


def _row(
    root: Path, metadata: Path, fields: dict[str, object], where: str, problems: Problems
) -> MetadataRow | None:
    file_name = fields.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        problems.add("no file_name", where)
        return None
    if any(isinstance(v, str) and _has_surrogates(v) for v in (file_name, *fields.values())):
        problems.add("bad utf-8", where)  # a JSON "\ud800" escape: no character, no caption
        return None
    file = _image_path(root, metadata, file_name)
    if file is None:
        problems.add("path outside the folder", f"{where}: {file_name}")
        return None
    columns = {}
    for key, value in fields.items():
        text = _scalar_text(value)
        if key != "file_name" and isinstance(key, str) and text is not None:
            columns[key] = text
    return MetadataRow(file, columns, where)


def read_metadata_jsonl(
    root: Path, path: Path, problems: Problems
) -> tuple[list[MetadataRow], set[str]]:
    """Rows of a ``metadata.jsonl`` and the column names seen. A line that is not UTF-8, not a
    JSON object, or has no ``file_name`` is skipped and counted by reason in ``problems``."""
    rows, columns = [], set()
    name = path.relative_to(root).as_posix()
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{name} line {number}"
        line = _decode_utf8(raw)
        if line is None:
            problems.add("bad utf-8", where)
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            problems.add("bad json", where)
            continue
        if not isinstance(obj, dict):
            problems.add("bad json", where)
            continue
        columns |= {k for k in obj if k != "file_name"}
        row = _row(root, path, obj, where, problems)
        if row is not None:
            rows.append(row)
    return rows, columns


def read_metadata_csv(
    root: Path, path: Path, problems: Problems
) -> tuple[list[MetadataRow], set[str]]:
    """Rows of a ``metadata.csv`` (header with ``file_name``) and its column names. Rows with bytes
    that are not UTF-8 are skipped and counted one by one. A :class:`DataError` naming the file:
    no ``file_name`` column, or a quoted field that spans lines (see :func:`read_csv_captions`)."""
    name = path.relative_to(root).as_posix()
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not table:
        return [], set()
    header = [h.strip() for h in table[0]]
    if "file_name" not in header:
        raise DataError(
            f"{path}: the first line must name a file_name column (Hugging Face imagefolder), "
            f"found {', '.join(repr(h) for h in header[:8]) or 'nothing'}"
        )
    _refuse_multiline_fields(path, text)
    rows = []
    for number, cells in enumerate(table[1:], start=2):
        where = f"{name} line {number}"
        if not any(cell.strip() for cell in cells):
            continue
        if any(_has_surrogates(cell) for cell in cells):
            problems.add("bad utf-8", where)
            continue
        fields = {key: cell for key, cell in zip(header, cells, strict=False) if key}
        row = _row(root, path, fields, where, problems)
        if row is not None:
            rows.append(row)
    return rows, {h for h in header if h and h != "file_name"}


def _class_order(names: set[str]) -> list[str]:
    """Class names sorted, numerically when every name is an integer (``2`` before ``10``)."""

    def key(name: str) -> tuple:
        stripped = name.strip()
        is_int = stripped.lstrip("-").isdigit() and stripped.count("-") <= 1
        return (0, int(stripped), "") if is_int else (1, 0, name)

    return sorted(names, key=key)


@dataclass
class FolderContents:
    """What a user's image folder holds, before any image is decoded.

    ``images``: every image file to use (relative POSIX paths, sorted): the files with an image
    extension plus any other file a metadata row names. ``captions``: each image's captions in
    metadata order. ``labels``: each image's class name; ``label_source`` says where they come
    from (``column 'label'``, ``sub-folders``, or ``""``: no labels). ``problems``: metadata rows
    left out (bad UTF-8 or JSON, a missing file, an empty caption, a path outside the folder).
    ``caption_files``: ``captions.jsonl``/``captions.csv`` (ganfuse's own format, read only when
    there is no metadata file).
    """

    root: Path
    images: list[str]
    captions: dict[str, list[str]]
    labels: dict[str, str]
    label_source: str
    class_names: list[str]
    metadata_files: list[str]
    columns: list[str]
    caption_column: str
    problems: Problems
    caption_files: list[str] = field(default_factory=list)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions.values())


def scan_folder(
    root: str | Path,
    caption_column: str = "text",
    label_column: str = "",
    use_labels: bool = True,
) -> FolderContents:
    """Read a folder's file list and metadata (Hugging Face ``imagefolder``), decoding no image.

    Metadata: ``metadata.jsonl`` (one JSON object a line) or ``metadata.csv`` (a header line), in
    the folder or any sub-folder, each row's ``file_name`` relative to its metadata file's folder;
    ``caption_column`` (default ``text``) is the caption; other columns are ignored unless chosen
    as the label. Labels: ``label_column`` when given (a :class:`DataError` if no metadata file
    has it), else a ``label`` column when there is one, else the first-level sub-folder when every
    image lies in one; none when ``use_labels`` is false. Without a metadata file, a
    ``captions.jsonl``/``captions.csv`` in the folder gives the captions.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    problems = Problems()
    metadata = find_metadata(root)
    rows: list[MetadataRow] = []
    columns: set[str] = set()
    for path in metadata:
        reader = read_metadata_jsonl if path.suffix == ".jsonl" else read_metadata_csv
        found, names = reader(root, path, problems)
        rows += found
        columns |= names
    files = {p.relative_to(root).as_posix() for p in list_images(root)}
    captions: dict[str, list[str]] = {}
    caption_files: list[str] = []
    named: dict[str, MetadataRow] = {}
    for row in rows:
        if row.file not in files and not (root / row.file).is_file():
            problems.add("missing file", f"{row.where}: {row.file}")
            continue
        named.setdefault(row.file, row)
        caption = row.columns.get(caption_column)
        if caption is not None:
            if caption.strip():
                captions.setdefault(row.file, []).append(caption.strip())
            else:
                problems.add("empty caption", row.where)
    if not metadata:
        skips: Counter[str] = Counter()
        for record in _iter_records(root, skips):
            if record.file in files or (root / record.file).is_file():
                captions.setdefault(record.file, []).append(record.caption)
            else:
                skips["missing file"] += 1
        caption_files = [name for name in CAPTION_FILES if (root / name).is_file()]
        for reason, n in skips.items():
            problems.add(reason, caption_files[0] if caption_files else root.name, n)
    images = sorted(files | set(named))
    labels, source = _labels(root, images, named, columns, label_column, use_labels, metadata)
    return FolderContents(
        root=root,
        images=images,
        captions=captions,
        labels=labels,
        label_source=source,
        class_names=_class_order(set(labels.values())),
        metadata_files=[p.relative_to(root).as_posix() for p in metadata],
        columns=sorted(columns),
        caption_column=caption_column,
        problems=problems,
        caption_files=caption_files,
    )


def _labels(
    root: Path,
    images: list[str],
    named: dict[str, MetadataRow],
    columns: set[str],
    label_column: str,
    use_labels: bool,
    metadata: list[Path],
) -> tuple[dict[str, str], str]:
    if not use_labels:
        return {}, ""
    column = label_column.strip() or ("label" if "label" in columns else "")
    if column:
        if column not in columns:
            found = ", ".join(sorted(columns)) or "none besides file_name"
            where = "no metadata.jsonl/metadata.csv" if not metadata else f"columns: {found}"
            raise DataError(
                f"image folder {root}: no metadata column {column!r} for the labels ({where})"
            )
        labels = {}
        for file, row in named.items():
            value = row.columns.get(column, "").strip()
            if value:
                labels[file] = value
        return labels, f"column {column!r}"
    parts = {file: file.split("/") for file in images}
    if images and all(len(p) > 1 for p in parts.values()):
        return {file: p[0] for file, p in parts.items()}, "sub-folders"
    return {}, ""


class CaptionedFolderDataset(ImageDataset):
    """Every usable ``(image, caption)`` pair of a folder, decoded once and held in memory.

    The captions come from Hugging Face ``imagefolder`` metadata (``metadata.jsonl`` /
    ``metadata.csv`` with ``file_name`` and ``caption_column``, see :func:`scan_folder`) when the
    folder has any, else from ``captions.jsonl`` / ``captions.csv``. Items are
    ``(image, label, caption)`` with image float ``(3, S, S)`` in [-1, 1] and label ``-1`` when
    the folder has no labels, like :class:`~ganfuse.data.shapes.ShapesDataset`. ``images`` is
    uint8 ``(N, 3, S, S)`` with one row per item (an image with k captions appears k times);
    ``files`` names each item's image relative to the folder; ``labels`` int64 ``(N,)`` indexes
    ``class_names``. ``attributes`` holds the ``shapes`` attributes a captions.jsonl line carried,
    else ``None``. ``skipped`` counts the entries left out and ``skip_reasons`` says why.
    """

    channels = 3

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        *,
        caption_column: str = "text",
        label_column: str = "",
        use_labels: bool = True,
        background: str | tuple[int, int, int] = WHITE,
        fit: str = "crop",
    ):
        if image_size < 1:
            raise ConfigError(f"image_size must be positive, got {image_size}")
        self.root = Path(root)
        self.image_size = image_size
        self.name = self.root.name or "captions"
        self._read = {"size": image_size, "channels": 3, "background": background, "fit": fit}
        if not self.root.is_dir():
            raise DataError(f"captioned folder {self.root} does not exist or is not a folder")
        self.class_names: list[str] = []
        if find_metadata(self.root):
            skips, items = self._from_metadata(caption_column, label_column, use_labels)
        elif any((self.root / name).is_file() for name in CAPTION_FILES):
            skips, items = self._from_caption_files()
        else:
            raise DataError(
                f"captioned folder {self.root} has no {' or '.join(METADATA_FILES)} (Hugging Face "
                f"imagefolder: file_name and {caption_column} columns) and no "
                f"{' or '.join(CAPTION_FILES)}"
            )
        images, captions, attributes, files, labels = items
        self.num_classes = len(self.class_names)
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
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def _from_caption_files(self) -> tuple[Counter[str], tuple[list, ...]]:
        skips: Counter[str] = Counter()
        decoded: dict[str, np.ndarray | str] = {}  # file -> pixels, or why it is unusable
        images, captions, attributes, files = [], [], [], []
        for record in _iter_records(self.root, skips):
            if record.file not in decoded:
                decoded[record.file] = self._decode(record.file, detailed=False)
            pixels = decoded[record.file]
            if isinstance(pixels, str):
                skips[pixels] += 1
                continue
            images.append(pixels)
            captions.append(record.caption)
            attributes.append(record.attributes)
            files.append(record.file)
        return skips, (images, captions, attributes, files, [-1] * len(files))

    def _from_metadata(
        self, caption_column: str, label_column: str, use_labels: bool
    ) -> tuple[Counter[str], tuple[list, ...]]:
        contents = scan_folder(self.root, caption_column, label_column, use_labels)
        if caption_column not in contents.columns:
            found = ", ".join(contents.columns) or "none besides file_name"
            raise DataError(
                f"captioned folder {self.root}: no metadata column {caption_column!r} for the "
                f"captions (columns: {found}); set data.caption_column"
            )
        skips = Counter(contents.problems.counts)
        self.class_names = contents.class_names
        index = {name: i for i, name in enumerate(self.class_names)}
        images, captions, files, labels = [], [], [], []
        for file, texts in contents.captions.items():
            pixels = self._decode(file, detailed=True)
            if isinstance(pixels, str):
                skips[pixels] += len(texts)
                continue
            label = index.get(contents.labels.get(file, ""), -1)
            for text in texts:
                images.append(pixels)
                captions.append(text)
                files.append(file)
                labels.append(label)
        return skips, (images, captions, [None] * len(files), files, labels)

    def _decode(self, file: str, detailed: bool) -> np.ndarray | str:
        """Pixels uint8 ``(3, S, S)``, or the reason the file cannot be used."""
        path = self.root / file
        if not path.is_file():
            return "missing file"
        try:
            return read_image(path, **self._read)
        except UnreadableImage as exc:
            return f"unreadable image ({exc.reason})" if detailed else "unreadable image"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return uint8_to_float(self.images[index]), int(self.labels[index]), self.captions[index]

    def float_images(self) -> torch.Tensor:
        """All images ``(N, 3, S, S)`` float32 in [-1, 1]."""
        return uint8_to_float(self.images)


def read_pairs(
    root: str | Path,
    image_size: int = 32,
    *,
    caption_column: str = "text",
    label_column: str = "",
    background: str | tuple[int, int, int] = WHITE,
    fit: str = "crop",
) -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]]:
    """A user's (image, caption, label) items, for the multimodal tasks: images uint8
    ``(N, 3, S, S)``, captions (N strings), labels int64 ``(N,)`` (``-1`` where there is none)
    indexing the class names. An image with k captions is k items. See
    :class:`CaptionedFolderDataset` for what is read and refused."""
    data = CaptionedFolderDataset(
        root, image_size, caption_column=caption_column, label_column=label_column,
        background=background, fit=fit,
    )  # fmt: skip
    return data.images, list(data.captions), data.labels, list(data.class_names)


def folder_options(data_config) -> dict:
    """The reading options of a ``DataConfig`` (``data.*`` but ``use_labels``) as keyword arguments of
    :class:`CaptionedFolderDataset` and :class:`~ganfuse.data.folder.FolderDataset`."""
    return {
        "caption_column": data_config.caption_column,
        "label_column": data_config.label_column,
        "background": data_config.background,
        "fit": data_config.fit,
    }
