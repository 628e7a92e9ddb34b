"""Binding-aware negatives on ``scenes``: the true caption's very words, false for the image by the
exact judge; a bag of words sits at exactly 50% on them."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from ganfuse.data.scenes import (
    COLOR_WORDS,
    COLORS,
    DEFAULT_HOLDOUT,
    SHAPE_WORDS,
    SIZE_WORDS,
    SceneGraph,
    SceneObject,
    generate_scenes,
    normalise_caption,
    parse_caption,
)
from ganfuse.metrics.scene_negatives import (
    _PHRASE,
    _swaps,
    bag_of_words_accuracy,
    bag_of_words_score,
    binding_negatives,
    build_binding_pairs,
    caption_words,
    replacement_negative,
)
from ganfuse.metrics.scenes import score_caption


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


# ---------------------------------------------------------------------------------------------
# Speed without change (issue #15): negatives are found without re-parsing or re-scoring each
# candidate's text; the pairs are those the first builder drew.
# ---------------------------------------------------------------------------------------------


def pairs_digest(pairs) -> str:
    payload = [
        pairs.image_index,
        pairs.positives,
        pairs.negatives,
        pairs.negative_kinds,
        sorted(pairs.eligible.items()),
        sorted(pairs.skipped.items()),
        sorted(pairs.one_object.items()),
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def test_pairs_are_those_of_the_first_builder(scenes, pairs):
    # Digests of the pairs the first builder (commit 9d47284) drew from the same scenes and seeds.
    graphs, captions = scenes
    held = build_binding_pairs(graphs, captions, seed=2, forbidden_pairs=DEFAULT_HOLDOUT)
    assert pairs_digest(pairs) == "ee745992e7c0b02d"
    assert pairs_digest(held) == "96d4e0349b6aeaf3"


def test_every_phrase_word_is_one_word():
    # The fast word check counts articles: it needs every size, colour and shape word to be one
    # word of caption_words.
    for table in (SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS):
        for word in (w for words in table.values() for w in words):
            assert list(caption_words(word).elements()) == [word]


def test_swaps_are_the_defined_ones_and_state_what_their_text_says(scenes):
    graphs, captions = scenes
    checked = 0
    for text in (normalise_caption(t) for texts in captions[:150] for t in texts):
        description = parse_caption(text)
        if description.kind not in ("list", "relation"):
            continue
        # The definition: every swap of two phrases, rendered, kept when it changes the text but
        # not its words (each distinct text once).
        matches = list(_PHRASE.finditer(text))
        kinds = ("color-swap", "shape-swap", "size-swap")
        kinds += ("reversal",) if description.kind == "relation" else ()
        expected, seen = [], {text}
        for i, j in itertools.combinations(range(len(matches)), 2):
            for kind in kinds:
                words = [list(m.groups()) for m in matches]
                if kind == "reversal":
                    words[i], words[j] = words[j], words[i]
                else:
                    slot = {"size-swap": 0, "color-swap": 1, "shape-swap": 2}[kind]
                    words[i][slot], words[j][slot] = words[j][slot], words[i][slot]
                negative, end = "", 0
                for m, phrase in zip(matches, words, strict=True):
                    body = " ".join(w for w in phrase if w is not None)
                    article = "an" if body[0] in "aeiou" else "a"
                    negative += f"{text[end : m.start()]}{article} {body}"
                    end = m.end()
                negative += text[end:]
                if negative not in seen and caption_words(negative) == caption_words(text):
                    seen.add(negative)
                    expected.append((negative, kind))
        swaps = list(_swaps(text, description.kind))
        assert [(negative, kind) for negative, kind, _ in swaps] == expected
        for negative, _, objects in swaps:
            parsed = parse_caption(negative)
            assert parsed.objects == objects and parsed.kind == description.kind
            assert (parsed.relations, parsed.counts) == (description.relations, description.counts)
            checked += 1
    assert checked > 300


def test_a_replacement_negative_changes_one_word_of_one_phrase_and_is_false(scenes):
    graphs, captions = scenes
    rng = np.random.default_rng(0)
    made = {"list": 0, "relation": 0, "single": 0}
    for graph, texts in zip(graphs[:150], captions[:150], strict=True):
        for text in texts:
            kind = parse_caption(text).kind
            negative = replacement_negative(text, graph, rng, DEFAULT_HOLDOUT)
            if kind == "count":
                assert negative is None  # a count caption states no bound phrase to change
                continue
            if negative is None:
                continue
            made[kind] += 1
            before, after = normalise_caption(text).split(), negative.split()
            changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
            # one attribute word, and the article where it starts with another vowel
            assert 1 <= len(changed) <= 2 and all(a in ("a", "an") for a, _ in changed[:-1])
            assert not score_caption(negative, graph).correct
            assert not any(
                (o.color, o.shape) in DEFAULT_HOLDOUT for o in parse_caption(negative).objects
            )
    assert min(made.values()) > 50


def test_no_replacement_negative_when_every_replacement_is_still_true():
    # two identical objects but for the colour: "a red circle" -> "a blue circle" is still true,
    # and only shapes and sizes are left to change, which the tries may all miss or hit
    graph = SceneGraph(
        (_obj("red", "circle", "small", 12.0, 30.0), _obj("blue", "circle", "small", 44.0, 30.0)),
        64,
    )
    rng = np.random.default_rng(0)
    outs = {replacement_negative("a red circle", graph, rng) for _ in range(200)}
    assert "a blue circle" not in outs
    assert outs - {None}  # other replacements exist and are found
