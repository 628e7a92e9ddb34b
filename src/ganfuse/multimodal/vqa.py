"""Visual question answering on ``shapes``: question generation and the fixed answer vocabulary.

Nine question kinds, each answered from one image. Five are open ("what colour is the shape?",
answered by an attribute value) and four are yes/no ("is it in the top row?", "is the triangle
large?", "is the shape red?", "is there a blue circle?"), drawn with yes and no equally likely.
A yes/no answer depends on the question *and* the image together, which is why decision-level
fusion fails on those while it can still answer the open ones.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ganfuse.data.shapes import (
    COLOR_SHAPE_CLASSES,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeAttributes,
    position_cell,
)
from ganfuse.text.encoders import split_words

ANSWERS: tuple[str, ...] = (*COLORS, *SHAPES, *SIZES, *POSITIONS, "yes", "no")
ANSWER_INDEX: dict[str, int] = {a: i for i, a in enumerate(ANSWERS)}
QUESTION_KINDS: tuple[str, ...] = (
    "color",
    "shape",
    "size",
    "position",
    "row",
    "column",
    "shape_size",
    "is_color",
    "exists",
)
YES_NO_KINDS: frozenset[str] = frozenset({"row", "column", "shape_size", "is_color", "exists"})
_ROWS = ("top", "middle", "bottom")
_COLUMNS = ("left", "center", "right")


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    kind: str


def question_words() -> list[str]:
    """Every word a generated question can use (for the small text encoder's vocabulary)."""
    rng = np.random.default_rng(0)
    words: set[str] = set(ANSWERS)
    for color, shape in COLOR_SHAPE_CLASSES:
        attrs = ShapeAttributes(color, shape, SIZES[0], POSITIONS[0])
        for kind in QUESTION_KINDS:
            for _ in range(8):
                words.update(split_words(make_question(attrs, rng, kind).text))
    return sorted({w for word in words for w in split_words(word)})


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def make_question(
    attrs: ShapeAttributes,
    rng: np.random.Generator,
    kind: str | None = None,
    forbidden_pairs: Collection[tuple[str, str]] = (),
) -> Question:
    """One question about ``attrs`` of ``kind`` (random if ``None``) and its answer.

    Questions never name a ``(colour, shape)`` pair in ``forbidden_pairs`` other than the image's
    own, so training questions stay clear of the held-out pairs.
    """
    kind = _pick(rng, QUESTION_KINDS) if kind is None else kind
    if kind not in QUESTION_KINDS:
        raise ValueError(f"unknown question kind {kind!r}; choose one of {QUESTION_KINDS}")
    yes = bool(rng.integers(2))
    row, col = position_cell(attrs.position)
    if kind == "color":
        noun = _pick(rng, ("shape", attrs.shape, "object"))
        return Question(f"what {_pick(rng, ('colour', 'color'))} is the {noun}?", attrs.color, kind)
    if kind == "shape":
        return Question(
            _pick(rng, ("what shape is it?", "which shape is shown?")), attrs.shape, kind
        )
    if kind == "size":
        return Question(f"what size is the {_pick(rng, ('shape', attrs.shape))}?", attrs.size, kind)
    if kind == "position":
        return Question(f"where is the {_pick(rng, ('shape', attrs.shape))}?", attrs.position, kind)
    if kind == "row":
        asked = _ROWS[row] if yes else _pick(rng, (r for r in _ROWS if r != _ROWS[row]))
        return Question(f"is it in the {asked} row?", "yes" if yes else "no", kind)
    if kind == "column":
        asked = _COLUMNS[col] if yes else _pick(rng, (c for c in _COLUMNS if c != _COLUMNS[col]))
        return Question(f"is it in the {asked} column?", "yes" if yes else "no", kind)
    if kind == "shape_size":
        asked = attrs.size if yes else _pick(rng, (s for s in SIZES if s != attrs.size))
        return Question(f"is the {attrs.shape} {asked}?", "yes" if yes else "no", kind)
    if kind == "is_color":
        asked = attrs.color if yes else _pick(rng, (c for c in COLORS if c != attrs.color))
        return Question(f"is the shape {asked}?", "yes" if yes else "no", kind)
    # "exists": for "no", a wrong colour or a wrong shape (not both, so one word decides), never
    # a forbidden pair.
    color, shape = attrs.color, attrs.shape
    if not yes:
        options = [(c, shape) for c in COLORS if c != color] + [
            (color, s) for s in SHAPES if s != shape
        ]
        options = [pair for pair in options if pair not in forbidden_pairs]
        color, shape = options[int(rng.integers(len(options)))]
    return Question(f"is there a {color} {shape}?", "yes" if yes else "no", kind)
