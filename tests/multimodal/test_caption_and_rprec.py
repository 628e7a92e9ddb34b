"""Caption scoring, the text-to-image cycle check, and R-precision, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganfuse.data.shapes import ShapeAttributes, make_caption, parse_caption, render_shapes
from ganfuse.models.captioner import CaptionVocab, caption_tokens
from ganfuse.multimodal.captioning import attribute_scores, cycle_accuracy, reference_captions
from ganfuse.multimodal.rprec import r_precision

ATTRS = [
    ShapeAttributes("red", "circle", "small", "center"),
    ShapeAttributes("blue", "triangle", "large", "top-left"),
]


def test_caption_tokens_round_trip_punctuation_and_hyphens():
    text = "top-left corner: a tiny red disc (small), huge"
    assert "".join(caption_tokens(text)) == text
    vocab = CaptionVocab.from_texts([text])
    inputs, targets = vocab.encode([text])
    assert inputs[0, 0] == vocab.bos and targets[0, -1] == vocab.eos
    assert vocab.decode(targets[0].tolist()) == text


def test_attribute_scores_count_exact_and_per_field_matches():
    captions = [
        "a small red circle in the center",
        "a large blue triangle in the top right",
        "nonsense",
    ]
    truth = [*ATTRS, ATTRS[0]]
    scores = attribute_scores(captions, truth)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["parse_rate"] == pytest.approx(2 / 3)
    assert scores["color_accuracy"] == pytest.approx(2 / 3)
    assert scores["position_accuracy"] == pytest.approx(1 / 3)


def test_references_give_one_caption_per_template():
    references = reference_captions(ATTRS)
    assert len(references) == 8 and all(len(r) == 2 for r in references)
    assert all(parse_caption(r[0]) == ATTRS[0] for r in references)


class PerfectCaptioner:
    """Reads the colour of the shape's pixels and its bounding box: a stand-in for a trained model."""

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def caption(self, images):
        from ganfuse.data.shapes import COLORS

        out = []
        for image in images:
            rgb = ((image + 1) * 127.5).round().to(torch.int64)
            on = rgb.sum(0) > 0
            ys, xs = on.nonzero(as_tuple=True)
            pixel = tuple(rgb[:, ys[0], xs[0]].tolist())
            color = next(c for c, v in COLORS.items() if v == pixel)
            out.append(f"a {color} shape")
        return out


def test_cycle_accuracy_scores_captions_of_generated_images_against_the_prompts():
    rng = np.random.default_rng(0)
    prompts = [make_caption(a, rng) for a in ATTRS]

    def generate(texts):
        attributes = [parse_caption(t) for t in texts]
        return torch.from_numpy(render_shapes(attributes)).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    scores = cycle_accuracy(generate, PerfectCaptioner(), prompts)
    # "a red shape" does not parse as a shapes caption: exact match 0, parse rate 0.
    assert scores["exact_match"] == 0.0 and scores["parse_rate"] == 0.0
    with pytest.raises(ValueError, match="parseable"):
        cycle_accuracy(generate, PerfectCaptioner(), ["hello"])


class KeywordModel:
    """Embeds an image by its colour and a text by the colour word it names: a perfect matcher
    for colour-only prompts (or, with ``flip``, a perfectly wrong one)."""

    colors = ("red", "green", "blue")

    def __init__(self, flip: bool = False):
        self.flip = flip

    def encode_image(self, images):
        channel = images.amax(dim=(2, 3)).argmax(dim=1)  # 0 red, 1 green, 2 blue
        if self.flip:
            channel = (channel + 1) % 3
        return F.one_hot(channel, 3).float()

    def encode_text(self, texts):
        index = torch.tensor([next(i for i, c in enumerate(self.colors) if c in t) for t in texts])
        return F.one_hot(index, 3).float() * 0.99 + 0.001


def _colour_images(colours):
    images = -torch.ones(len(colours), 3, 8, 8)
    for i, c in enumerate(colours):
        images[i, ("red", "green", "blue").index(c)] = 1.0
    return images


def test_r_precision_is_one_for_a_perfect_model_and_zero_for_a_wrong_one():
    colours = ["red", "green", "blue"]
    prompts = [f"a {c} thing" for c in colours]
    images = _colour_images(colours)
    # The distractors of each image are the other two prompts (drawn with replacement up to 5).
    assert r_precision(images, prompts, KeywordModel(), num_distractors=5) == 1.0
    assert r_precision(images, prompts, KeywordModel(flip=True), num_distractors=5) == 0.0


def test_r_precision_never_uses_a_same_meaning_distractor():
    rng = np.random.default_rng(0)
    attrs = ShapeAttributes("red", "circle", "small", "center")
    same = [make_caption(attrs, rng) for _ in range(20)]  # several wordings of one meaning
    other = make_caption(ShapeAttributes("green", "square", "large", "top-left"), rng)
    images = _colour_images(["red"])
    # The only allowed distractor is the green square, whatever the pool holds.
    score = r_precision(
        images, [same[0]], KeywordModel(), num_distractors=99, distractor_pool=[*same, other]
    )
    assert score == 1.0
    with pytest.raises(ValueError, match="no distractor"):
        r_precision(images, [same[0]], KeywordModel(), distractor_pool=same)
