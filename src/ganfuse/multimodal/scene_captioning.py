"""Captioning the ``scenes`` world: training targets, the vocabulary, and scores by the exact judge.

**Targets.** Every training step draws fresh captions from each image's scene graph with the
dataset's own descriptions and templates (:func:`~ganfuse.data.scenes.describe`,
:func:`~ganfuse.data.scenes.caption_text`), so everything the decoder learns to write parses back.
The decoder is conditioned on the kind of caption (``list``, ``relation``, ``count``, ``single``)
by a start token per kind: one image is captioned once per kind and each kind is scored on its
own. A ``list`` target is the *full* description: every object, each with its size, the number of
objects stated, and (``caption_order=reading``) the objects named in reading order (top to bottom,
then left to right), so the next object to name is never a free choice among equally likely ones.
Wording (templates, synonyms) is drawn at random, as in the dataset.

**Choices, measured** after 250 steps (batch 64, 10,000 training images at 32 px, 300 ``test``
images; one thread on a loaded shared 2-core machine, so times are rough), ``list`` scores:

==========================================================  ===========  ========
decoder, image encoder, kinds trained                       exact match  coverage
==========================================================  ===========  ========
attention, default encoder (4x4 patch grid), ``list``       **31.7%**    0.55
attention, ``image_widths=32,64`` (8x8 grid), ``list``      22.3%        0.43
pooled vector only (no attention), 8x8 grid, ``list``       4.0%         0.10
attention, 8x8 grid, ``decoder_hidden=128``, ``list``       7.7%         0.19
attention, 8x8 grid, all four kinds                         12.0%        0.26
attention, 64 px images (8x8 grid), ``list``                24.3%        0.49
==========================================================  ===========  ========

So the decoder attends over the patch tokens (one pooled vector is not enough for four objects),
the default encoder is kept, and ``caption_kinds`` defaults to ``list``: training the other kinds
as well splits the same steps four ways and halves the list score. Held-out colour-shape pairs are
never named correctly at this stage (0% exact match on ``heldout``).

**Scores** of captions against the true scene graphs (:func:`score_scene_captions`):

- ``exact_match``: the caption parses (:func:`~ganfuse.data.scenes.parse_caption`) and every
  claim holds by :func:`~ganfuse.metrics.scenes.score_caption`: each mentioned object is present,
  as distinct objects, with the stated colour, shape and size; every stated relation and count
  holds. Unparseable captions count as wrong;
- ``unparseable``: share of captions no template reads;
- ``coverage``: mean share of the image's objects that the caption names correctly (the largest
  one-to-one matching of mentioned objects to the image's objects); ``mentions_all``: share of
  captions that name every object. These keep the exact match honest: a vague caption ("a red
  circle" of a four-object image) is correct but covers a quarter;
- ``bleu``: corpus BLEU (sacrebleu, default tokenisation) against the image's four reference
  captions (one per kind, as the dataset stores them);
- ``binding``, ``relations``, ``count``: :func:`~ganfuse.metrics.scenes.score_pairs`' rates among
  the parsed captions that state that part (left out where none does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import (
    CAPTION_KINDS,
    CaptionParseError,
    CountSpec,
    ObjectSpec,
    SceneDescription,
    SceneGraph,
    ScenesDataset,
    caption_text,
    describe,
    parse_caption,
)
from ganfuse.errors import ConfigError
from ganfuse.metrics.scenes import score_caption
from ganfuse.models.captioner import CaptionVocab, kind_token

HEADLINE_KIND = "list"
KIND_SCORES: tuple[str, ...] = ("exact_match", "unparseable", "coverage", "mentions_all", "bleu")
VOCAB_SEED = 7  # the extra captions the vocabulary is read from


def _draw(rng: np.random.Generator) -> Callable[[int], int]:
    return lambda k: int(rng.integers(k))


def training_caption(
    graph: SceneGraph, kind: str, rng: np.random.Generator, order: str = "reading"
) -> str:
    """A true caption of ``graph`` of ``kind``, wording drawn from ``rng``.

    ``list``: the full description (every object with its size, the object count stated), objects
    in the graph's reading order (``order="reading"``) or shuffled (``"random"``). The other kinds
    are the dataset's own random descriptions; a ``relation`` falls back to ``single`` where no two
    objects are far enough apart, as the dataset's captions do."""
    if kind not in CAPTION_KINDS:
        raise ConfigError(
            f"unknown caption kind {kind!r}; choose one of {', '.join(CAPTION_KINDS)}"
        )
    draw = _draw(rng)
    if kind == "list":
        objects = list(graph.objects)
        if order == "random":
            objects = [objects[i] for i in rng.permutation(len(objects))]
        description = SceneDescription(
            "list",
            tuple(ObjectSpec(o.color, o.shape, o.size) for o in objects),
            counts=(CountSpec(ObjectSpec(), len(objects)),),
        )
    else:
        description = describe(graph, kind, draw) or describe(graph, "single", draw)
    return caption_text(description, draw)  # type: ignore[arg-type]


