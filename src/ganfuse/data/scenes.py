"""``scenes``: a procedural captioned dataset of one to four flat objects on a dark background.

Deterministic from a seed, needs no network. Each image stores its scene graph (every object's
colour, shape, size, centre and bounding box) and several captions at different granularity,
which :func:`parse_caption` turns back into a :class:`SceneDescription` (the scene parser and
the scoring functions that judge a caption against an image live in
:mod:`ganfuse.metrics.scenes`).

Geometry, in pixels of a canvas of side ``S`` (64 by default, 32 selectable); lengths are given
for ``S = 64`` and scale with ``S``:

- 8 colours (the seven of ``shapes`` plus orange), 5 shapes (circle, square, triangle, diamond,
  star), 2 sizes: the bounding square of a ``small`` object has side 12, a ``large`` one 18.
- Positions are continuous: the left and top edges of an object's bounding square are drawn
  uniformly over the canvas, quantised to 1/4 pixel (the rasteriser has one mask per shape, size
  and quarter-pixel phase), so the object is always entirely on the canvas.
- Objects do not overlap: bounding squares are at least 3 apart along x or along y, so the
  rendered objects are at least 2 pixels apart at 64 (1 at 32), and every object is one
  8-connected component of its colour.
- Rasterisation is binary (no anti-aliasing): a pixel belongs to an object when its centre lies
  inside the shape, and shows the object's pure RGB colour. Backgrounds are dark desaturated
  colours with a gentle linear gradient (no channel above 66), at least 190 away (RGB distance)
  from every object colour, so colour segmentation separates objects from background exactly.
- An object's stored ``center`` is the centre of its rendered bounding box ``(x0, y0, x1, y1)``
  (pixels, ``x1``/``y1`` exclusive); spatial relations are decided on these centres.
- A relation is stated only with a margin: "A to the left of B" means B's centre is at least 8
  to the right of A's, and likewise for right, above and below (y grows downwards).

Splits: ``train``, ``val`` and ``test`` never contain a held-out colour-shape pair
(:data:`DEFAULT_HOLDOUT`); every ``heldout`` image contains at least one; ``all`` mixes every
pair. ``cogent-a`` / ``cogent-a-test`` and ``cogent-b`` follow CLEVR-CoGenT: in condition A each
shape takes its colour from one half of the palette (:data:`COGENT_COLORS`), in condition B from
the other half, so the two conditions share no colour-shape pair.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganfuse.data.base import ImageDataset, uint8_to_float
from ganfuse.data.images import write_image_records
from ganfuse.data.shapes import COLORS as SHAPES_COLORS
from ganfuse.data.shapes import check_holdout
from ganfuse.errors import ConfigError, UserError

COLORS: dict[str, tuple[int, int, int]] = {**SHAPES_COLORS, "orange": (255, 128, 0)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
SIZES: tuple[str, ...] = ("small", "large")
# an object's attributes and their values, in this order wherever attributes are indexed
ATTRIBUTE_VALUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("color", tuple(COLORS)), ("shape", SHAPES), ("size", SIZES))
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
IMAGE_SIZES: tuple[int, ...] = (32, 64)
DEFAULT_IMAGE_SIZE = 64
MAX_OBJECTS = 4
COLOR_SHAPE_PAIRS: list[tuple[str, str]] = [(c, s) for c in COLORS for s in SHAPES]

# Lengths in pixels of a 64-pixel canvas; they scale with the canvas side.
SIDE_AT_64: dict[str, float] = {"small": 12.0, "large": 18.0}
GAP_AT_64 = 3.0
RELATION_MARGIN_AT_64 = 8.0
SUBPIXEL = 4  # positions are quantised to 1/SUBPIXEL pixel
STAR_INNER_RATIO = 0.5  # inner / outer radius: a fat star stays recognisable at 6 pixels

# Dark, desaturated: no channel above 52 (+14 of gradient), far from every object colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "charcoal": (24, 24, 28),
    "slate": (34, 40, 48),
    "umber": (44, 36, 30),
    "moss": (30, 38, 32),
    "plum": (40, 32, 42),
    "graphite": (52, 52, 52),
}
MAX_GRADIENT = 14.0  # the background varies by at most +-this across the canvas

DEFAULT_HOLDOUT: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("white", "star"),
    ("orange", "diamond"),
)
_HALF_A: tuple[str, ...] = ("red", "yellow", "magenta", "white")
_HALF_B: tuple[str, ...] = ("green", "blue", "cyan", "orange")
# Condition A's colours per shape; condition B takes the other half of the palette.
COGENT_COLORS: dict[str, dict[str, tuple[str, ...]]] = {
    "a": {s: (_HALF_A if i % 2 == 0 else _HALF_B) for i, s in enumerate(SHAPES)},
    "b": {s: (_HALF_B if i % 2 == 0 else _HALF_A) for i, s in enumerate(SHAPES)},
}
SPLITS: tuple[str, ...] = (
    "train",
    "val",
    "test",
    "heldout",
    "all",
    "cogent-a",
    "cogent-a-test",
    "cogent-b",
)
DEFAULT_SPLIT_SIZES: dict[str, int] = {
    "train": 10000,
    "val": 1000,
    "test": 2000,
    "heldout": 1000,
    "all": 1000,
    "cogent-a": 10000,
    "cogent-a-test": 2000,
    "cogent-b": 2000,
}
CAPTION_KINDS: tuple[str, ...] = ("list", "relation", "count", "single")

_CHUNK = 1024  # images sampled per random stream; a smaller dataset is a prefix of a larger one
_CANDIDATES = 48  # candidate positions tried per object before it is left out
_CAPTION_UNIFORMS = 64


def _check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ConfigError(f"scenes image_size must be one of {IMAGE_SIZES}, got {image_size}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown scenes split {split!r}; choose one of {', '.join(SPLITS)}")


def object_side(size: str, image_size: int) -> float:
    """Side in pixels of the bounding square of a ``size`` object on an ``image_size`` canvas."""
    return SIDE_AT_64[size] * image_size / 64.0


def relation_margin(image_size: int) -> float:
    """Minimum centre distance (pixels, along the relation's axis) of every stated relation."""
    return RELATION_MARGIN_AT_64 * image_size / 64.0


# ---------------------------------------------------------------------------------------------
# Scene graphs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One object: its attributes, the centre ``(x, y)`` of its rendered bounding box and that
    box ``(x0, y0, x1, y1)`` in pixels (``x1``, ``y1`` exclusive)."""

    color: str
    shape: str
    size: str
    center: tuple[float, float]
    bbox: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        if self.color in COLORS and self.shape in SHAPES and self.size in SIZES:
            return
        for field, allowed in ATTRIBUTE_VALUES:
            if getattr(self, field) not in allowed:
                raise ConfigError(
                    f"unknown scenes {field} {getattr(self, field)!r}; choose one of "
                    f"{', '.join(allowed)}"
                )

    def as_dict(self) -> dict[str, object]:
        return {
            "color": self.color,
            "shape": self.shape,
            "size": self.size,
            "center": list(self.center),
            "bbox": list(self.bbox),
        }

    @classmethod
    def from_dict(cls, record: dict) -> SceneObject:
        return cls(
            record["color"],
            record["shape"],
            record["size"],
            (float(record["center"][0]), float(record["center"][1])),
            tuple(int(v) for v in record["bbox"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class SceneGraph:
    """What one image shows: its objects in reading order (by centre y, then x)."""

    objects: tuple[SceneObject, ...]
    image_size: int
    background: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "image_size": self.image_size,
            "background": self.background,
            "objects": [o.as_dict() for o in self.objects],
        }

    @classmethod
    def from_dict(cls, record: dict) -> SceneGraph:
        return cls(
            tuple(SceneObject.from_dict(o) for o in record["objects"]),
            int(record["image_size"]),
            str(record.get("background", "")),
        )


# each relation as (axis, sign): "A <relation> B" holds where sign x (B's centre - A's centre) along
# the axis is at least the margin (:func:`relation_holds`; y grows downwards)
RELATION_AXES: dict[str, tuple[int, float]] = {"left": (0, 1.0), "right": (0, -1.0), "above": (1, 1.0),
                                               "below": (1, -1.0)}


def relation_holds(subject: SceneObject, obj: SceneObject, relation: str, margin: float) -> bool:
    """Whether ``subject`` is ``relation`` (left/right/above/below) of ``obj`` by at least
    ``margin`` pixels between centres along that axis."""
    (sx, sy), (ox, oy) = subject.center, obj.center
    if relation == "left":
        return ox - sx >= margin
    if relation == "right":
        return sx - ox >= margin
    if relation == "above":
        return oy - sy >= margin
    if relation == "below":
        return sy - oy >= margin
    raise ConfigError(f"unknown relation {relation!r}; choose one of {', '.join(RELATIONS)}")


# ---------------------------------------------------------------------------------------------
# Structured descriptions (what a caption states)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """An object a caption mentions or counts; ``None`` leaves that attribute open."""

    color: str | None = None
    shape: str | None = None
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.color is None or self.color == obj.color)
            and (self.shape is None or self.shape == obj.shape)
            and (self.size is None or self.size == obj.size)
        )


@dataclass(frozen=True)
class RelationSpec:
    """``objects[subject]`` is ``relation`` of ``objects[obj]`` (indices into the description)."""

    subject: int
    relation: str
    obj: int


@dataclass(frozen=True)
class CountSpec:
    """Exactly ``count`` objects of the image match ``spec``."""

    spec: ObjectSpec
    count: int


@dataclass(frozen=True)
class SceneDescription:
    """What a caption claims: distinct objects that are present (``objects``), relations between
    them, and exact counts. Positions are left open."""

    kind: str
    objects: tuple[ObjectSpec, ...] = ()
    relations: tuple[RelationSpec, ...] = ()
    counts: tuple[CountSpec, ...] = ()


# ---------------------------------------------------------------------------------------------
# Caption vocabulary and templates
# ---------------------------------------------------------------------------------------------

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLORS}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
}
PLURALS: dict[str, str] = {
    "circle": "circles",
    "disc": "discs",
    "disk": "disks",
    "square": "squares",
    "box": "boxes",
    "block": "blocks",
    "triangle": "triangles",
    "diamond": "diamonds",
    "rhombus": "rhombuses",
    "star": "stars",
    "shape": "shapes",
    "object": "objects",
    "thing": "things",
}
THING_WORDS: tuple[str, ...] = ("shape", "object", "thing")
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left of"),
    "right": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "lower than"),
}
NUMBER_WORDS: dict[int, tuple[str, ...]] = {
    1: ("one", "1"),
    2: ("two", "2"),
    3: ("three", "3"),
    4: ("four", "4"),
}

# Slots: {object}, {a}, {b}: "a [size] colour shape"; {objects}: such phrases joined by ", " and
# " and "; {rel}: a relation phrase; {number}; {noun}: a counted noun ("red shapes", "circles");
# {things}: "shapes"/"objects"/"things"; {be}: "is" or "are".
CAPTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "list": (
        "{objects}",
        "there {be} {objects}",
        "a picture of {objects}",
        "{number} {things}: {objects}",
    ),
    "relation": (
        "{a} {rel} {b}",
        "{a} is {rel} {b}",
        "there is {a} {rel} {b}",
    ),
    "count": (
        "{number} {noun}",
        "there {be} {number} {noun}",
        "exactly {number} {noun}",
        "the image contains {number} {noun}",
    ),
    "single": (
        "{object}",
        "there is {object}",
        "{object} somewhere in the picture",
        "the image contains {object}",
    ),
}


def caption_templates() -> dict[str, list[str]]:
    """The caption templates of each kind (``list``, ``relation``, ``count``, ``single``)."""
    return {kind: list(t) for kind, t in CAPTION_TEMPLATES.items()}


class CaptionParseError(UserError, ValueError):
    """A caption that follows none of the scenes templates."""


Draw = Callable[[int], int]  # draw(k) -> an index in 0..k-1


def _object_phrase(spec: ObjectSpec, draw: Draw) -> str:
    words = []
    if spec.size is not None:
        options = SIZE_WORDS[spec.size]
        words.append(options[draw(len(options))])
    words.append(COLOR_WORDS[spec.color][0])  # type: ignore[index]
    options = SHAPE_WORDS[spec.shape]  # type: ignore[index]
    words.append(options[draw(len(options))])
    article = "an" if words[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(words)}"


def _count_noun(spec: ObjectSpec, count: int, draw: Draw) -> str:
    if spec.shape is not None:
        options = SHAPE_WORDS[spec.shape]
        noun = options[draw(len(options))]
    else:
        noun = THING_WORDS[draw(len(THING_WORDS))]
    noun = noun if count == 1 else PLURALS[noun]
    return noun if spec.color is None else f"{spec.color} {noun}"


def caption_text(description: SceneDescription, draw: Draw) -> str:
    """Write ``description`` with a template of its kind and synonyms chosen by ``draw``."""
    templates = CAPTION_TEMPLATES[description.kind]
    if description.kind == "list":  # the templates with a number are those that state a count
        templates = tuple(t for t in templates if ("{number}" in t) == bool(description.counts))
    template = templates[draw(len(templates))]
    slots: dict[str, str] = {}
    if description.kind == "list":
        phrases = [_object_phrase(o, draw) for o in description.objects]
        slots["objects"] = (
            phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        )
        slots["be"] = "is" if len(phrases) == 1 else "are"
        if description.counts:
            n = description.counts[0].count
            slots["number"] = NUMBER_WORDS[n][draw(2)]
            thing = THING_WORDS[draw(len(THING_WORDS))]
            slots["things"] = thing if n == 1 else PLURALS[thing]
    elif description.kind == "relation":
        (rel,) = description.relations
        slots["a"] = _object_phrase(description.objects[rel.subject], draw)
        slots["b"] = _object_phrase(description.objects[rel.obj], draw)
        options = RELATION_WORDS[rel.relation]
        slots["rel"] = options[draw(len(options))]
    elif description.kind == "count":
        (claim,) = description.counts
        slots["number"] = NUMBER_WORDS[claim.count][draw(2)]
        slots["noun"] = _count_noun(claim.spec, claim.count, draw)
        slots["be"] = "is" if claim.count == 1 else "are"
    else:
        slots["object"] = _object_phrase(description.objects[0], draw)
    return template.format(**slots)


def describe(graph: SceneGraph, kind: str, draw: Draw) -> SceneDescription | None:
    """A true description of ``graph`` of the given kind, chosen by ``draw``; ``None`` for a
    relation when no two objects are far enough apart along any axis."""
    objects = graph.objects

    def spec_of(o: SceneObject, with_size: bool) -> ObjectSpec:
        return ObjectSpec(o.color, o.shape, o.size if with_size else None)

    if kind == "list":
        order = list(range(len(objects)))
        for i in range(len(order) - 1, 0, -1):  # Fisher-Yates with draw
            j = draw(i + 1)
            order[i], order[j] = order[j], order[i]
        specs = tuple(spec_of(objects[i], draw(2) == 1) for i in order)
        counts = (CountSpec(ObjectSpec(), len(objects)),) if draw(2) == 1 else ()
        return SceneDescription("list", specs, counts=counts)
    if kind == "relation":
        margin = relation_margin(graph.image_size)
        options = [
            (i, rel, j)
            for i, j in itertools.permutations(range(len(objects)), 2)
            for rel in RELATIONS
            if relation_holds(objects[i], objects[j], rel, margin)
        ]
        if not options:
            return None
        i, rel, j = options[draw(len(options))]
        specs = (spec_of(objects[i], draw(2) == 1), spec_of(objects[j], draw(2) == 1))
        return SceneDescription("relation", specs, (RelationSpec(0, rel, 1),))
    if kind == "count":
        o = objects[draw(len(objects))]
        spec = (
            ObjectSpec(),
            ObjectSpec(color=o.color),
            ObjectSpec(shape=o.shape),
            ObjectSpec(color=o.color, shape=o.shape),
        )[draw(4)]
        count = sum(spec.matches(p) for p in objects)
        return SceneDescription("count", counts=(CountSpec(spec, count),))
    if kind == "single":
        o = objects[draw(len(objects))]
        return SceneDescription("single", (spec_of(o, draw(2) == 1),))
    raise ConfigError(f"unknown caption kind {kind!r}; choose one of {', '.join(CAPTION_KINDS)}")


def _uniform_draw(row: np.ndarray) -> Draw:
    position = iter(range(len(row)))

    def draw(k: int) -> int:
        return min(int(row[next(position)] * k), k - 1)

    return draw


def make_captions(graph: SceneGraph, row: np.ndarray) -> list[str]:
    """One caption of each kind (a single-object one where no relation can be stated), with
    templates and synonyms picked by the uniforms ``row`` in [0, 1)."""
    draw = _uniform_draw(row)
    captions = []
    for kind in CAPTION_KINDS:
        description = describe(graph, kind, draw)
        if description is None:
            description = describe(graph, "single", draw)
        captions.append(caption_text(description, draw))  # type: ignore[arg-type]
    return captions


# ---------------------------------------------------------------------------------------------
# Caption parser
# ---------------------------------------------------------------------------------------------


def _alternatives(phrases: Sequence[str]) -> str:
    # Longest first, so "on the left of" is tried before "left of".
    return "(?:" + "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True)) + ")"


_SIZE_RE = _alternatives([w for ws in SIZE_WORDS.values() for w in ws])
_COLOR_RE = _alternatives([w for ws in COLOR_WORDS.values() for w in ws])
_SHAPE_RE = _alternatives([w for ws in SHAPE_WORDS.values() for w in ws])
_SHAPE_ANY_RE = _alternatives(
    [w for ws in SHAPE_WORDS.values() for w in ws]
    + [PLURALS[w] for ws in SHAPE_WORDS.values() for w in ws]
)
_THINGS_RE = _alternatives(list(THING_WORDS) + [PLURALS[w] for w in THING_WORDS])
_NUMBER_RE = _alternatives([w for ws in NUMBER_WORDS.values() for w in ws])
_REL_RE = _alternatives([w for ws in RELATION_WORDS.values() for w in ws])
_OBJECT_RE = rf"(?:a|an) (?:{_SIZE_RE} )?{_COLOR_RE} {_SHAPE_RE}"
_OBJECT_CAPTURE = re.compile(rf"(?:a|an) (?:({_SIZE_RE}) )?({_COLOR_RE}) ({_SHAPE_RE})")
_SLOT_PATTERNS: dict[str, str] = {
    "object": _OBJECT_RE,
    "a": _OBJECT_RE,
    "b": _OBJECT_RE,
    "objects": rf"{_OBJECT_RE}(?:(?:, | and ){_OBJECT_RE})*",
    "rel": _REL_RE,
    "number": _NUMBER_RE,
    "things": _THINGS_RE,
    "noun": rf"(?:{_COLOR_RE} )?(?:{_SHAPE_ANY_RE}|{_THINGS_RE})",
}


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = ""
    for part in re.split(r"(\{\w+\})", template):
        if part == "{be}":
            pattern += "(?:is|are)"
        elif part.startswith("{"):
            slot = part[1:-1]
            pattern += f"(?P<{slot}>{_SLOT_PATTERNS[slot]})"
        else:
            pattern += re.escape(part)
    return re.compile(pattern)


_TEMPLATE_REGEXES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, _template_regex(t)) for kind, templates in CAPTION_TEMPLATES.items() for t in templates
)


def _lookup(table: dict[str, tuple[str, ...]], word: str) -> str:
    return next(value for value, words in table.items() if word in words)


def _object_spec(phrase: str) -> ObjectSpec:
    match = _OBJECT_CAPTURE.fullmatch(phrase)
    assert match is not None  # the template regex already accepted it
    size, color, shape = match.groups()
    return ObjectSpec(
        _lookup(COLOR_WORDS, color),
        _lookup(SHAPE_WORDS, shape),
        None if size is None else _lookup(SIZE_WORDS, size),
    )


def _count_spec(noun: str) -> ObjectSpec:
    words = noun.split(" ")
    color = _lookup(COLOR_WORDS, words[0]) if len(words) == 2 else None
    head = words[-1]
    singular = next((s for s, p in PLURALS.items() if p == head), head)
    shape = None if singular in THING_WORDS else _lookup(SHAPE_WORDS, singular)
    return ObjectSpec(color=color, shape=shape)


def normalise_caption(text: str) -> str:
    """Lower case, single spaces, no final full stop: the form the templates are matched in."""
    return re.sub(r"\s+", " ", str(text).strip().lower()).rstrip(".").strip()


def parse_caption(text: str) -> SceneDescription:
    """The description a caption states (case-insensitive, tolerant of extra whitespace and of a
    final full stop). Raises :class:`CaptionParseError` for a caption no template reads."""
    normal = normalise_caption(text)
    for kind, regex in _TEMPLATE_REGEXES:
        match = regex.fullmatch(normal)
        if match is None:
            continue
        slots = match.groupdict()
        if kind == "list":
            phrases = [m.group(0) for m in _OBJECT_CAPTURE.finditer(slots["objects"])]
            counts = ()
            if slots.get("number"):
                counts = (CountSpec(ObjectSpec(), _lookup(NUMBER_WORDS, slots["number"])),)
            # One object and no count says what a single-object description says.
            kind = "single" if len(phrases) == 1 and not counts else "list"
            return SceneDescription(kind, tuple(_object_spec(p) for p in phrases), counts=counts)
        if kind == "relation":
            return SceneDescription(
                "relation",
                (_object_spec(slots["a"]), _object_spec(slots["b"])),
                (RelationSpec(0, _lookup(RELATION_WORDS, slots["rel"]), 1),),
            )
        if kind == "count":
            count = _lookup(NUMBER_WORDS, slots["number"])
            return SceneDescription("count", counts=(CountSpec(_count_spec(slots["noun"]), count),))
        return SceneDescription("single", (_object_spec(slots["object"]),))
    shown = text if len(str(text)) <= 80 else str(text)[:77] + "..."
    raise CaptionParseError(
        f"cannot read scenes caption {shown!r}: it follows none of the scenes templates "
        "(e.g. 'a red circle to the left of a blue square', 'three green shapes')"
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _star_polygon(cx: float, cy: float, radius: float) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * STAR_INNER_RATIO)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _inside_polygon(px: np.ndarray, py: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    inside = np.zeros(np.broadcast(px, py).shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        crosses = (y1 > py) != (y2 > py)
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1 if y2 != y1 else 1e-12)
        inside ^= crosses & (px < x_at)
    return inside


def shape_mask(shape: str, side: float, left: float, top: float, grid: int) -> np.ndarray:
    """Boolean ``(grid, grid)`` mask of a filled shape whose bounding square has side ``side`` and
    top-left corner ``(left, top)`` (pixels; pixel ``i`` spans ``[i, i+1)``, and belongs to the
    shape when its centre does)."""
    coords = np.arange(grid, dtype=np.float64) + 0.5
    px, py = coords[None, :], coords[:, None]
    half = side / 2.0
    cx, cy = left + half, top + half
    in_box = (px >= left) & (px < left + side) & (py >= top) & (py < top + side)
    if shape == "circle":
        return (px - cx) ** 2 + (py - cy) ** 2 < half**2
    if shape == "square":
        return in_box
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return in_box & (np.abs(px - cx) < (py - top) / 2.0 + 0.5)
    if shape == "diamond":
        return np.abs(px - cx) + np.abs(py - cy) < half
    if shape == "star":
        return in_box & _inside_polygon(px, py, _star_polygon(cx, cy, half))
    raise ConfigError(f"unknown scenes shape {shape!r}; choose one of {', '.join(SHAPES)}")


@dataclass(frozen=True)
class MaskBank:
    """Every mask the rasteriser pastes, for one canvas size ``S``, indexed by
    ``(shape, size, phase_y, phase_x)``: ``masks`` bool ``(..., G, G)``, the rendered box of each
    ``boxes`` int ``(..., 4)`` as ``(x0, y0, x1, y1)`` within the ``G x G`` grid, and ``pixels``
    int ``(..., P)``: the mask's pixels as offsets ``row * S + col`` from the grid's corner in an
    ``S``-wide image, padded with -1."""

    masks: np.ndarray
    boxes: np.ndarray
    pixels: np.ndarray
    grid: int


_BANKS: dict[int, MaskBank] = {}


def mask_bank(image_size: int) -> MaskBank:
    """The masks of every shape, size and quarter-pixel phase at ``image_size`` (built once)."""
    _check_image_size(image_size)
    if image_size not in _BANKS:
        grid = int(np.ceil(object_side("large", image_size))) + 2
        masks = np.zeros((len(SHAPES), len(SIZES), SUBPIXEL, SUBPIXEL, grid, grid), dtype=bool)
        boxes = np.zeros(masks.shape[:4] + (4,), dtype=np.int64)
        for (i, shape), (j, size), fy, fx in itertools.product(
            enumerate(SHAPES), enumerate(SIZES), range(SUBPIXEL), range(SUBPIXEL)
        ):
            mask = shape_mask(
                shape, object_side(size, image_size), fx / SUBPIXEL, fy / SUBPIXEL, grid
            )
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            masks[i, j, fy, fx] = mask
            boxes[i, j, fy, fx] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        flat = masks.reshape(-1, grid * grid)
        pixels = np.full((flat.shape[0], int(flat.sum(1).max())), -1, dtype=np.int64)
        for k, row in enumerate(flat):
            r, c = np.divmod(np.flatnonzero(row), grid)
            pixels[k, : r.size] = r * image_size + c
        _BANKS[image_size] = MaskBank(masks, boxes, pixels.reshape(masks.shape[:4] + (-1,)), grid)
    return _BANKS[image_size]


GRADIENT_LEVELS = 8  # amplitudes 0, 2, ..., 14
GRADIENT_DIRECTIONS = 16  # directions every 22.5 degrees


def render_backgrounds(
    index: np.ndarray, level: np.ndarray, direction: np.ndarray, side: int
) -> np.ndarray:
    """Backgrounds uint8 ``(N, side, side, 3)``: colour ``BACKGROUNDS[index]`` plus a linear
    gradient of amplitude ``level * MAX_GRADIENT / (GRADIENT_LEVELS - 1)`` levels between the
    canvas centre and its edge, along direction ``direction * 2 pi / GRADIENT_DIRECTIONS``."""
    base = np.array(list(BACKGROUNDS.values()), dtype=np.float32)[index]
    amplitude = np.asarray(level, dtype=np.float32) * MAX_GRADIENT / (GRADIENT_LEVELS - 1)
    angle = np.asarray(direction, dtype=np.float32) * np.float32(2 * np.pi / GRADIENT_DIRECTIONS)
    coords = (np.arange(side, dtype=np.float32) + 0.5) / side * 2.0 - 1.0
    ramp = (
        np.cos(angle)[:, None, None] * coords[None, None, :]
        + np.sin(angle)[:, None, None] * coords[None, :, None]
    ) / np.float32(np.sqrt(2.0))
    shade = amplitude[:, None, None] * ramp
    return np.rint(base[:, None, None, :] + shade[..., None]).astype(np.uint8)


_BACKGROUND_BANKS: dict[int, np.ndarray] = {}


def background_bank(image_size: int) -> np.ndarray:
    """Every background, uint8 ``(colour * level * direction, S, S, 3)`` (built once)."""
    _check_image_size(image_size)
    if image_size not in _BACKGROUND_BANKS:
        grid = np.stack(
            np.meshgrid(
                np.arange(len(BACKGROUNDS)),
                np.arange(GRADIENT_LEVELS),
                np.arange(GRADIENT_DIRECTIONS),
                indexing="ij",
            ),
            axis=-1,
        ).reshape(-1, 3)
        _BACKGROUND_BANKS[image_size] = render_backgrounds(
            grid[:, 0], grid[:, 1], grid[:, 2], image_size
        )
    return _BACKGROUND_BANKS[image_size]


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def _validate_holdout(holdout: Sequence[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    return check_holdout(holdout, COLORS, SHAPES, "scenes")


def split_pairs(
    split: str, holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Colour-shape pairs of a split: ``(first, others)``, the pairs the first object placed may
    take and those the other objects may take (they differ only for ``heldout``, whose every image
    contains a held-out pair)."""
    _check_split(split)
    held = _validate_holdout(holdout)
    if split == "all":
        return list(COLOR_SHAPE_PAIRS), list(COLOR_SHAPE_PAIRS)
    if split.startswith("cogent-"):
        colors = COGENT_COLORS[split.split("-")[1]]
        pairs = [(c, s) for c, s in COLOR_SHAPE_PAIRS if c in colors[s]]
        return pairs, pairs
    if split == "heldout":
        if not held:
            raise ConfigError("the 'heldout' split is empty: no colour-shape pairs are held out")
        return [p for p in COLOR_SHAPE_PAIRS if p in held], list(COLOR_SHAPE_PAIRS)
    kept = [p for p in COLOR_SHAPE_PAIRS if p not in held]
    return kept, kept


def _chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), chunk]))


