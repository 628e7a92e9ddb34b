"""The fusion tasks on ``scenes``, in the shape of :mod:`ganfuse.multimodal.tasks`: batches of
images and texts with their targets, for the fusion trainer.

- :class:`SceneVQATask` (``scenes-vqa``): each image with questions from a balanced bank built
  once per split (:func:`~ganfuse.multimodal.scene_questions.generate_questions`); one ``answer``
  head over :data:`~ganfuse.multimodal.scene_questions.ANSWERS`; ``Batch.kinds`` holds each
  question's family, so :func:`accuracy_by_kind` reports accuracy per family.
- :class:`SceneMatchingTask` (``scenes-matching``): each image with one true list or relation
  caption and its binding negative (same words, another binding or order); head ``match``. Images
  whose captions admit no binding negative give no pair.

A ``train`` split's questions and negatives never name its held-out colour-shape pairs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scene_edits import dataset_counterfactual
from ganfuse.data.scenes import ScenesDataset
from ganfuse.metrics.scene_negatives import (
    BindingPairs,
    build_binding_pairs,
    replacement_negative,
)
from ganfuse.models.fusion import ModalityFeatures
from ganfuse.multimodal.config import QUESTION_SAMPLINGS
from ganfuse.multimodal.scene_questions import (
    ANSWER_INDEX,
    ANSWERS,
    FAMILIES,
    QuestionSet,
    generate_questions,
)
from ganfuse.multimodal.tasks import Batch, batch_inputs
from ganfuse.text.encoders import split_words

BANK_SEED = 0  # questions and negatives are a fixed property of a split, like its images
REPLACEMENT = "replacement"  # the kind of a training-only one-word replacement pair


def _forbidden(data: ScenesDataset) -> tuple[tuple[str, str], ...]:
    return data.holdout if data.split == "train" else ()


LOSS_EMA = 0.98  # per-family running training loss: about the last 50 steps
UNIFORM_SHARE = 0.5  # of the family sampling weights that stays uniform under "loss"


class SceneVQATask:
    """Each image with ``questions_per_image`` of its bank's questions (all if it has fewer).

    ``sampling="loss"`` (training batches only): an image's questions are drawn with weights half
    uniform, half in proportion to each family's running training loss (:meth:`observe`), so the
    families the model has solved (``exist``, ``count``) give their share of the budget to those it
    has not (``compare``); scored batches stay uniform."""

    def __init__(self, questions_per_image: int = 2, sampling: str = "uniform"):
        if sampling not in QUESTION_SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(QUESTION_SAMPLINGS)}")
        self.name = "scenes-vqa"
        self.task_sizes = {"answer": len(ANSWERS)}
        self.questions_per_image = questions_per_image
        self.sampling = sampling
        self.family_loss = dict.fromkeys(FAMILIES, 1.0)
        self._banks: dict[int, tuple[ScenesDataset, QuestionSet]] = {}

    def family_weights(self) -> dict[str, float]:
        """The training draw's weight of each family (uniform unless ``sampling="loss"``)."""
        if self.sampling == "uniform":
            return dict.fromkeys(FAMILIES, 1.0)
        total = sum(self.family_loss.values())
        return {
            f: UNIFORM_SHARE / len(FAMILIES) + (1 - UNIFORM_SHARE) * loss / total
            for f, loss in self.family_loss.items()
        }

    def observe(self, batch: Batch, losses: dict[str, torch.Tensor]) -> None:
        """Fold a training batch's per-question losses into each family's running loss."""
        sums: dict[str, list[float]] = {}
        for kind, loss in zip(batch.kinds or (), losses["answer"].tolist(), strict=True):
            total = sums.setdefault(kind, [0.0, 0])
            total[0] += loss
            total[1] += 1
        for family, (total, count) in sums.items():
            mean = total / count
            self.family_loss[family] = LOSS_EMA * self.family_loss[family] + (1 - LOSS_EMA) * mean

    def bank(self, data: ScenesDataset) -> QuestionSet:
        """The split's questions, one per family per image, built once."""
        if id(data) not in self._banks:
            made = generate_questions(data.graphs, BANK_SEED, forbidden_pairs=_forbidden(data))
            self._banks[id(data)] = (data, made)  # the dataset is kept so its id stays its own
        return self._banks[id(data)][1]

    def make_batch(
        self, data: ScenesDataset, indices: torch.Tensor, rng: np.random.Generator
    ) -> Batch:
        return self._batch(data, indices, rng, None)

    def train_batch(
        self, data: ScenesDataset, indices: torch.Tensor, rng: np.random.Generator, step: int = 0
    ) -> Batch:
        """A training batch (of step ``step``): questions drawn by :meth:`family_weights`."""
        return self._batch(
            data, indices, rng, None if self.sampling == "uniform" else self.family_weights()
        )

    def _batch(
        self,
        data: ScenesDataset,
        indices: torch.Tensor,
        rng: np.random.Generator,
        weights: dict[str, float] | None,
    ) -> Batch:
        bank = self.bank(data)
        texts, answers, kinds, pairs = [], [], [], []
        for row, index in enumerate(indices.tolist()):
            questions = bank.questions[index]
            take = min(self.questions_per_image, len(questions))
            if weights is None:
                chosen = rng.permutation(len(questions))[:take]
            else:
                p = np.array([weights[q.family] for q in questions])
                chosen = rng.choice(len(questions), size=take, replace=False, p=p / p.sum())
            for k in chosen:
                question = questions[int(k)]
                texts.append(question.text)
                answers.append(ANSWER_INDEX[question.answer])
                kinds.append(question.family)
                pairs.append(row)
        targets = {"answer": torch.tensor(answers, dtype=torch.int64)}
        images = uint8_to_float(data.images[indices])
        graphs = [data.graphs[i] for i in indices.tolist()]
        owners = torch.tensor(pairs, dtype=torch.int64)
        return Batch(images, indices, texts, owners, targets, kinds, graphs)


