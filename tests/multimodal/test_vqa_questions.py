"""Generated VQA questions: answers agree with the attributes, yes/no is balanced."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ganfuse.data.shapes import DEFAULT_HOLDOUT, ShapeAttributes
from ganfuse.multimodal.vqa import ANSWERS, QUESTION_KINDS, YES_NO_KINDS, make_question

ATTRS = ShapeAttributes("yellow", "triangle", "large", "top-right")


@pytest.mark.parametrize(
    "kind, answer",
    [("color", "yellow"), ("shape", "triangle"), ("size", "large"), ("position", "top-right")],
)
def test_open_questions_are_answered_by_the_attribute(kind, answer):
    rng = np.random.default_rng(0)
    for _ in range(10):
        assert make_question(ATTRS, rng, kind).answer == answer


def test_yes_no_answers_follow_the_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = make_question(ATTRS, rng)
        assert q.answer in ANSWERS
        words = q.text.rstrip("?").split()
        if q.kind == "row":
            assert (q.answer == "yes") == (words[-2] == "top")
        elif q.kind == "column":
            assert (q.answer == "yes") == (words[-2] == "right")
        elif q.kind == "shape_size":
            assert words[2] == "triangle" and (q.answer == "yes") == (words[3] == "large")
        elif q.kind == "is_color":
            assert (q.answer == "yes") == (words[-1] == "yellow")
        elif q.kind == "exists":
            assert (q.answer == "yes") == (words[-2:] == ["yellow", "triangle"])


def test_yes_and_no_are_balanced_and_every_kind_appears():
    rng = np.random.default_rng(3)
    questions = [make_question(ATTRS, rng) for _ in range(2000)]
    assert set(q.kind for q in questions) == set(QUESTION_KINDS)
    answers = Counter(q.answer for q in questions if q.kind in YES_NO_KINDS)
    assert abs(answers["yes"] - answers["no"]) < 0.1 * sum(answers.values())


def test_questions_never_name_a_forbidden_pair():
    rng = np.random.default_rng(4)
    attrs = ShapeAttributes("red", "circle", "small", "center")
    for _ in range(500):
        q = make_question(attrs, rng, "exists", forbidden_pairs=DEFAULT_HOLDOUT)
        color, shape = q.text.rstrip("?").split()[-2:]
        assert (color, shape) not in DEFAULT_HOLDOUT
