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

Generation costs about a quarter of a millisecond per image (``benchmarks/scenes.md``): the
candidates are counted per answer as numbers, and listed only for the answer drawn.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Collection, Sequence
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
# Referring expressions: the definitions
# ---------------------------------------------------------------------------------------------


def _spec_grid() -> list[ObjectSpec]:
    return [
        ObjectSpec(c, s, z)
        for c, s, z in itertools.product((None, *COLORS), (None, *SHAPES), (None, *SIZES))
    ]


_GRID: list[ObjectSpec] = _spec_grid()
_ANY = ObjectSpec()


def _allowed(spec: ObjectSpec, forbidden: Collection[tuple[str, str]]) -> bool:
    return spec.color is None or spec.shape is None or (spec.color, spec.shape) not in forbidden


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


# ---------------------------------------------------------------------------------------------
# Candidates: every question of a family an image admits, with its answer
#
# The generator works on numbers, not on ObjectSpec objects: a spec is its index in _GRID, an
# object is the ids of the 8 specs it matches, and every phrase of every spec is rendered once, at
# import. A family's candidates (its pool) are grouped by (via, attribute), then by answer, each
# list in the order of the definitions above (``unique_references``, ``relation_target``): the
# order the draws index into, so the questions are those of listing every candidate object by
# object (tests/multimodal/test_scene_questions.py checks both). Only the counts are computed up
# front; a list is built when a candidate is drawn from it, a relation group when it is drawn.
# ---------------------------------------------------------------------------------------------

_SPECS: tuple[tuple[str | None, str | None, str | None], ...] = tuple(
    (s.color, s.shape, s.size) for s in _GRID
)
_SPEC_ID: dict[tuple[str | None, str | None, str | None], int] = {
    spec: k for k, spec in enumerate(_SPECS)
}
_ANY_ID = _SPEC_ID[(None, None, None)]
_SLOT: dict[str, int] = {"color": 0, "shape": 1, "size": 2}  # an attribute's place in a spec
# (colour, shape, size) of an object -> the ids of its 8 specs, in _object_specs order.
_OBJECT_SPEC_IDS: dict[tuple[str, str, str], tuple[int, ...]] = {
    (c, s, z): tuple(_SPEC_ID[t] for t in itertools.product((None, c), (None, s), (None, z)))
    for c, s, z in itertools.product(COLORS, SHAPES, SIZES)
}
# Spec id -> the (attribute, slot) it leaves open: the attributes a question may ask about it.
_OPEN: tuple[tuple[tuple[str, int], ...], ...] = tuple(
    tuple((a, slot) for a, slot in _SLOT.items() if spec[slot] is None) for spec in _SPECS
)


def _noun_phrase(spec: ObjectSpec, thing: str, plural: bool = False) -> str:
    noun = spec.shape if spec.shape is not None else thing
    noun = PLURALS[noun] if plural else noun
    return " ".join([w for w in (spec.size, spec.color) if w is not None] + [noun])


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


# Phrase of spec k with thing word t: _SINGULAR[k][t], _PLURAL[k][t], _WITH_ARTICLE[k][t].
_SINGULAR: tuple[tuple[str, ...], ...] = tuple(
    tuple(_noun_phrase(spec, t) for t in THING_WORDS) for spec in _GRID
)
_PLURAL: tuple[tuple[str, ...], ...] = tuple(
    tuple(_noun_phrase(spec, t, plural=True) for t in THING_WORDS) for spec in _GRID
)
_WITH_ARTICLE: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"{_article(p)} {p}" for p in phrases) for phrases in _SINGULAR
)

# A candidate: exist, count, query_attribute via attributes: the spec id; via relation:
# (target id, anchor id, relation); compare: (first id, second id, attribute).
# A pool: (via, attribute) -> answer -> the candidates with that answer (a list or a _Bucket);
# via and attribute are None outside query_attribute. Only non-empty lists and groups are kept.