def scene_caption_vocab(
    graphs: Sequence[SceneGraph],
    captions: Sequence[Sequence[str]],
    kinds: Sequence[str],
    seed: int = VOCAB_SEED,
) -> CaptionVocab:
    """The kind tokens of ``kinds`` (in :data:`CAPTION_KINDS` order), then every token of the
    dataset's ``captions`` and of one :func:`training_caption` per graph and kind (both orders),
    most frequent first: every word a target can hold."""
    rng = np.random.default_rng(seed)
    texts = [c for row in captions for c in row]
    texts += [
        training_caption(g, kind, rng, order)
        for g in graphs
        for kind in kinds
        for order in (("reading", "random") if kind == "list" else ("reading",))
    ]
    words = CaptionVocab.from_texts(texts).tokens
    return CaptionVocab([kind_token(k) for k in CAPTION_KINDS if k in kinds] + words)


def encode_targets(
    vocab: CaptionVocab, texts: Sequence[str], kinds: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`CaptionVocab.encode` with each row's first input its kind's start token:
    ``(inputs, targets)``, each ``(B, L)`` int64."""
    inputs, targets = vocab.encode(texts)
    inputs[:, 0] = torch.tensor([vocab.start_id(k) for k in kinds], dtype=torch.int64)
    return inputs, targets


def matched_objects(description: SceneDescription, graph: SceneGraph) -> int:
    """How many of the image's objects the description names correctly: the largest one-to-one
    matching of its mentioned objects to objects they describe (colour, shape, stated size)."""
    if not description.objects or not graph.objects:
        return 0
    fits = np.array([[spec.matches(o) for o in graph.objects] for spec in description.objects])
    rows, cols = linear_sum_assignment(fits, maximize=True)
    return int(fits[rows, cols].sum())


def score_scene_captions(
    captions: Sequence[str],
    graphs: Sequence[SceneGraph],
    references: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """The scores of the module docstring, each a fraction in [0, 1] except ``bleu`` (0-100,
    only with ``references``: one list of reference captions per image, all of one length)."""
    if len(captions) != len(graphs) or not captions:
        raise ValueError(f"need one graph per caption, got {len(captions)} and {len(graphs)}")
    n = len(captions)
    correct = unparseable = covered = complete = 0
    stated: dict[str, list[bool]] = {"binding": [], "relations": [], "count": []}
    for caption, graph in zip(captions, graphs, strict=True):
        try:
            description = parse_caption(caption)
        except CaptionParseError:
            unparseable += 1
            continue
        score = score_caption(description, graph)
        correct += score.correct
        for part, values in stated.items():
            if getattr(score, part) is not None:
                values.append(bool(getattr(score, part)))
        matched = matched_objects(description, graph)
        covered += matched / len(graph.objects)
        complete += matched == len(graph.objects)
    out = {
        "exact_match": correct / n,
        "unparseable": unparseable / n,
        "coverage": covered / n,
        "mentions_all": complete / n,
    }
    if references is not None:
        import sacrebleu

        columns = [list(column) for column in zip(*references, strict=True)]
        out["bleu"] = float(sacrebleu.corpus_bleu(list(captions), columns).score)
    for part, values in stated.items():
        if values:  # left out where no caption states that part (no NaN in metrics.json)
            out[part] = sum(values) / len(values)
    return out


def scene_caption_metrics(
    caption: Callable[[torch.Tensor, str], list[str]],
    splits: Mapping[str, ScenesDataset],
    kinds: Sequence[str],
) -> dict[str, float]:
    """Scores of ``caption(images, kind)`` (images float ``(N, 3, S, S)`` in [-1, 1]) on each
    split, as one flat dict: the headline kind's (``list``, or the first kind where ``list`` is
    not trained) :func:`score_scene_captions` as ``{prefix}{score}``, every other kind's
    :data:`KIND_SCORES` as ``{prefix}{kind}_{score}``. The prefix is empty for the first split
    (``test``) and ``"{split}_"`` for the others."""
    headline = HEADLINE_KIND if HEADLINE_KIND in kinds else kinds[0]
    out: dict[str, float] = {}
    for position, (name, data) in enumerate(splits.items()):
        prefix = "" if position == 0 else f"{name}_"
        images = uint8_to_float(data.images)
        for kind in [headline] + [k for k in kinds if k != headline]:
            scores = score_scene_captions(caption(images, kind), data.graphs, data.captions)
            if kind == headline:
                out.update({f"{prefix}{key}": value for key, value in scores.items()})
            else:
                out.update({f"{prefix}{kind}_{key}": scores[key] for key in KIND_SCORES})
    return out
