"""The ``scenes`` judge: the shipped parser reads real scenes exactly, and the scoring functions
accept true (caption, image) pairs and reject a wrong binding, a reversed relation, a wrong
count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import (
    CaptionParseError,
    SceneGraph,
    SceneObject,
    generate_scenes,
    parse_caption,
    relation_margin,
)
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.scenes import (
    CaptionScore,
    add_pixel_noise,
    centred_window,
    graphs_equal,
    parse_scenes,
    parser_accuracy,
    scene_parser_asset_path,
    score_caption,
    score_images,
    score_pairs,
)


def _obj(color: str, shape: str, size: str, x: float, y: float) -> SceneObject:
    half = 6 if size == "small" else 9
    box = (int(x - half), int(y - half), int(x + half), int(y + half))
    return SceneObject(color, shape, size, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), box)


# A red circle left of and above a blue square, a small green star at the bottom right.
GRAPH = SceneGraph(
    (
        _obj("red", "circle", "large", 14, 14),
        _obj("blue", "square", "small", 40, 30),
        _obj("green", "star", "small", 52, 52),
    ),
    64,
)


@pytest.mark.parametrize(
    "caption,expected",
    [
        ("a red circle to the left of a blue square", CaptionScore(True, True, None)),
        ("a large red disc is above a tiny blue box", CaptionScore(True, True, None)),
        ("a blue square to the right of a red circle", CaptionScore(True, True, None)),
        ("there are a red circle, a blue square and a green star", CaptionScore(True, None, None)),
        (
            "three shapes: a red circle, a blue square and a green star",
            CaptionScore(True, None, True),
        ),
        ("three things", CaptionScore(None, None, True)),
        ("one red shape", CaptionScore(None, None, True)),
        ("exactly 1 star", CaptionScore(None, None, True)),
        ("there is a small green star", CaptionScore(True, None, None)),
        # a wrong binding: the colours swapped between the shapes
        ("a blue circle and a red square", CaptionScore(False, None, None)),
        ("a blue circle to the left of a red square", CaptionScore(False, False, None)),
        # the wrong size
        ("a small red circle", CaptionScore(False, None, None)),
        # a reversed relation
        ("a red circle to the right of a blue square", CaptionScore(True, False, None)),
        ("a blue square above a red circle", CaptionScore(True, False, None)),
        # wrong counts: too many stated, or an extra object the count leaves out
        ("two red shapes", CaptionScore(None, None, False)),
        ("two shapes", CaptionScore(None, None, False)),
        ("two shapes: a red circle and a blue square", CaptionScore(True, None, False)),
        ("there are 2 stars", CaptionScore(None, None, False)),
        # one object may not stand for two mentions
        ("a red circle and a red circle", CaptionScore(False, None, None)),
    ],
)
def test_scoring_on_a_hand_built_graph(caption, expected):
    score = score_caption(caption, GRAPH)
    assert score == expected
    assert score.correct == all(
        v for v in (expected.binding, expected.relations, expected.count) if v is not None
    )


def test_a_relation_needs_its_margin():
    near = SceneGraph(
        (_obj("red", "circle", "small", 20, 20), _obj("blue", "square", "small", 25, 48)), 64
    )
    # 5 pixels apart along x: more than the scoring margin (4), less than the dataset's (8).
    assert score_caption("a red circle left of a blue square", near).relations is True
    assert (
        score_caption(
            "a red circle left of a blue square", near, margin=relation_margin(64)
        ).relations
        is False
    )
    assert score_caption("a red circle above a blue square", near).relations is True
    assert score_caption("a red circle below a blue square", near).relations is False


def test_relations_hold_for_some_choice_of_the_mentioned_objects():
    # Two red circles: the caption is true of the one on the left.
    graph = SceneGraph(
        (
            _obj("red", "circle", "small", 10, 30),
            _obj("blue", "star", "small", 32, 30),
            _obj("red", "circle", "small", 54, 30),
        ),
        64,
    )
    assert score_caption("a red circle to the left of a blue star", graph).correct
    assert score_caption("a red circle to the right of a blue star", graph).correct
    assert not score_caption("a red circle above a blue star", graph).correct
    assert score_caption("two red circles", graph).correct
    assert not score_caption("one red circle", graph).correct


@pytest.mark.parametrize("size", [32, 64])
def test_real_pairs_score_100_percent_with_the_datasets_own_margin(size):
    _, graphs, captions = generate_scenes(300, seed=11, split="all", image_size=size)
    texts = [c for cs in captions for c in cs]
    repeated = [g for g, cs in zip(graphs, captions, strict=True) for _ in cs]
    rates = score_pairs(texts, repeated, margin=relation_margin(size))
    assert rates == {"binding": 1.0, "relations": 1.0, "count": 1.0, "correct": 1.0}
    # Every caption is false of some other scene: the captions say something.
    shuffled = repeated[7:] + repeated[:7]
    assert score_pairs(texts, shuffled)["correct"] < 0.5


def test_the_shipped_parser_reads_a_fixed_set_exactly():
    path = scene_parser_asset_path()
    assert path.is_file() and path.stat().st_size < 400_000
    for size in (64, 32):
        images, graphs, captions = generate_scenes(150, seed=0, split="test", image_size=size)
        accuracy = parser_accuracy(images, graphs)
        assert accuracy == {"graph": 1.0, "count": 1.0, "objects": 1.0}, size
    # Images as float [-1, 1] tensors read the same, and the caption scores follow.
    tensor = uint8_to_float(torch.from_numpy(images).permute(0, 3, 1, 2))
    parsed = parse_scenes(tensor)
    assert all(graphs_equal(p, t) for p, t in zip(parsed, graphs, strict=True))
    assert score_images([c[1] for c in captions], tensor)["correct"] == 1.0


def test_the_parser_reads_held_out_pairs_and_noisy_images():
    images, graphs, _ = generate_scenes(100, seed=0, split="heldout", image_size=64, captions=False)
    assert parser_accuracy(images, graphs)["graph"] == 1.0
    noisy = add_pixel_noise(images, np.random.default_rng(0), max_sigma=12.0)
    assert parser_accuracy(noisy, graphs)["graph"] >= 0.97


def test_an_empty_background_parses_to_no_objects():
    images, _, _ = generate_scenes(4, seed=0, image_size=64, captions=False)
    background = np.broadcast_to(images[:, :1, :1], images.shape).copy()
    assert [len(g.objects) for g in parse_scenes(background)] == [0, 0, 0, 0]
    assert score_caption("exactly one star", parse_scenes(background)[0]).count is False


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros((2, 3, 48, 48), dtype=torch.uint8),
        torch.zeros((2, 3, 64, 32), dtype=torch.uint8),
        torch.zeros((2, 1, 64, 64), dtype=torch.uint8),
        torch.zeros((3, 64, 64), dtype=torch.uint8),
    ],
)
def test_an_image_of_the_wrong_size_is_a_one_line_error(bad):
    with pytest.raises(MetricInputError) as info:
        parse_scenes(bad)
    message = str(info.value)
    assert "\n" not in message and "32x32 or 64x64" in message and str(tuple(bad.shape)) in message


def test_scoring_refuses_an_unreadable_caption_and_mismatched_inputs():
    with pytest.raises(CaptionParseError, match="'a red circle next to a blue square'"):
        score_caption("a red circle next to a blue square", GRAPH)
    with pytest.raises(MetricInputError, match="2 captions but 1 graphs"):
        score_pairs(["a red circle", "two shapes"], [GRAPH])
    with pytest.raises(MetricInputError, match="at least one"):
        score_pairs([], [])
    # A parsed description scores the same as its text.
    text = "a red circle to the left of a blue square"
    assert score_caption(parse_caption(text), GRAPH) == score_caption(text, GRAPH)


@pytest.mark.slow
def test_the_parser_reaches_its_accuracy_on_2000_held_out_images_per_size():
    for size in (64, 32):
        images, graphs, _ = generate_scenes(
            2000, seed=0, split="test", image_size=size, captions=False
        )
        assert parser_accuracy(images, graphs)["graph"] >= 0.995


def test_a_silhouette_is_centred_in_its_window_and_an_oversized_one_keeps_its_middle():
    mask = np.ones((5, 8), dtype=bool)
    window = centred_window(mask)
    rows, cols = np.flatnonzero(window.any(1)), np.flatnonzero(window.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (10, 14, 8, 15)
    big = np.zeros((30, 40), dtype=bool)
    big[15, 20] = True  # the middle pixel of the box
    assert centred_window(big)[12, 12] and centred_window(big).sum() == 1