@dataclass
class _Layout:
    """A chunk of sampled scenes, one row per image, one column per object slot."""

    placed: np.ndarray  # (C, K) bool
    color: np.ndarray  # (C, K) index into COLORS
    shape: np.ndarray  # (C, K) index into SHAPES
    size: np.ndarray  # (C, K) index into SIZES
    left: np.ndarray  # (C, K, 2) top-left corner (x, y) of the bounding square, 1/4-pixel grid
    background: np.ndarray  # (C,) index into BACKGROUNDS
    gradient: np.ndarray  # (C, 2) gradient level and direction
    caption_uniforms: np.ndarray  # (C, _CAPTION_UNIFORMS)


def _sample_layout(
    rng: np.random.Generator,
    count: int,
    image_size: int,
    pairs: tuple[list[tuple[str, str]], list[tuple[str, str]]],
) -> _Layout:
    # Every draw has a fixed shape, so each image's scene depends only on its own row.
    k_slots = MAX_OBJECTS
    n_objects = 1 + (rng.random(count) * k_slots).astype(np.int64)
    u_pair = rng.random((count, k_slots))
    u_size = rng.random((count, k_slots))
    u_pos = rng.random((count, k_slots, _CANDIDATES, 2))
    background = (rng.random(count) * len(BACKGROUNDS)).astype(np.int64)
    gradient = (rng.random((count, 2)) * np.array([GRADIENT_LEVELS, GRADIENT_DIRECTIONS])).astype(
        np.int64
    )
    caption_uniforms = rng.random((count, _CAPTION_UNIFORMS))

    first, others = pairs
    color = np.zeros((count, k_slots), dtype=np.int64)
    shape = np.zeros((count, k_slots), dtype=np.int64)
    colors = list(COLORS)
    for j in range(k_slots):
        table = first if j == 0 else others
        chosen = (u_pair[:, j] * len(table)).astype(np.int64)
        color[:, j] = np.array([colors.index(c) for c, _ in table])[chosen]
        shape[:, j] = np.array([SHAPES.index(s) for _, s in table])[chosen]
    size = (u_size * len(SIZES)).astype(np.int64)
    sides = np.array([object_side(s, image_size) for s in SIZES])[size]  # (C, K)
    gap = GAP_AT_64 * image_size / 64.0

    placed = np.zeros((count, k_slots), dtype=bool)
    left = np.zeros((count, k_slots, 2))
    rows = np.arange(count)
    for j in range(k_slots):
        steps = np.floor((image_size - sides[:, j]) * SUBPIXEL)  # (C,) last allowed 1/4 step
        candidates = np.floor(u_pos[:, j] * (steps[:, None, None] + 1)) / SUBPIXEL  # (C, T, 2)
        ok = np.ones((count, _CANDIDATES), dtype=bool)
        for i in range(j):
            reach = (sides[:, i] + sides[:, j])[:, None] / 2.0 + gap  # centre distance needed
            delta = np.abs(
                candidates
                + sides[:, j, None, None] / 2.0
                - (left[:, i] + sides[:, i, None] / 2.0)[:, None, :]
            )
            apart = (delta[..., 0] >= reach) | (delta[..., 1] >= reach)
            ok &= apart | ~placed[:, i, None]
        first_ok = ok.argmax(axis=1)
        placed[:, j] = (j < n_objects) & ok.any(axis=1)
        left[:, j] = candidates[rows, first_ok]
    return _Layout(placed, color, shape, size, left, background, gradient, caption_uniforms)