class _Bucket:
    """The candidates of one answer, in pool order, listed only when one is drawn: most buckets
    of an image are never drawn from. Sized, and popped like a list."""

    __slots__ = ("size", "make", "args", "items")

    def __init__(self, size: int, make: Callable[..., list], *args: object):
        self.size, self.make, self.args, self.items = size, make, args, None

    def __len__(self) -> int:
        return self.size

    def pop(self, index: int):
        if self.items is None:
            self.items = self.make(*self.args)
            assert len(self.items) == self.size
        self.size -= 1
        return self.items.pop(index)


class _Deferred:
    """The buckets of one non-empty (via, attribute), sorted by answer only when drawn from."""

    __slots__ = ("make", "args", "buckets")

    def __init__(self, make: Callable[..., dict], *args: object):
        self.make, self.args, self.buckets = make, args, None

    def get(self) -> dict:
        if self.buckets is None:
            self.buckets = {a: b for a, b in self.make(*self.args).items() if b}
            assert self.buckets
        return self.buckets


_Group = dict  # answer -> list | _Bucket
_Pool = dict  # (via, attribute) -> _Group | _Deferred


class _Tables(NamedTuple):
    """What ``forbidden`` allows, per spec id: ``allowed[k]``; the allowed ids in grid order
    (``count_ids``) and those but the empty spec (``exist_ids``: "is there a thing?" is never
    asked)."""

    allowed: list[bool]
    count_ids: list[int]
    exist_ids: list[int]

    @classmethod
    def of(cls, forbidden: Collection[tuple[str, str]]) -> _Tables:
        allowed = [_allowed(spec, forbidden) for spec in _GRID]
        ids = [k for k, ok in enumerate(allowed) if ok]
        return cls(allowed, ids, [k for k in ids if k != _ANY_ID])


class _Scene:
    """One graph as numbers: each object's attribute values and spec ids, how many objects each
    spec matches, and ``refs``, :func:`unique_references` as ``(spec id, object index)``."""

    __slots__ = ("objects", "values", "ids", "matched", "refs")

    def __init__(self, graph: SceneGraph, allowed: Sequence[bool]):
        self.objects = graph.objects
        self.values = [(o.color, o.shape, o.size) for o in self.objects]
        self.ids = [_OBJECT_SPEC_IDS[v] for v in self.values]
        matched: dict[int, int] = {}
        for ids in self.ids:
            for k in ids:
                matched[k] = matched.get(k, 0) + 1
        self.matched = matched
        self.refs = [
            (k, i) for i, ids in enumerate(self.ids) for k in ids if allowed[k] and matched[k] == 1
        ]


def _relation_targets(
    scene: _Scene, anchor: int, allowed: Sequence[bool], margin: float
) -> list[tuple[str, int, int]]:
    """``(relation, object index, target spec id)``: every target without a size that
    :func:`relation_target` resolves to that object from ``anchor``, in candidate order."""
    objects, ids = scene.objects, scene.ids
    ax, ay = objects[anchor].center
    out = []
    for relation in RELATION_PHRASES:
        # How far each object is on that side of the anchor (the differences relation_holds takes).
        if relation == "left":
            side = [ax - o.center[0] for o in objects]
        elif relation == "right":
            side = [o.center[0] - ax for o in objects]
        elif relation == "above":
            side = [ay - o.center[1] for o in objects]
        else:
            side = [o.center[1] - ay for o in objects]
        sided = [j for j, d in enumerate(side) if j != anchor and d >= _STRICT]
        if not sided:
            continue
        # How many objects on that side at all match each spec without a size.
        on_side: dict[int, int] = {}
        for j in sided:
            for k in ids[j][::2]:  # the specs without a size, in order
                on_side[k] = on_side.get(k, 0) + 1
        for i in sided:
            if side[i] >= margin:
                # Sizes stay out of relation phrases, to keep them short.
                out += [(relation, i, k) for k in ids[i][::2] if allowed[k] and on_side[k] == 1]
    return out


def _unmatched(ids: Sequence[int], matched: dict[int, int]) -> list[int]:
    return [k for k in ids if k not in matched]