class SceneMatchingTask:
    """Rows ``2i`` (a true caption) and ``2i + 1`` (its binding negative), one pair per image that
    has one, drawn by ``rng`` among the image's pairs; a batch's ``kinds`` name each pair's
    negative (``color-swap``, ``shape-swap``, ``size-swap``, ``reversal``; ``replacement`` for the
    training-only one-word replacements), so scores come per kind, as ARO reports them."""

    def __init__(
        self,
        replacement_fraction: float = 0.0,
        counterfactual_fraction: float = 0.0,
        reversal_steps: int = 0,
        reversal_loss: float = 0.0,
    ) -> None:
        self.name = "scenes-matching"
        self.task_sizes = {"match": 2}
        # training only: the share of images whose pair is one of their captions against a
        # one-word replacement (metrics.scene_negatives.replacement_negative) instead of a
        # binding swap; scored batches are always binding pairs
        self.replacement_fraction = replacement_fraction
        # training only: the share of pairs that also bring their counterfactual image (the
        # image edited so that the negative is true and the caption false, data.scene_edits)
        # with the two labels swapped, so that no wording is true more often than its partner
        self.counterfactual_fraction = counterfactual_fraction
        # training only: the first steps train relation reversals alone (a curriculum:
        # reversals are learned when nothing else is, benchmarks/scenes.md), at most
        # ``reversal_steps`` of them, ending as soon as the running loss of the reversal pairs
        # falls below ``reversal_loss`` (0: never early); the step it ended at, once it has
        self.reversal_steps = reversal_steps
        self.reversal_loss = reversal_loss
        self.reversal_ended: int | None = None
        self.running_reversal_loss = math.log(2.0)  # a yes/no head's loss at chance
        self._banks: dict[int, tuple[ScenesDataset, BindingPairs, dict[int, list[int]]]] = {}
        # per bank: the images with a reversal pair, in order (to draw from) and as a set
        self._with_reversal: dict[int, tuple[list[int], set[int]]] = {}

    def bank(self, data: ScenesDataset) -> tuple[BindingPairs, dict[int, list[int]]]:
        """The split's binding pairs and, per image, the rows of its pairs (built once)."""
        if id(data) not in self._banks:
            pairs = build_binding_pairs(data.graphs, data.captions, BANK_SEED, _forbidden(data))
            rows: dict[int, list[int]] = {}
            for row, index in enumerate(pairs.image_index):
                rows.setdefault(index, []).append(row)
            self._banks[id(data)] = (data, pairs, rows)
        return self._banks[id(data)][1:]

    def make_batch(
        self, data: ScenesDataset, indices: torch.Tensor, rng: np.random.Generator
    ) -> Batch:
        return self._batch(data, indices, rng, 0.0)

    def train_batch(
        self, data: ScenesDataset, indices: torch.Tensor, rng: np.random.Generator, step: int = 0
    ) -> Batch:
        """A training batch of step ``step``: :meth:`make_batch` with ``replacement_fraction`` of
        the images paired with a replacement negative instead (where one is found), and
        ``counterfactual_fraction`` of the pairs followed by their counterfactual image (where
        one is found: :func:`~ganfuse.data.scene_edits.counterfactual`), appended after the
        batch's images with ``image_index`` -1.

        In the reversal phase (:meth:`in_reversal_phase`) every pair is a relation reversal
        instead: an image without one is replaced by an image drawn (by ``rng``) among those that
        have one, and no replacement negatives are drawn."""
        if self.in_reversal_phase(step):
            indices = self._reversal_images(data, indices, rng)
            return self._batch(
                data, indices, rng, 0.0, self.counterfactual_fraction, only="reversal"
            )
        return self._batch(
            data, indices, rng, self.replacement_fraction, self.counterfactual_fraction
        )

    def in_reversal_phase(self, step: int) -> bool:
        """Whether training step ``step`` belongs to the reversal phase (and, the first time it
        does not, the step the phase ended at is kept in ``reversal_ended``)."""
        if self.reversal_ended is None and (
            step >= self.reversal_steps
            or self.running_reversal_loss < self.reversal_loss
        ):
            self.reversal_ended = step
        return self.reversal_ended is None

    def observe(self, batch: Batch, losses: dict[str, torch.Tensor]) -> None:
        """In the reversal phase (whose batches are all reversals), fold the batch's mean match
        loss into the running loss that ends it."""
        if self.reversal_ended is None:
            mean = float(losses["match"].detach().mean())
            self.running_reversal_loss = (
                LOSS_EMA * self.running_reversal_loss + (1 - LOSS_EMA) * mean
            )

    def _reversal_images(
        self, data: ScenesDataset, indices: torch.Tensor, rng: np.random.Generator
    ) -> torch.Tensor:
        """``indices`` with every image that has no reversal pair replaced by one that has."""
        if id(data) not in self._with_reversal:
            pairs, rows = self.bank(data)
            found = sorted(i for i, r in rows.items() if self._kind_rows(pairs, r, "reversal"))
            self._with_reversal[id(data)] = (found, set(found))
        choices, has = self._with_reversal[id(data)]
        if not choices:
            raise ValueError("no training image has a relation-reversal pair")
        keep = [
            i if i in has else choices[int(rng.integers(len(choices)))] for i in indices.tolist()
        ]
        return torch.tensor(keep, dtype=indices.dtype)

    @staticmethod
    def _kind_rows(pairs: BindingPairs, rows: list[int], kind: str | None) -> list[int]:
        """The rows among ``rows`` whose negative is of ``kind`` (all of them for ``None``)."""
        return rows if kind is None else [r for r in rows if pairs.negative_kinds[r] == kind]

    @staticmethod
    def _replacement(data: ScenesDataset, index: int, rng: np.random.Generator) -> list[str] | None:
        """One of the image's captions (tried in random order) and a replacement negative."""
        captions = data.captions[index]
        for k in rng.permutation(len(captions)):
            caption = captions[int(k)]
            negative = replacement_negative(caption, data.graphs[index], rng, _forbidden(data))
            if negative is not None:
                return [caption, negative]
        return None

    def _batch(
        self,
        data: ScenesDataset,
        indices: torch.Tensor,
        rng: np.random.Generator,
        replacement_fraction: float,
        counterfactual_fraction: float = 0.0,
        only: str | None = None,
    ) -> Batch:
        pairs, rows = self.bank(data)
        texts, owners, kinds, labels = [], [], [], []
        graphs = [data.graphs[i] for i in indices.tolist()]
        extra_images = []
        for position, index in enumerate(indices.tolist()):
            pair, kind = None, None
            if replacement_fraction and rng.random() < replacement_fraction:
                pair, kind = self._replacement(data, index, rng), REPLACEMENT
            options = self._kind_rows(pairs, rows.get(index, []), only)
            if pair is None and options:
                row = options[int(rng.integers(len(options)))]
                pair, kind = [pairs.positives[row], pairs.negatives[row]], pairs.negative_kinds[row]
            if pair is None:
                continue
            texts += pair
            owners += [position, position]
            kinds += [kind, kind]
            labels += [1, 0]
            if counterfactual_fraction and rng.random() < counterfactual_fraction:
                edited = dataset_counterfactual(data, index, *pair)
                if edited is not None:  # the same two texts, now false and true
                    extra_images.append(edited[0])
                    graphs.append(edited[1])
                    texts += pair
                    owners += [len(indices) + len(extra_images) - 1] * 2
                    kinds += [kind, kind]
                    labels += [0, 1]
        targets = {"match": torch.tensor(labels, dtype=torch.int64)}
        images = data.images[indices]
        index_of = indices
        if extra_images:
            images = torch.cat([images, torch.stack(extra_images)])
            index_of = torch.cat([indices, torch.full((len(extra_images),), -1)])
        owner = torch.tensor(owners, dtype=torch.int64)
        return Batch(uint8_to_float(images), index_of, texts, owner, targets, kinds, graphs)


