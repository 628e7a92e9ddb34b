"""Relational visual questions on ``scenes``, in the manner of CLEVR, generated from scene graphs.

Four families, every answer drawn from :data:`ANSWERS`:

- ``exist``: "is there a large red circle?" -> yes / no;
- ``count``: "how many blue things are there?" -> 0..4;
- ``query_attribute``: "what colour is the large star?" (the object named by its other
  attributes) or "what shape is the red thing left of the star?" (named by a relation to another
  object) -> a colour, a shape or a size;
- ``compare``: "are the circle and the square the same colour?" -> yes / no.

Every question is resolvable in one way only. A phrase with "the" picks exactly one object. A
relation "the X left of the Y" picks the one object matching X whose centre is at least the
dataset's relation margin (:func:`~ganfuse.data.scenes.relation_margin`) left of Y's, and no other
object matching X lies left of Y at all, so the answer holds for any reading margin up to the
dataset's.

Balance: within each group (:attr:`SceneQuestion.group`: the family, and for ``query_attribute``
the attribute asked), each image's question takes the answer that group has used least so far
among the answers the image can give (ties drawn at random), then a question uniformly among the
image's questions with that answer. This is rejection sampling taken to its limit: a drawn
question is rejected whenever a rarer answer was available. With ``tolerance`` set, an image whose
best answer is still more than ``tolerance`` above the group's rarest answer gets no question of
that group (counted in :attr:`QuestionSet.rejected`), which bounds the imbalance further.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ganfuse.data.scenes import (
    COLORS,
    PLURALS,
    SHAPES,
    SIZES,
    THING_WORDS,
    ObjectSpec,
    SceneGraph,
    SceneObject,
    relation_holds,
    relation_margin,
)

FAMILIES: tuple[str, ...] = ("exist", "count", "query_attribute", "compare")
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": SIZES,
}
ATTRIBUTE_NOUNS: dict[str, str] = {"color": "colour", "shape": "shape", "size": "size"}
YES_NO: tuple[str, ...] = ("yes", "no")
COUNTS: tuple[str, ...] = ("0", "1", "2", "3", "4")
ANSWERS: tuple[str, ...] = (*YES_NO, *COUNTS, *COLORS, *SHAPES, *SIZES)
ANSWER_INDEX: dict[str, int] = {a: i for i, a in enumerate(ANSWERS)}
# The answers each balance group can take.
GROUP_ANSWERS: dict[str, tuple[str, ...]] = {
    "exist": YES_NO,
    "count": COUNTS,
    **{f"query_attribute/{a}": ATTRIBUTE_VALUES[a] for a in ATTRIBUTES},
    "compare": YES_NO,
}
RELATION_PHRASES: dict[str, str] = {
    "left": "left of",
    "right": "right of",
    "above": "above",
    "below": "below",
}
# Centres lie on a half-pixel grid; a difference above this is "on that side at all".
_STRICT = 1e-6


@dataclass(frozen=True)
class SceneQuestion:
    """One question about one image: its text, its answer (one of :data:`ANSWERS`), its family,
    the attribute it asks or compares (``query_attribute``/``compare``; ``None`` otherwise) and,
    for ``query_attribute``, how the object is named (``"attributes"`` or ``"relation"``)."""

    text: str
    answer: str
    family: str
    attribute: str | None = None
    via: str | None = None

    @property
    def group(self) -> str:
        """The balance group: the family, with the asked attribute for ``query_attribute``."""
        return (
            f"{self.family}/{self.attribute}" if self.family == "query_attribute" else self.family
        )


@dataclass
class QuestionSet:
    """Questions of a set of images: ``questions[i]`` those of image ``i``. ``answer_counts``:
    per balance group, how often each answer was given; ``unavailable``: per family, images that
    admit no question of it (``compare`` needs two objects); ``rejected``: per group, images left
    without a question by ``tolerance``."""

    questions: list[list[SceneQuestion]]
    answer_counts: dict[str, Counter] = field(default_factory=dict)
    unavailable: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)

    def balance_ratio(self, group: str) -> float:
        """Most over least frequent answer of ``group`` among its answers (``inf`` if one of
        them never occurs)."""
        counts = [self.answer_counts.get(group, Counter())[a] for a in GROUP_ANSWERS[group]]
        return max(counts) / min(counts) if min(counts) else float("inf")

    def flat(self) -> list[tuple[int, SceneQuestion]]:
        """``(image index, question)`` for every question, image by image."""
        return [(i, q) for i, qs in enumerate(self.questions) for q in qs]


# ---------------------------------------------------------------------------------------------
# Candidates: every question of a family an image admits, with its answer
# ---------------------------------------------------------------------------------------------


class _Candidate(NamedTuple):  # a tuple: hundreds are built per image
    answer: str
    family: str
    attribute: str | None
    via: str | None
    specs: tuple[ObjectSpec, ...]  # the phrases' specs, in text order
    relation: str | None = None


def _spec_grid() -> list[ObjectSpec]:
    return [
        ObjectSpec(c, s, z)
        for c, s, z in itertools.product((None, *COLORS), (None, *SHAPES), (None, *SIZES))
    ]


_GRID: list[ObjectSpec] = _spec_grid()
_ANY = ObjectSpec()


def _allowed(spec: ObjectSpec, forbidden: Collection[tuple[str, str]]) -> bool:
    return spec.color is None or spec.shape is None or (spec.color, spec.shape) not in forbidden


def _without(spec: ObjectSpec, attribute: str | None) -> bool:
    return attribute is None or getattr(spec, attribute) is None


def _object_specs(obj: SceneObject) -> list[ObjectSpec]:
    """The 8 specs that ``obj`` matches: every subset of its colour, shape and size."""
    return [
        ObjectSpec(c, s, z)
        for c, s, z in itertools.product((None, obj.color), (None, obj.shape), (None, obj.size))
    ]


def unique_references(
    objects: Sequence[SceneObject], forbidden: Collection[tuple[str, str]] = ()
) -> list[tuple[ObjectSpec, int]]:
    """``(spec, index)``: every spec that matches exactly one object, and that object."""
    out = []
    for i, obj in enumerate(objects):
        for spec in _object_specs(obj):
            if _allowed(spec, forbidden) and sum(spec.matches(o) for o in objects) == 1:
                out.append((spec, i))
    return out


def relation_target(
    objects: Sequence[SceneObject],
    target: ObjectSpec,
    relation: str,
    anchor: int,
    margin: float,
) -> int | None:
    """The one object matching ``target`` that is ``relation`` of ``objects[anchor]`` by at least
    ``margin``, provided no other object matching ``target`` is on that side of it at all; else
    ``None``."""
    sided = [
        i
        for i, o in enumerate(objects)
        if i != anchor
        and target.matches(o)
        and relation_holds(o, objects[anchor], relation, _STRICT)
    ]
    if len(sided) != 1:
        return None
    (i,) = sided
    return i if relation_holds(objects[i], objects[anchor], relation, margin) else None


def _candidates(
    graph: SceneGraph, family: str, forbidden: Collection[tuple[str, str]]
) -> list[_Candidate]:
    objects = graph.objects
    if family in ("exist", "count"):
        # How many objects each spec matches: each object matches the 8 subsets of its attributes.
        matched = Counter(s for o in objects for s in _object_specs(o))
        if family == "exist":
            return [
                _Candidate("yes" if matched[s] else "no", family, None, None, (s,))
                for s in _GRID
                if s != _ANY and _allowed(s, forbidden)
            ]
        return [
            _Candidate(str(matched[s]), family, None, None, (s,))
            for s in _GRID
            if _allowed(s, forbidden)
        ]
    refs = unique_references(objects, forbidden)
    out = []
    if family == "query_attribute":
        margin = relation_margin(graph.image_size)
        for attribute in ATTRIBUTES:
            for spec, i in refs:
                if _without(spec, attribute):
                    answer = getattr(objects[i], attribute)
                    out.append(_Candidate(answer, family, attribute, "attributes", (spec,)))
            for (anchor_spec, a), relation in itertools.product(refs, RELATION_PHRASES):
                if anchor_spec == _ANY:
                    continue
                for i, obj in enumerate(objects):
                    if i == a or not relation_holds(obj, objects[a], relation, margin):
                        continue
                    for target in _object_specs(obj):
                        # Sizes stay out of relation phrases, to keep them short.
                        if (
                            target.size is None
                            and _without(target, attribute)
                            and _allowed(target, forbidden)
                            and relation_target(objects, target, relation, a, margin) == i
                        ):
                            out.append(
                                _Candidate(
                                    getattr(obj, attribute),
                                    family,
                                    attribute,
                                    "relation",
                                    (target, anchor_spec),
                                    relation,
                                )
                            )
        return out
    if family == "compare":
        for attribute in ATTRIBUTES:
            usable = [(s, i) for s, i in refs if _without(s, attribute)]
            for (s1, i), (s2, j) in itertools.permutations(usable, 2):
                if i != j:
                    same = getattr(objects[i], attribute) == getattr(objects[j], attribute)
                    out.append(
                        _Candidate("yes" if same else "no", family, attribute, None, (s1, s2))
                    )
        return out
    raise ValueError(f"unknown question family {family!r}; choose one of {', '.join(FAMILIES)}")


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _noun_phrase(spec: ObjectSpec, thing: str, plural: bool = False) -> str:
    noun = spec.shape if spec.shape is not None else thing
    noun = PLURALS[noun] if plural else noun
    return " ".join([w for w in (spec.size, spec.color) if w is not None] + [noun])


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _text(candidate: _Candidate, rng: np.random.Generator) -> str:
    def thing() -> str:
        return THING_WORDS[int(rng.integers(len(THING_WORDS)))]

    specs = candidate.specs
    if candidate.family == "exist":
        phrase = _noun_phrase(specs[0], thing())
        return f"is there {_article(phrase)} {phrase}?"
    if candidate.family == "count":
        return f"how many {_noun_phrase(specs[0], thing(), plural=True)} are there?"
    noun = ATTRIBUTE_NOUNS[candidate.attribute]  # type: ignore[index]
    if candidate.family == "query_attribute":
        if candidate.via == "attributes":
            return f"what {noun} is the {_noun_phrase(specs[0], thing())}?"
        target, anchor = specs
        relation = RELATION_PHRASES[candidate.relation]  # type: ignore[index]
        return (
            f"what {noun} is the {_noun_phrase(target, thing())} {relation} "
            f"the {_noun_phrase(anchor, thing())}?"
        )
    first, second = (_noun_phrase(s, thing()) for s in specs)
    return f"are the {first} and the {second} the same {noun}?"


def question_words() -> list[str]:
    """Every word a generated question can use (for a small text encoder's vocabulary)."""
    words = {"is", "there", "a", "an", "how", "many", "are", "what", "the", "and", "same", "of"}
    words |= set(ATTRIBUTE_NOUNS.values()) | set(COLORS) | set(SIZES)
    words |= set(SHAPES) | set(THING_WORDS) | {PLURALS[w] for w in (*SHAPES, *THING_WORDS)}
    words |= {w for phrase in RELATION_PHRASES.values() for w in phrase.split()}
    return sorted(words)


# ---------------------------------------------------------------------------------------------
# Balanced generation
# ---------------------------------------------------------------------------------------------


def _group_of(family: str, attribute: str | None) -> str:
    return f"{family}/{attribute}" if family == "query_attribute" else family


def generate_questions(
    graphs: Sequence[SceneGraph],
    seed: int = 0,
    families: Sequence[str] = FAMILIES,
    per_family: int = 1,
    forbidden_pairs: Collection[tuple[str, str]] = (),
    tolerance: int | None = None,
) -> QuestionSet:
    """Up to ``per_family`` questions of each family per image, answers balanced within each group
    over the whole set (see the module docstring). Deterministic in ``(graphs, seed)``.

    No question names a ``(colour, shape)`` pair of ``forbidden_pairs``, so training questions
    stay clear of held-out pairs. For ``query_attribute`` the way of naming the object
    (attributes or relation) and then the attribute asked are drawn uniformly among those the
    image admits.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown question families {unknown}; choose from {', '.join(FAMILIES)}")
    forbidden = frozenset(forbidden_pairs)
    rng = np.random.default_rng(seed)
    counts: dict[str, Counter] = {g: Counter() for g in GROUP_ANSWERS}
    result = QuestionSet([], counts)
    for graph in graphs:
        questions: list[SceneQuestion] = []
        for family in families:
            pool = _candidates(graph, family, forbidden)
            if not pool:
                result.unavailable[family] += 1
                continue
            for _ in range(per_family):
                if family == "query_attribute":
                    vias = sorted({c.via for c in pool})  # type: ignore[type-var]
                    via = vias[int(rng.integers(len(vias)))]
                    attrs = [
                        a
                        for a in ATTRIBUTES
                        if any(c.via == via and c.attribute == a for c in pool)
                    ]
                    attribute = attrs[int(rng.integers(len(attrs)))]
                    options = [c for c in pool if c.via == via and c.attribute == attribute]
                else:
                    attribute, options = None, pool
                group = _group_of(family, attribute)
                used = counts[group]
                available = sorted({c.answer for c in options}, key=GROUP_ANSWERS[group].index)
                least = min(used[a] for a in available)
                if (
                    tolerance is not None
                    and least > min(used[a] for a in GROUP_ANSWERS[group]) + tolerance
                ):
                    result.rejected[group] += 1
                    continue
                rarest = [a for a in available if used[a] == least]
                answer = rarest[int(rng.integers(len(rarest)))]
                chosen = [c for c in options if c.answer == answer]
                candidate = chosen[int(rng.integers(len(chosen)))]
                pool = [c for c in pool if c is not candidate]  # no repeat within an image
                used[answer] += 1
                questions.append(
                    SceneQuestion(
                        _text(candidate, rng),
                        answer,
                        family,
                        candidate.attribute,
                        candidate.via,
                    )
                )
                if not pool:
                    break
        result.questions.append(questions)
    return result
