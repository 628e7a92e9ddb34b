"""Label efficiency: attribute classifiers trained on 1%, 10% and 100% of the training labels.

Each classifier is an image encoder plus one head per attribute (colour, shape, size, position).
The encoder is either trained from scratch with the heads, or taken from a contrastive
(``zeroshot``) run and frozen, so that only the heads learn from the labels (a probe). Comparing
the two measures what learning from captions saved in labels; comparing contrastive encoders
trained with the pretrained MiniLM and with the small text encoder measures transfer learning on
the text side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.base import uint8_to_float
from ganfuse.data.shapes import ShapesDataset
from ganfuse.models.encoders import ImageEncoder
from ganfuse.models.heads import TaskHeads
from ganfuse.multimodal.config import FuseConfig
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import build_image_encoder
from ganfuse.multimodal.splits import config_split, labelled_indices
from ganfuse.multimodal.tasks import ATTRIBUTE_SIZES

FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)


class AttributeClassifier(nn.Module):
    """``(B, 3, S, S)`` in [-1, 1] -> ``{attribute: (B, K)}``: image encoder + one MLP head each."""

    def __init__(self, image_encoder: ImageEncoder, head_hidden: int = 128):
        super().__init__()
        self.image_encoder = image_encoder
        self.heads = TaskHeads(image_encoder.dim, ATTRIBUTE_SIZES, head_hidden)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.image_encoder(images).pooled)


@torch.no_grad()
def _pooled(encoder: ImageEncoder, data: ShapesDataset, index: torch.Tensor) -> torch.Tensor:
    encoder.eval()
    return torch.cat(
        [
            encoder(uint8_to_float(data.images[index[i : i + 500]])).pooled
            for i in range(0, len(index), 500)
        ]
    )


def _accuracies(
    logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    metrics = {
        f"{a}_accuracy": float((logits[a].argmax(-1) == labels[a]).float().mean())
        for a in ATTRIBUTE_SIZES
    }
    metrics["mean_accuracy"] = sum(metrics.values()) / len(metrics)
    return metrics


@uses_config_threads
def train_attribute_classifier(
    config: FuseConfig,
    fraction: float,
    encoder: ImageEncoder | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Test accuracies after training on ``fraction`` of the labels, plus ``train_seconds`` and
    ``labels``. ``encoder``: a pretrained encoder to freeze (probe); ``None``: from scratch."""
    torch.manual_seed(config.seed)
    train, test = config_split(config, "train"), config_split(config, "test")
    labelled = labelled_indices(len(train), fraction, config.data_seed)
    generator = torch.Generator().manual_seed(config.seed)
    probe = encoder is not None
    model = AttributeClassifier(
        encoder if probe else build_image_encoder(config), config.head_hidden
    )
    if probe:
        model.image_encoder.requires_grad_(False)
        # A frozen encoder's features are computed once; the heads then train in milliseconds.
        features = _pooled(model.image_encoder, train, labelled)

    def compute_loss(step: int) -> torch.Tensor:
        pick = torch.randint(len(labelled), (config.batch_size,), generator=generator)
        if probe:
            logits = model.heads(features[pick])
        else:
            index = labelled[pick]
            logits = model(uint8_to_float(train.images[index]))
        targets = {a: train.labels[a][labelled[pick]] for a in ATTRIBUTE_SIZES}
        return sum(F.cross_entropy(logits[a], targets[a]) for a in ATTRIBUTE_SIZES)

    model.train()
    if probe:
        model.image_encoder.eval()
    desc = f"labels {fraction:.0%} {'probe' if probe else 'scratch'}"
    stats = optimise(model.parameters(), compute_loss, config, desc, progress)
    model.eval()
    with torch.no_grad():
        index = torch.arange(len(test))
        logits = model.heads(_pooled(model.image_encoder, test, index))
    metrics = _accuracies(logits, test.labels)
    metrics.update(
        train_seconds=stats.seconds, labels=float(len(labelled)), steps=float(stats.steps)
    )
    return metrics


def label_efficiency(
    config: FuseConfig,
    encoders: Mapping[str, ImageEncoder | None],
    fractions: Sequence[float] = FRACTIONS,
    probe_steps: int = 400,
    progress: bool = True,
) -> list[dict[str, float | str]]:
    """One row per (encoder name, fraction): ``{"init", "fraction", ...test accuracies}``.

    ``encoders`` maps a name to a pretrained encoder (frozen, heads only, at most ``probe_steps``
    steps) or to ``None`` (from scratch, ``config.steps`` steps). ``config.max_minutes``, when
    set, is the time of the whole study: a from-scratch run gets three times a probe's share.
    """
    weights = {name: 1.0 if encoder is not None else 3.0 for name, encoder in encoders.items()}
    unit = config.max_minutes / (sum(weights.values()) * len(fractions))
    rows: list[dict[str, float | str]] = []
    for name, encoder in encoders.items():
        run_config = replace(config, max_minutes=unit * weights[name])
        if encoder is not None:
            run_config = replace(run_config, steps=probe_steps)
        for fraction in fractions:
            metrics = train_attribute_classifier(run_config, fraction, encoder, progress)
            rows.append({"init": name, "fraction": fraction, **metrics})
    return rows
