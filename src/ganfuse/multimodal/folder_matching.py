"""Image-caption matching on real pairs (``--task matching`` with ``world=folder`` or
``world=emoji``): does this caption belong to this image?

There is no parser or judge on these worlds, so a negative is defined by the pairs alone: for an
image, a caption of *another* image that is not one of the image's own captions, compared after
normalising case and spaces (:func:`normalise`; two images captioned alike never give each other
a false negative). Two kinds:

- **random**: any such caption of the split, uniformly over its distinct texts;
- **hard**: one that shares a content word with one of the image's captions (:func:`content_words`,
  template words such as "a", "emoji", "picture" do not count: "red apple" against "green
  apple"), and, where the data has a finer grouping (:attr:`PairsData.kinds`: the emoji's Unicode
  subgroup), of the same group when there is one. An image with no such caption has no hard
  negative.

:class:`PairMatchingTask` has the shape of :class:`~ganfuse.multimodal.tasks.PairTask`, so the
fusion trainer runs it unchanged: training batches hold each image with one of its captions and
one negative (rows ``2i``, ``2i + 1``; the negative is hard with probability
``hard_negative_fraction`` where the image has one). Its evaluation set (:meth:`eval_batches`,
fixed by a seed) holds each image with a positive, a random negative and, where it has one, a
hard negative; :func:`score_pair_matching` reports ``match_accuracy`` (positives against random
negatives, balanced), ``hard_match_accuracy`` (positives against hard negatives, on the images
that have one) and ``hard_coverage`` (the share of images that have one).

Negatives come from the split's own captions: held-out images are scored against held-out
captions, so their words may be unknown to the small text encoder (vocabulary from the training
captions only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.models.fusion import ModalityFeatures
from ganfuse.multimodal.folder_world import PairsData
from ganfuse.multimodal.tasks import Batch, batch_inputs
from ganfuse.text.encoders import WordTokenizer, split_words

# Words that say nothing about what is drawn: articles, prepositions and the emoji caption
# templates' own words ("an emoji of ...", "a picture of ...", "..., drawn as an emoji"). Sharing
# one of them does not make a negative hard.
STOP_WORDS: frozenset[str] = frozenset(
    "a an the of in on at to with and or for by as is are this that its it one "
    "emoji picture image photo drawn".split()
)
# Row kinds of an evaluation batch: a positive of an image that has a hard negative is
# ``positive-hard``, so the hard score pairs exactly those positives with their negatives.
POSITIVE, POSITIVE_HARD, RANDOM, HARD = "positive", "positive-hard", "random", "hard"
EVAL_IMAGES_PER_BATCH = 250


def normalise(text: str) -> str:
    """The caption as compared: lower case, runs of white space as one space, stripped."""
    return " ".join(text.lower().split())


def content_words(text: str) -> frozenset[str]:
    """The caption's lower-cased words less :data:`STOP_WORDS`."""
    return frozenset(w for w in split_words(text) if w not in STOP_WORDS)


@dataclass
class NegativeBank:
    """The negatives of one split. ``texts`` the distinct normalised captions (``T``, the first
    original spelling of each kept as written); ``own[i]`` the ids of image ``i``'s captions;
    ``hard[i]`` int64 array of the ids of its hard negatives (may be empty)."""

    texts: list[str]
    own: list[frozenset[int]]
    hard: list[np.ndarray]

    def random_negative(self, image: int, rng: np.random.Generator) -> int | None:
        """A text id that is not one of ``image``'s captions, uniform over the others; None when
        every caption of the split is one of its own."""
        own = self.own[image]
        if len(own) >= len(self.texts):
            return None
        while True:  # rejection: an image owns few of the split's texts
            pick = int(rng.integers(len(self.texts)))
            if pick not in own:
                return pick

    def hard_negative(self, image: int, rng: np.random.Generator) -> int | None:
        """One of ``image``'s hard negatives, uniformly; None when it has none."""
        pool = self.hard[image]
        return int(pool[int(rng.integers(len(pool)))]) if len(pool) else None


def build_negative_bank(data: PairsData) -> NegativeBank:
    """Every image's own caption ids and hard-negative ids (see the module docstring)."""
    index: dict[str, int] = {}
    texts: list[str] = []
    for captions in data.captions:
        for caption in captions:
            key = normalise(caption)
            if key not in index:
                index[key] = len(texts)
                texts.append(caption.strip())
    own = [frozenset(index[normalise(c)] for c in captions) for captions in data.captions]
    # which images own each text (its groups, where the data has groups)
    owner_kinds: list[set[int]] = [set() for _ in texts]
    if data.kinds is not None:
        for row, ids in enumerate(own):
            for text_id in ids:
                owner_kinds[text_id].add(int(data.kinds[row]))
    by_word: dict[str, set[int]] = {}
    for text_id, text in enumerate(texts):
        for word in content_words(text):
            by_word.setdefault(word, set()).add(text_id)
    hard: list[np.ndarray] = []
    for row, ids in enumerate(own):
        words = set().union(*(content_words(texts[t]) for t in ids))
        sharing = set().union(*(by_word.get(w, set()) for w in words)) - ids
        if data.kinds is not None:
            kind = int(data.kinds[row])
            same = {t for t in sharing if kind in owner_kinds[t]}
            sharing = same or sharing
        hard.append(np.array(sorted(sharing), dtype=np.int64))
    return NegativeBank(texts, own, hard)


