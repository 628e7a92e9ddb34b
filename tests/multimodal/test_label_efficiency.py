"""Label efficiency: fractions of labels, frozen probes versus training from scratch, and\ngenerated images labelled by their prompts."""

from __future__ import annotations

import math

import pytest
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.shapes import ShapesDataset
from ganfuse.errors import ConfigError
from ganfuse.models.encoders import ImageEncoder
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.label_efficiency import (
    gap_closed,
    generate_labelled_images,
    generated_label_efficiency,
    label_efficiency,
    train_attribute_classifier,
)
from ganfuse.multimodal.splits import config_split

from .conftest import TINY


def test_rows_per_encoder_and_fraction_and_the_probe_stays_frozen():
    torch.manual_seed(0)
    encoder = ImageEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = make_config("multitask", None, [*TINY, "train_size=200"])
    rows = label_efficiency(
        config, {"scratch": None, "pretrained": encoder}, fractions=(0.05, 1.0), probe_steps=3
    )
    assert [(r["init"], r["fraction"], r["labels"]) for r in rows] == [
        ("scratch", 0.05, 10.0),
        ("scratch", 1.0, 200.0),
        ("pretrained", 0.05, 10.0),
        ("pretrained", 1.0, 200.0),
    ]
    for row in rows:
        accuracies = [row[f"{a}_accuracy"] for a in ("color", "shape", "size", "position")]
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        assert abs(row["mean_accuracy"] - sum(accuracies) / 4) < 1e-9
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def _oracle(train):
    """A sampler that returns, for each caption, the real training image it captions (float)."""
    image_of = dict(zip(train.captions, train.images, strict=True))
    return lambda prompts, seed: uint8_to_float(torch.stack([image_of[p] for p in prompts]))


def test_generated_images_are_resized_to_the_data_and_labelled_by_their_prompts():
    data = ShapesDataset("train", num=12, seed=0, image_size=64)
    generated = generate_labelled_images(lambda p, s: uint8_to_float(data.images), data.captions, 32)
    assert generated.images.dtype == torch.uint8 and generated.images.shape == (12, 3, 32, 32)
    for attribute in ("color", "shape", "size", "position"):
        assert torch.equal(generated.labels[attribute], data.labels[attribute]), attribute
    with pytest.raises(ConfigError, match=r"must return \(12, 3, H, W\) images, one per prompt"):
        generate_labelled_images(lambda p, s: data.images[:3], data.captions, 32)


def test_generated_images_join_the_labelled_ones_or_replace_them():
    config = make_config("multitask", None, [*TINY, "train_size=200"])
    train = config_split(config, "train")
    generated = generate_labelled_images(_oracle(train), train.captions[:50], config.image_size)
    alone = train_attribute_classifier(config, 0.05, progress=False)
    mixed = train_attribute_classifier(config, 0.05, None, False, generated, 0.5)
    only = train_attribute_classifier(config, 0.05, None, False, generated, 1.0)
    assert (alone["labels"], alone["generated"]) == (10.0, 0.0)
    assert (mixed["labels"], mixed["generated"]) == (10.0, 50.0)
    assert (only["labels"], only["generated"]) == (0.0, 50.0)
    with pytest.raises(ConfigError, match=r"generated_share must be in \[0, 1\]"):
        train_attribute_classifier(config, 0.05, None, False, generated, 1.5)


def test_the_study_reports_the_share_of_the_gap_the_generated_images_close():
    config = make_config("multitask", None, [*TINY, "train_size=200"])
    train = config_split(config, "train")
    result = generated_label_efficiency(config, _oracle(train), fraction=0.05, num_generated=60,
                                        progress=False)
    rows = result["rows"]
    assert list(rows) == ["labels 5%", "labels 5% + generated", "generated only", "labels 100%"]
    assert (result["labels"], result["generated"]) == (10, 60)
    low, high = rows["labels 5%"]["mean_accuracy"], rows["labels 100%"]["mean_accuracy"]
    value = rows["labels 5% + generated"]["mean_accuracy"]
    assert result["gap_closed"] == pytest.approx(gap_closed(low, high, value), nan_ok=True)
    assert gap_closed(0.8, 1.0, 0.9) == pytest.approx(0.5)
    assert math.isnan(gap_closed(1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\)"):
        generated_label_efficiency(config, _oracle(train), fraction=1.0, progress=False)
