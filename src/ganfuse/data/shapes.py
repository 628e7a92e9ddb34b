"""``shapes``: a procedural captioned dataset of one coloured shape on a black canvas.

Deterministic from a seed, needs no network. Each image carries its attributes (colour, shape,
size, position) as labels and a caption drawn from several templates with synonyms, which
:func:`parse_caption` turns back into the attributes.

Geometry (canvas side ``S``, 32 by default, 64 selectable):

- ``small`` shapes have a bounding side of ``8/32 * S``, ``large`` ones ``14/32 * S``.
- The 3x3 positions are the canvas's thirds (``top``/``middle``/``bottom`` x
  ``left``/``center``/``right``). A shape is centred on its cell's anchor, ``S/4``, ``S/2`` or
  ``3S/4`` along each axis, plus up to ``+-S/32`` jitter. The anchor of a corner cell sits
  inside that cell but nearer the middle than the cell's own centre (``S/6``): that is what
  keeps a large shape (half-side ``7S/32``) with full jitter entirely on the canvas, so
  its colour, size and position are all visible and checkable.
- Rasterisation is binary (no anti-aliasing): each pixel is either pure background black or
  the shape's pure RGB colour, and a square covers exactly ``side x side`` pixels.

Held-out colour-shape pairs (:data:`DEFAULT_HOLDOUT`) never appear in the ``train``, ``val`` or
``test`` splits; the ``heldout`` split contains only them; ``all`` mixes every pair.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganfuse.data.base import ImageDataset, uint8_to_float
from ganfuse.data.images import write_image_records
from ganfuse.errors import ConfigError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top-left",
    "top-center",
    "top-right",
    "middle-left",
    "center",
    "middle-right",
    "bottom-left",
    "bottom-center",
    "bottom-right",
)
# Every attribute an image carries and its values, in label-index order.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
}
DEFAULT_HOLDOUT: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("white", "triangle"),
)
COLOR_SHAPE_CLASSES: list[tuple[str, str]] = [(c, s) for c in COLORS for s in SHAPES]

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout", "all")
DEFAULT_SPLIT_SIZES: dict[str, int] = {
    "train": 10000,
    "val": 1000,
    "test": 2000,
    "heldout": 1000,
    "all": 1000,
}
IMAGE_SIZES: tuple[int, ...] = (32, 64)

# Fractions of the canvas side; the spec's numbers, kept in one place.
SIZE_FRACTION: dict[str, float] = {"small": 8 / 32, "large": 14 / 32}
MAX_JITTER_FRACTION: float = 1 / 32
ANCHOR_FRACTIONS: tuple[float, float, float] = (
    0.25,
    0.5,
    0.75,
)  # left/center/right, top/middle/bottom


@dataclass(frozen=True)
class ShapeAttributes:
    """What one ``shapes`` image shows; every field is one of the module's vocabularies."""

    color: str
    shape: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for field, allowed in ATTRIBUTE_VALUES.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(
                    f"unknown shapes {field} {value!r}; choose one of {', '.join(allowed)}"
                )

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @property
    def color_shape(self) -> tuple[str, str]:
        return (self.color, self.shape)


def position_cell(position: str) -> tuple[int, int]:
    """``(row, col)`` in 0..2 of a position name, e.g. ``"top-right" -> (0, 2)``."""
    index = POSITIONS.index(position)
    return divmod(index, 3)


def shape_center(
    position: str, image_size: int, jitter: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, float]:
    """Centre ``(x, y)`` in pixels (continuous; pixel ``i`` spans ``[i, i+1)``).

    ``jitter`` is ``(dx, dy)`` as fractions of the canvas side, each within ``+-1/32``.
    """
    dx, dy = jitter
    if abs(dx) > MAX_JITTER_FRACTION + 1e-9 or abs(dy) > MAX_JITTER_FRACTION + 1e-9:
        raise ConfigError(f"shape jitter {jitter} exceeds +-1/32 of the canvas")
    row, col = position_cell(position)
    return (
        (ANCHOR_FRACTIONS[col] + dx) * image_size,
        (ANCHOR_FRACTIONS[row] + dy) * image_size,
    )


