"""The ``scenes`` side of the contrastive dual encoder: training captions, in-loss positives, hard
negatives, and the retrieval and binding scores (:mod:`ganfuse.multimodal.zeroshot` trains it).

A ``scenes`` caption leaves most of its image open ("two shapes", "a red circle", "a red circle
left of a blue square"), so one caption is true of many images and one image has many true
captions. Every notion of a match here is therefore the exact judge's,
:func:`ganfuse.metrics.scenes.score_caption`, computed for whole (captions x images) tables at
once by :func:`caption_truth` (the same answer, checked pair by pair in the tests):

- in the loss, a caption of image ``j`` that is true of image ``i`` is a positive of ``i`` too;
- with hard negatives, each list or relation caption of the batch brings one of its binding
  negatives (:func:`~ganfuse.metrics.scene_negatives.binding_negatives`: the same words, another
  binding or order, false of its image) into the image-to-text denominator;
- retrieval recall@k both ways counts a hit when a retrieved item makes a true (caption, image)
  pair. The candidates are pooled over the evaluation split: every dataset caption of every image
  (4 per image) for image -> text, every image for text -> image;
- binding-swap matching: on :func:`~ganfuse.metrics.scene_negatives.build_binding_pairs` of the
  split, the share of triples where ``cos(image, true caption) > cos(image, negative)`` (a tie
  counts one half), overall, for attribute swaps (colour, shape, size) and for relation
  reversals. A bag of words scores 50% by construction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import (
    COLORS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    ObjectSpec,
    SceneDescription,
    SceneGraph,
    ScenesDataset,
    make_captions,
    parse_caption,
)
from ganfuse.errors import UserError
from ganfuse.metrics.scene_negatives import (
    binding_negatives,
    build_binding_pairs,
    replacement_negative,
)
from ganfuse.metrics.scenes import scoring_margin

# make_captions reads fewer than 40 uniforms for the largest scene; the dataset passes 64 too.
CAPTION_UNIFORMS = 64
BINDING_SEED = 0  # evaluation's binding negatives are a fixed property of a split
ATTRIBUTE_SWAPS: tuple[str, ...] = ("color-swap", "shape-swap", "size-swap")
RETRIEVAL_KS: tuple[int, ...] = (1, 5)

_COLOR_INDEX = {c: i for i, c in enumerate(COLORS)}
_SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
_SIZE_INDEX = {s: i for i, s in enumerate(SIZES)}


# ---------------------------------------------------------------------------------------------
# Exact truth of captions on many scene graphs at once
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneArrays:
    """``N`` scene graphs as arrays padded to :data:`~ganfuse.data.scenes.MAX_OBJECTS` objects:
    ``color``, ``shape``, ``size`` ``(N, K)`` int64 indices (-1 where there is no object),
    ``center`` ``(N, K, 2)`` float64 pixels; ``margin`` the relation margin in pixels (the judge's
    default, :func:`~ganfuse.metrics.scenes.scoring_margin`)."""

    color: np.ndarray
    shape: np.ndarray
    size: np.ndarray
    center: np.ndarray
    margin: float

    @classmethod
    def from_graphs(cls, graphs: Sequence[SceneGraph], margin: float | None = None) -> SceneArrays:
        sizes = {g.image_size for g in graphs}
        if len(sizes) > 1:
            raise UserError(
                f"scene graphs of one table must share an image size, got {sorted(sizes)}"
            )
        n = len(graphs)
        color, shape, size = (np.full((n, MAX_OBJECTS), -1, dtype=np.int64) for _ in range(3))
        center = np.zeros((n, MAX_OBJECTS, 2), dtype=np.float64)
        for row, graph in enumerate(graphs):
            for k, o in enumerate(graph.objects):
                color[row, k] = _COLOR_INDEX[o.color]
                shape[row, k] = _SHAPE_INDEX[o.shape]
                size[row, k] = _SIZE_INDEX[o.size]
                center[row, k] = o.center
        if margin is None:
            margin = scoring_margin(sizes.pop()) if sizes else 0.0
        return cls(color, shape, size, center, float(margin))

    def __len__(self) -> int:
        return self.color.shape[0]

    def take(self, rows: np.ndarray | torch.Tensor | Sequence[int]) -> SceneArrays:
        """The graphs at ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return SceneArrays(
            self.color[rows], self.shape[rows], self.size[rows], self.center[rows], self.margin
        )


def _matches(spec: ObjectSpec, arrays: SceneArrays) -> np.ndarray:
    """``(N, K)`` bool: which objects of each graph ``spec`` describes."""
    hit = arrays.color >= 0
    if spec.color is not None:
        hit = hit & (arrays.color == _COLOR_INDEX[spec.color])
    if spec.shape is not None:
        hit = hit & (arrays.shape == _SHAPE_INDEX[spec.shape])
    if spec.size is not None:
        hit = hit & (arrays.size == _SIZE_INDEX[spec.size])
    return hit


