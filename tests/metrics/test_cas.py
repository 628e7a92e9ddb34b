"""Classification Accuracy Score: a sampler of real images reproduces the real-trained classifier,
a sampler of noise sits at chance, every world labels a request with what it asks for."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ganfuse.metrics.cas as cas
from ganfuse.config import Config
from ganfuse.data.scenes import COLORS, SHAPES, ScenesDataset
from ganfuse.data.shapes import ShapesDataset
from ganfuse.errors import UserError
from ganfuse.metrics.cas import (
    DIGITS_TASK,
    LabelledImages,
    asked_windows,
    cas_of_run,
    classification_accuracy_score,
    digits_cas,
    digits_reference,
    digits_test_set,
    format_cas,
    scenes_asked_shapes,
    scenes_cas,
    scenes_list_captions,
    shapes_cas,
    shapes_prompt_labels,
    true_windows,
)
from ganfuse.metrics.inputs import MetricInputError

NUM, EPOCHS = 300, 4  # 30 digits per class, a few epochs: seconds, and well above chance


def returning(images: torch.Tensor):
    """A sampler that ignores its requests and returns ``images``."""
    return lambda requests, seed: images


def test_a_sampler_of_the_reference_images_reproduces_the_real_trained_accuracy_exactly():
    reference = digits_reference(NUM, seed=0)
    result = digits_cas(returning(reference.images), NUM, seed=0, epochs=EPOCHS)
    assert result.cas == result.real_accuracy > 0.6
    assert result.ratio == 1.0
    assert (result.num, result.epochs, result.steps) == (NUM, EPOCHS, EPOCHS * 5)  # batch 64
    assert result.test_images == {"test": 359}


def test_other_real_images_of_the_asked_classes_come_within_a_few_points_of_the_reference():
    num = 400  # enough images and epochs that the accuracy (about 0.87) is no longer noisy
    other = digits_reference(num, seed=1)  # the same class-major labels, other real images
    assert not torch.equal(other.images, digits_reference(num, seed=0).images)
    result = digits_cas(returning(other.images), num, seed=0, epochs=6)
    assert result.real_accuracy > 0.8
    assert abs(result.cas - result.real_accuracy) < 0.05


def test_a_sampler_of_noise_sits_at_chance():
    def noise(requests, seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(len(requests), 1, 32, 32, generator=generator) * 2 - 1

    result = digits_cas(noise, NUM, seed=0, epochs=EPOCHS)
    # The test split is stratified, so predictions that ignore the image score 1/10 on average.
    assert abs(result.cas - 0.1) < 0.05
    assert result.ratio < 0.2


def test_digits_asks_each_class_equally_and_a_class_conditional_run_is_asked_per_class():
    reference = digits_reference(NUM, seed=0)
    assert torch.bincount(reference.labels["digit"]).tolist() == [NUM // 10] * 10
    calls = []

    def sample(n, seed, class_label):  # the real images of the asked class, in reference order
        calls.append((n, class_label))
        return reference.images[reference.labels["digit"] == class_label][:n]

    config = Config()
    config.model.conditional = True
    run = SimpleNamespace(config=config, num_classes=10, path=Path("runs/digits-cond"), step=7,
                          sample=sample)
    result = cas_of_run(run, num=NUM, epochs=1)
    assert sorted(calls) == [(NUM // 10, k) for k in range(10)]
    assert result["ratio"] == 1.0 and result["run"] == "runs/digits-cond" and result["step"] == 7
    table = format_cas(result)
    assert "digits" in table and "= 1.000 of the real-trained digit accuracy" in table


def test_a_shapes_prompt_is_labelled_with_the_attributes_it_states():
    data = ShapesDataset("train", num=50, seed=3)
    labels = shapes_prompt_labels(data.captions)
    for head, values in data.labels.items():
        assert torch.equal(labels[head], values), head
    one = shapes_prompt_labels(["a large red circle in the center"])
    assert {k: int(v) for k, v in one.items() if k != "color_shape"} == {
        "color": 0, "shape": 0, "size": 1, "position": 4}
    with pytest.raises(MetricInputError, match="cannot read the shapes caption 'a dog'"):
        shapes_prompt_labels(["a dog"])


def test_shapes_cas_of_the_images_the_prompts_caption_is_the_real_trained_accuracy():
    num = 256
    train = ShapesDataset("train", num=num, seed=0)
    seen = []

    def sample(prompts, seed):
        seen.append(prompts)
        return train.images  # uint8, the images these prompts caption

    result = shapes_cas(sample, num=num, num_test=40, epochs=2)
    assert seen == [list(train.captions)]
    assert result.generated == result.real and result.ratio == 1.0
    assert set(result.generated) == {"test", "heldout"}
    assert set(result.generated["test"]) == {"color", "shape", "size", "position", "mean", "all"}
    row = result.generated["test"]
    assert row["mean"] == pytest.approx(sum(row[k] for k in ("color", "shape", "size", "position")) / 4)
    assert result.test_images == {"test": 40, "heldout": 20}


def test_a_scenes_list_caption_asks_for_the_shape_of_each_colour_it_names_once():
    asked = scenes_asked_shapes(["three shapes: a red circle, a small blue star and a red square",
                                 "a picture of a green diamond"])
    assert asked == [{"blue": "star"}, {"green": "diamond"}]  # red is named twice: ambiguous
    with pytest.raises(MetricInputError, match="needs list captions"):
        scenes_asked_shapes(["a red circle to the left of a blue square"])


def test_the_windows_of_real_scenes_carry_the_shapes_their_captions_ask_for():
    data = ScenesDataset("train", num=40, seed=0, image_size=32)
    asked = scenes_asked_shapes(scenes_list_captions(data.captions))
    windows, labels = asked_windows(data.images, asked)
    assert windows.shape == (sum(len(a) for a in asked), 1, 24, 24)  # every asked object
    truth_windows, truth_labels = true_windows(data.images, data.graphs)
    assert len(truth_labels) == sum(len(g.objects) for g in data.graphs)
    # the asked objects are those whose colour is unique in their scene, with their true shapes
    expected = [SHAPES.index(o.shape) for g in data.graphs for o in sorted(
        g.objects, key=lambda o: list(COLORS).index(o.color))
        if [p.color for p in g.objects].count(o.color) == 1]
    assert sorted(labels.tolist()) == sorted(expected)


def test_scenes_cas_of_the_real_scenes_of_the_prompts_is_the_real_trained_accuracy():
    train = ScenesDataset("train", num=96, seed=0, image_size=32)
    result = scenes_cas(returning(train.images), num=96, image_size=32, num_test=24, epochs=3)
    assert result.generated == result.real and result.ratio == 1.0
    assert result.extra["yield"] == 1.0 and result.extra["windows"] == result.extra["asked"]
    assert set(result.generated) == {"test", "heldout"} and result.headline == "shape"
    assert "object windows" in format_cas(result.to_dict())


def test_scenes_cas_of_blank_images_learns_nothing():
    blank = torch.zeros(48, 3, 32, 32, dtype=torch.uint8)
    result = scenes_cas(returning(blank), num=48, image_size=32, num_test=8, epochs=1)
    assert result.extra["windows"] == 0 and result.extra["yield"] == 0.0 and result.cas == 0.0


def test_a_text_to_image_run_is_sampled_one_image_per_prompt_in_chunks(monkeypatch):
    monkeypatch.setattr(cas, "_PROMPTS_PER_CALL", 7)
    train = ShapesDataset("train", num=20, seed=5)  # cas_of_run(seed=5) captions this split
    image_of = dict(zip(train.captions, train.images, strict=True))
    calls = []

    def sample(n, seed, prompts):
        calls.append((n, seed, len(prompts)))
        return torch.stack([image_of[p] for p in prompts])

    config = Config()
    config.model.arch, config.data.name = "t2i-dfgan", "shapes"
    run = SimpleNamespace(config=config, num_classes=0, path=Path("r"), step=1, sample=sample)
    result = cas_of_run(run, num=20, seed=5, epochs=1)
    assert calls == [(1, 5, 7), (1, 6, 7), (1, 7, 6)]
    assert result["world"] == "shapes" and result["ratio"] == 1.0


def test_argument_errors_are_one_clear_line():
    reference = digits_reference(NUM, seed=0)
    test = digits_test_set()
    with pytest.raises(MetricInputError, match="returned 5 images for 300 requests"):
        digits_cas(returning(reference.images[:5]), NUM, epochs=1)
    with pytest.raises(MetricInputError, match="at most 1390 images"):
        digits_cas(returning(reference.images), 5000)
    with pytest.raises(MetricInputError, match="epochs must be a positive integer"):
        digits_cas(returning(reference.images), NUM, epochs=0)
    with pytest.raises(MetricInputError, match="NaN or infinite"):
        digits_cas(returning(torch.full_like(reference.images, float("nan"))), NUM, epochs=1)
    with pytest.raises(MetricInputError, match=r"heads \['digit'\]"):
        classification_accuracy_score(returning(reference.images), [0] * NUM, {"class": reference.labels["digit"]},
                                      test.images, test.labels, task=DIGITS_TASK, real_train=reference)
    with pytest.raises(MetricInputError, match="as many real images as generated ones"):
        half = LabelledImages(reference.images[:10], {"digit": reference.labels["digit"][:10]})
        classification_accuracy_score(returning(reference.images), [0] * NUM, reference.labels,
                                      test.images, test.labels, task=DIGITS_TASK, real_train=half)
    with pytest.raises(MetricInputError, match=r"must lie in 0\.\.9"):
        classification_accuracy_score(returning(reference.images), [0] * NUM,
                                      {"digit": reference.labels["digit"] + 1}, test.images, test.labels,
                                      task=replace(DIGITS_TASK), real_train=reference)
    unconditional = SimpleNamespace(config=Config(), num_classes=0, path=Path("runs/digits"), step=1)
    with pytest.raises(UserError, match="runs/digits is an unconditional run on 'digits'") as caught:
        cas_of_run(unconditional)
    assert "\n" not in str(caught.value)