def _relation_candidates(segments: list[tuple[list[int], list[tuple[int, str]]]]) -> list:
    return [
        (k, anchor, relation)
        for anchors, found in segments
        for anchor in anchors
        for k, relation in found
    ]


def _relation_group(
    scene: _Scene, targets: list[tuple[list[int], list[tuple[str, int, int]]]], attribute: str
) -> _Group:
    """The buckets of ("relation", ``attribute``): per anchor object, its targets that leave
    ``attribute`` open, by answer, repeated for every reference to the anchor."""
    slot, values = _SLOT[attribute], scene.values
    segments: dict[str, list[tuple[list[int], list[tuple[int, str]]]]] = {}
    for anchor_ids, found in targets:
        by_answer: dict[str, list[tuple[int, str]]] = {}
        for relation, i, k in found:
            if _SPECS[k][slot] is None:
                by_answer.setdefault(values[i][slot], []).append((k, relation))
        for answer, part in by_answer.items():
            segments.setdefault(answer, []).append((anchor_ids, part))
    return {
        answer: _Bucket(sum(len(a) * len(f) for a, f in parts), _relation_candidates, parts)
        for answer, parts in segments.items()
    }


def _comparisons(scene: _Scene, usable: dict[str, list[tuple[int, int]]], answer: str) -> list:
    values, out = scene.values, []
    for attribute in ATTRIBUTES:
        slot = _SLOT[attribute]
        for (k1, i), (k2, j) in itertools.permutations(usable[attribute], 2):
            if i != j and (values[i][slot] == values[j][slot]) == (answer == "yes"):
                out.append((k1, k2, attribute))
    return out


