"""Baselines of matching on real pairs (``world=folder``/``emoji``), for the rows of ``ganfuse fuse
benchmark --world emoji|folder``. Each is scored on the very batches the fusion models are
(:meth:`~ganfuse.multimodal.folder_matching.PairMatchingTask.eval_batches` of the held-out split
from :data:`~ganfuse.multimodal.train.TEST_SEED`) and reports the same metrics.

- :func:`train_caption_only` (``text-only``): the caption alone, no image (the fusion runs' text
  encoder and a head), trained like a fusion model for the same time. Every caption is a
  positive for its own image and a negative for others about as often, so it should sit near
  50%: a higher figure says the negatives can be told apart from the captions without looking.
- :func:`dual_encoder_scores` (``dual-encoder``): the contrastive dual encoder that the fusion
  runs share their image encoder with, as a matcher: "yes" when the image-caption cosine is
  above a threshold, the one that scores best on the training images' evaluation pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.sampler import EpochBatchSampler
from ganfuse.multimodal.checkpoint import count_parameters
from ganfuse.multimodal.config import FuseConfig
from ganfuse.multimodal.folder_matching import (
    HARD,
    PairMatchingTask,
    pairs_vocabulary,
    score_pair_matching,
)
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import build_text
from ganfuse.multimodal.scene_baselines import QuestionOnlyModel
from ganfuse.multimodal.splits import config_split, labelled_indices
from ganfuse.multimodal.train import TEST_SEED, VAL_SEED, FusionResult, init_text_encoder
from ganfuse.multimodal.zeroshot import DualEncoder, load_dual_encoder

HELD_OUT = "heldout"


def _matching_task(config: FuseConfig) -> PairMatchingTask:
    if config.task != "matching":
        raise ValueError(f"this baseline is of task matching, not {config.task}")
    return PairMatchingTask(config.hard_negative_fraction)


@uses_config_threads
def train_caption_only(config: FuseConfig, progress: bool = True) -> FusionResult:
    """A caption-only classifier trained on ``config``'s matching batches as
    :func:`~ganfuse.multimodal.train.train_fusion` would train a fusion model (vocabulary, text
    encoder start, batches, optimiser, steps, ``max_minutes``), scored on the held-out split.
    Nothing is saved."""
    task = _matching_task(config)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train = config_split(config, "train")
    model = QuestionOnlyModel(
        build_text(config, pairs_vocabulary(train)), task.task_sizes, config.head_hidden
    )
    if config.text_encoder_init:
        init_text_encoder(model.encoders["text"], config.text_encoder_init)
    labelled = labelled_indices(len(train), config.label_fraction, config.data_seed)
    sampler = EpochBatchSampler(len(labelled), config.batch_size, seed=config.seed)

    def compute_loss(step: int) -> torch.Tensor:
        batch = task.make_batch(train, labelled[sampler.next_indices()], rng)
        return F.cross_entropy(model({"text": batch.texts})["match"], batch.targets["match"])

    model.train()
    stats = optimise(model.parameters(), compute_loss, config, "matching/text-only", progress)
    test = config_split(config, HELD_OUT)
    return FusionResult(
        model=model,
        task=task,
        val_metrics={},
        test_metrics=score_pair_matching(model, task.eval_batches(test, TEST_SEED)),
        train_seconds=stats.seconds,
        steps=stats.steps,
        params=count_parameters(model),
        run_dir=None,
    )


class CosineMatcher(nn.Module):
    """A dual encoder as a two-way matcher: logits ``(B, 2)`` = ``[0, cos - threshold]`` for
    text ``i`` against image ``pairs[i]``."""

    def __init__(self, dual: DualEncoder, threshold: float = 0.0):
        super().__init__()
        self.dual = dual
        self.threshold = threshold

    @torch.no_grad()
    def cosines(self, inputs: dict, pairs: torch.Tensor) -> torch.Tensor:
        """``(B,)`` cosine of each text with its image."""
        images = self.dual.encode_image(inputs["image"])[pairs]
        return (images * self.dual.encode_text(inputs["text"])).sum(-1)

    def forward(self, inputs: dict, pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        margin = self.cosines(inputs, pairs) - self.threshold
        return {"match": torch.stack([torch.zeros_like(margin), margin], dim=-1)}


def best_threshold(cosines: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold (midway between two sorted cosines ``(N,)``) with the highest accuracy
    of ``cosine > threshold`` against ``labels`` ``(N,)`` 0/1."""
    order = cosines.argsort()
    values, truth = cosines[order], labels[order].long()
    # accuracy when the first k (lowest) are called "no": k - (positives among them) ... kept as
    # cumulative sums, k = 0..N
    positives_below = torch.cat([torch.zeros(1, dtype=torch.long), truth.cumsum(0)])
    k = torch.arange(len(values) + 1)
    correct = (k - positives_below) + (int(truth.sum()) - positives_below)
    best = int(correct.argmax())
    if best == 0:
        return float(values[0]) - 1e-3
    if best == len(values):
        return float(values[-1]) + 1e-3
    return float((values[best - 1] + values[best]) / 2)


@torch.no_grad()
def dual_encoder_scores(config: FuseConfig, run_dir: Path | str) -> dict[str, float]:
    """Matching scores of the ``zeroshot`` run in ``run_dir``, its cosine thresholded on the
    training images' positives and random negatives (drawn from
    :data:`~ganfuse.multimodal.train.VAL_SEED`), on the held-out batches every fusion model is
    scored on."""
    task = _matching_task(config)
    matcher = CosineMatcher(load_dual_encoder(Path(run_dir))).eval()
    cosines, labels = [], []
    for batch in task.eval_batches(config_split(config, "train"), VAL_SEED):
        # fitted where the headline score is: positives against random negatives
        keep = torch.tensor([kind != HARD for kind in batch.kinds])
        inputs = {"image": batch.images, "text": batch.texts}
        cosines.append(matcher.cosines(inputs, batch.pairs)[keep])
        labels.append(batch.targets["match"][keep])
    matcher.threshold = best_threshold(torch.cat(cosines), torch.cat(labels))
    test = config_split(config, HELD_OUT)
    return score_pair_matching(matcher, task.eval_batches(test, TEST_SEED))
