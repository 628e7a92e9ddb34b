"""Counterfactual ``scenes`` images: exact edits that make a binding negative true and its caption
false, checked by the shipped scene parser and the exact judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfuse.data.scene_edits import (
    background_plane,
    counterfactual,
    edit_scene,
    object_mask,
)
from ganfuse.data.scenes import ScenesDataset
from ganfuse.metrics.scene_negatives import build_binding_pairs
from ganfuse.metrics.scenes import graphs_equal, parse_scenes, score_caption


@pytest.fixture(scope="module")
def scenes():
    data = ScenesDataset("train", num=300, seed=4, image_size=32)
    pairs = build_binding_pairs(data.graphs, data.captions, 0, data.holdout)
    return data, data.images.permute(0, 2, 3, 1).numpy(), pairs


def test_backgrounds_are_planes_and_objects_are_their_colour(scenes):
    data, images, _ = scenes
    for image, graph in zip(images[:50], data.graphs[:50], strict=True):
        masks = [object_mask(image, obj) for obj in graph.objects]
        # every object pixel is found, and only within its box
        assert [int(m.sum()) > 0 for m in masks] == [True] * len(masks)
        background = ~np.logical_or.reduce(masks)
        plane = background_plane(image, background)
        assert np.abs(plane[background] - image[background]).max() <= 1.0  # rounding only


def test_a_colour_change_repaints_exactly_the_objects_pixels(scenes):
    data, images, _ = scenes
    index = next(i for i, g in enumerate(data.graphs) if len(g.objects) >= 2)
    image, graph = images[index], data.graphs[index]
    obj = graph.objects[0]
    color = "white" if obj.color != "white" else "red"
    edited, new_graph = edit_scene(image, graph, {0: (color, obj.shape, obj.size)})
    mask = object_mask(image, obj)
    assert (edited[~mask] == image[~mask]).all()
    assert (edited[mask] == np.array([255, 255, 255] if color == "white" else [255, 0, 0])).all()
    assert graphs_equal(parse_scenes(torch.from_numpy(edited[None]).permute(0, 3, 1, 2))[0], new_graph, 0.5)


def test_a_redraw_that_would_touch_another_object_is_refused(scenes):
    data, images, _ = scenes
    # a small object grown to large next to a neighbour: some such edit in these images collides
    refused = 0
    for image, graph in zip(images, data.graphs, strict=True):
        for i, obj in enumerate(graph.objects):
            if obj.size == "small" and len(graph.objects) == 4:
                refused += edit_scene(image, graph, {i: (obj.color, obj.shape, "large")}) is None
    assert refused > 0


def test_counterfactuals_make_the_negative_true_and_the_caption_false(scenes):
    """On every kind of binding pair: the judge agrees on the edited graph, and the shipped
    parser reads the edited image as that graph. Most colour and shape swaps and reversals find
    an edit (97%, 97%, 87% on 2,000 images, benchmarks/scenes.md); size swaps often collide."""
    data, images, pairs = scenes
    found: dict[str, list[bool]] = {}
    edited_images, edited_graphs = [], []
    for row, index in enumerate(pairs.image_index):
        positive, negative = pairs.positives[row], pairs.negatives[row]
        result = counterfactual(images[index], data.graphs[index], positive, negative)
        found.setdefault(pairs.negative_kinds[row], []).append(result is not None)
        if result is None:
            continue
        image, graph = result
        assert score_caption(negative, graph).correct and not score_caption(positive, graph).correct
        assert not score_caption(negative, data.graphs[index]).correct  # it was false before
        edited_images.append(image)
        edited_graphs.append(graph)
    share = {kind: float(np.mean(hits)) for kind, hits in found.items()}
    assert share["color-swap"] > 0.9 and share["shape-swap"] > 0.9 and share["reversal"] > 0.75
    assert share["size-swap"] > 0.1
    parsed = parse_scenes(torch.from_numpy(np.stack(edited_images)).permute(0, 3, 1, 2))
    assert all(graphs_equal(p, g, 0.5) for p, g in zip(parsed, edited_graphs, strict=True))