def _render_layout(layout: _Layout, image_size: int) -> tuple[np.ndarray, list[SceneGraph]]:
    """Images uint8 ``(C, S, S, 3)`` and their scene graphs."""
    bank = mask_bank(image_size)
    count, k_slots = layout.placed.shape
    area = image_size * image_size
    # Backgrounds are gathered from a bank, then every object's pixels are scattered in at once
    # (objects never overlap); one spare pixel at the end absorbs the masks' padding.
    flat = np.empty((count * area + 1, 3), dtype=np.uint8)
    which = (
        layout.background * GRADIENT_LEVELS + layout.gradient[:, 0]
    ) * GRADIENT_DIRECTIONS + layout.gradient[:, 1]
    images = flat[:-1].reshape(count, image_size, image_size, 3)
    np.take(background_bank(image_size), which, axis=0, out=images)
    origin = np.floor(layout.left).astype(np.int64)  # (C, K, 2) integer corner of the grid
    phase = np.rint((layout.left - origin) * SUBPIXEL).astype(np.int64)
    n_idx, k_idx = np.nonzero(layout.placed)
    pixels = bank.pixels[
        layout.shape[n_idx, k_idx],
        layout.size[n_idx, k_idx],
        phase[n_idx, k_idx, 1],
        phase[n_idx, k_idx, 0],
    ]  # (M, P)
    corner = n_idx * area + origin[n_idx, k_idx, 1] * image_size + origin[n_idx, k_idx, 0]
    target = np.where(pixels >= 0, corner[:, None] + pixels, count * area)
    palette = np.array(list(COLORS.values()), dtype=np.uint8)
    colors_of = np.broadcast_to(
        palette[layout.color[n_idx, k_idx]][:, None, :], target.shape + (3,)
    )
    flat[target.ravel()] = colors_of.reshape(-1, 3)

    boxes = bank.boxes[layout.shape, layout.size, phase[..., 1], phase[..., 0]]  # (C, K, 4)
    boxes = boxes + np.concatenate([origin, origin], axis=-1)
    colors, backgrounds = list(COLORS), list(BACKGROUNDS)
    graphs = []
    # Plain lists: per-element numpy indexing would dominate the cost of building the graphs.
    rows = zip(
        layout.placed.tolist(),
        layout.color.tolist(),
        layout.shape.tolist(),
        layout.size.tolist(),
        boxes.tolist(),
        layout.background.tolist(),
        strict=True,
    )
    for placed, color, shape, size, box, background in rows:
        objects = [
            SceneObject(
                colors[color[j]],
                SHAPES[shape[j]],
                SIZES[size[j]],
                ((box[j][0] + box[j][2]) / 2.0, (box[j][1] + box[j][3]) / 2.0),
                tuple(box[j]),
            )
            for j in range(len(placed))
            if placed[j]
        ]
        objects.sort(key=lambda o: (o.center[1], o.center[0]))
        graphs.append(SceneGraph(tuple(objects), image_size, backgrounds[background]))
    return images, graphs


