"""The user's own folder of images (png/jpg/webp/bmp, searched recursively) as a training set.

Images are decoded once (:func:`~ganfuse.data.images.read_image`: transparency composited on
``background``, greyscale/CMYK/16-bit converted, very large JPEGs decoded at reduced scale),
made square (centre crop, or ``fit="pad"``), resized to the configured size and kept in memory as
uint8. Labels, when ``use_labels`` is set: a metadata column (Hugging Face ``imagefolder``
``metadata.jsonl``/``metadata.csv``, see :func:`~ganfuse.data.captions.scan_folder`), else the
first-level sub-folder when every image lies in one. Unreadable files, and images without a label
when labels come from a column, are skipped and counted; one line says what was read (a warning
when anything was skipped). Fewer than :data:`~ganfuse.data.images.MIN_TRAINING_IMAGES` usable
images is a :class:`~ganfuse.errors.DataError` naming the folder.

:func:`inspect_folder` decodes every image the same way without keeping it and returns what
``ganfuse data check`` prints.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganfuse.data.base import InMemoryImageDataset
from ganfuse.data.captions import FolderContents, scan_folder
from ganfuse.data.images import (
    MIN_TRAINING_IMAGES,
    WHITE,
    UnreadableImage,
    read_image,
    read_image_info,
)
from ganfuse.errors import DataError

log = logging.getLogger("ganfuse")


class FolderDataset(InMemoryImageDataset):
    """A folder's usable images, uint8 ``(N, C, S, S)``, with labels ``(N,)`` (``-1``: none).

    ``skipped`` counts the image files left out, ``skip_reasons`` says why (``corrupt``, ``not an
    image``, ``too large``, ``empty file``, ``no label``), ``skipped_files`` names them.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        channels: int = 3,
        use_labels: bool = True,
        progress: bool = False,
        *,
        label_column: str = "",
        caption_column: str = "text",
        background: str | tuple[int, int, int] = WHITE,
        fit: str = "crop",
    ):
        root = Path(root)
        contents = scan_folder(root, caption_column, label_column, use_labels)
        files = contents.images
        if not files:
            raise DataError(f"no images (png/jpg/webp/bmp) found under {root}")
        classes = contents.class_names
        index = {name: i for i, name in enumerate(classes)}
        arrays, labels, bad = [], [], []
        reasons: Counter[str] = Counter()
        for file in tqdm(files, desc=f"reading {root.name}", disable=not progress, unit="img"):
            if contents.label_source and file not in contents.labels:
                reasons["no label"] += 1
                bad.append((file, f"no value in the {contents.label_source}"))
                continue
            try:
                arrays.append(read_image(root / file, image_size, channels, background, fit))
            except UnreadableImage as exc:
                reasons[exc.reason] += 1
                bad.append((file, str(exc)))
                continue
            labels.append(index[contents.labels[file]] if contents.label_source else -1)
        self._log(root, len(arrays), len(files), bad, reasons, contents)
        if not arrays:
            raise DataError(f"none of the {len(files)} image files under {root} could be read")
        if len(arrays) < MIN_TRAINING_IMAGES:
            raise DataError(
                f"image folder {root} has {len(arrays)} readable image ({len(bad)} unreadable "
                f"skipped); training needs at least {MIN_TRAINING_IMAGES} images"
            )
        images = torch.from_numpy(np.stack(arrays))
        super().__init__(
            images,
            torch.tensor(labels, dtype=torch.int64),
            class_names=classes if contents.label_source else None,
            name=f"folder:{root}",
        )
        self.skipped = len(bad)
        self.skipped_files = [str(root / file) for file, _ in bad]
        self.skip_reasons = dict(reasons)
        self.label_source = contents.label_source

    @staticmethod
    def _log(root, n_read, n_files, bad, reasons, contents: FolderContents) -> None:
        labels = (
            f"; classes from the {contents.label_source}: {len(contents.class_names)}"
            if contents.label_source
            else ""
        )
        metadata = (
            f"; metadata rows left out: {contents.problems.summary()}"
            if contents.problems.total
            else ""
        )
        if bad:
            details = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items()))
            log.warning(
                "image folder %s: %d images read%s; skipped %d unreadable image(s) of %d "
                "(%s; first: %s: %s)%s",
                root, n_read, labels, len(bad), n_files, details, bad[0][0], bad[0][1], metadata,
            )  # fmt: skip
        elif metadata:
            log.warning("image folder %s: %d images read%s%s", root, n_read, labels, metadata)
        else:
            log.info("image folder %s: %d images read%s; nothing skipped", root, n_read, labels)


# ---------------------------------------------------------------------------------------------
# what `ganfuse data check` reports


@dataclass
class FolderReport:
    """What training would use from a folder, and what it would leave out.

    ``usable``: image files that decode (within the size limits). ``sizes`` / ``modes`` /
    ``formats``: histograms over the usable images (``"WxH"``, Pillow mode, file format).
    ``transparent``: usable images with an alpha channel or transparent colour. ``reduced``:
    large JPEGs decoded at 1/2 to 1/8 scale. ``small``: usable images whose short side is under
    ``image_size`` (they are upscaled). ``problems``: files and metadata rows left out, by
    reason, ``first`` the first place of each reason. ``captioned``: usable images with at least
    one caption; ``num_captions`` their captions; ``examples`` a few ``(file, caption)``.
    ``classes``: usable images per class.
    """

    root: Path
    image_size: int
    files: int = 0
    usable: int = 0
    sizes: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    transparent: int = 0
    reduced: int = 0
    small: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    captioned: int = 0
    num_captions: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)
    contents: FolderContents | None = None

    def problem(self, reason: str, where: str) -> None:
        self.problems[reason] += 1
        self.first.setdefault(reason, where)


def inspect_folder(
    root: str | Path,
    image_size: int = 64,
    *,
    caption_column: str = "text",
    label_column: str = "",
    use_labels: bool = True,
    background: str | tuple[int, int, int] = WHITE,
    fit: str = "crop",
    examples: int = 3,
) -> FolderReport:
    """Decode every image of ``root`` as training would (at ``image_size``) and count what is
    usable and what is not; nothing is kept in memory but the counts. Raises
    :class:`~ganfuse.errors.DataError` only for a missing folder or unreadable metadata (a
    ``metadata.csv`` without ``file_name``, a quote that swallows lines, an unknown label column)."""
    contents = scan_folder(root, caption_column, label_column, use_labels)
    report = FolderReport(Path(root), image_size, files=len(contents.images), contents=contents)
    for reason, n in contents.problems.counts.items():
        report.problems[reason] += n
        report.first.setdefault(reason, contents.problems.first[reason])
    for file in contents.images:
        try:
            _, info = read_image_info(contents.root / file, image_size, 3, background, fit)
        except UnreadableImage as exc:
            report.problem(exc.reason, f"{file}: {exc}")
            continue
        if contents.label_source and file not in contents.labels:
            report.problem("no label", file)
            continue
        report.usable += 1
        report.sizes[f"{info.width}x{info.height}"] += 1
        report.modes[info.mode] += 1
        report.formats[info.format] += 1
        report.transparent += info.transparent
        report.reduced += info.scale > 1
        report.small += min(info.width, info.height) < image_size
        if file in contents.captions:
            report.captioned += 1
            report.num_captions += len(contents.captions[file])
            if len(report.examples) < examples:
                report.examples.append((file, contents.captions[file][0]))
        if contents.label_source:
            report.classes[contents.labels[file]] += 1
    return report
