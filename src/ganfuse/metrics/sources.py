"""Where images to evaluate come from, streamed as uint8 batches ``(B, C, H, W)``.

- a loaded generator run (anything with ``sample_batches(n, batch_size, seed=...)``, such as
  ``ganfuse.load_run(path)``): samples generated in memory, never written as PNG. Metrics see
  images only, so loading the run is the caller's job (``ganfuse evaluate`` does it for a run
  folder);
- an image folder (png/jpg/webp/bmp, searched recursively, sorted by path): unreadable files are
  skipped and counted, not fatal;
- a reference dataset by name (``digits``; others add themselves with
  :func:`register_reference_dataset`).

Only one batch of images exists at a time, so evaluating 50,000 samples needs memory for one
batch of images plus the features.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ganfuse.data.base import to_uint8
from ganfuse.data.digits import load_digits_tensors
from ganfuse.data.images import UnreadableImage, list_images, read_image
from ganfuse.errors import DataError

RUN_MARKER = "config.yaml"


class SampleBatches(Protocol):
    """What evaluation needs of a generator run: seeded batches of images ``(B, C, H, W)``, float in
    [-1, 1] or uint8, totalling ``n``."""

    def sample_batches(self, n: int, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]: ...


class ImageSource(ABC):
    description: str
    skipped: list[tuple[str, str]]  # (file, reason) of images left out as unreadable

    @abstractmethod
    def available(self) -> int | None:
        """How many images exist (before skipping unreadable ones); None when unbounded (a run)."""

    @abstractmethod
    def batches(self, limit: int, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield uint8 batches ``(B, C, H, W)`` totalling at most ``limit`` images."""


class TensorSource(ImageSource):
    """Images already in memory: uint8, or float in [-1, 1] (quantised per batch)."""

    def __init__(self, images: torch.Tensor, description: str):
        self.images, self.description, self.skipped = images, description, []

    def available(self) -> int:
        return self.images.shape[0]

    def batches(self, limit: int, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, min(limit, self.images.shape[0]), batch_size):
            yield to_uint8(self.images[start : min(start + batch_size, limit)])


class FolderSource(ImageSource):
    """Images of a folder, read as ``channels``-channel squares of side ``image_size`` (centre crop,
    PIL bicubic); ``image_size=None`` keeps the side of the first readable image."""

    def __init__(self, root: Path, channels: int, image_size: int | None = None):
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        self.root, self.channels = root, channels
        self.files = list_images(root)
        if not self.files:
            raise DataError(f"no images (png/jpg/webp/bmp) found under {root}")
        self.description = str(root)
        self.skipped = []
        self.image_size = image_size

    def available(self) -> int:
        return len(self.files)

    def _native_side(self) -> int:
        for path in self.files:
            try:
                with Image.open(path) as img:
                    return min(img.size)
            except (OSError, ValueError, SyntaxError):
                continue
        raise DataError(
            f"none of the {len(self.files)} image files under {self.root} could be read"
        )

    def batches(self, limit: int, batch_size: int) -> Iterator[torch.Tensor]:
        self.skipped = []
        size = self.image_size or self._native_side()
        pending: list[np.ndarray] = []
        produced = 0
        for path in self.files:
            if produced + len(pending) >= limit:
                break
            try:
                pending.append(read_image(path, size, self.channels))
            except UnreadableImage as exc:
                self.skipped.append((str(path), str(exc)))
                continue
            if len(pending) == batch_size:
                produced += len(pending)
                yield torch.from_numpy(np.stack(pending))
                pending = []
        if pending:
            yield torch.from_numpy(np.stack(pending))
        elif produced == 0:
            raise DataError(
                f"none of the {len(self.files)} image files under {self.root} could be read"
            )


class RunSource(ImageSource):
    """Samples of a loaded run, generated batch by batch from ``seed``."""

    def __init__(self, run: SampleBatches, seed: int = 0, description: str | None = None):
        self.run = run
        self.seed = seed
        self.description = description or str(getattr(run, "path", "generator run"))
        self.skipped = []

    def available(self) -> None:
        return None

    def batches(self, limit: int, batch_size: int) -> Iterator[torch.Tensor]:
        for batch in self.run.sample_batches(limit, batch_size, seed=self.seed):
            yield to_uint8(batch)


def _digits_images() -> torch.Tensor:
    return to_uint8(load_digits_tensors(32)[0])


_REFERENCE_DATASETS: dict[str, Callable[[], torch.Tensor]] = {"digits": _digits_images}
# dataset -> the name of its own extractor, used when the Inception weights are absent.
DATASET_EXTRACTORS: dict[str, str] = {"digits": "digits"}
# Datasets registered by other modules on import; this says which module to import.
_PROVIDERS: dict[str, str] = {"shapes": "ganfuse.metrics.attributes", "emoji": "ganfuse.metrics.emoji"}


def register_reference_dataset(
    name: str, loader: Callable[[], torch.Tensor], extractor: str | None = None
) -> None:
    """Make ``name`` usable as ``--ref``: ``loader()`` returns its real images, uint8 ``(N, C, H, W)``
    (or float in [-1, 1]); ``extractor`` names its own feature extractor, if it has one."""
    _REFERENCE_DATASETS[name] = loader
    if extractor is not None:
        DATASET_EXTRACTORS[name] = extractor


def is_reference_dataset(name: str) -> bool:
    """Whether ``name`` is a registered dataset, importing its provider module if needed."""
    if name not in _REFERENCE_DATASETS and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    return name in _REFERENCE_DATASETS


def reference_dataset_names() -> list[str]:
    return sorted(_REFERENCE_DATASETS)


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a training run's folder (it holds ``config.yaml``), not an image folder."""
    return (Path(path).expanduser() / RUN_MARKER).is_file()


def open_source(
    spec: str | Path | SampleBatches, channels: int, image_size: int | None, seed: int = 0
) -> ImageSource:
    """A loaded run (sampled from ``seed``) or an image folder."""
    if hasattr(spec, "sample_batches"):
        return RunSource(spec, seed=seed)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise DataError(f"source not found: {path} (give a run directory or a folder of images)")
    if is_run_folder(path):
        raise DataError(
            f"{path} is a training run: load it first, evaluate_source(ganfuse.load_run({str(path)!r}), ...)"
        )
    return FolderSource(path, channels, image_size)


def open_reference(spec: str, channels: int, image_size: int | None) -> ImageSource:
    """A registered dataset name or an image folder."""
    if is_reference_dataset(spec):
        return TensorSource(_REFERENCE_DATASETS[spec](), description=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, channels, image_size)
    raise DataError(
        f"reference {spec!r} is neither a dataset ({', '.join(reference_dataset_names())}) nor a folder"
    )
