"""The hard-negative sampler changes exactly one attribute and never names a held-out pair."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ganfuse.data.shapes import DEFAULT_HOLDOUT, ShapeAttributes, make_caption, parse_caption
from ganfuse.multimodal.negatives import ATTRIBUTE_FIELDS, one_attribute_negative


def changed_fields(a: ShapeAttributes, b: ShapeAttributes) -> list[str]:
    da, db = a.as_dict(), b.as_dict()
    return [f for f in ATTRIBUTE_FIELDS if da[f] != db[f]]


def test_exactly_one_attribute_changes_and_every_field_is_used():
    rng = np.random.default_rng(0)
    fields = Counter()
    for color in ("red", "green", "white"):
        for shape in ("circle", "square", "triangle"):
            attrs = ShapeAttributes(color, shape, "small", "top-left")
            for _ in range(40):
                negative, field = one_attribute_negative(attrs, rng)
                assert changed_fields(attrs, negative) == [field]
                fields[field] += 1
    assert set(fields) == set(ATTRIBUTE_FIELDS)
    # Fields are drawn uniformly: each gets roughly a quarter of 360 draws.
    assert min(fields.values()) > 60


def test_the_caption_of_a_negative_parses_to_the_negative():
    rng = np.random.default_rng(1)
    attrs = ShapeAttributes("blue", "circle", "large", "center")
    for _ in range(50):
        negative, _ = one_attribute_negative(attrs, rng)
        parsed = parse_caption(make_caption(negative, rng))
        assert parsed == negative and len(changed_fields(parsed, attrs)) == 1


def test_negatives_never_name_a_forbidden_pair():
    rng = np.random.default_rng(2)
    # Red circle: changing the shape to triangle would give the held-out red triangle.
    attrs = ShapeAttributes("red", "circle", "small", "center")
    seen_shapes = set()
    for _ in range(300):
        negative, field = one_attribute_negative(attrs, rng, forbidden_pairs=DEFAULT_HOLDOUT)
        assert (negative.color, negative.shape) not in DEFAULT_HOLDOUT
        if field == "shape":
            seen_shapes.add(negative.shape)
    assert seen_shapes == {"square"}


def test_sampler_is_reproducible_from_its_generator():
    attrs = ShapeAttributes("cyan", "square", "small", "bottom-right")
    first = [one_attribute_negative(attrs, np.random.default_rng(5)) for _ in range(3)]
    second = [one_attribute_negative(attrs, np.random.default_rng(5)) for _ in range(3)]
    assert first == second
