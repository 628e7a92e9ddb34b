"""The shipped shapes attribute classifier: accurate on real images, usable as an extractor."""

from __future__ import annotations

import pytest
import torch

from ganfuse.data.shapes import COLORS, ShapeAttributes, ShapesDataset
from ganfuse.metrics.attributes import (
    attribute_accuracy,
    degrade,
    load_shapes_classifier,
    predicted_attributes,
    shapes_asset_path,
)
from ganfuse.metrics.extractors import get_extractor
from ganfuse.metrics.inputs import MetricInputError

ATTRIBUTES = ("color", "shape", "size", "position")


@pytest.fixture(scope="module")
def test_split() -> ShapesDataset:
    return ShapesDataset("test", seed=0)  # 2000 real images the classifier never trained on


def test_asset_is_shipped_and_small():
    path = shapes_asset_path()
    assert path.is_file()
    assert path.stat().st_size < 1_000_000


@pytest.mark.parametrize(("split", "size"), [("test", 32), ("heldout", 32), ("test", 64)])
def test_accuracy_on_real_images_is_at_least_99_percent(split: str, size: int):
    data = ShapesDataset(split, seed=0, image_size=size, num=1000)
    accuracy = attribute_accuracy(data.images, data.attributes)
    assert set(accuracy) == {*ATTRIBUTES, "all"}
    for key in ATTRIBUTES:
        assert accuracy[key] >= 0.99, (split, size, accuracy)
    assert accuracy["all"] >= 0.97


def test_float_and_uint8_inputs_agree(test_split: ShapesDataset):
    images = test_split.images[:200]
    attrs = test_split.attributes[:200]
    assert attribute_accuracy(images, attrs) == attribute_accuracy(
        test_split.float_images()[:200], attrs
    )


def test_wrong_prompts_score_low_on_exactly_that_attribute(test_split: ShapesDataset):
    colours = list(COLORS)
    shifted = [
        ShapeAttributes(colours[(colours.index(a.color) + 1) % 7], a.shape, a.size, a.position)
        for a in test_split.attributes
    ]
    accuracy = attribute_accuracy(test_split.images, shifted)
    assert accuracy["color"] <= 0.01 and accuracy["all"] <= 0.01
    assert min(accuracy["shape"], accuracy["size"], accuracy["position"]) >= 0.99


def test_degraded_images_are_still_read_correctly(test_split: ShapesDataset):
    generator = torch.Generator().manual_seed(1)
    noisy = degrade(test_split.float_images()[:500], generator)
    accuracy = attribute_accuracy(noisy, test_split.attributes[:500])
    assert min(accuracy[k] for k in ATTRIBUTES) >= 0.97, accuracy


def test_predicted_attributes_match_the_truth(test_split: ShapesDataset):
    predicted = predicted_attributes(test_split.images[:50])
    assert sum(p == a for p, a in zip(predicted, test_split.attributes[:50], strict=True)) >= 49


def test_extractor_interface(test_split: ShapesDataset):
    extractor = get_extractor("shapes")
    assert (extractor.name, extractor.input_size, extractor.feature_dim) == ("shapes", 32, 128)
    assert extractor.num_classes == 21
    images = test_split.images[:64]
    features = extractor.features(images)
    assert features.shape == (64, 128) and features.dtype == torch.float32
    probs = extractor.probs(images)
    assert probs.shape == (64, 21)
    assert torch.allclose(probs.sum(dim=1), torch.ones(64), atol=1e-5)
    agree = (probs.argmax(dim=1) == test_split.labels["color_shape"][:64]).float().mean()
    assert agree >= 0.98


def test_bad_inputs_are_metric_errors(test_split: ShapesDataset):
    with pytest.raises(MetricInputError, match="3 attribute sets"):
        attribute_accuracy(test_split.images[:4], test_split.attributes[:3])
    with pytest.raises(MetricInputError, match="RGB"):
        attribute_accuracy(test_split.images[:2, :1], test_split.attributes[:2])
    assert load_shapes_classifier() is load_shapes_classifier()  # loaded once


@pytest.mark.slow
def test_training_reproduces_the_shipped_weights():
    from ganfuse.metrics.attributes import train_shapes_classifier

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the asset was trained with one thread
    try:
        model, info = train_shapes_classifier()
    finally:
        torch.set_num_threads(threads)
    shipped = load_shapes_classifier().state_dict()
    for name, value in model.state_dict().items():
        assert torch.allclose(value, shipped[name], atol=1e-5), name
    assert min(info["accuracy_test"][k] for k in ATTRIBUTES) >= 0.99