def _holds(subject: np.ndarray, obj: np.ndarray, relation: str, margin: float) -> np.ndarray:
    """:func:`ganfuse.data.scenes.relation_holds` on ``(N, 2)`` centres -> ``(N,)`` bool."""
    if relation == "left":
        return obj[:, 0] - subject[:, 0] >= margin
    if relation == "right":
        return subject[:, 0] - obj[:, 0] >= margin
    if relation == "above":
        return obj[:, 1] - subject[:, 1] >= margin
    return subject[:, 1] - obj[:, 1] >= margin  # below (the parser names no other relation)


def _truth_row(description: SceneDescription, arrays: SceneArrays) -> np.ndarray:
    """``(N,)`` bool: ``score_caption(description, graph).correct`` for every graph."""
    correct = np.ones(len(arrays), dtype=bool)
    mentioned = description.objects
    if mentioned:
        matches = [_matches(spec, arrays) for spec in mentioned]
        bound = np.zeros(len(arrays), dtype=bool)
        # An injective choice of one object per mention (padding never matches), as the judge.
        for chosen in itertools.permutations(range(MAX_OBJECTS), len(mentioned)):
            hit = matches[0][:, chosen[0]].copy()
            for match, k in zip(matches[1:], chosen[1:], strict=True):
                hit &= match[:, k]
            for r in description.relations:
                subject = arrays.center[:, chosen[r.subject]]
                hit &= _holds(subject, arrays.center[:, chosen[r.obj]], r.relation, arrays.margin)
            bound |= hit
        correct &= bound
    for claim in description.counts:
        correct &= _matches(claim.spec, arrays).sum(axis=1) == claim.count
    return correct


def caption_truth(
    captions: Sequence[str | SceneDescription], graphs: SceneArrays | Sequence[SceneGraph]
) -> np.ndarray:
    """``(C, N)`` bool: whether caption ``c`` is true of graph ``n`` by the exact judge
    (``score_caption(captions[c], graphs[n]).correct``, default margin), vectorised over the
    graphs; a caption no template reads raises the parser's one-line error."""
    arrays = graphs if isinstance(graphs, SceneArrays) else SceneArrays.from_graphs(graphs)
    out = np.zeros((len(captions), len(arrays)), dtype=bool)
    rows: dict[SceneDescription, np.ndarray] = {}
    for c, caption in enumerate(captions):
        description = parse_caption(caption) if isinstance(caption, str) else caption
        if description not in rows:
            rows[description] = _truth_row(description, arrays)
        out[c] = rows[description]
    return out


# ---------------------------------------------------------------------------------------------
# Training batches
# ---------------------------------------------------------------------------------------------


@dataclass
class SceneContrastiveBatch:
    """Images ``(B, 3, S, S)`` uint8 rows ``indices`` of the split; ``texts``: one fresh caption
    per image (rows ``0..B-1``, caption ``i`` of image ``i``), then the hard negatives, negative
    ``h`` (text ``B + h``) a binding negative of caption ``negative_of[h]``; ``positives``
    ``(B, len(texts))`` bool: text ``t`` is true of image ``i``."""

    indices: torch.Tensor
    texts: list[str]
    positives: torch.Tensor
    negative_of: list[int]

    @property
    def hard_negatives(self) -> int:
        return len(self.texts) - len(self.indices)


def draw_caption(graph: SceneGraph, rng: np.random.Generator) -> str:
    """A fresh true caption of ``graph``: a kind (list, relation, count, single) drawn uniformly,
    then its template and synonyms, as the dataset writes them."""
    return make_captions(graph, rng.random(CAPTION_UNIFORMS))[int(rng.integers(4))]


