"""Caption scoring and the text-to-image cycle check, on cases with known answers.

R-precision is a metric: tests/metrics/test_rprec.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfuse.data.shapes import ShapeAttributes, make_caption, parse_caption, render_shapes
from ganfuse.models.captioner import CaptionVocab, caption_tokens
from ganfuse.multimodal.captioning import attribute_scores, cycle_accuracy, reference_captions

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