def _pool(scene: _Scene, family: str, tables: _Tables, margin: float) -> _Pool:
    """Every candidate of ``family`` for ``scene``: (via, attribute) -> answer -> candidates."""
    allowed, matched = tables.allowed, scene.matched
    group: _Group = {}
    if family == "exist":
        yes = sorted(k for k in matched if k != _ANY_ID and allowed[k])
        group["yes"] = yes
        group["no"] = _Bucket(
            len(tables.exist_ids) - len(yes), _unmatched, tables.exist_ids, matched
        )
    elif family == "count":
        counted = 0
        for k in sorted(matched):
            if allowed[k]:
                group.setdefault(str(matched[k]), []).append(k)
                counted += 1
        group["0"] = _Bucket(len(tables.count_ids) - counted, _unmatched, tables.count_ids, matched)
    elif family == "query_attribute":
        values, refs = scene.values, scene.refs
        named: dict[str, _Group] = {attribute: {} for attribute in ATTRIBUTES}
        for k, i in refs:
            for attribute, slot in _OPEN[k]:
                named[attribute].setdefault(values[i][slot], []).append(k)
        pool: _Pool = {("attributes", a): group for a, group in named.items() if group}
        # Relation candidates: per anchor object (refs are grouped by object), its targets,
        # repeated for every reference to it; sorted by attribute and answer only when drawn.
        anchors: dict[int, list[int]] = {}
        for anchor_id, a in refs:
            if anchor_id != _ANY_ID:
                anchors.setdefault(a, []).append(anchor_id)
        targets = []
        for a, anchor_ids in anchors.items():
            found = _relation_targets(scene, a, allowed, margin)
            if found:
                targets.append((anchor_ids, found))
        asked: set[str] = set()  # the attributes some target leaves open
        for _, found in targets:
            for _, _, k in found:
                asked.update(attribute for attribute, _ in _OPEN[k])
            if len(asked) == len(ATTRIBUTES):
                break
        for attribute in ATTRIBUTES:
            if attribute in asked:
                pool[("relation", attribute)] = _Deferred(
                    _relation_group, scene, targets, attribute
                )
        return pool
    else:  # compare
        values = scene.values
        usable = {
            attribute: [(k, i) for k, i in scene.refs if _SPECS[k][_SLOT[attribute]] is None]
            for attribute in ATTRIBUTES
        }
        # Pairs of references to two distinct objects: per ordered pair of objects, the product
        # of their numbers of references.
        same = different = 0
        for attribute in ATTRIBUTES:
            slot = _SLOT[attribute]
            per_object = [0] * len(values)
            for _, i in usable[attribute]:
                per_object[i] += 1
            for i, m in enumerate(per_object):
                for j, n in enumerate(per_object):
                    if i != j:
                        if values[i][slot] == values[j][slot]:
                            same += m * n
                        else:
                            different += m * n
        group["yes"] = _Bucket(same, _comparisons, scene, usable, "yes")
        group["no"] = _Bucket(different, _comparisons, scene, usable, "no")
    group = {answer: bucket for answer, bucket in group.items() if bucket}
    return {(None, None): group} if group else {}


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _text(family: str, attribute: str | None, candidate, rng: np.random.Generator) -> str:
    """The text of a candidate; every phrase draws its thing word from ``rng``, in text order."""

    def thing() -> int:
        return int(rng.integers(len(THING_WORDS)))

    if family == "exist":
        return f"is there {_WITH_ARTICLE[candidate][thing()]}?"
    if family == "count":
        return f"how many {_PLURAL[candidate][thing()]} are there?"
    if family == "query_attribute":
        noun = ATTRIBUTE_NOUNS[attribute]  # type: ignore[index]
        if isinstance(candidate, int):
            return f"what {noun} is the {_SINGULAR[candidate][thing()]}?"
        target, anchor, relation = candidate
        target_phrase = _SINGULAR[target][thing()]
        return (
            f"what {noun} is the {target_phrase} {RELATION_PHRASES[relation]} "
            f"the {_SINGULAR[anchor][thing()]}?"
        )
    first, second, compared = candidate
    first_phrase = _SINGULAR[first][thing()]
    second_phrase = _SINGULAR[second][thing()]
    return f"are the {first_phrase} and the {second_phrase} the same {ATTRIBUTE_NOUNS[compared]}?"


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
    tables = _Tables.of(forbidden)
    rng = np.random.default_rng(seed)
    counts: dict[str, Counter] = {g: Counter() for g in GROUP_ANSWERS}
    result = QuestionSet([], counts)
    for graph in graphs:
        scene = _Scene(graph, tables.allowed)
        margin = relation_margin(graph.image_size)
        questions: list[SceneQuestion] = []
        for family in families:
            pool = _pool(scene, family, tables, margin)
            if not pool:
                result.unavailable[family] += 1
                continue
            for _ in range(per_family):
                if family == "query_attribute":
                    vias = sorted({via for via, _ in pool})
                    via = vias[int(rng.integers(len(vias)))]
                    attrs = [a for a in ATTRIBUTES if (via, a) in pool]
                    attribute = attrs[int(rng.integers(len(attrs)))]
                else:
                    via = attribute = None
                entry = pool[(via, attribute)]
                buckets = entry.get() if isinstance(entry, _Deferred) else entry
                group = _group_of(family, attribute)
                used = counts[group]
                available = sorted(buckets, key=GROUP_ANSWERS[group].index)
                least = min(used[a] for a in available)
                if (
                    tolerance is not None
                    and least > min(used[a] for a in GROUP_ANSWERS[group]) + tolerance
                ):
                    result.rejected[group] += 1
                    continue
                rarest = [a for a in available if used[a] == least]
                answer = rarest[int(rng.integers(len(rarest)))]
                chosen = buckets[answer]
                candidate = chosen.pop(int(rng.integers(len(chosen))))  # no repeat in an image
                if not chosen:
                    del buckets[answer]
                    if not buckets:
                        del pool[(via, attribute)]
                used[answer] += 1
                if family == "compare":
                    attribute = candidate[2]
                questions.append(
                    SceneQuestion(
                        _text(family, attribute, candidate, rng), answer, family, attribute, via
                    )
                )
                if not pool:
                    break
        result.questions.append(questions)
    return result