def contrastive_batch(
    data: ScenesDataset,
    arrays: SceneArrays,
    indices: torch.Tensor,
    rng: np.random.Generator,
    hard_negatives: bool,
    forbidden_pairs: Collection[tuple[str, str]] = (),
    replacement_fraction: float = 0.0,
) -> SceneContrastiveBatch:
    """One training batch of ``indices`` (``(B,)`` int64 rows of ``data``; ``arrays`` is
    ``SceneArrays.from_graphs(data.graphs)``). With ``hard_negatives``, every caption that has a
    binding negative naming no pair of ``forbidden_pairs`` adds one, drawn by ``rng``; with
    ``replacement_fraction``, that share of the captions adds a one-word replacement negative
    (:func:`~ganfuse.metrics.scene_negatives.replacement_negative`) instead, where one is found."""
    rows = indices.tolist()
    texts = [draw_caption(data.graphs[i], rng) for i in rows]
    negative_of = []
    if hard_negatives:
        for row, (i, text) in enumerate(zip(rows, texts[: len(rows)], strict=True)):
            negative = None
            if replacement_fraction and rng.random() < replacement_fraction:
                negative = replacement_negative(text, data.graphs[i], rng, forbidden_pairs)
            if negative is None:
                options = binding_negatives(text, data.graphs[i], forbidden_pairs)
                if options:
                    negative = options[int(rng.integers(len(options)))].text
            if negative is not None:
                texts.append(negative)
                negative_of.append(row)
    truth = caption_truth(texts, arrays.take(rows))  # (T, B)
    return SceneContrastiveBatch(indices, texts, torch.from_numpy(truth.T.copy()), negative_of)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def recall_relevant(
    similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = RETRIEVAL_KS
) -> dict[int, float]:
    """Share of queries with a relevant candidate among their top ``k``: ``similarity`` and
    ``relevant`` (bool) both ``(Q, N)``, queries in rows."""
    if similarity.shape != relevant.shape:
        raise ValueError(
            f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} differ"
        )
    top = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices
    hits = relevant.gather(1, top)
    return {k: float(hits[:, :k].any(dim=1).double().mean()) for k in ks}


def binding_wins(
    image_emb: torch.Tensor, positive_emb: torch.Tensor, negative_emb: torch.Tensor
) -> torch.Tensor:
    """``(P,)`` float: 1 where ``cos(image, true caption) > cos(image, negative)``, 0 where it is
    smaller, one half for a tie (what a model blind to binding gives: a bag of words sits at 50%,
    as in :func:`~ganfuse.metrics.scene_negatives.bag_of_words_accuracy`). Rows ``(P, E)``,
    L2-normalised."""
    positive = (image_emb * positive_emb).sum(-1)
    negative = (image_emb * negative_emb).sum(-1)
    return (positive > negative).double() + 0.5 * (positive == negative).double()


@torch.no_grad()
def evaluate_scenes_split(
    embed_images: Callable[[torch.Tensor], torch.Tensor],
    embed_texts: Callable[[list[str]], torch.Tensor],
    data: ScenesDataset,
    prefix: str,
) -> dict[str, float]:
    """Retrieval and binding scores of one evaluation split, keys ``{prefix}_...``:

    - ``i2t_r{k}``: per image, a true caption among the top ``k`` of the pooled captions (every
      dataset caption of every image of the split); ``t2i_r{k}``: per pooled caption, an image it
      is true of among the top ``k`` images; ``r1_chance``: the recall@1 of a random ranking,
      both ways (the share of true pairs);
    - ``binding``: binding-swap matching accuracy over every triple of the split's
      :func:`build_binding_pairs`; ``binding_attribute`` (colour, shape or size swapped between
      two objects), ``binding_reversal`` (a relation's two objects swapped), and each swap kind.

    ``embed_images``: float ``(N, 3, S, S)`` in [-1, 1] -> ``(N, E)`` normalised;
    ``embed_texts``: strings -> ``(T, E)`` normalised.
    """
    image_emb = embed_images(uint8_to_float(data.images)).float()
    captions = [c for texts in data.captions for c in texts]
    text_emb = embed_texts(captions).float()
    truth = torch.from_numpy(caption_truth(captions, data.graphs))  # (C, N)
    similarity = text_emb @ image_emb.t()  # (C, N)
    metrics: dict[str, float] = {}
    for k, value in recall_relevant(similarity.t(), truth.t()).items():
        metrics[f"{prefix}_i2t_r{k}"] = value
    for k, value in recall_relevant(similarity, truth).items():
        metrics[f"{prefix}_t2i_r{k}"] = value
    # Either way, a random ranking's recall@1 is the share of true (caption, image) pairs.
    metrics[f"{prefix}_r1_chance"] = float(truth.double().mean())
    pairs = build_binding_pairs(data.graphs, data.captions, BINDING_SEED)
    if len(pairs):
        won = binding_wins(
            image_emb[torch.tensor(pairs.image_index)],
            embed_texts(pairs.positives).float(),
            embed_texts(pairs.negatives).float(),
        )
        kinds = np.array(pairs.negative_kinds)
        groups = {"binding": np.ones(len(kinds), dtype=bool)}
        groups["binding_attribute"] = np.isin(kinds, ATTRIBUTE_SWAPS)
        groups["binding_reversal"] = kinds == "reversal"
        for kind in ATTRIBUTE_SWAPS:
            groups[f"binding_{kind.replace('-', '_')}"] = kinds == kind
        for name, chosen in groups.items():
            if chosen.any():
                metrics[f"{prefix}_{name}"] = float(won[torch.from_numpy(chosen)].mean())
    return metrics
