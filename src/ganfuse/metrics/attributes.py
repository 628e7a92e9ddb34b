"""Attribute accuracy for ``shapes``: does an image show the colour, shape, size and position
its prompt asked for?

A :class:`~ganfuse.metrics.classifier.ConvClassifier` with five heads (``color``, ``shape``,
``size``, ``position`` and the 21 ``color_shape`` classes), trained on real ``shapes`` images by
:func:`train_shapes_classifier` (deterministic; ``scripts/train_shapes_classifier.py`` rebuilds
the asset) and shipped as ``ganfuse/assets/shapes_classifier.safetensors``. Images go in as
uint8 ``(B, 3, H, W)`` or float in [-1, 1], at 32x32 or larger (resized as the extractor does).

It is also the ``shapes`` feature extractor (:func:`shapes_extractor`, registered as
``"shapes"``): features are its penultimate layer, probabilities the ``color_shape`` head, for
Frechet distances in its own feature space.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from ganfuse.data.base import to_uint8
from ganfuse.data.shapes import (
    ATTRIBUTE_VALUES,
    COLOR_SHAPE_CLASSES,
    ShapeAttributes,
    ShapesDataset,
    attribute_labels,
    generate_shapes,
)
from ganfuse.metrics.classifier import (
    ClassifierSpec,
    ConvClassifier,
    TrainSettings,
    build_classifier,
    calibrate_feature_scale,
    load_shipped_classifier,
    train_classifier,
)
from ganfuse.metrics.extractors import register_extractor, shipped_classifier_extractor
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.sources import register_reference_dataset

SHAPES_SPEC = ClassifierSpec(
    in_channels=3,
    image_size=32,
    heads={
        **{k: len(v) for k, v in ATTRIBUTE_VALUES.items()},
        "color_shape": len(COLOR_SHAPE_CLASSES),
    },
    widths=(16, 32, 64),
    feature_dim=128,
)
SHAPES_SETTINGS = TrainSettings(epochs=3, batch_size=128, lr=2e-3, max_shift=1, seed=0)
TRAIN_IMAGES = 16000  # a quarter rendered at 64x64 and downsampled
TRAIN_DATA_SEED = 10_000  # a shapes seed no evaluation split uses
ASSET_NAME = "shapes_classifier.safetensors"


def shapes_asset_path() -> Path:
    return Path(str(resources.files("ganfuse") / "assets" / ASSET_NAME))


def shapes_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1, 1] float ``(B, 3, S, S)`` -> float ``(B, 3, 32, 32)`` in [-1, 1].

    Floats are quantised to uint8 first, as a saved PNG would be, so generated and real images
    take the same path; other sizes are resized with antialiased bilinear interpolation, as
    :class:`~ganfuse.metrics.extractors.ClassifierExtractor` does.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MetricInputError(f"the shapes classifier needs (B, 3, H, W) RGB images, got {shape}")
    x = to_uint8(images.detach().cpu()).float() / 127.5 - 1.0
    size = SHAPES_SPEC.image_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def shapes_training_set(
    num: int = TRAIN_IMAGES, seed: int = TRAIN_DATA_SEED
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Real shapes of every colour-shape pair, held-out pairs included (this model judges
    generated images of them): images ``(N, 3, 32, 32)`` in [-1, 1] and labels per head.

    A quarter is rendered at 64x64 and downsampled, so 64-pixel runs are judged fairly too.
    """
    n64 = num // 4
    images32, attrs32, _ = generate_shapes(num - n64, seed=seed, split="all", image_size=32)
    images64, attrs64, _ = generate_shapes(n64, seed=seed + 1, split="all", image_size=64)
    x = torch.cat(
        [
            shapes_inputs(torch.from_numpy(images32).permute(0, 3, 1, 2)),
            shapes_inputs(torch.from_numpy(images64).permute(0, 3, 1, 2)),
        ]
    )
    labels = attribute_labels(attrs32 + attrs64)
    return x, {k: labels[k] for k in SHAPES_SPEC.heads}


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Imperfections a generator's images have, so the classifier judges them by content:
    each image ``(B, 3, H, W)`` in [-1, 1] gets a dimmer colour (gain 0.6-1), a grey floor
    (0-0.15) and Gaussian pixel noise (sigma 0-0.15, in [0, 1] units), then uint8 rounding."""
    b = images.shape[0]
    gain = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.0, generator=generator)
    floor = torch.empty(b, 1, 1, 1).uniform_(0.0, 0.15, generator=generator)
    sigma = torch.empty(b, 1, 1, 1).uniform_(0.0, 0.15, generator=generator)
    unit = floor + (gain - floor) * (images + 1.0) / 2.0
    unit = unit + sigma * torch.randn(images.shape, generator=generator)
    return shapes_inputs(unit.clamp(0.0, 1.0) * 2.0 - 1.0)


def train_shapes_classifier() -> tuple[ConvClassifier, dict[str, object]]:
    """Train the shipped classifier from scratch on clean plus degraded real images; returns it
    and its record (accuracy on the real test, held-out and 64x64 test splits, settings).

    Deterministic for the fixed seeds (with one thread, as ``scripts/`` runs it).
    """
    images, labels = shapes_training_set()
    generator = torch.Generator().manual_seed(SHAPES_SETTINGS.seed)
    images = torch.cat([images, degrade(images, generator)])
    labels = {k: torch.cat([v, v]) for k, v in labels.items()}
    model = build_classifier(SHAPES_SPEC, seed=SHAPES_SETTINGS.seed)
    losses = train_classifier(model, images, labels, SHAPES_SETTINGS)
    scale = calibrate_feature_scale(model, images)
    info: dict[str, object] = {
        "dataset": "shapes",
        "train_images": int(images.shape[0]),
        "train_data_seed": TRAIN_DATA_SEED,
        "train_seed": SHAPES_SETTINGS.seed,
        "epochs": SHAPES_SETTINGS.epochs,
        "final_loss": round(losses[-1], 5),
        "feature_scale": round(scale, 6),
    }
    for name, values in evaluate_on_real(model).items():
        info[f"accuracy_{name}"] = {k: round(v, 4) for k, v in values.items()}
    return model, info


# ---------------------------------------------------------------------------------------------
# Loading, extractor
# ---------------------------------------------------------------------------------------------


def load_shapes_classifier(path: str | Path | None = None) -> ConvClassifier:
    """The shipped classifier (or the one at ``path``): frozen, eval mode, loaded once per
    process and shared, so do not train it in place."""
    path = path if path is not None else shapes_asset_path()
    return load_shipped_classifier(path, SHAPES_SPEC.heads, "a shapes attribute classifier")


# The ``shapes`` feature extractor: 128-d features, probabilities of the 21 colour-shape classes.
shapes_extractor = shipped_classifier_extractor(
    "shapes", shapes_asset_path, "color_shape", load_shapes_classifier
)
register_extractor("shapes", shapes_extractor)


def _shapes_reference_images() -> torch.Tensor:
    """``--ref shapes``: the training split's real images (held-out pairs excluded), uint8."""
    return ShapesDataset("train").images


