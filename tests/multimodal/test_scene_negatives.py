"""Binding-aware negatives on ``scenes``: the true caption's very words, false for the image by the
exact judge; a bag of words sits at exactly 50% on them."""

from __future__ import annotations

import pytest

from ganfuse.data.scenes import COLORS, DEFAULT_HOLDOUT, SceneGraph, SceneObject, generate_scenes
from ganfuse.metrics.scenes import score_caption
from ganfuse.multimodal.scene_negatives import (
    bag_of_words_accuracy,
    bag_of_words_score,
    binding_negatives,
    build_binding_pairs,
    caption_words,
)


def _obj(color, shape, size, x, y) -> SceneObject:
    half = 6 if size == "small" else 9
    box = (int(x - half), int(y - half), int(x + half), int(y + half))
    return SceneObject(color, shape, size, (x, y), box)


PAIR = SceneGraph(
    (_obj("red", "circle", "small", 12.0, 30.0), _obj("blue", "square", "large", 44.0, 30.0)), 64
)


def test_a_relation_caption_gets_swaps_and_its_reversal():
    negatives = binding_negatives("a red circle to the left of a large blue square", PAIR)
    assert {(n.text, n.kind) for n in negatives} == {
        ("a blue circle to the left of a large red square", "color-swap"),
        ("a red square to the left of a large blue circle", "shape-swap"),
        ("a large red circle to the left of a blue square", "size-swap"),
        ("a large blue square to the left of a red circle", "reversal"),
    }
    words = caption_words("a red circle to the left of a large blue square")
    for n in negatives:
        assert caption_words(n.text) == words
        assert not score_caption(n.text, PAIR).correct


def test_a_swap_that_is_still_true_is_dropped():
    # Both bindings are present: swapping colours describes the image too.
    graph = SceneGraph(
        PAIR.objects
        + (_obj("blue", "circle", "small", 12.0, 55.0), _obj("red", "square", "small", 44.0, 55.0)),
        64,
    )
    texts = {n.text for n in binding_negatives("a red circle and a blue square", graph)}
    assert "a blue circle and a red square" not in texts
    assert texts == set()  # the shape swap is the same sentence: nothing is left
    assert score_caption("a blue circle and a red square", graph).correct


def test_a_swap_that_changes_an_article_is_not_the_same_words():
    graph = SceneGraph(
        (_obj("orange", "circle", "small", 12.0, 30.0), _obj("red", "square", "large", 44.0, 30.0)),
        64,
    )
    texts = {n.text for n in binding_negatives("an orange circle and a large red square", graph)}
    # "a red circle and a large orange square" has "a a" where the caption has "an a".
    assert "a red circle and a large orange square" not in texts
    assert "an orange square and a large red circle" in texts


def test_captions_without_two_objects_have_no_binding_negative():
    assert binding_negatives("a red circle", PAIR) == []
    assert binding_negatives("two shapes", PAIR) == []
    assert binding_negatives("one shape: a red circle", PAIR) == []


def test_held_out_pairs_are_never_named():
    graph = SceneGraph(
        (_obj("red", "square", "small", 12.0, 30.0), _obj("blue", "triangle", "small", 44.0, 30.0)),
        64,
    )
    texts = {n.text for n in binding_negatives("a red square and a blue triangle", graph)}
    assert "a red triangle and a blue square" in texts
    held = {
        n.text
        for n in binding_negatives("a red square and a blue triangle", graph, DEFAULT_HOLDOUT)
    }
    assert "a red triangle and a blue square" not in held and "a blue square" not in " ".join(held)


@pytest.fixture(scope="module")
def scenes():
    _, graphs, captions = generate_scenes(400, seed=11, split="all")
    return graphs, captions


@pytest.fixture(scope="module")
def pairs(scenes):
    graphs, captions = scenes
    return build_binding_pairs(graphs, captions, seed=0)


def test_every_negative_has_the_true_words_and_is_false_for_its_image(scenes, pairs):
    graphs, _ = scenes
    assert len(pairs) > 500
    assert set(pairs.kinds) == {"color-swap", "shape-swap", "size-swap", "reversal"}
    for index, positive, negative in zip(
        pairs.image_index, pairs.positives, pairs.negatives, strict=True
    ):
        assert caption_words(negative) == caption_words(positive) and negative != positive
        assert score_caption(positive, graphs[index]).correct
        assert not score_caption(negative, graphs[index]).correct


def test_skipped_captions_are_counted(pairs):
    kept = {k: pairs.eligible[k] - pairs.skipped[k] for k in pairs.eligible}
    assert sum(kept.values()) == len(pairs)
    assert 0 < pairs.skipped["list"] < pairs.eligible["list"]
    assert pairs.skipped["relation"] < pairs.eligible["relation"]
    assert pairs.one_object["list"] > 0


def test_pairs_are_deterministic_in_their_seed(scenes, pairs):
    graphs, captions = scenes
    again = build_binding_pairs(graphs[:100], captions[:100], seed=0)
    n = len(again)
    assert again.negatives == pairs.negatives[:n] and again.positives == pairs.positives[:n]
    other = build_binding_pairs(graphs[:100], captions[:100], seed=1)
    assert other.positives == again.positives and other.negatives != again.negatives


def test_a_bag_of_words_scores_exactly_half_on_binding_pairs(scenes, pairs):
    graphs, _ = scenes
    images = [graphs[i] for i in pairs.image_index]
    assert all(
        bag_of_words_score(caption_words(p), g) == 1.0
        for p, g in zip(pairs.positives, images, strict=True)
    )
    result = bag_of_words_accuracy(pairs.positives, pairs.negatives, images)
    assert result == {"match": 0.5, "ranking": 0.5}
    # Whatever the threshold: the two captions of a pair always get the same score.
    assert (
        bag_of_words_accuracy(pairs.positives, pairs.negatives, images, threshold=0.3)["match"]
        == 0.5
    )


def test_the_same_bag_of_words_tells_apart_negatives_that_change_a_word(scenes, pairs):
    graphs, _ = scenes
    images = [graphs[i] for i in pairs.image_index]
    # One colour word replaced by a colour the image does not show: a bag of words sees it.
    changed = []
    for positive, graph in zip(pairs.positives, images, strict=True):
        shown = {o.color for o in graph.objects}
        absent = next(c for c in COLORS if c not in shown)
        word = next(w for w in positive.split(" ") if w in COLORS)
        changed.append(positive.replace(f" {word} ", f" {absent} ", 1))
    result = bag_of_words_accuracy(pairs.positives, changed, images)
    assert result == {"match": 1.0, "ranking": 1.0}
