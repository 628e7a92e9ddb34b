"""WebDataset tar shards: write them from a folder or an embedded dataset, stream them back.

A shard is a plain tar file whose members are grouped into samples by key, the WebDataset
convention (written by :mod:`ganfuse.data.pack`): ``00000042.png`` (the image), ``00000042.txt`` (its caption, UTF-8, optional),
``00000042.cls`` (its integer label, optional) and ``00000042.json`` (provenance such as the
source file, the class name or ``shapes`` attributes, optional). :class:`ShardWriter` writes them
together with ``shards.json``, an index holding the image shape, class names, whether samples
carry captions and each shard's sample count, so a reader knows what to expect without a scan
and notices a shard cut short exactly at a member boundary. Shards from other tools (no index;
``.jpg``/``.webp`` images; ``.tar.gz``) are read too.

:class:`ShardDataset` streams shards without unpacking them: each shard is read sequentially
from a local path or a URL (``http(s)://``, ``pipe:``, brace patterns such as
``shard-{000000..000099}.tar``, opened by the ``webdataset`` package). Shards are divided between
DDP ranks and DataLoader workers; with fewer shards than readers the samples of a shard are
divided instead, so every reader always gets data and no sample is read twice in a pass. A
truncated or unreadable shard and an undecodable sample are counted, reported in one warning
line per reader and skipped: a long run never dies on one bad file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ganfuse.data.base import uint8_to_float
from ganfuse.data.images import UnreadableImage, read_image
from ganfuse.errors import DataError, UserError
from ganfuse.fileio import atomic_write_text

log = logging.getLogger("ganfuse")

INDEX_FILE = "shards.json"
INDEX_FORMAT = "ganfuse-shards/1"
IMAGE_KEYS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp")
SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")


@dataclass
class ShardRecord:
    """One decoded sample: ``image`` uint8 ``(C, H, W)``, ``label`` (-1 when absent), ``caption``
    (None when absent) and ``meta`` (the sample's ``.json``, else empty)."""

    key: str
    image: np.ndarray
    label: int = -1
    caption: str | None = None
    meta: dict = field(default_factory=dict)


RawSample = dict[
    str, Any
]  # "__key__": str, then one entry of bytes per extension ("png", "txt", ...)


class BadSample(Exception):
    """A sample that cannot be used; the message says why."""


# ---------------------------------------------------------------------------------------------
# writing


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``(C, H, W)`` image with C = 1 or 3 (lossless)."""
    from PIL import Image

    pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = (
        len(data),
        0o644,
        0,
    )  # mtime 0: identical inputs, identical shards
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Writes samples into ``out/shard-000000.tar``, ``shard-000001.tar``... with at most
    ``shard_size`` samples each, then ``shards.json`` on :meth:`close`.

    A shard is written under a temporary name and renamed when complete, so an interrupted
    pack never leaves a shard that looks whole.
    """

    def __init__(self, out: str | Path, shard_size: int):
        if shard_size < 1:
            raise UserError(f"--shard-size must be >= 1, got {shard_size}")
        self.out = Path(out)
        self.shard_size = shard_size
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.out}: {exc.strerror or exc}") from None
        if (self.out / INDEX_FILE).exists() or list_local_shards(self.out):
            raise UserError(f"{self.out} already holds shards; pack into an empty folder")
        self.shards: list[dict] = []
        self.num_samples = 0
        self.sizes: set[tuple[int, int, int]] = set()
        self.has_captions: bool | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def write(
        self,
        key: str,
        image: np.ndarray,
        label: int = -1,
        caption: str | None = None,
        meta: dict | None = None,
    ) -> None:
        """Add one sample: ``image`` uint8 ``(C, H, W)``; ``key`` unique, without dots or slashes."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        if self.has_captions is None:
            self.has_captions = caption is not None
        elif self.has_captions != (caption is not None):
            raise ValueError("either every sample has a caption or none has")
        if self._tar is None:
            self._open_shard()
        assert self._tar is not None
        _add_member(self._tar, f"{key}.png", encode_png(image))
        if label >= 0:
            _add_member(self._tar, f"{key}.cls", str(label).encode())
        if caption is not None:
            _add_member(self._tar, f"{key}.txt", caption.encode("utf-8"))
        if meta:
            _add_member(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
        self.sizes.add(tuple(image.shape))
        self._count += 1
        self.num_samples += 1
        if self._count == self.shard_size:
            self._close_shard()

    def _shard_name(self) -> str:
        return f"shard-{len(self.shards):06d}.tar"

    def _open_shard(self) -> None:
        self._tar = tarfile.open(
            self.out / f".{self._shard_name()}.partial", "w", format=tarfile.USTAR_FORMAT
        )
        self._count = 0

    def _close_shard(self) -> None:
        assert self._tar is not None
        self._tar.close()
        name = self._shard_name()
        os.replace(self.out / f".{name}.partial", self.out / name)
        self.shards.append({"file": name, "samples": self._count})
        self._tar = None

    def close(self, name: str, class_names: list[str]) -> dict:
        """Finish the last shard and write ``shards.json``; returns the index."""
        if self._tar is not None:
            self._close_shard()
        if not self.num_samples:
            raise DataError(f"nothing to pack: no usable samples for {self.out}")
        channels = {c for c, _, _ in self.sizes}
        sides = {h for _, h, w in self.sizes if h == w}
        index = {
            "format": INDEX_FORMAT,
            "name": name,
            "channels": channels.pop() if len(channels) == 1 else 3,
            "image_size": sides.pop() if len(sides) == 1 and len(self.sizes) == 1 else None,
            "class_names": list(class_names),
            "captions": bool(self.has_captions),
            "samples": self.num_samples,
            "shards": self.shards,
        }
        atomic_write_text(self.out / INDEX_FILE, json.dumps(index, indent=1) + "\n")
        return index


# ---------------------------------------------------------------------------------------------
# reading


def list_local_shards(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(SHARD_SUFFIXES) and not p.name.startswith(".")
    )


def resolve_shards(url_or_dir: str) -> tuple[list[str], dict | None]:
    """The shard URLs/paths of a folder, a single tar file or a (brace) URL pattern, and the
    folder's ``shards.json`` index when it has one."""
    path = Path(url_or_dir)
    if path.is_dir():
        index_path = path / INDEX_FILE
        if index_path.is_file():
            try:
                index = json.loads(index_path.read_text(encoding="utf-8"))
                shards = [str(path / s["file"]) for s in index["shards"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{index_path} is not a valid shard index ({exc.__class__.__name__}); "
                    "re-run `ganfuse data pack` or delete it"
                ) from None
            return shards, index
        shards = [str(p) for p in list_local_shards(path)]
        if not shards:
            raise DataError(f"no shards (*.tar, *.tar.gz) found in {path}")
        return shards, None
    if path.is_file():
        return [str(path)], None
    from webdataset.shardlists import expand_urls

    shards = expand_urls(url_or_dir)
    if (
        "://" not in url_or_dir
        and not url_or_dir.startswith("pipe:")
        and not any(Path(s).is_file() for s in shards)
    ):
        raise DataError(f"shard folder, file or URL not found: {url_or_dir}")
    return shards, None


def _open(url: str):
    if "://" in url or url.startswith("pipe:"):
        import webdataset

        return webdataset.gopen(url, "rb")
    return open(url, "rb")


MAX_MEMBER_BYTES = 64 * 2**20  # one sample's file; a larger one (a compressed bomb) fails the shard


def _tar_members(stream) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of each regular file of a tar stream, read sequentially."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            if info.isreg() and info.size > MAX_MEMBER_BYTES:
                raise ValueError(f"member {info.name} is {info.size} bytes, over the {MAX_MEMBER_BYTES} limit")
            if info.isreg():
                handle = tar.extractfile(info)
                assert handle is not None
                yield info.name, handle.read()
            tar.members = []  # the sequential reader would otherwise keep every header


def _group_by_key(members: Iterable[tuple[str, bytes]]) -> Iterator[RawSample]:
    """Consecutive members sharing a key (the name up to the first dot of its base name) as one
    sample ``{"__key__": key, extension: bytes, ...}``. A sample is yielded only once the next
    one starts or the shard ends cleanly, so a shard cut mid-sample loses that sample."""
    current: RawSample = {}
    for name, data in members:
        folder, _, base = name.rpartition("/")
        stem, dot, extension = base.partition(".")
        if not dot or base.startswith("__"):
            continue
        key = f"{folder}/{stem}" if folder else stem
        if current and current["__key__"] != key:
            yield current
            current = {}
        current["__key__"] = key
        current[extension.lower()] = data
    if current:
        yield current


@dataclass
class ShardProblems:
    """Unreadable shards and unusable samples met while reading, with the first reason."""

    bad_shards: int = 0
    bad_samples: int = 0
    first: str | None = None

    def shard(self, url: str, reason: str) -> None:
        self.bad_shards += 1
        self.first = self.first or f"{Path(url).name}: {reason}"

    def sample(self, url: str, key: str, reason: str) -> None:
        self.bad_samples += 1
        self.first = self.first or f"{Path(url).name}/{key}: {reason}"

    @property
    def any(self) -> bool:
        return bool(self.bad_shards or self.bad_samples)

    def summary(self) -> str:
        return (
            f"skipped {self.bad_shards} truncated or unreadable shard(s) and {self.bad_samples} "
            f"unusable sample(s) (first: {self.first})"
        )


def raw_samples(
    url: str, problems: ShardProblems, expected: int | None = None
) -> Iterator[RawSample]:
    """The undecoded samples of one shard. A shard that cannot be opened, breaks off or holds
    fewer samples than ``expected`` is recorded in ``problems``; the samples before the break
    are still yielded."""
    count = 0
    try:
        with _open(url) as stream:
            for sample in _group_by_key(_tar_members(stream)):
                count += 1
                yield sample
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        problems.shard(url, str(exc) or exc.__class__.__name__)
        return
    except Exception as exc:  # a remote stream or decompressor may fail in any way
        problems.shard(url, f"{exc.__class__.__name__}: {exc}")
        return
    if expected is not None and count < expected:
        problems.shard(url, f"truncated: {count} of {expected} samples")


def decode_sample(sample: RawSample, image_size: int | None, channels: int) -> ShardRecord:
    """Decode one raw sample; ``image_size`` None keeps the stored size (a square image).
    Raises :class:`BadSample`."""
    image_key = next((k for k in IMAGE_KEYS if k in sample), None)
    if image_key is None:
        raise BadSample("no image")
    data = sample[image_key]
    try:
        if image_size is None:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                image_size = min(img.size)
        image = read_image(io.BytesIO(data), image_size, channels)  # type: ignore[arg-type]
    except UnreadableImage as exc:
        raise BadSample(f"unreadable image ({exc})") from None
    except Exception as exc:
        raise BadSample(f"unreadable image ({exc.__class__.__name__})") from None
    label, caption, meta = -1, None, {}
    try:
        if "json" in sample:
            meta = json.loads(sample["json"].decode("utf-8"))
            if not isinstance(meta, dict):
                raise BadSample("json is not an object")
        if "cls" in sample:
            label = int(sample["cls"].decode("ascii").strip())
        elif isinstance(meta.get("label"), int):
            label = meta["label"]
        if "txt" in sample:
            caption = sample["txt"].decode("utf-8").strip()
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadSample(f"bad label, caption or json ({exc.__class__.__name__})") from None
    return ShardRecord(str(sample["__key__"]), image, label, caption, meta)


def iter_records(
    url_or_dir: str,
    image_size: int | None = None,
    channels: int | None = None,
    problems: ShardProblems | None = None,
) -> Iterator[ShardRecord]:
    """Every usable sample of every shard, in stored order, decoded at ``image_size`` (None: the
    stored size). Problems are recorded in ``problems`` and skipped."""
    shards, index = resolve_shards(url_or_dir)
    problems = problems if problems is not None else ShardProblems()
    channels = channels or (index or {}).get("channels", 3)
    expected = _expected_counts(shards, index)
    for url in shards:
        for raw in raw_samples(url, problems, expected.get(url)):
            try:
                yield decode_sample(raw, image_size, channels)
            except BadSample as exc:
                problems.sample(url, str(raw["__key__"]), str(exc))


def _expected_counts(shards: list[str], index: dict | None) -> dict[str, int]:
    if not index:
        return {}
    counts = [s.get("samples") for s in index["shards"]]
    return {url: n for url, n in zip(shards, counts, strict=True) if isinstance(n, int)}


def assign_shards(shards: list[str], part: int, parts: int) -> tuple[list[str], int, int]:
    """Divide ``shards`` among ``parts`` readers: ``(shards part reads, stride, offset)``; the
    reader keeps the samples whose position ``i`` in its stream has ``i % stride == offset``.

    Whole shards when there are at least as many as readers, else every reader reads every
    shard and keeps one sample in ``parts``, so no reader is left without data.
    """
    if parts <= 1:
        return shards, 1, 0
    if len(shards) >= parts:
        return shards[part::parts], 1, 0
    return shards, parts, part


def _every(items: Iterable, stride: int, offset: int) -> Iterator:
    for i, item in enumerate(items):
        if i % stride == offset:
            yield item


def _shuffle_buffer(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """Items in a locally shuffled order: each output is drawn at random from a buffer of ``size``."""
    if size <= 1:
        yield from items
        return
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def distributed_position() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` outside distributed training)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _peek(shards: list[str]) -> RawSample:
    """The first readable raw sample among ``shards`` (to learn channels and captions)."""
    problems = ShardProblems()
    for url in shards:
        for sample in raw_samples(url, problems):
            if any(k in sample for k in IMAGE_KEYS):
                return sample
    raise DataError(
        f"no readable sample in {len(shards)} shard(s) (first problem: {problems.first})"
    )


def _channels_of(sample: RawSample) -> int:
    from PIL import Image

    data = next(sample[k] for k in IMAGE_KEYS if k in sample)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except Exception:
        return 3


class ShardDataset(IterableDataset):
    """Streams ``(image, label)`` or, when the shards carry captions, ``(image, label, caption)``:
    image float ``(C, S, S)`` in [-1, 1] (centre-cropped and resized to ``image_size``), label
    ``int`` (-1 when absent), caption ``str``.

    ``url_or_dir``: a folder written by ``ganfuse data pack`` (or any folder of tar shards), one
    tar file, or a URL / brace pattern. Each reader (DDP rank x DataLoader worker) reads its share
    (see :func:`assign_shards`) in a shuffled shard order, through a shuffle buffer of
    ``shuffle_buffer`` samples (0 keeps the stored order). ``repeat`` makes an endless stream, as
    training wants; otherwise one pass ends the iteration. ``skipped`` and ``bad_shards`` count
    the problems this process met.
    """

    def __init__(
        self,
        url_or_dir: str | Path,
        image_size: int,
        channels: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        repeat: bool = False,
    ):
        super().__init__()
        self.url = str(url_or_dir)
        self.shards, index = resolve_shards(self.url)
        self.expected = _expected_counts(self.shards, index)
        self.image_size = image_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.repeat = repeat
        if index is not None:
            self.channels = channels or int(index.get("channels", 3))
            self.class_names = [str(c) for c in index.get("class_names", [])]
            self.has_captions = bool(index.get("captions", False))
            self.num_samples: int | None = index.get("samples")
            self.name = f"shards:{index.get('name', self.url)}"
        else:
            first = _peek(self.shards)
            self.channels = channels or _channels_of(first)
            self.class_names = []
            self.has_captions = "txt" in first
            self.num_samples = None
            self.name = f"shards:{self.url}"
        self.num_classes = len(self.class_names)
        self.skipped = 0
        self.bad_shards = 0
        self._passes = 0
        self._reported = False

    def _reader(self) -> tuple[int, int, int, int, int]:
        """``(rank, world, worker, workers, seed)`` of the process iterating now."""
        rank, world = distributed_position()
        info = get_worker_info()
        if info is None:
            self._passes += 1
            return rank, world, 0, 1, (self.seed * 1_000_003 + rank) * 1009 + self._passes
        # DataLoader seeds each worker from the main process's generator: new order every epoch
        return rank, world, info.id, info.num_workers, info.seed

    def _item(self, record: ShardRecord) -> tuple:
        image = uint8_to_float(torch.tensor(record.image))  # a copy: decoded arrays are read-only
        if self.has_captions:
            return image, record.label, record.caption
        return image, record.label

    def _decoded(
        self, raws: Iterable[tuple[str, RawSample]], problems: ShardProblems
    ) -> Iterator[tuple]:
        for url, raw in raws:
            try:
                record = decode_sample(raw, self.image_size, self.channels)
                if self.has_captions and not record.caption:
                    raise BadSample("no caption")
                if self.num_classes and not 0 <= record.label < self.num_classes:
                    # a conditional model would index its class embedding with it
                    raise BadSample(f"label {record.label} outside 0..{self.num_classes - 1}")
            except BadSample as exc:
                problems.sample(url, str(raw["__key__"]), str(exc))
                continue
            yield self._item(record)

    def __iter__(self) -> Iterator[tuple]:
        rank, world, worker, workers, seed = self._reader()
        rng = random.Random(seed)
        shards, rank_stride, rank_offset = assign_shards(self.shards, rank, world)
        shards, worker_stride, worker_offset = assign_shards(shards, worker, workers)
        # readers that share shards must see them in the same order to divide their samples
        exclusive = rank_stride == 1 and worker_stride == 1
        while True:
            problems = ShardProblems()
            order = list(shards)
            if exclusive and self.shuffle_buffer > 0:
                rng.shuffle(order)
            raws = (
                (url, raw)
                for url in order
                for raw in raw_samples(url, problems, self.expected.get(url))
            )
            mine = _every(_every(raws, rank_stride, rank_offset), worker_stride, worker_offset)
            produced = 0
            for item in _shuffle_buffer(self._decoded(mine, problems), self.shuffle_buffer, rng):
                produced += 1
                yield item
            self._report(problems, rank, world, worker, workers)
            if not produced:
                raise DataError(
                    f"{self.name}: no usable sample in this reader's {len(shards)} shard(s) "
                    f"({problems.summary()})"
                )
            if not self.repeat:
                return

    def _report(
        self, problems: ShardProblems, rank: int, world: int, worker: int, workers: int
    ) -> None:
        self.skipped += problems.bad_samples
        self.bad_shards += problems.bad_shards
        if problems.any and not self._reported:
            self._reported = True  # one line per reader, not one per pass of an endless stream
            where = (
                f" (rank {rank}/{world}, worker {worker}/{workers})"
                if world > 1 or workers > 1
                else ""
            )
            log.warning("%s: %s%s", self.name, problems.summary(), where)
