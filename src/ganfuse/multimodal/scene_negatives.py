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

import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from ganfuse.data.scenes import (
    COLOR_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
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


def _render(phrase: Phrase) -> str:
    words = [w for w in phrase if w is not None]
    return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"


def _rewrite(text: str, spans: list[tuple[int, int]], phrases: list[Phrase]) -> str:
    out, end = [], 0
    for (start, stop), phrase in zip(spans, phrases, strict=True):
        out += [text[end:start], _render(phrase)]
        end = stop
    return "".join(out + [text[end:]])


def _swapped(phrases: list[Phrase], i: int, j: int, kind: str) -> list[Phrase]:
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
    description = parse_caption(text)
    if description.kind not in BINDING_CAPTION_KINDS:
        return []
    matches = list(_PHRASE.finditer(text))
    spans = [m.span() for m in matches]
    phrases: list[Phrase] = [m.groups() for m in matches]  # type: ignore[misc]
    kinds = NEGATIVE_KINDS if description.kind == "relation" else NEGATIVE_KINDS[:3]
    words = caption_words(text)
    seen = {text}
    out = []
    for i in range(len(phrases)):
        for j in range(i + 1, len(phrases)):
            for kind in kinds:
                negative = _rewrite(text, spans, _swapped(phrases, i, j, kind))
                if negative in seen or caption_words(negative) != words:
                    continue  # no change, or "a"/"an" moved with the first word
                seen.add(negative)
                parsed = parse_caption(negative)
                if any((o.color, o.shape) in forbidden_pairs for o in parsed.objects):
                    continue
                if score_caption(parsed, graph).correct:
                    continue
                out.append(BindingNegative(negative, kind))
    return out


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
    pairs = BindingPairs()
    for index, (graph, texts) in enumerate(zip(graphs, captions, strict=True)):
        for text in texts:
            description = parse_caption(text)
            kind = description.kind
            if kind not in BINDING_CAPTION_KINDS:
                continue
            if len(description.objects) < 2:
                pairs.one_object[kind] += 1
                continue
            pairs.eligible[kind] += 1
            options = binding_negatives(text, graph, forbidden_pairs)
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
