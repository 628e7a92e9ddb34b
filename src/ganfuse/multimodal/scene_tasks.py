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

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import ScenesDataset
from ganfuse.metrics.scene_negatives import BindingPairs, build_binding_pairs
from ganfuse.models.fusion import ModalityFeatures
from ganfuse.multimodal.scene_questions import (
    ANSWER_INDEX,
    ANSWERS,
    QuestionSet,
    generate_questions,
)
from ganfuse.multimodal.tasks import Batch, batch_inputs
from ganfuse.text.encoders import split_words

BANK_SEED = 0  # questions and negatives are a fixed property of a split, like its images


def _forbidden(data: ScenesDataset) -> tuple[tuple[str, str], ...]:
    return data.holdout if data.split == "train" else ()


class SceneVQATask:
    """Each image with ``questions_per_image`` of its bank's questions (all if it has fewer)."""

    def __init__(self, questions_per_image: int = 2):
        self.name = "scenes-vqa"
        self.task_sizes = {"answer": len(ANSWERS)}
        self.questions_per_image = questions_per_image
        self._banks: dict[int, tuple[ScenesDataset, QuestionSet]] = {}

    def bank(self, data: ScenesDataset) -> QuestionSet:
        """The split's questions, one per family per image, built once."""
        if id(data) not in self._banks:
            made = generate_questions(data.graphs, BANK_SEED, forbidden_pairs=_forbidden(data))
            self._banks[id(data)] = (data, made)  # the dataset is kept so its id stays its own
        return self._banks[id(data)][1]

    def make_batch(
        self, data: ScenesDataset, indices: torch.Tensor, rng: np.random.Generator
    ) -> Batch:
        bank = self.bank(data)
        texts, answers, kinds, pairs = [], [], [], []
        for row, index in enumerate(indices.tolist()):
            questions = bank.questions[index]
            take = min(self.questions_per_image, len(questions))
            for k in rng.permutation(len(questions))[:take]:
                question = questions[int(k)]
                texts.append(question.text)
                answers.append(ANSWER_INDEX[question.answer])
                kinds.append(question.family)
                pairs.append(row)
        targets = {"answer": torch.tensor(answers, dtype=torch.int64)}
        images = uint8_to_float(data.images[indices])
        return Batch(images, indices, texts, torch.tensor(pairs, dtype=torch.int64), targets, kinds)


class SceneMatchingTask:
    """Rows ``2i`` (a true caption) and ``2i + 1`` (its binding negative), one pair per image that
    has one, drawn by ``rng`` among the image's pairs."""

    def __init__(self) -> None:
        self.name = "scenes-matching"
        self.task_sizes = {"match": 2}
        self._banks: dict[int, tuple[ScenesDataset, BindingPairs, dict[int, list[int]]]] = {}

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
        pairs, rows = self.bank(data)
        texts, owners = [], []
        for position, index in enumerate(indices.tolist()):
            options = rows.get(index, [])
            if options:
                row = options[int(rng.integers(len(options)))]
                texts += [pairs.positives[row], pairs.negatives[row]]
                owners += [position, position]
        targets = {"match": torch.tensor([1, 0] * (len(texts) // 2), dtype=torch.int64)}
        images = uint8_to_float(data.images[indices])
        return Batch(images, indices, texts, torch.tensor(owners, dtype=torch.int64), targets)


@torch.no_grad()
def accuracy_by_kind(
    model: torch.nn.Module,
    head: str,
    batches: list[Batch],
    image_features: ModalityFeatures | None = None,
) -> dict[str, float]:
    """``{kind}_accuracy`` of ``head`` for every kind in the batches' ``kinds`` (the question
    family for ``scenes-vqa``), and ``{head}_accuracy`` over all texts."""
    was_training = model.training
    model.eval()
    hits: dict[str, list[int]] = {}
    for batch in batches:
        logits = model(batch_inputs(batch, image_features), pairs=batch.pairs)
        correct = (logits[head].argmax(dim=-1) == batch.targets[head]).tolist()
        kinds = batch.kinds or [head] * len(correct)
        for kind, hit in zip(kinds, correct, strict=True):
            for key in {kind, head}:
                counts = hits.setdefault(key, [0, 0])
                counts[0] += int(hit)
                counts[1] += 1
    model.train(was_training)
    return {f"{kind}_accuracy": h / n for kind, (h, n) in sorted(hits.items())}


SceneTask = SceneVQATask | SceneMatchingTask


def build_scene_task(name: str, questions_per_image: int = 2) -> SceneTask:
    """The task object of a ``scenes`` task name (``scenes-vqa`` or ``scenes-matching``)."""
    if name == "scenes-vqa":
        return SceneVQATask(questions_per_image)
    if name == "scenes-matching":
        return SceneMatchingTask()
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