class PairMatchingTask:
    """Matching on a :class:`PairsData` split: head ``match`` (0 no, 1 yes)."""

    def __init__(self, hard_negative_fraction: float = 0.5):
        if not 0.0 <= hard_negative_fraction <= 1.0:
            raise ValueError("hard_negative_fraction must be in [0, 1]")
        self.name = "matching"
        self.task_sizes = {"match": 2}
        self.hard_negative_fraction = hard_negative_fraction
        self._banks: dict[int, tuple[PairsData, NegativeBank]] = {}

    def bank(self, data: PairsData) -> NegativeBank:
        """The split's negatives, built once per split object."""
        if id(data) not in self._banks:
            # the data is kept with its bank so that its id stays its own
            self._banks[id(data)] = (data, build_negative_bank(data))
        return self._banks[id(data)][1]

    def make_batch(self, data: PairsData, indices: torch.Tensor, rng: np.random.Generator) -> Batch:
        """Rows ``2i`` (one of image ``indices[i]``'s captions) and ``2i + 1`` (a negative:
        hard with probability ``hard_negative_fraction`` where the image has one, else random);
        ``kinds`` says which. An image with no possible negative gives no rows."""
        bank = self.bank(data)
        texts: list[str] = []
        owners: list[int] = []
        kinds: list[str] = []
        for position, image in enumerate(indices.tolist()):
            captions = data.captions[image]
            positive = captions[int(rng.integers(len(captions)))]
            negative, kind = None, RANDOM
            if rng.random() < self.hard_negative_fraction:
                negative, kind = bank.hard_negative(image, rng), HARD
            if negative is None:
                negative, kind = bank.random_negative(image, rng), RANDOM
            if negative is None:
                continue
            texts += [positive, bank.texts[negative]]
            owners += [position, position]
            kinds += [POSITIVE, kind]
        targets = {"match": torch.tensor([1, 0] * (len(texts) // 2), dtype=torch.int64)}
        images = uint8_to_float(data.images[indices])
        return Batch(images, indices, texts, torch.tensor(owners, dtype=torch.int64), targets, kinds)

    def eval_batches(
        self, data: PairsData, seed: int, images_per_batch: int = EVAL_IMAGES_PER_BATCH
    ) -> list[Batch]:
        """Every image of ``data`` once, with a positive, a random negative and (where it has
        one) a hard negative, drawn from ``seed``: the same texts for every model scored."""
        bank = self.bank(data)
        rng = np.random.default_rng(seed)
        batches = []
        for start in range(0, len(data), images_per_batch):
            indices = torch.arange(start, min(start + images_per_batch, len(data)))
            texts: list[str] = []
            owners: list[int] = []
            kinds: list[str] = []
            labels: list[int] = []
            for position, image in enumerate(indices.tolist()):
                captions = data.captions[image]
                positive = captions[int(rng.integers(len(captions)))]
                random_id = bank.random_negative(image, rng)
                hard = bank.hard_negative(image, rng)
                rows = [(positive, POSITIVE_HARD if hard is not None else POSITIVE, 1)]
                if random_id is not None:
                    rows.append((bank.texts[random_id], RANDOM, 0))
                if hard is not None:
                    rows.append((bank.texts[hard], HARD, 0))
                for text, kind, label in rows:
                    texts.append(text)
                    owners.append(position)
                    kinds.append(kind)
                    labels.append(label)
            batches.append(
                Batch(
                    uint8_to_float(data.images[indices]),
                    indices,
                    texts,
                    torch.tensor(owners, dtype=torch.int64),
                    {"match": torch.tensor(labels, dtype=torch.int64)},
                    kinds,
                )
            )
        return batches


@torch.no_grad()
def score_pair_matching(
    model: torch.nn.Module, batches: list[Batch], image_features: ModalityFeatures | None = None
) -> dict[str, float]:
    """``match_accuracy`` (positives and random negatives), ``hard_match_accuracy`` (the
    positives of images with a hard negative and those negatives; 0 when no image has one) and
    ``hard_coverage`` (the share of scored images with a hard negative) of :meth:`eval_batches`
    batches."""
    was_training = model.training
    model.eval()
    hits: dict[str, list[int]] = {kind: [0, 0] for kind in (POSITIVE, POSITIVE_HARD, RANDOM, HARD)}
    for batch in batches:
        logits = model(batch_inputs(batch, image_features), pairs=batch.pairs)["match"]
        correct = (logits.argmax(dim=-1) == batch.targets["match"]).tolist()
        for kind, hit in zip(batch.kinds, correct, strict=True):
            hits[kind][0] += int(hit)
            hits[kind][1] += 1
    model.train(was_training)

    def accuracy(*kinds: str) -> float:
        right = sum(hits[k][0] for k in kinds)
        total = sum(hits[k][1] for k in kinds)
        return right / total if total else 0.0

    images = hits[POSITIVE][1] + hits[POSITIVE_HARD][1]
    return {
        "match_accuracy": accuracy(POSITIVE, POSITIVE_HARD, RANDOM),
        "hard_match_accuracy": accuracy(POSITIVE_HARD, HARD),
        "hard_coverage": hits[HARD][1] / images if images else 0.0,
    }


def pairs_vocabulary(train: PairsData) -> list[str]:
    """The small text encoder's words: those of the training captions (negatives are training
    captions too), most frequent first; held-out words are unknown to it."""
    return WordTokenizer.from_texts(t for captions in train.captions for t in captions).words()
