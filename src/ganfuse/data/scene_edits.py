"""Counterfactual ``scenes`` images: the same picture with some objects' attributes changed.

A binding negative holds the true caption's words in another binding or order ("a blue circle
and a red square" for an image of a red circle and a blue square; "a blue square left of a red
circle" for "a red circle left of a blue square"). Trained on (image, caption, negative) alone, a
matcher can fit its labels from the *text*: among the training pairs, one wording of each
minimal pair is usually the true one, so a model can learn which wording is true without looking
(measured in ``benchmarks/scenes.md``: FiLM trained on relation reversals alone fits them and stays
at chance on test). :func:`counterfactual` edits the image instead, so that the negative becomes
true and the caption false: the objects the caption names take the attributes the negative gives
them, in place. Trained on both images, every wording is true for one and false for the other,
and only binding the words to the image separates them (the minimal image pairs of Winoground and
of counterfactual training sets for CLIP-style models).

The edit is exact for this world: objects are flat pure colours on a background that is a linear
gradient, so an object is erased by painting its pixels with the background plane fitted to
the picture's other pixels, and redrawn with the dataset's own shape masks; the edited scene
graph is recomputed from the drawn masks and both captions are re-judged on it.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ganfuse.data.scenes import (
    COLORS,
    GAP_AT_64,
    SUBPIXEL,
    SceneDescription,
    SceneGraph,
    SceneObject,
    ScenesDataset,
    object_side,
    parse_caption,
    relation_holds,
    relation_margin,
    shape_mask,
)

PALETTE: dict[str, np.ndarray] = {name: np.array(rgb, dtype=np.uint8) for name, rgb in COLORS.items()}


def object_mask(image: np.ndarray, obj: SceneObject) -> np.ndarray:
    """Bool ``(S, S)``: the pixels of ``obj`` in ``image`` (uint8 ``(S, S, 3)``): its colour
    inside its box (no background pixel is within 190 levels of an object colour)."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    x0, y0, x1, y1 = obj.bbox
    mask[y0:y1, x0:x1] = (image[y0:y1, x0:x1] == PALETTE[obj.color]).all(axis=-1)
    return mask