def shape_masks(
    shape_index: np.ndarray, side: np.ndarray, cx: np.ndarray, cy: np.ndarray, image_size: int
) -> np.ndarray:
    """Boolean masks ``(N, S, S)`` of filled shapes.

    ``shape_index`` ``(N,)`` indexes :data:`SHAPES`; ``side`` ``(N,)`` is the bounding side and
    ``cx``, ``cy`` ``(N,)`` the centre, in pixels (pixel ``i`` spans ``[i, i+1)``). A pixel belongs
    to the shape when its centre does. Intervals are half-open so that a square covers exactly
    ``side`` pixels per axis whatever the sub-pixel offset.
    """
    coords = np.arange(image_size, dtype=np.float32) + 0.5
    px = coords[None, None, :]
    py = coords[None, :, None]
    half = (side / 2.0).astype(np.float32)[:, None, None]
    cx = cx.astype(np.float32)[:, None, None]
    cy = cy.astype(np.float32)[:, None, None]
    left, top = cx - half, cy - half
    in_box = (px >= left) & (px < cx + half) & (py >= top) & (py < cy + half)
    circle = (px - cx) ** 2 + (py - cy) ** 2 < half**2
    # Apex at the top centre, base along the bottom edge: the half-width grows by 1/2 per row
    # (base = height); the extra half pixel keeps the apex row non-empty.
    triangle = in_box & (np.abs(px - cx) < (py - top) / 2.0 + 0.5)
    kind = shape_index[:, None, None]
    return np.where(
        kind == SHAPES.index("circle"),
        circle,
        np.where(kind == SHAPES.index("square"), in_box, triangle),
    )


def render_shapes(
    attributes: Sequence[ShapeAttributes], image_size: int = 32, jitters: np.ndarray | None = None
) -> np.ndarray:
    """Render many images: uint8 ``(N, H, W, 3)``. ``jitters`` ``(N, 2)`` as in :func:`render_shape`."""
    _check_image_size(image_size)
    n = len(attributes)
    jitters = np.zeros((n, 2)) if jitters is None else np.asarray(jitters, dtype=np.float64)
    if jitters.shape != (n, 2):
        raise ConfigError(f"jitters must have shape ({n}, 2), got {jitters.shape}")
    images = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)
    palette = np.array(list(COLORS.values()), dtype=np.uint8)
    colors = list(COLORS)
    chunk = 2048  # bounds the (chunk, S, S) temporaries
    for start in range(0, n, chunk):
        part = attributes[start : start + chunk]
        centers = np.array(
            [
                shape_center(a.position, image_size, (float(j[0]), float(j[1])))
                for a, j in zip(part, jitters[start : start + chunk], strict=True)
            ]
        ).reshape(-1, 2)
        cx, cy = centers[:, 0], centers[:, 1]
        side = np.array([SIZE_FRACTION[a.size] for a in part]) * image_size
        kind = np.array([SHAPES.index(a.shape) for a in part], dtype=np.int64)
        masks = shape_masks(kind, side, cx, cy, image_size)
        rgb = palette[[colors.index(a.color) for a in part]][:, None, None, :]
        images[start : start + chunk] = np.where(masks[..., None], rgb, 0)
    return images


def _check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ConfigError(f"shapes image_size must be one of {IMAGE_SIZES}, got {image_size}")


