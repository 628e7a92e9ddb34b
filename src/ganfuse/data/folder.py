"""Any folder of images (png/jpg/webp, searched recursively) as a training set.

Images are decoded once, centre-cropped, resized to the configured size and kept in memory as
uint8. When ``use_labels`` is set and the folder has sub-folders, the first-level sub-folder name
is the class. Unreadable files are skipped and counted; one line says what was read (a warning
when files were skipped). Fewer than :data:`~ganfuse.data.images.MIN_TRAINING_IMAGES` readable
images is a :class:`~ganfuse.errors.DataError` naming the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganfuse.data.base import InMemoryImageDataset
from ganfuse.data.images import MIN_TRAINING_IMAGES, UnreadableImage, list_images, read_image
from ganfuse.errors import DataError

log = logging.getLogger("ganfuse")


class FolderDataset(InMemoryImageDataset):
    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        channels: int = 3,
        use_labels: bool = True,
        progress: bool = False,
    ):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        files = list_images(root)
        if not files:
            raise DataError(f"no images (png/jpg/webp/bmp) found under {root}")
        classes = sorted(
            {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
        )
        use_classes = (
            use_labels and bool(classes) and all(len(f.relative_to(root).parts) > 1 for f in files)
        )
        index = {name: i for i, name in enumerate(classes)}
        arrays, labels, bad = [], [], []
        for path in tqdm(files, desc=f"reading {root.name}", disable=not progress, unit="img"):
            try:
                arrays.append(read_image(path, image_size, channels))
            except UnreadableImage as exc:
                bad.append((path, str(exc)))
                continue
            labels.append(index[path.relative_to(root).parts[0]] if use_classes else -1)
        if bad:
            log.warning(
                "image folder %s: %d images read; skipped %d unreadable image(s) of %d "
                "(first: %s: %s)",
                root,
                len(arrays),
                len(bad),
                len(files),
                bad[0][0].name,
                bad[0][1],
            )
        else:
            log.info("image folder %s: %d images read; nothing skipped", root, len(arrays))
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
            class_names=classes if use_classes else None,
            name=f"folder:{root}",
        )
        self.skipped = len(bad)
        self.skipped_files = [str(p) for p, _ in bad]