def background_plane(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Float ``(S, S, 3)``: per channel, the least-squares plane ``a + b x + c y`` through the
    pixels where ``background`` is true (the dataset's backgrounds are such planes, rounded)."""
    side = image.shape[0]
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    design = np.stack([np.ones_like(xs), xs, ys], axis=-1)  # (S, S, 3)
    coef, *_ = np.linalg.lstsq(design[background], image[background].astype(np.float64), rcond=None)
    return design @ coef


def _draw(
    shape: str, size: str, center: tuple[float, float], image_size: int
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The mask of a ``shape`` of ``size`` whose bounding square is centred near ``center``
    (corner on the dataset's quarter-pixel grid) and its rendered box; None if it leaves the
    canvas."""
    side = object_side(size, image_size)
    left = np.floor((center[0] - side / 2.0) * SUBPIXEL) / SUBPIXEL
    top = np.floor((center[1] - side / 2.0) * SUBPIXEL) / SUBPIXEL
    if left < 0 or top < 0 or left + side > image_size or top + side > image_size:
        return None
    mask = shape_mask(shape, side, left, top, image_size)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: float) -> bool:
    """Two boxes at least ``gap`` apart along x or along y (the sampler's rule, on boxes)."""
    return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap


def edit_scene(
    image: np.ndarray, graph: SceneGraph, changes: dict[int, tuple[str, str, str]]
) -> tuple[np.ndarray, SceneGraph] | None:
    """``image`` (uint8 ``(S, S, 3)``) with object ``i`` of ``graph`` given the colour, shape and
    size ``changes[i]`` in place (its box centre kept), and the edited graph; None when a redrawn
    object would leave the canvas or come closer to another than the dataset's gap.

    A change of colour alone repaints the object's pixels; a change of shape or size erases it
    (the background plane) and draws the new mask."""
    size = graph.image_size
    out = image.copy()
    masks = [object_mask(image, obj) for obj in graph.objects]
    occupied = np.logical_or.reduce(masks) if masks else np.zeros(image.shape[:2], dtype=bool)
    plane = None
    objects = list(graph.objects)
    redraw = []
    for index, (color, shape, new_size) in changes.items():
        old = objects[index]
        if (shape, new_size) == (old.shape, old.size):
            out[masks[index]] = PALETTE[color]
            objects[index] = SceneObject(color, shape, new_size, old.center, old.bbox)
            continue
        if plane is None:
            plane = np.clip(np.rint(background_plane(image, ~occupied)), 0, 255).astype(np.uint8)
        out[masks[index]] = plane[masks[index]]
        drawn = _draw(shape, new_size, old.center, size)
        if drawn is None:
            return None
        mask, box = drawn
        objects[index] = SceneObject(
            color, shape, new_size, ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0), box
        )
        redraw.append((mask, color))
    gap = GAP_AT_64 * size / 64.0
    for a, b in itertools.combinations(objects, 2):
        if not _apart(a.bbox, b.bbox, gap):
            return None
    for mask, color in redraw:
        out[mask] = PALETTE[color]
    objects.sort(key=lambda o: (o.center[1], o.center[0]))
    return out, SceneGraph(tuple(objects), size, graph.background)


def _binding(
    description: SceneDescription, graph: SceneGraph, margin: float
) -> tuple[int, ...] | None:
    """The first assignment of the description's objects to distinct objects of the graph under
    which every spec matches and every relation holds with ``margin`` pixels."""
    objects = graph.objects
    for chosen in itertools.permutations(range(len(objects)), len(description.objects)):
        if all(spec.matches(objects[i]) for spec, i in zip(description.objects, chosen, strict=True)) and all(
            relation_holds(objects[chosen[r.subject]], objects[chosen[r.obj]], r.relation, margin)
            for r in description.relations
        ):
            return chosen
    return None


def counterfactual(
    image: np.ndarray, graph: SceneGraph, caption: str, negative: str
) -> tuple[np.ndarray, SceneGraph] | None:
    """The image edited so that ``negative`` is true of it and ``caption`` false, with its graph,
    or None where no such edit is found.

    ``caption`` must be true of ``graph``; the objects it names (bound as the exact judge binds
    them) take, one by one, the attributes ``negative`` states for the object in the same place
    of its sentence (an attribute it leaves open is kept). For an attribute swap that swaps the
    attributes; for a reversal ("B left of A" against "A left of B"), every attribute the
    negative states, which puts B where A was and A where B was. The result is re-judged with
    margins: ``negative`` must hold with the dataset's relation margin, and ``caption`` must
    not hold even with half of it (the exact judge's margin), so neither is a near tie."""
    positive, wrong = parse_caption(caption), parse_caption(negative)
    if not positive.objects or len(positive.objects) != len(wrong.objects):
        return None
    margin = relation_margin(graph.image_size)
    chosen = _binding(positive, graph, margin / 2.0)
    if chosen is None:
        return None
    changes = {}
    for index, spec in zip(chosen, wrong.objects, strict=True):
        old = graph.objects[index]
        new = (spec.color or old.color, spec.shape or old.shape, spec.size or old.size)
        if new != (old.color, old.shape, old.size):
            changes[index] = new
    edited = edit_scene(image, graph, changes) if changes else None
    if edited is None:
        return None
    if not _holds(wrong, edited[1], margin) or _holds(positive, edited[1], margin / 2.0):
        return None
    return edited


def dataset_counterfactual(
    data: ScenesDataset, index: int, caption: str, negative: str
) -> tuple[torch.Tensor, SceneGraph] | None:
    """:func:`counterfactual` of image ``index`` of ``data``: uint8 ``(3, S, S)`` as the dataset
    holds its images, and the edited graph; None where no edit is found."""
    image = data.images[index].permute(1, 2, 0).numpy()
    edited = counterfactual(image, data.graphs[index], caption, negative)
    if edited is None:
        return None
    return torch.from_numpy(edited[0]).permute(2, 0, 1), edited[1]


def _holds(description: SceneDescription, graph: SceneGraph, margin: float) -> bool:
    """The description is true of the graph, counts included (the exact judge's rule)."""
    if _binding(description, graph, margin) is None:
        return False
    return all(
        sum(claim.spec.matches(o) for o in graph.objects) == claim.count
        for claim in description.counts
    )
