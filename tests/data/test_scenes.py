"""The ``scenes`` dataset follows its specification: determinism, geometry, backgrounds, captions,
splits, export and errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from ganfuse.data.scenes import (
    CAPTION_KINDS,
    COGENT_COLORS,
    COLORS,
    DEFAULT_HOLDOUT,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    CaptionParseError,
    SceneGraph,
    ScenesDataset,
    background_bank,
    export_scenes,
    generate_scenes,
    mask_bank,
    object_side,
    parse_caption,
)
from ganfuse.errors import ConfigError, UserError


@pytest.fixture(scope="module")
def scenes64():
    return generate_scenes(400, seed=7, split="all", image_size=64)


@pytest.fixture(scope="module")
def scenes32():
    return generate_scenes(400, seed=7, split="all", image_size=32)


def test_the_same_seed_gives_the_same_scenes_and_a_smaller_set_is_a_prefix():
    a_images, a_graphs, a_captions = generate_scenes(60, seed=3, split="train")
    b_images, b_graphs, b_captions = generate_scenes(60, seed=3, split="train")
    assert np.array_equal(a_images, b_images)
    assert a_graphs == b_graphs and a_captions == b_captions
    c_images, c_graphs, c_captions = generate_scenes(25, seed=3, split="train")
    assert np.array_equal(c_images, a_images[:25]) and c_graphs == a_graphs[:25]
    assert c_captions == a_captions[:25]
    d_images, _, _ = generate_scenes(60, seed=4, split="train")
    assert not np.array_equal(a_images, d_images)
    e_images, _, _ = generate_scenes(60, seed=3, split="val")
    assert not np.array_equal(a_images, e_images)


@pytest.mark.parametrize("size", [32, 64])
def test_images_hold_one_to_four_fully_visible_objects_in_their_pure_colours(
    size, scenes64, scenes32
):
    images, graphs, _ = scenes64 if size == 64 else scenes32
    assert images.shape == (400, size, size, 3) and images.dtype == np.uint8
    counts = [len(g.objects) for g in graphs]
    assert set(counts) == set(range(1, MAX_OBJECTS + 1))
    for image, graph in zip(images, graphs, strict=True):
        assert graph.image_size == size
        # Objects have a 255 channel, backgrounds none above 66.
        is_object = image.max(axis=-1) > 128
        covered = np.zeros_like(is_object)
        for obj in graph.objects:
            x0, y0, x1, y1 = obj.bbox
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert obj.center == ((x0 + x1) / 2, (y0 + y1) / 2)
            inside = np.all(image[y0:y1, x0:x1] == COLORS[obj.color], axis=-1)
            # The object touches all four sides of its box: nothing of it is cut off.
            assert (
                inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            )
            # Sizes never meet: a large object is wider than any small one of its shape.
            extent = max(x1 - x0, y1 - y0)
            if obj.size == "small":
                assert extent <= object_side("small", size)
            else:
                assert object_side("small", size) < extent <= object_side("large", size)
            covered[y0:y1, x0:x1] |= inside
        assert np.array_equal(covered, is_object)  # no stray object pixels anywhere


@pytest.mark.parametrize("size,gap", [(32, 1), (64, 2)])
def test_objects_never_overlap_or_touch(size, gap, scenes64, scenes32):
    _, graphs, _ = scenes64 if size == 64 else scenes32
    closest = np.inf
    for graph in graphs:
        for a, b in itertools.combinations(graph.objects, 2):
            dx = max(b.bbox[0] - a.bbox[2], a.bbox[0] - b.bbox[2])
            dy = max(b.bbox[1] - a.bbox[3], a.bbox[1] - b.bbox[3])
            closest = min(closest, max(dx, dy))
    assert closest >= gap


def test_every_mask_is_one_piece_and_every_shape_differs():
    from scipy import ndimage

    for size in (32, 64):
        bank = mask_bank(size)
        flat = bank.masks.reshape(len(SHAPES), len(SIZES), -1, bank.grid, bank.grid)
        for i, j, k in itertools.product(
            range(len(SHAPES)), range(len(SIZES)), range(flat.shape[2])
        ):
            assert ndimage.label(flat[i, j, k], structure=np.ones((3, 3)))[1] == 1
        for j in range(len(SIZES)):
            patterns = [{m.tobytes() for m in flat[i, j]} for i in range(len(SHAPES))]
            for a, b in itertools.combinations(patterns, 2):
                assert not a & b


def test_backgrounds_are_dark_and_far_from_every_object_colour():
    for size in (32, 64):
        packed = background_bank(size).reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
        codes = np.unique(packed)
        pixels = np.stack([codes // 65536, codes // 256 % 256, codes % 256], axis=1).astype(float)
        assert pixels.max() <= 66
        palette = np.array(list(COLORS.values()), dtype=np.float64)
        distance = np.sqrt(((pixels[:, None, :] - palette[None]) ** 2).sum(-1))
        assert distance.min() >= 190
        # Gradients are gentle: at most 28 levels across an image.
        bank = background_bank(size).astype(int)
        assert (bank.max(axis=(1, 2)) - bank.min(axis=(1, 2))).max() <= 28


def test_every_caption_parses_and_kinds_come_in_order(scenes64):
    _, graphs, captions = scenes64
    kinds = {kind: 0 for kind in CAPTION_KINDS}
    for graph, texts in zip(graphs, captions, strict=True):
        assert len(texts) == len(CAPTION_KINDS)
        parsed = [parse_caption(t) for t in texts]
        assert parsed[2].kind == "count" and parsed[3].kind == "single"
        # A list of one object without a count reads as a single-object description.
        assert parsed[0].kind == (
            "list" if len(graph.objects) > 1 or parsed[0].counts else "single"
        )
        assert parsed[1].kind in ("relation", "single")
        assert parsed[1].kind == "relation" or len(graph.objects) >= 1
        for p in parsed:
            kinds[p.kind] += 1
        # The list names every object.
        assert len(parsed[0].objects) == len(graph.objects)
    assert kinds["relation"] > 200  # most multi-object scenes state a relation


def test_the_caption_parser_reads_synonyms_and_counts():
    d = parse_caption("  A tiny Red disc to the left of a big blue BOX. ")
    assert d.kind == "relation"
    assert [(o.color, o.shape, o.size) for o in d.objects] == [
        ("red", "circle", "small"),
        ("blue", "square", "large"),
    ]
    assert d.relations[0].relation == "left"
    d = parse_caption("there are 3 green shapes")
    assert (
        d.counts[0].count == 3
        and d.counts[0].spec.color == "green"
        and d.counts[0].spec.shape is None
    )
    d = parse_caption("exactly one star")
    assert d.counts[0].count == 1 and d.counts[0].spec.shape == "star"
    d = parse_caption("two things: an orange rhombus and a white triangle")
    assert d.counts[0].count == 2 and d.counts[0].spec.color is None
    assert [o.shape for o in d.objects] == ["diamond", "triangle"]
    d = parse_caption("a red circle, a green star and a small cyan diamond")
    assert len(d.objects) == 3 and d.objects[2].size == "small" and not d.counts


@pytest.mark.parametrize(
    "caption",
    ["a purple circle", "a red circle near a blue square", "five red shapes", "", "a red"],
)
def test_an_unreadable_caption_is_a_one_line_error_naming_it(caption):
    with pytest.raises(CaptionParseError) as info:
        parse_caption(caption)
    message = str(info.value)
    assert "\n" not in message and repr(caption) in message
    assert isinstance(info.value, UserError)


def test_held_out_pairs_never_appear_outside_the_heldout_split():
    held = set(DEFAULT_HOLDOUT)
    for split in ("train", "val", "test"):
        _, graphs, _ = generate_scenes(300, seed=1, split=split, captions=False)
        pairs = {(o.color, o.shape) for g in graphs for o in g.objects}
        assert not pairs & held
        assert len(pairs) == len(COLORS) * len(SHAPES) - len(held)
    _, graphs, _ = generate_scenes(300, seed=1, split="heldout", captions=False)
    assert all(any((o.color, o.shape) in held for o in g.objects) for g in graphs)


def test_cogent_conditions_take_disjoint_colour_sets_per_shape():
    seen = {}
    for condition in ("a", "b"):
        split = f"cogent-{condition}"
        _, graphs, _ = generate_scenes(300, seed=2, split=split, captions=False)
        seen[condition] = {(o.color, o.shape) for g in graphs for o in g.objects}
        for color, shape in seen[condition]:
            assert color in COGENT_COLORS[condition][shape]
    for shape in SHAPES:
        assert not set(COGENT_COLORS["a"][shape]) & set(COGENT_COLORS["b"][shape])
        assert set(COGENT_COLORS["a"][shape]) | set(COGENT_COLORS["b"][shape]) == set(COLORS)
    assert not seen["a"] & seen["b"]
    assert len(seen["a"]) == len(seen["b"]) == len(SHAPES) * 4
    _, graphs, _ = generate_scenes(100, seed=2, split="cogent-a-test", captions=False)
    assert {(o.color, o.shape) for g in graphs for o in g.objects} <= seen["a"]


def test_export_writes_pngs_and_a_jsonl_of_graphs_and_captions(tmp_path):
    assert export_scenes(12, tmp_path, seed=5, image_size=32) == 12
    images, graphs, captions = generate_scenes(12, seed=5, split="all", image_size=32)
    lines = (tmp_path / "scenes.jsonl").read_text().splitlines()
    assert len(lines) == 12
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert record["file"] == f"{i:05d}.png"
        assert np.array_equal(np.asarray(Image.open(tmp_path / record["file"])), images[i])
        assert SceneGraph.from_dict(record["graph"]) == graphs[i]
        assert record["captions"] == captions[i]


def test_the_dataset_serves_float_images_and_captions():
    data = ScenesDataset("val", num=10, seed=0, image_size=32)
    image, label, caption = data[3]
    assert image.shape == (3, 32, 32) and -1.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert label == len(data.graphs[3].objects) - 1 and caption == data.captions[3][0]
    assert len(data) == 10 and data.images.dtype.is_floating_point is False


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"split": "nosuch"}, "unknown scenes split 'nosuch'"),
        ({"image_size": 48}, "image_size must be one of (32, 64)"),
        ({"holdout": [("purple", "circle")]}, "not a (colour, shape) of scenes"),
    ],
)
def test_bad_arguments_are_one_line_config_errors(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        generate_scenes(4, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_the_command_line_exports_scenes_and_names_an_unknown_world(tmp_path, capsys):
    from ganfuse.cli import main

    assert (
        main(
            [
                "data",
                "export",
                "scenes",
                "--num",
                "3",
                "--out",
                str(tmp_path / "s"),
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    assert len((tmp_path / "s" / "scenes.jsonl").read_text().splitlines()) == 3
    assert (
        main(
            [
                "data",
                "export",
                "scenes",
                "--num",
                "3",
                "--out",
                str(tmp_path / "t"),
                "--image-size",
                "48",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image_size must be one of (32, 64)" in err[0]
    with pytest.raises(SystemExit) as info:
        main(["data", "export", "worlds", "--num", "3", "--out", str(tmp_path / "u")])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'worlds'" in last and "scenes" in last
