"""The fusion tasks on ``shapes``: how a batch is made from images and what is scored.

- :class:`PairTask` pairs every image with its true caption and with a hard negative (one
  attribute changed). Its heads are any of ``match`` (does the caption describe the image?) and
  the image's ``color``/``shape``/``size``/``position``. Task ``matching`` is the ``match`` head
  alone, ``multitask`` all five, ``color`` etc. one attribute head alone (the single-task
  baselines of the multi-task comparison).
- :class:`VQATask` pairs every image with generated questions; one ``answer`` head over
  :data:`~ganfuse.multimodal.vqa.ANSWERS`.

Training batches never contain a held-out colour-shape pair, neither in an image nor in a text:
the images come from the ``train`` split, and negatives and questions are drawn so that they do
not name a held-out pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.shapes import ATTRIBUTE_VALUES, ShapesDataset, make_caption
from ganfuse.models.fusion import ModalityFeatures
from ganfuse.multimodal.negatives import one_attribute_negative
from ganfuse.multimodal.vqa import ANSWER_INDEX, ANSWERS, YES_NO_KINDS, make_question

ATTRIBUTE_SIZES: dict[str, int] = {k: len(v) for k, v in ATTRIBUTE_VALUES.items()}


@dataclass
class Batch:
    """``images`` ``(B_img, 3, S, S)`` float in [-1, 1] and their dataset indices ``image_index``
    ``(B_img,)`` (-1 for an image made for the batch, such as a counterfactual scene); ``texts``
    B strings; ``pairs`` ``(B,)`` the batch image of each text; ``targets``
    ``{head: (B,) int64}``; ``kinds`` the VQA question kind of each text (empty for other tasks);
    ``graphs`` the scene graph of each batch image (``scenes`` tasks; empty for others)."""

    images: torch.Tensor
    image_index: torch.Tensor
    texts: list[str]
    pairs: torch.Tensor
    targets: dict[str, torch.Tensor]
    kinds: list[str] = field(default_factory=list)
    graphs: list = field(default_factory=list)


class PairTask:
    """Each image with one true caption (a fresh random template) and one hard negative."""

    def __init__(self, name: str, heads: Sequence[str]):
        unknown = [h for h in heads if h != "match" and h not in ATTRIBUTE_SIZES]
        if unknown:
            raise ValueError(f"unknown heads {unknown}")
        self.name = name
        self.task_sizes = {h: 2 if h == "match" else ATTRIBUTE_SIZES[h] for h in heads}

    def make_batch(
        self, data: ShapesDataset, indices: torch.Tensor, rng: np.random.Generator
    ) -> Batch:
        """``2 * len(indices)`` pairs: rows ``2i`` (true caption) and ``2i + 1`` (negative)."""
        texts: list[str] = []
        for index in indices.tolist():
            attrs = data.attributes[index]
            negative, _ = one_attribute_negative(attrs, rng, forbidden_pairs=data.holdout)
            texts += [make_caption(attrs, rng), make_caption(negative, rng)]
        pairs = torch.arange(len(indices)).repeat_interleave(2)
        targets = {}
        for head in self.task_sizes:
            if head == "match":
                targets[head] = torch.tensor([1, 0] * len(indices), dtype=torch.int64)
            else:
                targets[head] = data.labels[head][indices][pairs]
        return Batch(uint8_to_float(data.images[indices]), indices, texts, pairs, targets)


class VQATask:
    """Each image with ``questions_per_image`` random questions; head ``answer``."""

    def __init__(self, questions_per_image: int = 2):
        self.name = "vqa"
        self.task_sizes = {"answer": len(ANSWERS)}
        self.questions_per_image = questions_per_image

    def make_batch(
        self, data: ShapesDataset, indices: torch.Tensor, rng: np.random.Generator
    ) -> Batch:
        texts, answers, kinds = [], [], []
        for index in indices.tolist():
            for _ in range(self.questions_per_image):
                question = make_question(data.attributes[index], rng, forbidden_pairs=data.holdout)
                texts.append(question.text)
                answers.append(ANSWER_INDEX[question.answer])
                kinds.append(question.kind)
        pairs = torch.arange(len(indices)).repeat_interleave(self.questions_per_image)
        targets = {"answer": torch.tensor(answers, dtype=torch.int64)}
        return Batch(uint8_to_float(data.images[indices]), indices, texts, pairs, targets, kinds)


def batch_inputs(batch: Batch, image_features: ModalityFeatures | None = None) -> dict[str, object]:
    """The model inputs of a batch: its images, or their rows of precomputed ``image_features``."""
    image = batch.images if image_features is None else image_features.select(batch.image_index)
    return {"image": image, "text": batch.texts}


def build_task(name: str, questions_per_image: int = 2) -> PairTask | VQATask:
    """The fusion task ``name``: ``matching``, ``vqa``, ``multitask`` or one attribute name."""
    if name == "matching":
        return PairTask(name, ["match"])
    if name == "multitask":
        return PairTask(name, ["match", *ATTRIBUTE_SIZES])
    if name in ATTRIBUTE_SIZES:
        return PairTask(name, [name])
    if name == "vqa":
        return VQATask(questions_per_image)
    raise ValueError(f"{name!r} is not a fusion task")


def eval_batches(
    task: PairTask | VQATask, data: ShapesDataset, seed: int, batch_size: int = 250
) -> list[Batch]:
    """Fixed batches covering every image of ``data`` once, drawn from ``seed``: the same
    negatives and questions for every model scored on them."""
    rng = np.random.default_rng(seed)
    return [
        task.make_batch(data, torch.arange(start, min(start + batch_size, len(data))), rng)
        for start in range(0, len(data), batch_size)
    ]


@torch.no_grad()
def evaluate_task(
    model: torch.nn.Module,
    task: PairTask | VQATask,
    batches: list[Batch],
    image_features: ModalityFeatures | None = None,
) -> dict[str, float]:
    """Accuracy of every head, ``{head}_accuracy``; with several heads also ``mean_accuracy``;
    for VQA also ``open_accuracy`` and ``yesno_accuracy``. ``image_features``: the split's
    precomputed features of a frozen image encoder, used instead of the images."""
    was_training = model.training
    model.eval()
    correct = {head: 0 for head in task.task_sizes}
    total = 0
    kind_hits: dict[str, list[int]] = {"open": [0, 0], "yesno": [0, 0]}
    for batch in batches:
        logits = model(batch_inputs(batch, image_features), pairs=batch.pairs)
        total += len(batch.texts)
        for head in task.task_sizes:
            hits = logits[head].argmax(dim=-1) == batch.targets[head]
            correct[head] += int(hits.sum())
            if batch.kinds:
                for hit, kind in zip(hits.tolist(), batch.kinds, strict=True):
                    group = kind_hits["yesno" if kind in YES_NO_KINDS else "open"]
                    group[0] += int(hit)
                    group[1] += 1
    model.train(was_training)
    metrics = {f"{head}_accuracy": correct[head] / total for head in task.task_sizes}
    if len(task.task_sizes) > 1:
        metrics["mean_accuracy"] = sum(metrics.values()) / len(metrics)
    for group, (hit, count) in kind_hits.items():
        if count:
            metrics[f"{group}_accuracy"] = hit / count
    return metrics
