"""Binding-aware negatives on ``scenes``: the true caption's words in another binding or order.

For a list caption ("a red circle and a large blue square") or a relation caption ("a red circle
left of a blue square"), a negative swaps one attribute between two mentioned objects
(``color-swap``, ``shape-swap``, ``size-swap``: "a blue circle and a large red square") or, for a
relation, swaps its two objects (``reversal``: "a blue square left of a red circle", which says
"right of" with the caption's own words). Each negative

- has exactly the multiset of words of the true caption (:func:`caption_words`), so a model that
  sees a bag of words cannot tell the two apart: it scores 50% on such pairs by construction
  (:func:`bag_of_words_accuracy`);
- is false for the image by the exact judge, :func:`ganfuse.metrics.scenes.score_caption` (a swap
  that happens to describe the image too, because it holds other objects, is dropped).

A caption with no such negative (one object, identical attributes, or every swap still true) is
skipped and counted (:class:`BindingPairs`).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ganfuse.data.scenes import (
    COLOR_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    ObjectSpec,
    SceneDescription,
    SceneGraph,
    normalise_caption,
    parse_caption,
)
from ganfuse.metrics.scenes import score_caption

NEGATIVE_KINDS: tuple[str, ...] = ("color-swap", "shape-swap", "size-swap", "reversal")
BINDING_CAPTION_KINDS: tuple[str, ...] = ("list", "relation")
_SLOT = {"color-swap": 1, "shape-swap": 2, "size-swap": 0}


def _alternatives(table: dict[str, tuple[str, ...]]) -> str:
    words = sorted({w for ws in table.values() for w in ws}, key=len, reverse=True)
    return "|".join(re.escape(w) for w in words)


_PHRASE = re.compile(
    rf"\b(?:a|an) (?:({_alternatives(SIZE_WORDS)}) )?({_alternatives(COLOR_WORDS)}) "
    rf"({_alternatives(SHAPE_WORDS)})\b"
)
_WORD = re.compile(r"[a-z0-9]+")


def caption_words(text: str) -> Counter:
    """The multiset of words of a caption (lower case, punctuation dropped, digits kept)."""
    return Counter(_WORD.findall(normalise_caption(text)))


@dataclass(frozen=True)
class BindingNegative:
    text: str
    kind: str  # one of NEGATIVE_KINDS


Phrase = tuple[str | None, str, str]  # (size word, colour word, shape word) as written


@functools.cache  # a few hundred phrases exist
def _render(phrase: Phrase) -> str:
    words = [w for w in phrase if w is not None]
    return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"


def _rewrite(pieces: Sequence[str], phrases: Sequence[Phrase]) -> str:
    """The text whose words around its phrases are ``pieces`` (one more than ``phrases``), with
    ``phrases`` rendered in their places."""
    out = [pieces[0]]
    for phrase, piece in zip(phrases, pieces[1:], strict=True):
        out += [_render(phrase), piece]
    return "".join(out)


def _split_phrases(text: str) -> tuple[tuple[str, ...], tuple[Phrase, ...], int]:
    """A normalised caption as the words around its object phrases (``pieces``, one more than
    ``phrases``), the phrases themselves (so that ``_rewrite(pieces, phrases) == text`` for a
    caption whose articles agree with its words) and how many of them are written with "an"."""
    matches = list(_PHRASE.finditer(text))
    bounds = [0, *(b for m in matches for b in m.span()), len(text)]
    pieces = tuple(text[start:stop] for start, stop in zip(bounds[::2], bounds[1::2], strict=True))
    written_an = sum(m.group(0).startswith("an ") for m in matches)
    return pieces, tuple(m.groups() for m in matches), written_an  # type: ignore[return-value]


def _swapped(phrases: Sequence[Phrase], i: int, j: int, kind: str) -> list[Phrase]:
    out = [list(p) for p in phrases]
    if kind == "reversal":
        out[i], out[j] = out[j], out[i]
    else:
        slot = _SLOT[kind]
        out[i][slot], out[j][slot] = out[j][slot], out[i][slot]
    return [tuple(p) for p in out]  # type: ignore[misc]


def binding_negatives(
    caption: str,
    graph: SceneGraph,
    forbidden_pairs: Collection[tuple[str, str]] = (),
) -> list[BindingNegative]:
    """Every binding negative of ``caption`` (a list or relation caption true of ``graph``): each
    with the caption's words, false for ``graph``, naming no pair of ``forbidden_pairs``, distinct.
    Empty for other kinds of caption."""
    text = normalise_caption(caption)
    return _negatives(text, parse_caption(text), graph, frozenset(forbidden_pairs))


# Per slot of a phrase (size, colour, shape): each value's words, and word as written -> value.
_TABLES = (SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS)
_VALUES: tuple[dict[str, str], ...] = tuple(
    {w: value for value, words in table.items() for w in words} for table in _TABLES
)


@functools.cache
def _spec(phrase: Phrase) -> ObjectSpec:
    """What a phrase states, as :func:`~ganfuse.data.scenes.parse_caption` reads it."""
    size, color, shape = phrase
    return ObjectSpec(
        _VALUES[1][color], _VALUES[2][shape], None if size is None else _VALUES[0][size]
    )


def _swaps(text: str, kind: str) -> Iterator[tuple[str, str, tuple[ObjectSpec, ...]]]:
    """``(negative, kind of swap, the objects it states)`` for every swap of ``text`` (a
    normalised caption of ``kind`` list or relation) that changes the text but not its words, in
    the order :func:`binding_negatives` lists them.

    Only the phrases change, so the words are compared phrase by phrase: each phrase is one word
    per slot (a test checks the vocabulary) and its slot words only move between phrases, so the
    multiset of words stays the same exactly when as many phrases as before take "an". The stated
    objects are read from the swapped phrases, not from the text: the template and every other
    word stay in place, so they are what :func:`~ganfuse.data.scenes.parse_caption` reads there
    (a test checks it)."""
    pieces, phrases, written_an = _split_phrases(text)
    kinds = NEGATIVE_KINDS if kind == "relation" else NEGATIVE_KINDS[:3]
    seen = {text}
    for i in range(len(phrases)):
        for j in range(i + 1, len(phrases)):
            for swap in kinds:
                swapped = _swapped(phrases, i, j, swap)
                if sum(_render(p)[1] == "n" for p in swapped) != written_an:
                    continue  # "a"/"an" moved with the first word: not the same words
                negative = _rewrite(pieces, swapped)
                if negative in seen:
                    continue  # no change
                seen.add(negative)
                yield negative, swap, tuple(_spec(p) for p in swapped)


def _negatives(
    text: str,
    description: SceneDescription,
    graph: SceneGraph,
    forbidden: Collection[tuple[str, str]],
) -> list[BindingNegative]:
    """:func:`binding_negatives` of a normalised caption already parsed into ``description``."""
    if description.kind not in BINDING_CAPTION_KINDS:
        return []
    # A stated object that no object of the image matches makes the binding, so the caption,
    # false: the exact judge is asked only when every stated object is present.
    present = {(o.color, o.shape, o.size) for o in graph.objects}
    present |= {(o.color, o.shape, None) for o in graph.objects}
    out = []
    for negative, swap, objects in _swaps(text, description.kind):
        if any((o.color, o.shape) in forbidden for o in objects):
            continue
        if all((o.color, o.shape, o.size) in present for o in objects):
            if score_caption(replace(description, objects=objects), graph).correct:
                continue
        out.append(BindingNegative(negative, swap))
    return out


REPLACEMENT_CAPTION_KINDS: tuple[str, ...] = ("list", "relation", "single")


@functools.lru_cache(maxsize=1 << 16)  # a training split's captions, parsed once each
def _parsed_phrases(caption: str) -> tuple[SceneDescription, tuple[str, ...], tuple[Phrase, ...]]:
    text = normalise_caption(caption)
    pieces, phrases, _ = _split_phrases(text)
    return parse_caption(text), pieces, phrases


def replacement_negative(
    caption: str,
    graph: SceneGraph,
    rng: np.random.Generator,
    forbidden_pairs: Collection[tuple[str, str]] = (),
    tries: int = 8,
) -> str | None:
    """``caption`` (a list, relation or single caption true of ``graph``) with one attribute word
    of one phrase replaced by another value's word, so that it is false for ``graph`` and names no
    pair of ``forbidden_pairs``; ``None`` when ``tries`` random replacements found none.

    Unlike a binding swap, this changes the words, so a bag of words sees part of the difference
    (a colour the image lacks); where the new value is elsewhere in the image, only the binding
    tells. A training curriculum for binding-aware matching, not an evaluation negative."""
    description, pieces, phrases = _parsed_phrases(caption)
    if description.kind not in REPLACEMENT_CAPTION_KINDS:
        return None
    forbidden = frozenset(forbidden_pairs)
    for _ in range(tries):
        i = int(rng.integers(len(phrases)))
        slots = [1, 2] if phrases[i][0] is None else [0, 1, 2]
        slot = slots[int(rng.integers(len(slots)))]
        table = _TABLES[slot]
        current = _VALUES[slot][phrases[i][slot]]  # type: ignore[index]
        values = [v for v in table if v != current]
        words = table[values[int(rng.integers(len(values)))]]
        changed = list(phrases[i])
        changed[slot] = words[int(rng.integers(len(words)))]
        replaced = [*phrases[:i], tuple(changed), *phrases[i + 1 :]]
        objects = tuple(_spec(p) for p in replaced)  # type: ignore[arg-type]
        if any((o.color, o.shape) in forbidden for o in objects):
            continue
        if score_caption(replace(description, objects=objects), graph).correct:
            continue  # another object of the image makes it true
        return _rewrite(pieces, replaced)  # type: ignore[arg-type]
    return None


@dataclass
class BindingPairs:
    """(image, true caption, binding negative) triples of a set of images, one per caption that
    has a negative. ``eligible``: list/relation captions mentioning two objects or more, per kind;
    ``skipped``: those of them without any negative; ``one_object``: list captions of a single
    object ("one shape: a red circle"), which admit none; ``kinds``: how many negatives of each
    kind were drawn."""

    image_index: list[int] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    negative_kinds: list[str] = field(default_factory=list)
    eligible: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    one_object: Counter = field(default_factory=Counter)

    @property
    def kinds(self) -> Counter:
        return Counter(self.negative_kinds)

    def __len__(self) -> int:
        return len(self.positives)


def build_binding_pairs(
    graphs: Sequence[SceneGraph],
    captions: Sequence[Sequence[str]],
    seed: int = 0,
    forbidden_pairs: Collection[tuple[str, str]] = (),
) -> BindingPairs:
    """For every list or relation caption of every image, one binding negative drawn uniformly
    (by ``seed``) among :func:`binding_negatives`; a caption without one is counted in
    ``skipped``. Deterministic in ``(graphs, captions, seed)``."""
    rng = np.random.default_rng(seed)
    forbidden = frozenset(forbidden_pairs)
    pairs = BindingPairs()
    # Each caption text normalised and parsed once: many count and single captions recur.
    parsed: dict[str, tuple[str, SceneDescription]] = {}
    for index, (graph, texts) in enumerate(zip(graphs, captions, strict=True)):
        for text in texts:
            if text not in parsed:
                parsed[text] = (normalise_caption(text), parse_caption(text))
            normal, description = parsed[text]
            kind = description.kind
            if kind not in BINDING_CAPTION_KINDS:
                continue
            if len(description.objects) < 2:
                pairs.one_object[kind] += 1
                continue
            pairs.eligible[kind] += 1
            # What binding_negatives(text) computes: the normalised text matches a template, so
            # normalising it again changes nothing and it parses to the same description.
            options = _negatives(normal, description, graph, forbidden)
            if not options:
                pairs.skipped[kind] += 1
                continue
            negative = options[int(rng.integers(len(options)))]
            pairs.image_index.append(index)
            pairs.positives.append(text)
            pairs.negatives.append(negative.text)
            pairs.negative_kinds.append(negative.kind)
    return pairs


# ---------------------------------------------------------------------------------------------
# The bag-of-words baseline
# ---------------------------------------------------------------------------------------------

_ATTRIBUTE_WORDS: dict[str, tuple[str, str]] = {
    w: (field_name, value)
    for field_name, table in (("color", COLOR_WORDS), ("shape", SHAPE_WORDS), ("size", SIZE_WORDS))
    for value, ws in table.items()
    for w in ws
}


def bag_of_words_score(words: Counter, graph: SceneGraph) -> float:
    """The best a bag of words can do: the share of the caption's attribute words (colours,
    shapes, sizes) whose value some object of the image has, ignoring which object. In ``[0, 1]``;
    1 for every true caption."""
    present = {(f, getattr(o, f)) for o in graph.objects for f in ("color", "shape", "size")}
    stated = [_ATTRIBUTE_WORDS[w] for w in words.elements() if w in _ATTRIBUTE_WORDS]
    return sum(a in present for a in stated) / len(stated) if stated else 1.0


def bag_of_words_accuracy(
    positives: Sequence[str],
    negatives: Sequence[str],
    graphs: Sequence[SceneGraph],
    score: Callable[[Counter, SceneGraph], float] = bag_of_words_score,
    threshold: float = 1.0,
) -> dict[str, float]:
    """Accuracy of a scorer that sees each caption only as :func:`caption_words`, on pairs
    (``graphs[i]``, ``positives[i]``) and (``graphs[i]``, ``negatives[i]``):

    - ``match``: each of the ``2N`` captions classified as matching when its score reaches
      ``threshold``;
    - ``ranking``: the positive scored above its negative (a tie counts one half).
    """
    if not (len(positives) == len(negatives) == len(graphs)) or not positives:
        raise ValueError(
            "bag_of_words_accuracy needs as many positives, negatives and graphs (> 0)"
        )
    match = ranking = 0.0
    for positive, negative, graph in zip(positives, negatives, graphs, strict=True):
        p, n = score(caption_words(positive), graph), score(caption_words(negative), graph)
        match += (p >= threshold) + (n < threshold)
        ranking += 1.0 if p > n else 0.5 if p == n else 0.0
    return {"match": match / (2 * len(positives)), "ranking": ranking / len(positives)}