@torch.no_grad()
def accuracy_by_kind(
    model: torch.nn.Module,
    head: str,
    batches: list[Batch],
    image_features: ModalityFeatures | None = None,
    pairwise: bool = False,
) -> dict[str, float]:
    """``{kind}_accuracy`` of ``head`` for every kind in the batches' ``kinds`` (the question
    family for ``scenes-vqa``, the negative's kind for ``scenes-matching``), and
    ``{head}_accuracy`` over all texts.

    ``pairwise`` (batches of (true, negative) row pairs, as :class:`SceneMatchingTask` makes):
    also ``{kind}_pairwise`` and ``{head}_pairwise``, the share of pairs where the true caption
    gets the higher match margin (logit 1 minus logit 0) than its negative, a tie counting one
    half: the two-alternative choice of ARO (Yuksekgonul et al. 2023), where each text's own
    accuracy asks the harder yes/no question of each caption alone."""
    was_training = model.training
    model.eval()
    hits: dict[str, list[float]] = {}

    def count(key: str, hit: float) -> None:
        counts = hits.setdefault(key, [0.0, 0])
        counts[0] += hit
        counts[1] += 1

    for batch in batches:
        logits = model(batch_inputs(batch, image_features), pairs=batch.pairs)
        correct = (logits[head].argmax(dim=-1) == batch.targets[head]).tolist()
        kinds = batch.kinds or [head] * len(correct)
        for kind, hit in zip(kinds, correct, strict=True):
            for key in {kind, head}:
                count(f"{key}_accuracy", float(hit))
        if pairwise:
            margin = logits[head][:, 1] - logits[head][:, 0]
            wins = torch.sign(margin[0::2] - margin[1::2]).add(1).div(2).tolist()
            for kind, win in zip(kinds[0::2], wins, strict=True):
                for key in {kind, head}:
                    count(f"{key}_pairwise", win)
    model.train(was_training)
    return {key: h / n for key, (h, n) in sorted(hits.items())}


