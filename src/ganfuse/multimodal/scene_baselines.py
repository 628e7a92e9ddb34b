"""Baselines of the ``scenes`` fusion tasks, for the rows of ``ganfuse fuse benchmark --world
scenes``. Each is scored on the very batches the fusion models are scored on (the config's test
split, questions and negatives drawn from :data:`~ganfuse.multimodal.train.TEST_SEED`), and
reports the same metric names (``answer_accuracy`` and ``{family}_accuracy``, or
``match_accuracy``), so its row sits in the same table.

- :func:`answer_prior_scores` (``scenes-vqa``): no image, no learning (:class:`AnswerPrior`); each
  test question gets the most frequent answer of its exact text among the training questions, or,
  for a text never seen in training, of its balance group (family, and the attribute asked).
- :func:`train_question_only` (``scenes-vqa``): a text classifier (the fusion runs' text encoder
  and a head, no image at all) trained like a fusion model: same data, batches, optimiser and
  time budget.
- :func:`bag_of_words_scores` (``scenes-matching``): the analytic bag-of-words scorer of
  :mod:`~ganfuse.metrics.scene_negatives` on the test pairs; 50% by construction, since a
  binding negative has the same words as its caption.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.sampler import EpochBatchSampler
from ganfuse.metrics.scene_negatives import bag_of_words_accuracy
from ganfuse.models.fusion import as_features
from ganfuse.models.heads import TaskHeads
from ganfuse.multimodal.checkpoint import count_parameters
from ganfuse.multimodal.config import TEST_SPLITS, FuseConfig
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import build_text
from ganfuse.multimodal.scene_questions import SceneQuestion
from ganfuse.multimodal.scene_tasks import SceneMatchingTask, SceneVQATask, scene_vocabulary
from ganfuse.multimodal.splits import config_split, labelled_indices
from ganfuse.multimodal.tasks import Batch, eval_batches
from ganfuse.multimodal.train import (
    TEST_SEED,
    FusionResult,
    fusion_task,
    init_text_encoder,
    score_task,
)
from ganfuse.text import TextEncoder


def _check_task(config: FuseConfig, task: str) -> None:
    if config.task != task:
        raise ValueError(f"this baseline is of task {task}, not {config.task}")


def _test_batches(config: FuseConfig, task: SceneVQATask | SceneMatchingTask) -> list[Batch]:
    """The batches every model of ``config``'s task is tested on."""
    test = config_split(config, TEST_SPLITS[config.train_split])
    return eval_batches(task, test, TEST_SEED)


class AnswerPrior:
    """The blind prior of ``scenes-vqa``: :meth:`predict` answers a question with the most
    frequent training answer of its exact text, else (a text never seen in training) of its
    balance group (:attr:`~ganfuse.multimodal.scene_questions.SceneQuestion.group`), else of all
    training questions. Ties go to the answer seen first in training."""

    def __init__(self, questions: Iterable[SceneQuestion]):
        self.by_text: dict[str, Counter] = defaultdict(Counter)
        self.by_group: dict[str, Counter] = defaultdict(Counter)
        self.overall: Counter = Counter()
        for question in questions:
            self.by_text[question.text][question.answer] += 1
            self.by_group[question.group][question.answer] += 1
            self.overall[question.answer] += 1
        if not self.overall:
            raise ValueError("AnswerPrior needs at least one training question")

    def predict(self, question: SceneQuestion) -> str:
        """The prior's answer to ``question`` (its answer is not looked at)."""
        table = self.by_text.get(question.text) or self.by_group.get(question.group) or self.overall
        return table.most_common(1)[0][0]


