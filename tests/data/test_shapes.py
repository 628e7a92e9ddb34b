"""The ``shapes`` dataset follows its specification: geometry, captions, splits, export."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.data.shapes import (
    COLOR_SHAPE_CLASSES,
    COLORS,
    DEFAULT_HOLDOUT,
    MAX_JITTER_FRACTION,
    POSITIONS,
    SHAPES,
    SIZE_FRACTION,
    SIZES,
    ShapeAttributes,
    ShapesDataset,
    caption_synonyms,
    caption_templates,
    export_shapes,
    generate_shapes,
    make_caption,
    parse_caption,
    render_shape,
    render_shapes,
)
from ganfuse.errors import ConfigError, UserError

ALL_ATTRIBUTES = [
    ShapeAttributes(c, s, z, p)
    for c, s, z, p in itertools.product(COLORS, SHAPES, SIZES, POSITIONS)
]
# Area of each shape relative to its bounding square. The bounding-box checks below also show
# that no shape is clipped by the canvas border.
FILL_RATIO = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("jitter_sign", [-1.0, 0.0, 1.0])
def test_every_combination_has_pure_colour_size_and_cell(image_size: int, jitter_sign: float):
    jitter = np.full((len(ALL_ATTRIBUTES), 2), jitter_sign * MAX_JITTER_FRACTION)
    images = render_shapes(ALL_ATTRIBUTES, image_size, jitter)
    assert images.shape == (len(ALL_ATTRIBUTES), image_size, image_size, 3)
    assert images.dtype == np.uint8
    for attrs, image in zip(ALL_ATTRIBUTES, images, strict=True):
        # Two colours only: pure black outside the shape, the pure colour inside.
        mask = image.any(axis=-1)
        assert mask.any() and np.all(image[mask] == COLORS[attrs.color]), attrs
        top, bottom, left, right = _bbox(mask)
        side = SIZE_FRACTION[attrs.size] * image_size
        height, width = bottom - top + 1, right - left + 1
        if attrs.shape == "square":
            assert (height, width) == (side, side), attrs
        else:
            assert side - 1 <= height <= side and side - 1 <= width <= side, (attrs, height, width)
        # Binary rasterisation fattens small triangles (0.625 at 8 px), hence the tolerance;
        # the three shapes stay apart.
        ratio = mask.sum() / side**2
        assert abs(ratio - FILL_RATIO[attrs.shape]) < 0.13, (attrs, ratio)

        # The centre of the bounding box lies in the position's third of the canvas.
        row = int(((top + bottom + 1) / 2) // (image_size / 3))
        col = int(((left + right + 1) / 2) // (image_size / 3))
        assert POSITIONS[3 * row + col] == attrs.position, attrs


def test_triangle_points_up_and_widens_downwards():
    mask = render_shape(ShapeAttributes("white", "triangle", "large", "center"))[..., 0] > 0
    top, bottom, _, _ = _bbox(mask)
    widths = mask[top : bottom + 1].sum(axis=1)
    assert widths[0] <= 2 and widths[-1] == 14
    assert np.all(np.diff(widths) >= 0)


def test_jitter_moves_the_shape_and_is_bounded():
    attrs = ShapeAttributes("red", "square", "small", "center")
    base = render_shape(attrs)[..., 0] > 0
    shifted = render_shape(attrs, jitter=(1 / 32, 0.0))[..., 0] > 0
    assert np.array_equal(np.roll(base, 1, axis=1), shifted)
    with pytest.raises(ConfigError):
        render_shape(attrs, jitter=(2 / 32, 0.0))


@pytest.mark.parametrize("template", range(len(caption_templates())))
def test_every_template_and_synonym_parses_back(template: int):
    synonyms = caption_synonyms()
    fmt = caption_templates()[template]
    base = {"size": "small", "color": "red", "shape": "circle", "position": "top-left"}
    checked = 0
    for slot, table in synonyms.items():
        for value, words in table.items():
            for word in words:
                values = dict(base, **{slot: value})
                words_used = {s: synonyms[s][values[s]][0] for s in synonyms}
                words_used[slot] = word
                caption = fmt.format(**words_used)
                assert parse_caption(caption) == ShapeAttributes(**values), caption
                checked += 1
    assert checked == sum(len(ws) for t in synonyms.values() for ws in t.values())


def test_random_captions_of_every_combination_parse_back():
    rng = np.random.default_rng(0)
    for attrs in ALL_ATTRIBUTES:
        for _ in range(3):
            assert parse_caption(make_caption(attrs, rng)) == attrs
    dataset = ShapesDataset("all", num=500, seed=3)
    assert all(
        parse_caption(c) == a for c, a in zip(dataset.captions, dataset.attributes, strict=True)
    )
    assert len({c.split()[0] for c in dataset.captions}) >= 6  # many templates in use


def test_parse_caption_tolerates_case_space_and_full_stop_and_rejects_other_text():
    expected = ShapeAttributes("red", "circle", "small", "top-left")
    assert parse_caption("A  small RED circle in the top left.") == expected
    assert parse_caption("top-left corner: a tiny red disc") == expected
    assert parse_caption("there is a red circle, small, at the upper left") == expected
    assert parse_caption("a small red circle in the top-left") == expected
    assert parse_caption("top left corner: a tiny red disc") == expected
    assert parse_caption("a purple circle in the top left") is None
    assert parse_caption("") is None
    assert parse_caption("a small red circle in the top left and a dog") is None


def test_make_caption_can_pick_the_template():
    rng = np.random.default_rng(0)
    attrs = ShapeAttributes("cyan", "square", "large", "bottom-right")
    for index in range(len(caption_templates())):
        caption = make_caption(attrs, rng, template=index)
        prefix = caption_templates()[index].split("{")[0]
        assert caption.startswith(prefix) and parse_caption(caption) == attrs
    with pytest.raises(UserError):
        make_caption(attrs, rng, template=len(caption_templates()))


def test_caption_templates_are_at_least_six_and_use_every_slot():
    templates = caption_templates()
    assert len(templates) >= 6
    for template in templates:
        for slot in ("{size}", "{color}", "{shape}", "{position}"):
            assert template.count(slot) == 1


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_holdout_pairs_never_in_training_splits(split: str):
    dataset = ShapesDataset(split, num=3000, seed=1)
    pairs = {a.color_shape for a in dataset.attributes}
    assert pairs.isdisjoint(DEFAULT_HOLDOUT)
    assert len(pairs) == len(COLOR_SHAPE_CLASSES) - len(DEFAULT_HOLDOUT)
    held_labels = {COLOR_SHAPE_CLASSES.index(p) for p in DEFAULT_HOLDOUT}
    assert held_labels.isdisjoint(set(dataset.labels["color_shape"].tolist()))


def test_heldout_split_has_only_and_all_heldout_pairs():
    dataset = ShapesDataset("heldout", num=400, seed=1)
    assert {a.color_shape for a in dataset.attributes} == set(DEFAULT_HOLDOUT)
    every = ShapesDataset("all", num=1000, seed=1)
    assert {a.color_shape for a in every.attributes} == set(COLOR_SHAPE_CLASSES)


def test_holdout_is_configurable_and_validated():
    holdout = (("cyan", "square"),)
    _, train, _ = generate_shapes(2000, split="train", holdout=holdout)
    assert ("cyan", "square") not in {a.color_shape for a in train}
    assert ("red", "triangle") in {a.color_shape for a in train}
    held = ShapesDataset("heldout", num=50, holdout=holdout)
    assert {a.color_shape for a in held.attributes} == {("cyan", "square")}
    with pytest.raises(UserError, match="purple"):
        ShapesDataset("train", num=10, holdout=(("purple", "circle"),))


def test_splits_are_deterministic_and_distinct():
    a = ShapesDataset("train", num=200, seed=7)
    b = ShapesDataset("train", num=200, seed=7)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert a.attributes == b.attributes
    other_seed = ShapesDataset("train", num=200, seed=8)
    val = ShapesDataset("val", num=200, seed=7)
    test = ShapesDataset("test", num=200, seed=7)
    for other in (other_seed, val, test):
        assert other.captions != a.captions
        assert not torch.equal(other.images, a.images)
    # A smaller dataset of the same split and seed is a prefix of the larger one's attributes.
    assert ShapesDataset("train", num=50, seed=7).attributes == a.attributes[:50]


def test_item_format_labels_and_pixels_agree():
    dataset = ShapesDataset("test", num=300, seed=2, image_size=64)
    assert dataset.images.shape == (300, 3, 64, 64) and dataset.images.dtype == torch.uint8
    assert (dataset.channels, dataset.image_size, dataset.num_classes) == (3, 64, 21)
    assert dataset.class_names[0] == "red circle" and len(dataset.class_names) == 21
    image, label, caption = dataset[5]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() == -1.0 and image.max() == 1.0
    assert dataset.class_names[label] == " ".join(dataset.attributes[5].color_shape)
    assert parse_caption(caption) == dataset.attributes[5]
    assert torch.equal(dataset.float_images()[5], image)
    for key in ("color", "shape", "size", "position", "color_shape"):
        assert dataset.labels[key].shape == (300,) and dataset.labels[key].dtype == torch.int64
    # The colour label is the colour of the brightest pixel.
    palette = torch.tensor(list(COLORS.values()))
    peak = dataset.images.flatten(2).amax(dim=2)  # (N, 3): the shape's colour
    nearest = (peak[:, None, :].int() - palette[None].int()).abs().sum(-1).argmin(1)
    assert torch.equal(nearest, dataset.labels["color"])
    images, labels = dataset.batch(torch.tensor([5, 6]))
    assert torch.equal(images[0], image) and labels[0].item() == label


def test_default_split_sizes():
    assert len(ShapesDataset("heldout")) == 1000
    assert len(ShapesDataset("val")) == 1000


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="split"):
        ShapesDataset("training", num=10)
    with pytest.raises(UserError, match="image_size"):
        ShapesDataset("train", num=10, image_size=48)
    with pytest.raises(UserError, match="purple"):
        ShapeAttributes("purple", "circle", "small", "center")


def test_export_writes_pngs_and_jsonl(tmp_path):
    out = tmp_path / "export"
    assert export_shapes(12, out, seed=4) == 12
    lines = (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(12)]
    images, attributes, captions = generate_shapes(12, seed=4, split="all")
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert list(record) == ["file", "caption", "attributes"]
        assert record["file"] == f"{i:05d}.png"
        assert record["caption"] == captions[i]
        assert record["attributes"] == attributes[i].as_dict()
        assert parse_caption(record["caption"]) == attributes[i]
        assert set(record["attributes"]) == {"color", "shape", "size", "position"}
        png = np.asarray(Image.open(out / record["file"]))
        assert np.array_equal(png, images[i])
