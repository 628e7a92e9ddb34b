"""The exact judge of ``scenes``: a scene parser (image -> scene graph) and scoring functions
that check a caption against an image's graph.

The parser segments an image by colour (a pixel belongs to an object colour when it lies within
:data:`COLOR_RADIUS` of it in RGB; backgrounds are far from every object colour), splits each
colour into 8-connected components, and classifies each component's silhouette (a 24x24 window
of its mask at the 64-pixel scale; 32-pixel images are upsampled 2x first) into shape and size
with a small :class:`~ganfuse.metrics.classifier.ConvClassifier`. The classifier is trained on
real renders, clean and with pixel noise, by :func:`train_scene_parser`
(``scripts/train_scene_parser.py`` rebuilds the asset) and shipped as
``ganfuse/assets/scene_parser.safetensors``. A parsed object's centre is the centre of its
component's bounding box, the same definition the dataset stores, so real images parse exactly.

Scoring (:func:`score_caption`): a caption is read back into a
:class:`~ganfuse.data.scenes.SceneDescription` and checked for

- ``binding``: every mentioned object is present, as distinct objects, with the stated colour,
  shape and size;
- ``relations``: the mentioned objects can be chosen so that every stated relation also holds
  (centres at least ``margin`` apart along its axis);
- ``count``: every stated count is exact, so extra objects of the counted kind fail it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ganfuse.data.base import to_uint8
from ganfuse.data.scenes import (
    COLORS,
    IMAGE_SIZES,
    SHAPES,
    SIZES,
    SceneDescription,
    SceneGraph,
    SceneObject,
    generate_scenes,
    parse_caption,
    relation_holds,
    relation_margin,
)
from ganfuse.metrics.classifier import (
    ClassifierSpec,
    ConvClassifier,
    TrainSettings,
    build_classifier,
    head_accuracy,
    load_shipped_classifier,
    train_classifier,
)
from ganfuse.metrics.inputs import MetricInputError

COLOR_RADIUS = 80.0  # RGB distance within which a pixel takes an object colour
MIN_AREA_AT_64 = 12  # smaller components are noise (the smallest real object has 40 pixels)
WINDOW = 24  # side of the silhouette window, in pixels of the 64-pixel scale
PARSER_SPEC = ClassifierSpec(
    in_channels=1,
    image_size=WINDOW,
    heads={"shape": len(SHAPES), "size": len(SIZES)},
    widths=(16, 32, 64),
    feature_dim=64,
)
PARSER_SETTINGS = TrainSettings(epochs=4, batch_size=128, lr=3e-3, max_shift=1, seed=0)
TRAIN_IMAGES = 3000  # per image size, clean and noisy each
TRAIN_DATA_SEED = 10_000  # a scenes seed no evaluation split uses
ASSET_NAME = "scene_parser.safetensors"
_PALETTE = torch.tensor(list(COLORS.values()), dtype=torch.float32)  # (8, 3)


def scene_parser_asset_path() -> Path:
    return Path(str(resources.files("ganfuse") / "assets" / ASSET_NAME))


def _scene_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` of uint8 or [-1, 1] float ``(B, 3, S, S)`` (or a numpy
    ``(B, S, S, 3)`` uint8 batch as :func:`~ganfuse.data.scenes.generate_scenes` returns)."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3:
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or images.shape[1] != 3
        or images.shape[2] != images.shape[3]
        or images.shape[2] not in IMAGE_SIZES
    ):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        sizes = " or ".join(f"{s}x{s}" for s in IMAGE_SIZES)
        raise MetricInputError(
            f"the scene parser needs (B, 3, S, S) RGB images with S {sizes}, got {shape}"
        )
    return to_uint8(images.detach().cpu())


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One connected region of one object colour: its colour, bounding box ``(x0, y0, x1, y1)``
    (pixels of the image, exclusive ends) and silhouette window bool ``(WINDOW, WINDOW)`` at the
    64-pixel scale, centred on the box."""

    color: str
    bbox: tuple[int, int, int, int]
    window: np.ndarray

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


def color_labels(images: torch.Tensor) -> np.ndarray:
    """Per-pixel object colour index ``(B, S, S)`` int64 (into ``COLORS``), -1 for background."""
    x = images.float().permute(0, 2, 3, 1)  # (B, S, S, 3)
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2, as one matrix product.
    distance = (
        x.square().sum(-1, keepdim=True) - 2.0 * x @ _PALETTE.T + _PALETTE.square().sum(-1)
    )  # (B, S, S, 8)
    nearest = distance.min(dim=-1)
    return torch.where(nearest.values < COLOR_RADIUS**2, nearest.indices, -1).numpy()