def render_shape(
    attrs: ShapeAttributes, image_size: int = 32, jitter: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Render one image: uint8 ``(H, W, 3)``, black background, pure-RGB filled shape.

    ``jitter`` is the ``(dx, dy)`` offset of the centre as fractions of the canvas, each within
    ``+-1/32``.
    """
    return render_shapes([attrs], image_size, np.array([jitter], dtype=np.float64))[0]


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid", "wedge"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLORS}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top-left": ("top left", "upper left", "top-left corner"),
    "top-center": ("top center", "top middle", "upper middle"),
    "top-right": ("top right", "upper right", "top-right corner"),
    "middle-left": ("middle left", "center left", "left middle"),
    "center": ("center", "middle", "centre"),
    "middle-right": ("middle right", "center right", "right middle"),
    "bottom-left": ("bottom left", "lower left", "bottom-left corner"),
    "bottom-center": ("bottom center", "bottom middle", "lower middle"),
    "bottom-right": ("bottom right", "lower right", "bottom-right corner"),
}

# Slots: {size} {color} {shape} {position}. Each template names every slot exactly once.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {size} {color} {shape} in the {position}",
    "{position}: a {size} {color} {shape}",
    "there is a {color} {shape}, {size}, at the {position}",
    "{size} {color} {shape}, {position}",
    "the {position} holds a {size} {color} {shape}",
    "a {color} {shape} that is {size}, placed at the {position}",
    "an image of a {size} {shape} colored {color} at the {position}",
    "{color} {shape} ({size}) in the {position} of a black background",
)

_SLOT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "size": SIZE_WORDS,
    "color": COLOR_WORDS,
    "shape": SHAPE_WORDS,
    "position": POSITION_WORDS,
}


def caption_templates() -> list[str]:
    """The caption templates, with ``{size}``, ``{color}``, ``{shape}`` and ``{position}`` slots."""
    return list(CAPTION_TEMPLATES)


def caption_synonyms() -> dict[str, dict[str, tuple[str, ...]]]:
    """``slot -> attribute value -> words`` used in captions (first word is the canonical one)."""
    return {slot: dict(words) for slot, words in _SLOT_WORDS.items()}


def make_caption(
    attrs: ShapeAttributes, rng: np.random.Generator, template: int | None = None
) -> str:
    """A caption for ``attrs`` with a random template and random synonyms drawn from ``rng``.

    ``template`` picks a template by index instead of at random (synonyms stay random).
    """
    u = rng.random(1 + len(_SLOT_WORDS))
    if template is not None:
        if not 0 <= template < len(CAPTION_TEMPLATES):
            raise ConfigError(f"caption template index must be in 0..{len(CAPTION_TEMPLATES) - 1}")
        u[0] = (template + 0.5) / len(CAPTION_TEMPLATES)
    return _captions_from_uniform([attrs], u[None])[0]


def _captions_from_uniform(attributes: Sequence[ShapeAttributes], u: np.ndarray) -> list[str]:
    """Captions whose template and synonyms are picked by uniforms ``u`` ``(N, 5)`` in [0, 1)."""
    captions = []
    for attrs, row in zip(attributes, u, strict=True):
        values = attrs.as_dict()
        words = {}
        for k, (slot, table) in enumerate(_SLOT_WORDS.items()):
            options = table[values[slot]]
            words[slot] = options[int(row[k + 1] * len(options))]
        captions.append(CAPTION_TEMPLATES[int(row[0] * len(CAPTION_TEMPLATES))].format(**words))
    return captions


def _normalise_phrase(phrase: str) -> str:
    return re.sub(r"[\s-]+", " ", phrase.strip().lower())


def _phrase_pattern(phrase: str) -> str:
    # Spaces and hyphens are interchangeable: "top-left", "top left" and "top - left" all match.
    return r"[\s-]+".join(re.escape(word) for word in re.split(r"[\s-]+", phrase))


def _slot_pattern(slot: str) -> str:
    # Longest phrases first so that e.g. "middle left" is tried before "middle".
    phrases = sorted((w for ws in _SLOT_WORDS[slot].values() for w in ws), key=len, reverse=True)
    return f"(?P<{slot}>" + "|".join(_phrase_pattern(p) for p in phrases) + ")"


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    pattern = ""
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            pattern += _slot_pattern(part[1:-1])
        else:
            pattern += re.escape(part).replace(r"\ ", r"\s+")
    return re.compile(r"\s*" + pattern + r"\s*\.?\s*", re.IGNORECASE)


_TEMPLATE_REGEXES: tuple[re.Pattern[str], ...] = tuple(
    _template_regex(t) for t in CAPTION_TEMPLATES
)
_WORD_TO_VALUE: dict[str, dict[str, str]] = {
    slot: {_normalise_phrase(w): value for value, ws in table.items() for w in ws}
    for slot, table in _SLOT_WORDS.items()
}


def parse_caption(text: str) -> ShapeAttributes | None:
    """The attributes a caption states, or ``None`` if it follows none of the templates.

    Case-insensitive, tolerant of extra whitespace, of hyphens for spaces in phrases
    ("top-left" or "top left") and of a final full stop.
    """
    for regex in _TEMPLATE_REGEXES:
        match = regex.fullmatch(text)
        if match is None:
            continue
        values = {
            slot: _WORD_TO_VALUE[slot][_normalise_phrase(match.group(slot))] for slot in _SLOT_WORDS
        }
        return ShapeAttributes(**values)
    return None


# ---------------------------------------------------------------------------------------------
# Sampling and the dataset
# ---------------------------------------------------------------------------------------------


def check_holdout(holdout: Sequence[tuple[str, str]], colors: Sequence[str], shapes: Sequence[str],
                  world: str) -> frozenset[tuple[str, str]]:
    """Held-out ``(colour, shape)`` pairs of a world with these colours and shapes, checked: each
    pair exists there, and not every pair is held out."""
    pairs = frozenset((str(c), str(s)) for c, s in holdout)
    for pair in pairs:
        if pair[0] not in colors or pair[1] not in shapes:
            raise ConfigError(
                f"held-out pair {pair} is not a (colour, shape) of {world}; colours: "
                f"{', '.join(colors)}; shapes: {', '.join(shapes)}"
            )
    if len(pairs) == len(colors) * len(shapes):
        raise ConfigError("every colour-shape pair is held out; leave some for training")
    return pairs


def _validate_holdout(holdout: Sequence[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    return check_holdout(holdout, COLORS, SHAPES, "shapes")


def allowed_pairs(
    split: str = "train", holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT
) -> list[tuple[str, str]]:
    """Colour-shape pairs a split may contain, in :data:`COLOR_SHAPE_CLASSES` order."""
    if split not in SPLITS:
        raise ConfigError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")
    held = _validate_holdout(holdout)
    if split == "all":
        return list(COLOR_SHAPE_CLASSES)
    if split == "heldout":
        if not held:
            raise ConfigError("the 'heldout' split is empty: no colour-shape pairs are held out")
        return [p for p in COLOR_SHAPE_CLASSES if p in held]
    return [p for p in COLOR_SHAPE_CLASSES if p not in held]


def _attributes_from_uniform(
    u: np.ndarray, pairs: Sequence[tuple[str, str]]
) -> list[ShapeAttributes]:
    """Attributes picked by uniforms ``u`` ``(N, 3)`` in [0, 1): pair, size, position."""
    return [
        ShapeAttributes(
            *pairs[int(row[0] * len(pairs))],
            SIZES[int(row[1] * len(SIZES))],
            POSITIONS[int(row[2] * len(POSITIONS))],
        )
        for row in u
    ]


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The generator of one split: a distinct, reproducible stream per ``(seed, split)``."""
    if split not in SPLITS:
        raise ConfigError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))