def generate_scenes(
    num: int,
    seed: int = 0,
    split: str = "train",
    image_size: int = DEFAULT_IMAGE_SIZE,
    holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT,
    captions: bool = True,
) -> tuple[np.ndarray, list[SceneGraph], list[list[str]]]:
    """Images uint8 ``(N, S, S, 3)``, their scene graphs and captions (one of each kind in
    :data:`CAPTION_KINDS` per image; a single-object one stands in for a relation where none can
    be stated). Deterministic in ``(seed, split)``; a smaller set is a prefix of a larger one."""
    _check_image_size(image_size)
    _check_split(split)
    if num < 0:
        raise ConfigError(f"number of scenes images must be >= 0, got {num}")
    pairs = split_pairs(split, holdout)
    images, graphs, texts = [], [], []
    for chunk, start in enumerate(range(0, num, _CHUNK)):
        layout = _sample_layout(_chunk_rng(seed, split, chunk), _CHUNK, image_size, pairs)
        keep = min(_CHUNK, num - start)
        layout = _Layout(*(getattr(layout, f.name)[:keep] for f in dataclasses.fields(layout)))
        part, part_graphs = _render_layout(layout, image_size)
        images.append(part)
        graphs += part_graphs
        if captions:
            texts += [
                make_captions(g, row)
                for g, row in zip(part_graphs, layout.caption_uniforms, strict=True)
            ]
    stacked = (
        np.concatenate(images)
        if images
        else np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    )
    return stacked, graphs, texts