register_reference_dataset("shapes", _shapes_reference_images, extractor="shapes")


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_attributes(
    images: torch.Tensor, classifier: ConvClassifier | None = None, batch_size: int = 1024
) -> dict[str, torch.Tensor]:
    """Predicted value index per attribute (and ``color_shape``), ``(B,)`` int64 each, for uint8
    or [-1, 1] images ``(B, 3, H, W)``."""
    model = classifier if classifier is not None else load_shapes_classifier()
    model.eval()
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in SHAPES_SPEC.heads}
    for start in range(0, images.shape[0], batch_size):
        logits = model(shapes_inputs(images[start : start + batch_size]))
        for key in preds:
            preds[key].append(logits[key].argmax(dim=1))
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.int64) for k, v in preds.items()}


def predicted_attributes(
    images: torch.Tensor, classifier: ConvClassifier | None = None
) -> list[ShapeAttributes]:
    """What the classifier sees in each image, from its four attribute heads."""
    preds = predict_attributes(images, classifier)
    return [
        ShapeAttributes(*(ATTRIBUTE_VALUES[k][int(preds[k][i])] for k in ATTRIBUTE_VALUES))
        for i in range(images.shape[0])
    ]


def attribute_accuracy(
    images: torch.Tensor,
    attributes: Sequence[ShapeAttributes],
    classifier: ConvClassifier | None = None,
) -> dict[str, float]:
    """Fraction of images whose predicted ``color``, ``shape``, ``size`` and ``position`` match
    ``attributes``, plus ``"all"``: all four right at once.

    ``images`` uint8 ``(B, 3, H, W)`` or float in [-1, 1]; ``attributes`` one per image.
    """
    if images.shape[0] != len(attributes):
        raise MetricInputError(
            f"attribute_accuracy got {images.shape[0]} images but {len(attributes)} attribute sets"
        )
    if not attributes:
        raise MetricInputError("attribute_accuracy needs at least one image")
    preds = predict_attributes(images, classifier)
    truth = attribute_labels(attributes)
    correct = {k: preds[k] == truth[k] for k in ATTRIBUTE_VALUES}
    result = {k: float(v.float().mean()) for k, v in correct.items()}
    result["all"] = float(torch.stack(list(correct.values())).all(dim=0).float().mean())
    return result


def evaluate_on_real(
    classifier: ConvClassifier | None = None, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Accuracy on real images: the ``test`` and ``heldout`` splits at 32x32 and ``test`` at 64x64."""
    out = {}
    for name, split, size in (
        ("test", "test", 32),
        ("heldout", "heldout", 32),
        ("test64", "test", 64),
    ):
        data = ShapesDataset(split, seed=seed, image_size=size)
        out[name] = attribute_accuracy(data.images, data.attributes, classifier)
    return out
