"""Hugging Face Hub datasets in streaming mode: examples arrive over the network as training reads
them, nothing is downloaded in full.

Selected with ``data.name=shards`` and ``data.path=hf://OWNER/NAME`` (optionally ``hf://OWNER/NAME:SPLIT``,
default split ``train``). Needs the optional ``datasets`` package and a network connection; without
either, :class:`~ganfuse.errors.OfflineError` says what to do. Images are decoded by
:func:`ganfuse.data.images.read_image` (format allow-list, size limit), never by the library's own
decoder; an unusable example is counted, reported in one warning line and skipped.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ganfuse.data.base import uint8_to_float
from ganfuse.data.images import UnreadableImage, read_image
from ganfuse.data.shards import distributed_position
from ganfuse.errors import DataError, OfflineError

log = logging.getLogger("ganfuse")

HF_PREFIX = "hf://"
IMAGE_COLUMNS = ("image", "img", "jpg", "png")
CAPTION_COLUMNS = ("caption", "text", "txt", "prompt")
LABEL_COLUMNS = ("label", "labels", "cls")


def parse_hf_path(path: str) -> tuple[str, str]:
    """``"hf://owner/name:split"`` -> ``("owner/name", "split")`` (split defaults to ``train``)."""
    spec = path.removeprefix(HF_PREFIX)
    name, _, split = spec.partition(":")
    if not name:
        raise DataError(
            f"data.path {path!r} must name a Hub dataset, e.g. hf://OWNER/NAME or hf://OWNER/NAME:train"
        )
    return name, split or "train"


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise OfflineError(
            "streaming a Hugging Face dataset needs the `datasets` package and a network "
            "connection: `pip install datasets`, then run online (or pack local data with "
            "`ganfuse data pack`)"
        ) from None
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise OfflineError(
            "streaming a Hugging Face dataset needs the network, but HF_HUB_OFFLINE or "
            "HF_DATASETS_OFFLINE is set; unset it and run online"
        )
    return datasets


def _first_column(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in columns), None)


class HuggingFaceStream(IterableDataset):
    """Streams ``(image, label)`` or ``(image, label, caption)`` like
    :class:`~ganfuse.data.shards.ShardDataset`: image float ``(C, S, S)`` in [-1, 1], label
    ``int`` (-1 when the dataset has no label column), caption ``str``.

    Columns are found by name (image: ``image``/``img``/...; caption: ``caption``/``text``/...;
    label: ``label``/...). Examples are divided between DDP ranks by
    ``datasets.distributed.split_dataset_by_node``, and between DataLoader workers by the library
    itself (by shard: a worker left without a shard simply ends). ``repeat`` restarts the stream
    when it ends.
    """

    def __init__(self, path: str, image_size: int, channels: int = 3, repeat: bool = False):
        super().__init__()
        datasets = _import_datasets()
        self.dataset_name, self.split = parse_hf_path(path)
        self.image_size, self.channels, self.repeat = image_size, channels, repeat
        self.name = f"hf:{self.dataset_name}"
        try:
            stream = datasets.load_dataset(self.dataset_name, split=self.split, streaming=True)
        except (ConnectionError, TimeoutError) as exc:
            raise OfflineError(
                f"cannot reach the Hugging Face Hub for {self.dataset_name} ({exc}); run online"
            ) from None
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(
                f"cannot stream Hugging Face dataset {self.dataset_name!r} split {self.split!r}: {exc}"
            ) from None
        columns = list(stream.features or {})
        self.image_column = _first_column(columns, IMAGE_COLUMNS)
        if self.image_column is None:
            raise DataError(
                f"{self.dataset_name} has no image column (looked for {', '.join(IMAGE_COLUMNS)}; "
                f"it has {', '.join(columns) or 'none'})"
            )
        self.caption_column = _first_column(columns, CAPTION_COLUMNS)
        self.label_column = _first_column(columns, LABEL_COLUMNS)
        label_feature = stream.features.get(self.label_column) if self.label_column else None
        self.class_names = [str(n) for n in getattr(label_feature, "names", None) or []]
        self.num_classes = len(self.class_names)
        self.has_captions = self.caption_column is not None
        # raw bytes, so that our reader (allow-list, size limit) decodes them, not the library's
        self.stream = stream.cast_column(self.image_column, datasets.Image(decode=False))
        self.skipped = 0

    def _decode(self, example: dict) -> tuple | None:
        value = example[self.image_column]
        data = value.get("bytes") if isinstance(value, dict) else None
        if data is None:
            return None
        try:
            pixels = read_image(io.BytesIO(data), self.image_size, self.channels)  # type: ignore[arg-type]
        except UnreadableImage:
            return None
        image = uint8_to_float(torch.from_numpy(pixels))
        label = example.get(self.label_column) if self.label_column else -1
        label = label if isinstance(label, int) else -1
        if not self.has_captions:
            return image, label
        caption = example.get(self.caption_column)
        return (
            (image, label, caption.strip())
            if isinstance(caption, str) and caption.strip()
            else None
        )

    def __iter__(self) -> Iterator[tuple]:
        from datasets.distributed import split_dataset_by_node

        rank, world = distributed_position()
        info = get_worker_info()
        mine = split_dataset_by_node(self.stream, rank=rank, world_size=world)
        while True:
            produced = skipped = 0
            for example in mine:
                item = self._decode(example)
                if item is None:
                    skipped += 1
                    continue
                produced += 1
                yield item
            if skipped and not self.skipped:
                log.warning(
                    "%s: skipped %d unusable example(s) (unreadable image or empty caption)",
                    self.name,
                    skipped,
                )
            self.skipped += skipped
            if not produced and info is not None and info.num_workers > 1:
                return  # this worker got no shard of the stream; the others carry on
            if not produced:
                raise DataError(
                    f"{self.name}: no usable example in this reader's share of the stream"
                )
            if not self.repeat:
                return