def attribute_labels(attributes: Sequence[ShapeAttributes]) -> dict[str, torch.Tensor]:
    """Integer labels ``(N,)`` int64 for ``color``, ``shape``, ``size``, ``position``, ``color_shape``."""
    return {
        **{
            field: torch.tensor(
                [values.index(getattr(a, field)) for a in attributes], dtype=torch.int64
            )
            for field, values in ATTRIBUTE_VALUES.items()
        },
        "color_shape": torch.tensor(
            [COLOR_SHAPE_CLASSES.index(a.color_shape) for a in attributes], dtype=torch.int64
        ),
    }


def generate_shapes(
    num: int,
    seed: int = 0,
    split: str = "train",
    image_size: int = 32,
    holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT,
) -> tuple[np.ndarray, list[ShapeAttributes], list[str]]:
    """Images uint8 ``(N, H, W, 3)``, their attributes and captions, all from one split stream."""
    _check_image_size(image_size)
    if num < 0:
        raise ConfigError(f"number of shapes images must be >= 0, got {num}")
    # One row of uniforms per item, drawn row-major: a smaller dataset of the same split and
    # seed is a prefix of a larger one. Columns: pair, size, position, jitter x/y, template,
    # four synonym choices.
    u = split_rng(seed, split).random((num, 10))
    attributes = _attributes_from_uniform(u[:, :3], allowed_pairs(split, holdout))
    jitters = (u[:, 3:5] * 2.0 - 1.0) * MAX_JITTER_FRACTION
    images = render_shapes(attributes, image_size, jitters)
    captions = _captions_from_uniform(attributes, u[:, 5:])
    return images, attributes, captions


class ShapesDataset(ImageDataset):
    """The ``shapes`` split held in memory.

    Items are ``(image, label, caption)``: image float ``(3, H, W)`` in [-1, 1], ``label`` the
    colour-shape class (index into :data:`COLOR_SHAPE_CLASSES`), caption a string. ``images`` is
    uint8 ``(N, 3, H, W)``; ``labels`` maps each attribute (and ``color_shape``) to ``(N,)`` int64.
    """

    channels = 3
    num_classes = len(COLOR_SHAPE_CLASSES)
    class_names = [f"{c} {s}" for c, s in COLOR_SHAPE_CLASSES]
    name = "shapes"

    def __init__(
        self,
        split: str = "train",
        num: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT,
    ):
        if split not in SPLITS:
            raise ConfigError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.holdout = tuple(sorted(_validate_holdout(holdout)))
        count = DEFAULT_SPLIT_SIZES[split] if num is None else num
        images, self.attributes, self.captions = generate_shapes(
            count, seed, split, image_size, holdout
        )
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = attribute_labels(self.attributes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        image = uint8_to_float(self.images[index])
        return image, int(self.labels["color_shape"][index]), self.captions[index]

    def float_images(self) -> torch.Tensor:
        """All images ``(N, 3, H, W)`` float32 in [-1, 1]."""
        return uint8_to_float(self.images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch by index: images ``(B, 3, H, W)`` float in [-1, 1], colour-shape labels ``(B,)``."""
        return uint8_to_float(self.images[indices]), self.labels["color_shape"][indices]


def export_shapes(
    num: int, out: Path, seed: int = 0, image_size: int = 32, split: str = "all"
) -> int:
    """Write ``num`` PNGs ``00000.png``... and ``captions.jsonl`` into ``out``; returns ``num``.

    Each jsonl line is ``{"file", "caption", "attributes": {"color", "shape", "size", "position"}}``.
    """
    images, attributes, captions = generate_shapes(num, seed, split, image_size)
    records = [{"caption": c, "attributes": a.as_dict()} for a, c in zip(attributes, captions, strict=True)]
    return write_image_records(out, "captions.jsonl", images, records)