def answer_prior_scores(config: FuseConfig) -> dict[str, float]:
    """``scenes-vqa`` accuracy of :class:`AnswerPrior` fitted on every question of the training
    split's bank (the questions a fusion run draws from): ``answer_accuracy`` over the test
    questions and ``{family}_accuracy`` per family."""
    _check_task(config, "scenes-vqa")
    task = SceneVQATask(config.questions_per_image)
    prior = AnswerPrior(q for _, q in task.bank(config_split(config, config.train_split)).flat())
    test = config_split(config, TEST_SPLITS[config.train_split])
    test_bank = task.bank(test)
    hits: dict[str, list[int]] = {}
    for batch in eval_batches(task, test, TEST_SEED):
        for row, text in enumerate(batch.texts):
            image = int(batch.image_index[int(batch.pairs[row])])
            question = next(q for q in test_bank.questions[image] if q.text == text)
            hit = prior.predict(question) == question.answer
            for key in (question.family, "answer"):
                counts = hits.setdefault(key, [0, 0])
                counts[0] += int(hit)
                counts[1] += 1
    return {f"{key}_accuracy": h / n for key, (h, n) in sorted(hits.items())}


def bag_of_words_scores(config: FuseConfig) -> dict[str, float]:
    """``scenes-matching`` ``match_accuracy`` of the bag-of-words scorer: each caption of each
    test pair classified as matching when every attribute word it states is some object's."""
    _check_task(config, "scenes-matching")
    task = SceneMatchingTask()
    test = config_split(config, TEST_SPLITS[config.train_split])
    positives, negatives, graphs = [], [], []
    for batch in _test_batches(config, task):
        for row in range(0, len(batch.texts), 2):
            positives.append(batch.texts[row])
            negatives.append(batch.texts[row + 1])
            graphs.append(test.graphs[int(batch.image_index[int(batch.pairs[row])])])
    scores = bag_of_words_accuracy(positives, negatives, graphs)
    return {"match_accuracy": scores["match"]}


class QuestionOnlyModel(nn.Module):
    """A text encoder and one head per task: takes a fusion model's inputs
    (``{"image": ..., "text": B strings}``) and ignores the image; returns ``{task: (B, K)}``
    logits from the text's pooled ``(B, D)`` features alone."""

    def __init__(self, text_encoder: TextEncoder, task_sizes: Mapping[str, int], hidden: int):
        super().__init__()
        self.encoders = nn.ModuleDict({"text": text_encoder})
        self.heads = TaskHeads(text_encoder.dim, task_sizes, hidden)

    def forward(
        self, inputs: Mapping[str, object], pairs: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return self.heads(as_features(self.encoders["text"](inputs["text"])).pooled)


@uses_config_threads
def train_question_only(config: FuseConfig, progress: bool = True) -> FusionResult:
    """Train :class:`QuestionOnlyModel` on ``config``'s task as :func:`train_fusion` would train
    a fusion model (same vocabulary, text encoder start, batches, optimiser, steps and
    ``max_minutes``), and score it on the test split. Nothing is saved (``run_dir`` None)."""
    _check_task(config, "scenes-vqa")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    task = fusion_task(config)
    train = config_split(config, config.train_split)
    text = build_text(config, scene_vocabulary(task, train))
    model = QuestionOnlyModel(text, task.task_sizes, config.head_hidden)
    if config.text_encoder_init:
        init_text_encoder(model.encoders["text"], config.text_encoder_init)
    labelled = labelled_indices(len(train), config.label_fraction, config.data_seed)
    sampler = EpochBatchSampler(len(labelled), config.batch_size, seed=config.seed)

    def compute_loss(step: int) -> torch.Tensor:
        batch = task.make_batch(train, labelled[sampler.next_indices()], rng)
        logits = model({"text": batch.texts})
        losses = [F.cross_entropy(logits[h], batch.targets[h]) for h in task.task_sizes]
        return torch.stack(losses).sum()

    model.train()
    stats = optimise(
        model.parameters(), compute_loss, config, f"{config.task}/question-only", progress
    )
    test_metrics = score_task(model, task, _test_batches(config, task))
    return FusionResult(
        model=model,
        task=task,
        val_metrics={},
        test_metrics=test_metrics,
        train_seconds=stats.seconds,
        steps=stats.steps,
        params=count_parameters(model),
        run_dir=None,
    )