SceneTask = SceneVQATask | SceneMatchingTask


def build_scene_task(
    name: str,
    questions_per_image: int = 2,
    replacement_fraction: float = 0.0,
    question_sampling: str = "uniform",
    counterfactual_fraction: float = 0.0,
    reversal_steps: int = 0,
    reversal_loss: float = 0.0,
) -> SceneTask:
    """The task object of a ``scenes`` task name (``scenes-vqa`` or ``scenes-matching``)."""
    if name == "scenes-vqa":
        return SceneVQATask(questions_per_image, question_sampling)
    if name == "scenes-matching":
        return SceneMatchingTask(
            replacement_fraction, counterfactual_fraction, reversal_steps, reversal_loss
        )
    raise ValueError(f"{name!r} is not a scenes task")


def scene_vocabulary(task: SceneTask, data: ScenesDataset) -> list[str]:
    """Every word of the texts ``task`` draws from ``data`` (the training split): the small text
    encoder's vocabulary. Words only evaluation texts use are unknown to it, as they should be."""
    if isinstance(task, SceneVQATask):
        texts = [q.text for questions in task.bank(data).questions for q in questions]
    else:
        pairs, _ = task.bank(data)
        texts = list(pairs.positives) + list(pairs.negatives)
    return sorted({word for text in texts for word in split_words(text)})
