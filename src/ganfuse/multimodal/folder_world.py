"""The worlds of real image-caption pairs: ``folder`` (the user's own captioned folder) and
``emoji`` (the shipped emoji with captions from their names).

Unlike ``shapes`` and ``scenes`` there is no generator and no judge: a pair is right when the
folder says so. A split is a :class:`PairsData` with one row per *image* and every caption of
that image, so all captions of one image fall on one side of a split:

- ``folder`` (``data=PATH``, i.e. ``data_path``, read by :class:`~ganfuse.data.captions.CaptionedFolderDataset` with
  ``caption_column``, ``label_column``, ``background``, ``fit``): an image is held out when the
  SHA-256 of its file name (relative to the folder) falls in the lowest ``holdout_fraction``
  (:func:`is_heldout_file`), so the split depends on the name alone, not on the other files;
- ``emoji``: the dataset's own held-out emoji (:data:`ganfuse.data.emoji.SPLITS`, 357 images,
  every skin-tone variant of a held-out base), one caption each (its name in a template).

``train_size`` and ``eval_size`` do not cut these worlds: training uses every training image;
``eval_size`` caps the ``train`` images that are scored (:func:`train_eval_rows`).

Matching on these worlds (negatives from other images' captions) is
:mod:`ganfuse.multimodal.folder_matching`.

Scores (:func:`retrieval_recall`): recall@k image->text and text->image, where a hit is any
caption of the image, or any caption with the very same text (two images captioned alike are
both right for that caption).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.captions import CaptionedFolderDataset
from ganfuse.data.emoji import EmojiDataset
from ganfuse.errors import ConfigError, DataError
from ganfuse.multimodal.config import FuseConfig

PAIR_SPLITS: tuple[str, ...] = ("train", "heldout")
HOLDOUT_SALT = "ganfuse-folder-heldout-v1"


@dataclass
class PairsData:
    """Images with their captions. ``images`` uint8 ``(N, 3, S, S)``, one row per image;
    ``captions`` N lists of strings (at least one each); ``names`` N strings (file name, or emoji
    name); ``labels`` int64 ``(N,)`` indexing ``class_names`` (``-1``: none); ``kinds`` int64
    ``(N,)`` or None: a finer grouping that hard negatives prefer to stay within (the emoji's
    Unicode subgroup; a folder has none)."""

    images: torch.Tensor
    captions: list[list[str]]
    names: list[str]
    labels: torch.Tensor
    class_names: list[str]
    kinds: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self) -> torch.Tensor:
        return uint8_to_float(self.images)

    def flat_captions(self) -> tuple[list[str], torch.Tensor]:
        """Every caption ``(C,)`` and the row of its image ``(C,)`` int64."""
        owners = [i for i, texts in enumerate(self.captions) for _ in texts]
        texts = [t for texts in self.captions for t in texts]
        return texts, torch.tensor(owners, dtype=torch.int64)

    def subset(self, rows: Sequence[int]) -> PairsData:
        rows = list(rows)
        return PairsData(
            self.images[torch.tensor(rows, dtype=torch.int64)],
            [self.captions[i] for i in rows],
            [self.names[i] for i in rows],
            self.labels[torch.tensor(rows, dtype=torch.int64)],
            self.class_names,
            None if self.kinds is None else self.kinds[torch.tensor(rows, dtype=torch.int64)],
        )


def is_heldout_file(name: str, fraction: float) -> bool:
    """Whether the image file ``name`` (relative POSIX path) is held out: the first 8 bytes of
    ``sha256(HOLDOUT_SALT + ":" + name)`` as a fraction of 2**64 below ``fraction``."""
    digest = hashlib.sha256(f"{HOLDOUT_SALT}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


@lru_cache(maxsize=4)
def read_folder_pairs(
    root: str, image_size: int, caption_column: str, label_column: str, background: str, fit: str
) -> PairsData:
    """Every captioned image of a folder, one row per image (its captions in metadata order).
    Cached per process: callers must not modify it."""
    data = CaptionedFolderDataset(
        root, image_size, caption_column=caption_column, label_column=label_column,
        background=background, fit=fit,
    )  # fmt: skip
    first: dict[str, int] = {}
    captions: dict[str, list[str]] = {}
    for row, (file, caption) in enumerate(zip(data.files, data.captions, strict=True)):
        first.setdefault(file, row)
        captions.setdefault(file, []).append(caption)
    files = sorted(first)
    rows = torch.tensor([first[f] for f in files], dtype=torch.int64)
    return PairsData(
        data.images[rows], [captions[f] for f in files], files, data.labels[rows],
        list(data.class_names),
    )  # fmt: skip


def folder_split(config: FuseConfig, split: str) -> PairsData:
    """The ``train`` or ``heldout`` images of ``config.data_path`` (:func:`is_heldout_file`); a side
    left empty is a :class:`DataError` saying what to change."""
    everything = read_folder_pairs(
        config.data_path, config.image_size, config.caption_column, config.label_column,
        config.background, config.fit,
    )  # fmt: skip
    held = [is_heldout_file(name, config.holdout_fraction) for name in everything.names]
    rows = [i for i, h in enumerate(held) if h == (split == "heldout")]
    if not rows:
        side = "held-out" if split == "heldout" else "training"
        raise DataError(
            f"holdout_fraction={config.holdout_fraction} leaves no {side} image among the "
            f"{len(everything)} captioned images of {config.data_path}; change holdout_fraction"
        )
    return everything.subset(rows)


@lru_cache(maxsize=4)
def emoji_split(split: str, image_size: int) -> PairsData:
    """The ``train`` or ``heldout`` emoji, each with its dataset caption (its name in a
    template). Cached per process: callers must not modify it."""
    data = EmojiDataset(split, image_size)
    return PairsData(
        data.images, [[c] for c in data.captions], list(data.names), data.labels["group"],
        list(data.class_names), data.labels["subgroup"],
    )  # fmt: skip


def pairs_split(config: FuseConfig, split: str) -> PairsData:
    """``split`` (``train`` or ``heldout``; ``test`` is ``heldout``: these worlds have no other)
    of the config's ``folder`` or ``emoji`` world."""
    split = "heldout" if split == "test" else split
    if split not in PAIR_SPLITS:
        raise ConfigError(
            f"world={config.world} has the splits {', '.join(PAIR_SPLITS)}, not {split!r}"
        )
    if config.world == "emoji":
        return emoji_split(split, config.image_size)
    return folder_split(config, split)