def centred_window(mask: np.ndarray) -> np.ndarray:
    """A component's mask ``(h, w)`` placed in a ``(WINDOW, WINDOW)`` window with its box centred
    (rounded down on half pixels); a mask larger than the window keeps its middle."""
    window = np.zeros((WINDOW, WINDOW), dtype=bool)
    h, w = mask.shape
    top, left = WINDOW // 2 - h // 2, WINDOW // 2 - w // 2
    src = mask[
        max(0, -top) : h - max(0, top + h - WINDOW), max(0, -left) : w - max(0, left + w - WINDOW)
    ]
    window[max(0, top) : max(0, top) + src.shape[0], max(0, left) : max(0, left) + src.shape[1]] = (
        src
    )
    return window


def segment(images: torch.Tensor | np.ndarray) -> list[list[Component]]:
    """The object components of each image (uint8 or [-1, 1] float ``(B, 3, S, S)``)."""
    images = _scene_images(images)
    side = images.shape[-1]
    scale = 64 // side
    min_area = max(1, MIN_AREA_AT_64 // (scale * scale))
    labels = color_labels(images)
    colors = list(COLORS)
    eight = np.ones((3, 3), dtype=bool)
    out = []
    for image_labels in labels:
        components = []
        present = np.bincount(image_labels.ravel() + 1, minlength=len(colors) + 1)[1:]
        for k in np.flatnonzero(present):
            regions, count = ndimage.label(image_labels == k, structure=eight)
            areas = np.bincount(regions.ravel(), minlength=count + 1)
            for index, box in enumerate(ndimage.find_objects(regions), start=1):
                if box is None or areas[index] < min_area:
                    continue
                y0, y1, x0, x1 = box[0].start, box[0].stop, box[1].start, box[1].stop
                mask = regions[box] == index
                if scale > 1:
                    mask = mask.repeat(scale, axis=0).repeat(scale, axis=1)
                window = centred_window(mask)
                components.append(Component(colors[k], (x0, y0, x1, y1), window))
        out.append(components)
    return out


def _windows(components: Sequence[Component]) -> torch.Tensor:
    """Classifier input ``(N, 1, WINDOW, WINDOW)`` in {-1, 1}."""
    if not components:
        return torch.zeros((0, 1, WINDOW, WINDOW))
    stacked = torch.from_numpy(np.stack([c.window for c in components]))
    return stacked.float().mul_(2.0).sub_(1.0)[:, None]


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def load_scene_parser(path: str | Path | None = None) -> ConvClassifier:
    """The shipped silhouette classifier (or the one at ``path``): frozen, loaded once per
    process and shared."""
    path = path if path is not None else scene_parser_asset_path()
    return load_shipped_classifier(path, PARSER_SPEC.heads, "a scene parser")


def parse_scenes(
    images: torch.Tensor | np.ndarray, classifier: ConvClassifier | None = None
) -> list[SceneGraph]:
    """The scene graph of each image: uint8 or [-1, 1] float ``(B, 3, S, S)``, ``S`` 32 or 64
    (or a numpy uint8 ``(B, S, S, 3)`` batch). Objects are in reading order, as the dataset's."""
    images = _scene_images(images)
    model = classifier if classifier is not None else load_scene_parser()
    model.eval()
    per_image = segment(images)
    flat = [c for components in per_image for c in components]
    shapes: list[int] = []
    sizes: list[int] = []
    for start in range(0, len(flat), 2048):
        logits = model(_windows(flat[start : start + 2048]))
        shapes += logits["shape"].argmax(1).tolist()
        sizes += logits["size"].argmax(1).tolist()
    graphs, position = [], 0
    for components in per_image:
        objects = []
        for c in components:
            objects.append(
                SceneObject(
                    c.color, SHAPES[shapes[position]], SIZES[sizes[position]], c.center, c.bbox
                )
            )
            position += 1
        objects.sort(key=lambda o: (o.center[1], o.center[0]))
        graphs.append(SceneGraph(tuple(objects), images.shape[-1]))
    return graphs


def graphs_equal(predicted: SceneGraph, truth: SceneGraph, tolerance: float = 0.0) -> bool:
    """Same objects (colour, shape, size) with centres within ``tolerance`` pixels, one to one."""
    if len(predicted.objects) != len(truth.objects):
        return False
    left = list(truth.objects)
    for p in predicted.objects:
        match = next(
            (
                t
                for t in left
                if (t.color, t.shape, t.size) == (p.color, p.shape, p.size)
                and abs(t.center[0] - p.center[0]) <= tolerance
                and abs(t.center[1] - p.center[1]) <= tolerance
            ),
            None,
        )
        if match is None:
            return False
        left.remove(match)
    return True


def parser_accuracy(
    images: torch.Tensor | np.ndarray,
    graphs: Sequence[SceneGraph],
    classifier: ConvClassifier | None = None,
) -> dict[str, float]:
    """On images with known graphs: ``graph`` (fraction parsed exactly: every object's colour,
    shape, size and centre, nothing extra), ``count`` (right number of objects) and ``objects``
    (fraction of true objects found exactly)."""
    predicted = parse_scenes(images, classifier)
    if len(predicted) != len(graphs):
        raise MetricInputError(
            f"parser_accuracy got {len(predicted)} images but {len(graphs)} graphs"
        )
    if not graphs:
        raise MetricInputError("parser_accuracy needs at least one image")
    exact = sum(graphs_equal(p, t) for p, t in zip(predicted, graphs, strict=True))
    count = sum(len(p.objects) == len(t.objects) for p, t in zip(predicted, graphs, strict=True))
    found = total = 0
    for p, t in zip(predicted, graphs, strict=True):
        keys = [(o.color, o.shape, o.size, o.bbox) for o in p.objects]
        total += len(t.objects)
        found += sum((o.color, o.shape, o.size, o.bbox) in keys for o in t.objects)
    n = len(graphs)
    return {"graph": exact / n, "count": count / n, "objects": found / max(total, 1)}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def add_pixel_noise(
    images: np.ndarray, rng: np.random.Generator, max_sigma: float = 25.0
) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` plus Gaussian noise of a per-image sigma in ``[0, max_sigma]``:
    the imperfect silhouettes a generator's images give, for training the classifier on."""
    sigma = rng.random(images.shape[0]) * max_sigma
    noise = rng.standard_normal(images.shape, dtype=np.float32) * sigma[:, None, None, None]
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8)


def scene_parser_training_set(
    num: int = TRAIN_IMAGES, seed: int = TRAIN_DATA_SEED
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Silhouette windows ``(N, 1, WINDOW, WINDOW)`` and their ``shape`` and ``size`` labels, from
    ``num`` real scenes per image size (32 and 64, every colour-shape pair), each clean and with
    pixel noise. A noisy component is labelled by the true object of its colour whose centre is
    within 1.5 pixels, and left out when there is none."""
    rng = np.random.default_rng(seed)
    windows: list[Component] = []
    shape_labels, size_labels = [], []
    for offset, image_size in enumerate(IMAGE_SIZES):
        images, graphs, _ = generate_scenes(num, seed + offset, "all", image_size, captions=False)
        for batch in (images, add_pixel_noise(images, rng)):
            for components, graph in zip(segment(batch), graphs, strict=True):
                for c in components:
                    truth = next(
                        (
                            o
                            for o in graph.objects
                            if o.color == c.color
                            and abs(o.center[0] - c.center[0]) <= 1.5
                            and abs(o.center[1] - c.center[1]) <= 1.5
                        ),
                        None,
                    )
                    if truth is None:
                        continue
                    windows.append(c)
                    shape_labels.append(SHAPES.index(truth.shape))
                    size_labels.append(SIZES.index(truth.size))
    labels = {
        "shape": torch.tensor(shape_labels, dtype=torch.int64),
        "size": torch.tensor(size_labels, dtype=torch.int64),
    }
    return _windows(windows), labels


def train_scene_parser() -> tuple[ConvClassifier, dict[str, object]]:
    """Train the shipped silhouette classifier from scratch; returns it and its record (training
    accuracy per head and the parser's exact-graph accuracy on the real ``test`` and ``heldout``
    splits at 64 and 32 pixels). Deterministic for the fixed seeds (with one thread)."""
    windows, labels = scene_parser_training_set()
    model = build_classifier(PARSER_SPEC, seed=PARSER_SETTINGS.seed)
    losses = train_classifier(model, windows, labels, PARSER_SETTINGS)
    info: dict[str, object] = {
        "dataset": "scenes",
        "train_windows": int(windows.shape[0]),
        "train_data_seed": TRAIN_DATA_SEED,
        "train_seed": PARSER_SETTINGS.seed,
        "epochs": PARSER_SETTINGS.epochs,
        "final_loss": round(losses[-1], 5),
        "train_accuracy": {
            k: round(v, 5) for k, v in head_accuracy(model, windows, labels).items()
        },
    }
    for name, values in evaluate_on_real(model).items():
        info[f"accuracy_{name}"] = {k: round(v, 5) for k, v in values.items()}
    return model, info


EVALUATION_SPLITS: tuple[tuple[str, str, int], ...] = (
    ("test64", "test", 64),
    ("heldout64", "heldout", 64),
    ("test32", "test", 32),
    ("heldout32", "heldout", 32),
)


def evaluate_on_real(
    classifier: ConvClassifier | None = None, seed: int = 0, num: int = 2000
) -> dict[str, dict[str, float]]:
    """The parser's accuracy (:func:`parser_accuracy`) on ``num`` real images of each of
    :data:`EVALUATION_SPLITS`, none of which the classifier was trained on."""
    out = {}
    for name, split, size in EVALUATION_SPLITS:
        images, graphs, _ = generate_scenes(num, seed, split, size, captions=False)
        out[name] = parser_accuracy(images, graphs, classifier)
    return out


# ---------------------------------------------------------------------------------------------
# Scoring captions against scene graphs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionScore:
    """Whether an image satisfies each part of a caption; ``None`` where the caption states no
    such part (no object, no relation, no count)."""

    binding: bool | None
    relations: bool | None
    count: bool | None

    @property
    def correct(self) -> bool:
        """Every part the caption states holds."""
        return all(v for v in (self.binding, self.relations, self.count) if v is not None)


def scoring_margin(image_size: int) -> float:
    """Default centre distance a stated relation needs in a judged image: half the dataset's
    margin, so that a near-tie is not credited but a clear relation need not copy the data's."""
    return relation_margin(image_size) / 2.0


def score_caption(
    caption: str | SceneDescription, graph: SceneGraph, margin: float | None = None
) -> CaptionScore:
    """Score one (caption, scene graph) pair; ``caption`` is text (read by
    :func:`~ganfuse.data.scenes.parse_caption`, which raises a one-line error for text no template
    reads) or an already parsed description. ``margin`` in pixels, default
    :func:`scoring_margin`."""
    description = parse_caption(caption) if isinstance(caption, str) else caption
    margin = scoring_margin(graph.image_size) if margin is None else margin
    objects = graph.objects
    mentioned = description.objects
    binding = relations = None
    if mentioned:
        bound = [
            chosen
            for chosen in itertools.permutations(range(len(objects)), len(mentioned))
            if all(spec.matches(objects[i]) for spec, i in zip(mentioned, chosen, strict=True))
        ]
        binding = bool(bound)
        if description.relations:
            relations = any(
                all(
                    relation_holds(
                        objects[chosen[r.subject]], objects[chosen[r.obj]], r.relation, margin
                    )
                    for r in description.relations
                )
                for chosen in bound
            )
    count = None
    if description.counts:
        count = all(
            sum(claim.spec.matches(o) for o in objects) == claim.count
            for claim in description.counts
        )
    return CaptionScore(binding, relations, count)


def score_pairs(
    captions: Sequence[str | SceneDescription],
    graphs: Sequence[SceneGraph],
    margin: float | None = None,
) -> dict[str, float]:
    """Rates over (caption, graph) pairs: ``binding``, ``relations`` and ``count`` among the pairs
    whose caption states that part (NaN where none does), and ``correct``: every stated part holds."""
    if len(captions) != len(graphs):
        raise MetricInputError(f"score_pairs got {len(captions)} captions but {len(graphs)} graphs")
    if not captions:
        raise MetricInputError("score_pairs needs at least one (caption, image) pair")
    scores = [score_caption(c, g, margin) for c, g in zip(captions, graphs, strict=True)]
    out = {}
    for part in ("binding", "relations", "count"):
        stated = [getattr(s, part) for s in scores if getattr(s, part) is not None]
        out[part] = sum(stated) / len(stated) if stated else float("nan")
    out["correct"] = sum(s.correct for s in scores) / len(scores)
    return out


def score_images(
    captions: Sequence[str | SceneDescription],
    images: torch.Tensor | np.ndarray,
    classifier: ConvClassifier | None = None,
    margin: float | None = None,
) -> dict[str, float]:
    """:func:`score_pairs` on the graphs the parser reads from ``images`` (one per caption)."""
    # Captions first: an unreadable one fails before the images are parsed.
    descriptions = [parse_caption(c) if isinstance(c, str) else c for c in captions]
    return score_pairs(descriptions, parse_scenes(images, classifier), margin)