class ScenesDataset(ImageDataset):
    """A ``scenes`` split held in memory.

    Items are ``(image, label, caption)``: image float ``(3, S, S)`` in [-1, 1], label the number
    of objects minus one (0..3), caption the image's first caption. ``images`` is uint8
    ``(N, 3, S, S)``; ``graphs`` and ``captions`` (a list per image) hold the rest.
    """

    channels = 3
    num_classes = MAX_OBJECTS
    class_names = [f"{n} object{'s' if n > 1 else ''}" for n in range(1, MAX_OBJECTS + 1)]
    name = "scenes"

    def __init__(
        self,
        split: str = "train",
        num: int | None = None,
        seed: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT,
    ):
        _check_split(split)
        self.split, self.seed, self.image_size = split, seed, image_size
        self.holdout = tuple(sorted(_validate_holdout(holdout)))
        count = DEFAULT_SPLIT_SIZES[split] if num is None else num
        images, self.graphs, self.captions = generate_scenes(
            count, seed, split, image_size, holdout
        )
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.tensor([len(g.objects) - 1 for g in self.graphs], dtype=torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return uint8_to_float(self.images[index]), int(self.labels[index]), self.captions[index][0]


def export_scenes(
    num: int,
    out: Path,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    split: str = "all",
) -> int:
    """Write ``num`` PNGs ``00000.png``... and ``scenes.jsonl`` into ``out``; returns ``num``.

    Each jsonl line is ``{"file", "captions": [...], "graph": {"image_size", "background",
    "objects": [{"color", "shape", "size", "center", "bbox"}, ...]}}``.
    """
    images, graphs, captions = generate_scenes(num, seed, split, image_size)
    records = [{"captions": t, "graph": g.as_dict()} for g, t in zip(graphs, captions, strict=True)]
    return write_image_records(out, "scenes.jsonl", images, records)