def train_eval_rows(num: int, cap: int, seed: int) -> list[int]:
    """The training images that are scored: ``min(num, cap)`` of them, a fixed random choice for
    ``seed``, in order."""
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return sorted(order[: min(num, cap)].tolist())


def training_texts(data: PairsData) -> list[str]:
    """Every training caption: what the small text encoder's and the captioner's vocabularies
    are built from (held-out words are then unknown)."""
    return data.flat_captions()[0]


def relevance(data: PairsData, texts: Sequence[str], owners: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` bool: caption ``c`` is right for image ``i`` when it is one of its captions or
    has the text of one of them."""
    index = {t: j for j, t in enumerate(dict.fromkeys(texts))}
    text_ids = torch.tensor([index[t] for t in texts], dtype=torch.int64)
    has_text = torch.zeros(len(data), len(index), dtype=torch.bool)
    for row, captions in enumerate(data.captions):
        has_text[row, [index[t] for t in captions if t in index]] = True
    right = has_text[:, text_ids]
    right[owners, torch.arange(len(texts))] = True
    return right


def retrieval_recall(
    similarity: torch.Tensor, right: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Share of queries (rows of ``similarity`` ``(Q, N)``) with a right candidate
    (``right`` ``(Q, N)`` bool) among their top ``k``."""
    top = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices
    hits = right.gather(1, top)
    return {k: float(hits[:, :k].any(dim=1).double().mean()) for k in ks}


@torch.no_grad()
def evaluate_pairs(
    embed_images: Callable[[torch.Tensor], torch.Tensor],
    embed_texts: Callable[[list[str]], torch.Tensor],
    data: PairsData,
    prefix: str,
) -> dict[str, float]:
    """``{prefix}_i2t_r{1,5,10}`` and ``{prefix}_t2i_r{1,5,10}`` on ``data``, with the split's
    sizes and the R@1 a random ranking would reach (``{prefix}_t2i_chance_r1``: the mean share of
    the images that are right for a caption)."""
    texts, owners = data.flat_captions()
    right = relevance(data, texts, owners)  # (N, C)
    similarity = embed_images(data.float_images()) @ embed_texts(texts).t()
    metrics = {f"{prefix}_images": float(len(data)), f"{prefix}_captions": float(len(texts))}
    for k, value in retrieval_recall(similarity, right).items():
        metrics[f"{prefix}_i2t_r{k}"] = value
    for k, value in retrieval_recall(similarity.t(), right.t()).items():
        metrics[f"{prefix}_t2i_r{k}"] = value
    metrics[f"{prefix}_t2i_chance_r1"] = float(right.double().mean(0).mean())
    return metrics


# A batch: images (B, 3, S, S) in [-1, 1], texts, positives (B, T) bool, for each extra text
# (a hard negative) the caption row it negates (H,) int64, and the images' rows of the split (B,).
Draw = Callable[[], tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor, torch.Tensor]]


def pairs_draw(config: FuseConfig, train: PairsData, paired: torch.Tensor) -> Draw:
    """Batches of image rows ``paired`` of ``train``: images float ``(B, 3, S, S)``, one caption
    of each drawn at random, positives ``(B, B)`` bool (a caption is positive for every image of
    the batch that has that text), no hard negatives."""
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    caption_sets = [set(texts) for texts in train.captions]

    def draw() -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        index = paired[torch.randperm(len(paired), generator=generator)[: config.batch_size]]
        rows = index.tolist()
        texts = [train.captions[i][int(rng.integers(len(train.captions[i])))] for i in rows]
        positives = torch.tensor([[t in caption_sets[i] for t in texts] for i in rows])
        return (
            uint8_to_float(train.images[index]),
            texts,
            positives,
            torch.zeros(0, dtype=torch.int64),
            index,
        )

    return draw

