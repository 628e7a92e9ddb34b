"""Classification Accuracy Score (CAS; Ravuri & Vinyals 2019): train a classifier only on a
generator's images, labelled with what was asked of it, and test it on real images.

A generator that draws what it is asked, in all its variety, gives a classifier as good as one
trained on real data; one that ignores the request, or draws one stereotyped image per request,
gives a worse one. The figure of merit is the ratio ``cas / real_accuracy``: the same
architecture, recipe and seed trained on the same number of real images is the reference.

Worlds (:func:`cas_of_run` picks one from a loaded run):

- ``digits`` (a class-conditional run, e.g. ``digits-cond``): each class asked equally often, the
  label is the asked class; the shipped digits classifier's architecture and recipe
  (:mod:`ganfuse.metrics.digits`); the real reference is a class-balanced subset of the digits
  training split, the test set its held-out 20%.
- ``shapes`` (a text-to-image run): the prompts are captions of the ``train`` split; the labels
  are what each caption states (colour, shape, size, position), read back from its text; the
  shipped attribute classifier's architecture and recipe (:mod:`ganfuse.metrics.attributes`;
  10 epochs instead of 3, as CAS trains on fewer images);
  the real reference is the images the prompts caption. Accuracy per attribute, their ``mean``
  (the headline) and ``all`` four right at once, on the real ``test`` split (seen colour-shape
  pairs) and on the ``heldout`` split (pairs neither classifier saw).
- ``scenes`` (a text-to-image run): the prompts are the ``list`` captions of ``train`` scenes,
  the one kind that names every object. A whole scene has no single label, so the classifier is
  the scene parser's silhouette classifier (:mod:`ganfuse.metrics.scenes`: colour segmentation,
  then a 24x24 window of each component's mask), trained on the windows cut from the generated
  images with the shape the caption asked for in that colour. Only unambiguous windows count: a
  colour the caption names exactly once that the image shows as exactly one component. The
  reference is the same architecture and recipe on as many windows cut, by the same rule, from
  the real scenes the prompts caption; the test is every object of real ``test`` scenes (and
  of ``heldout`` ones, whose colour-shape pairs no training caption names), labelled by the true
  scene graph. ``yield`` is the share of asked objects that gave a window (1 for real images):
  CAS judges the shapes a generator draws where it drew the asked colour, the yield whether it
  drew it; sizes (stated for some objects only) and positions (never) are not labels.

A sampler that returns the real images of its requests reproduces the reference exactly (same
images, labels, seed and recipe), so the ratio is 1 for a perfect generator; a sampler of noise
sits at chance. Metrics see images only: the caller passes ``sample_fn(requests, seed)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ganfuse.config import arch_family
from ganfuse.data.base import to_uint8
from ganfuse.data.scenes import CAPTION_KINDS, SceneGraph, ScenesDataset
from ganfuse.data.scenes import DEFAULT_HOLDOUT as SCENES_HOLDOUT
from ganfuse.data.scenes import SHAPES as SCENE_SHAPES
from ganfuse.data.scenes import parse_caption as parse_scene_caption
from ganfuse.data.shapes import ATTRIBUTE_VALUES, DEFAULT_HOLDOUT, ShapesDataset, attribute_labels
from ganfuse.data.shapes import parse_caption as parse_shape_caption
from ganfuse.errors import UserError
from ganfuse.metrics.attributes import SHAPES_SETTINGS, SHAPES_SPEC, shapes_inputs
from ganfuse.metrics.classifier import (
    ClassifierSpec,
    ConvClassifier,
    TrainSettings,
    build_classifier,
    train_classifier,
)
from ganfuse.metrics.digits import DIGITS_SETTINGS, DIGITS_SPEC, digits_inputs, digits_split
from ganfuse.metrics.images import match_channels
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.scenes import PARSER_SETTINGS, PARSER_SPEC, WINDOW, Component, segment
from ganfuse.metrics.t2i import parse_holdout

# (requests, seed) -> images (N, C, H, W), float in [-1, 1] or uint8, one per request, in order.
SampleFn = Callable[[list, int], torch.Tensor]
Labels = Mapping[str, torch.Tensor]  # head -> (N,) int64

SHAPES_DEFAULT_NUM = 10_000  # generated (and real) training images
SCENES_DEFAULT_NUM = 5_000
DEFAULT_TEST_NUM = 2_000  # real test images per set (shapes, scenes)
_SEED_SPACE = 2**32  # seeds the samplers derive stay inside check_seed's range
_PROMPTS_PER_CALL = 4096  # prompts per call of a text-to-image run's sample()


# ---------------------------------------------------------------------------------------------
# What a world's classifier learns
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CasTask:
    """A world's classifier: architecture, training recipe, how images (uint8 or [-1, 1] float
    ``(N, C, H, W)``) become its input, how its predictions are scored against labels, and which
    score is the headline."""

    world: str
    spec: ClassifierSpec
    settings: TrainSettings
    prepare: Callable[[torch.Tensor], torch.Tensor]
    score: Callable[[Labels, Labels], dict[str, float]]  # (predictions, labels) -> accuracies
    headline: str


@dataclass(frozen=True)
class LabelledImages:
    """Images ``(N, C, H, W)`` (uint8 or float in [-1, 1]) and their labels, head -> ``(N,)``."""

    images: torch.Tensor
    labels: Labels


@dataclass
class CasResult:
    """Accuracies of the classifier trained on generated images (``generated``) and of the one
    trained on as many real images (``real``), per real test set; the headline of ``test``."""

    world: str
    num: int
    epochs: int
    steps: int
    seed: int
    headline: str
    generated: dict[str, dict[str, float]]
    real: dict[str, dict[str, float]]
    test_images: dict[str, int] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)  # what a world adds (scenes: windows)

    @property
    def cas(self) -> float:
        return self.generated["test"][self.headline]

    @property
    def real_accuracy(self) -> float:
        return self.real["test"][self.headline]

    @property
    def ratio(self) -> float:
        """``cas / real_accuracy``; 0 when the reference itself got nothing right."""
        return self.cas / self.real_accuracy if self.real_accuracy > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "world": self.world,
            "num": self.num,
            "epochs": self.epochs,
            "steps": self.steps,
            "seed": self.seed,
            "headline": self.headline,
            "cas": self.cas,
            "real_accuracy": self.real_accuracy,
            "ratio": self.ratio,
            "generated": self.generated,
            "real": self.real,
            "test_images": self.test_images,
            **self.extra,
        }


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _check_images(images: object, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MetricInputError(f"{what} must be images (N, C, H, W), got {shape}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise MetricInputError(f"{what} contain NaN or infinite values")
    return images


def _classifier_inputs(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 or [-1, 1] float ``(N, C, H, W)`` -> float ``(N, channels, size, size)`` in [-1, 1],
    through uint8 first, as a saved PNG would be (generated and real images take one path)."""
    x = match_channels(to_uint8(images.detach().cpu()), channels).float() / 127.5 - 1.0
    return _resized(x, size)


def _prepare_digits(images: torch.Tensor) -> torch.Tensor:
    return _classifier_inputs(images, DIGITS_SPEC.in_channels, DIGITS_SPEC.image_size)


def _score_digits(predictions: Labels, labels: Labels) -> dict[str, float]:
    return {"digit": float((predictions["digit"] == labels["digit"]).float().mean())}


def _score_attributes(predictions: Labels, labels: Labels) -> dict[str, float]:
    correct = {k: predictions[k] == labels[k] for k in ATTRIBUTE_VALUES}
    result = {k: float(v.float().mean()) for k, v in correct.items()}
    result["mean"] = sum(result.values()) / len(result)
    result["all"] = float(torch.stack(list(correct.values())).all(dim=0).float().mean())
    return result


def _score_shape(predictions: Labels, labels: Labels) -> dict[str, float]:
    return {"shape": float((predictions["shape"] == labels["shape"]).float().mean())}


DIGITS_TASK = CasTask("digits", DIGITS_SPEC, DIGITS_SETTINGS, _prepare_digits, _score_digits, "digit")
# The shipped recipe trains 3 epochs on 32000 images; on CAS's 10000 that left the real-trained
# classifier at 82% shape accuracy, 6 epochs at 99.1% and 10 at 100% (measured), so CAS trains 10.
SHAPES_CAS_SETTINGS = replace(SHAPES_SETTINGS, epochs=10)
SHAPES_TASK = CasTask("shapes", SHAPES_SPEC, SHAPES_CAS_SETTINGS, shapes_inputs, _score_attributes, "mean")


# The scene parser's silhouette classifier with its shape head (windows come in ready).
SCENES_TASK = CasTask("scenes", replace(PARSER_SPEC, heads={"shape": len(SCENE_SHAPES)}),
                      PARSER_SETTINGS, lambda windows: windows, _score_shape, "shape")


# ---------------------------------------------------------------------------------------------
# Labels of requests
# ---------------------------------------------------------------------------------------------


def shapes_prompt_labels(prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """What each ``shapes`` caption states, as labels of the attribute classifier's heads
    (``color``, ``shape``, ``size``, ``position``, ``color_shape``; ``(N,)`` int64 each)."""
    attributes = []
    for prompt in prompts:
        parsed = parse_shape_caption(prompt)
        if parsed is None:
            raise MetricInputError(
                f"cannot read the shapes caption {prompt!r}: CAS labels each prompt with the "
                "attributes it states, e.g. 'a large red circle in the center'"
            )
        attributes.append(parsed)
    return attribute_labels(attributes)


def scenes_asked_shapes(prompts: Sequence[str]) -> list[dict[str, str]]:
    """For each ``scenes`` list caption, colour -> the shape it asks for, for every colour the
    caption names exactly once (a colour named twice cannot tell which component is which).

    Only list captions name every object (a one-object list reads as a ``single`` caption);
    relation and count captions leave objects out, so their images' other components could be
    anything."""
    asked = []
    for prompt in prompts:
        description = parse_scene_caption(prompt)
        if description.kind not in ("list", "single"):
            raise MetricInputError(
                f"CAS on scenes labels an image with the objects its prompt names, so it needs "
                f"list captions ('two shapes: a red circle and a blue star'); got a "
                f"{description.kind} caption: {prompt!r}"
            )
        colors = [o.color for o in description.objects]
        asked.append({o.color: o.shape for o in description.objects if colors.count(o.color) == 1})
    return asked


def _stack_windows(components: Sequence[Component]) -> torch.Tensor:
    """Silhouette windows ``(N, 1, WINDOW, WINDOW)`` in {-1, 1}, the parser's input."""
    if not components:
        return torch.zeros((0, 1, WINDOW, WINDOW))
    masks = torch.from_numpy(np.stack([c.window for c in components]))
    return masks.float().mul_(2.0).sub_(1.0)[:, None]


def asked_windows(
    images: torch.Tensor, asked: Sequence[Mapping[str, str]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``(M, 1, 24, 24)`` and shape labels ``(M,)`` of the components of ``images``
    (``(N, 3, S, S)``, uint8 or [-1, 1]) whose colour image ``i``'s prompt asks for once
    (``asked[i]``) and shows as exactly one component; the label is the asked shape."""
    components, labels = [], []
    for per_image, wanted in zip(segment(images), asked, strict=True):
        for color, shape in wanted.items():
            of_color = [c for c in per_image if c.color == color]
            if len(of_color) == 1:
                components.append(of_color[0])
                labels.append(SCENE_SHAPES.index(shape))
    return _stack_windows(components), torch.tensor(labels, dtype=torch.int64)


def true_windows(
    images: torch.Tensor, graphs: Sequence[SceneGraph]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows and true shape labels of every object of real scenes: each component matched to
    the object of its colour and bounding box (exact on real images)."""
    components, labels = [], []
    for per_image, graph in zip(segment(images), graphs, strict=True):
        truth = {(o.color, tuple(o.bbox)): o.shape for o in graph.objects}
        for c in per_image:
            shape = truth.get((c.color, tuple(c.bbox)))
            if shape is not None:
                components.append(c)
                labels.append(SCENE_SHAPES.index(shape))
    return _stack_windows(components), torch.tensor(labels, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# The score
# ---------------------------------------------------------------------------------------------


def _check_labels(labels: Labels, task: CasTask, num: int, what: str) -> dict[str, torch.Tensor]:
    if set(labels) != set(task.spec.heads):
        raise MetricInputError(
            f"{what} must have the heads {sorted(task.spec.heads)} of the {task.world} classifier, "
            f"got {sorted(labels)}"
        )
    checked = {}
    for head, classes in task.spec.heads.items():
        values = torch.as_tensor(labels[head])
        if values.shape != (num,) or values.is_floating_point():
            raise MetricInputError(
                f"{what}[{head!r}] must be {num} integer labels, got {values.dtype} {tuple(values.shape)}"
            )
        if num and (int(values.min()) < 0 or int(values.max()) >= classes):
            raise MetricInputError(f"{what}[{head!r}] must lie in 0..{classes - 1}")
        checked[head] = values.long()
    return checked


@torch.no_grad()
def _predict(model: ConvClassifier, inputs: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in model.spec.heads}
    for start in range(0, inputs.shape[0], batch_size):
        for head, logits in model(inputs[start : start + batch_size]).items():
            parts[head].append(logits.argmax(dim=1))
    return {k: torch.cat(v) for k, v in parts.items()}


def _train_and_test(
    inputs: torch.Tensor,
    labels: Labels,
    tests: Mapping[str, tuple[torch.Tensor, Labels]],
    task: CasTask,
    seed: int,
) -> dict[str, dict[str, float]]:
    model = build_classifier(task.spec, seed=seed)
    train_classifier(model, inputs, labels, replace(task.settings, seed=seed))
    return {name: task.score(_predict(model, x), y) for name, (x, y) in tests.items()}


def classification_accuracy_score(
    sample_fn: SampleFn,
    requests: Sequence[int] | Sequence[str],
    labels: Labels,
    real_test_images: torch.Tensor,
    real_test_labels: Labels,
    *,
    task: CasTask,
    real_train: LabelledImages,
    extra_tests: Mapping[str, LabelledImages] | None = None,
    seed: int = 0,
) -> CasResult:
    """CAS of the images ``sample_fn(list(requests), seed)`` labelled ``labels`` (head -> ``(N,)``,
    one per request), tested on ``real_test_images`` ``(M, C, H, W)`` with ``real_test_labels``;
    the reference is ``task``'s classifier trained with the same seed and recipe on ``real_train``
    (``N`` real images). ``extra_tests`` adds more named real test sets to both."""
    num = len(requests)
    if num < 1:
        raise MetricInputError("CAS needs at least one request")
    labels = _check_labels(labels, task, num, "labels")
    real_images = _check_images(real_train.images, "the real training images")
    if real_images.shape[0] != num:
        raise MetricInputError(
            f"the reference must train on as many real images as generated ones: {num} requests, "
            f"{real_images.shape[0]} real training images"
        )
    real_labels = _check_labels(real_train.labels, task, num, "the real training labels")
    sets = {"test": LabelledImages(real_test_images, real_test_labels), **(extra_tests or {})}
    tests = {}
    for name, data in sets.items():
        images = _check_images(data.images, f"the real {name} images")
        tests[name] = (task.prepare(images), _check_labels(data.labels, task, images.shape[0], f"the {name} labels"))
    generated = _check_images(sample_fn(list(requests), seed), "the sampler's images")
    if generated.shape[0] != num:
        raise MetricInputError(f"the sampler returned {generated.shape[0]} images for {num} requests")
    return CasResult(
        world=task.world,
        num=num,
        epochs=task.settings.epochs,
        steps=task.settings.epochs * -(-num // task.settings.batch_size),
        seed=seed,
        headline=task.headline,
        generated=_train_and_test(task.prepare(generated), labels, tests, task, seed),
        real=_train_and_test(task.prepare(real_images), real_labels, tests, task, seed),
        test_images={name: int(x.shape[0]) for name, (x, _) in tests.items()},
    )


def _with_epochs(task: CasTask, epochs: int | None) -> CasTask:
    if epochs is None:
        return task
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise MetricInputError(f"epochs must be a positive integer, got {epochs!r}")
    return replace(task, settings=replace(task.settings, epochs=epochs))


def _check_num(num: object, what: str, minimum: int = 1) -> int:
    if isinstance(num, bool) or not isinstance(num, int) or num < minimum:
        raise MetricInputError(f"{what} must be an integer of at least {minimum}, got {num!r}")
    return num


# ---------------------------------------------------------------------------------------------
# Worlds
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All real digits as the classifier sees them, their labels, and the shipped classifier's
    training and held-out rows (read once: scikit-learn's loader takes seconds)."""
    images, labels = digits_inputs()
    train_rows, test_rows = digits_split()
    return images, labels, train_rows, test_rows


def digits_reference(num: int | None = None, seed: int = 0) -> LabelledImages:
    """Real training digits, ``num // 10`` of each class (default and most: as many as the
    smallest class of the training split has), chosen by ``seed``, class-major: images
    ``(n, 1, 32, 32)`` float in [-1, 1] and ``{"digit": (n,)}``."""
    images, labels, train_rows, _ = _digits_data()
    counts = torch.bincount(labels[train_rows], minlength=10)
    most = int(counts.min())
    per_class = most if num is None else _check_num(num, "the number of digits", 10) // 10
    if per_class > most:
        raise MetricInputError(
            f"digits CAS can train on at most {10 * most} images ({most} per class, as many as "
            f"the real digits training split holds for its smallest class); got {num}"
        )
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(10):
        of_class = train_rows[labels[train_rows] == k]
        rows.append(of_class[torch.randperm(len(of_class), generator=generator)[:per_class]])
    chosen = torch.cat(rows)
    return LabelledImages(images[chosen], {"digit": labels[chosen]})


def digits_test_set() -> LabelledImages:
    """The real digits the shipped classifier is scored on (its held-out 20%)."""
    images, labels, _, test_rows = _digits_data()
    return LabelledImages(images[test_rows], {"digit": labels[test_rows]})


def digits_cas(sample_fn: SampleFn, num: int | None = None, seed: int = 0, epochs: int | None = None) -> CasResult:
    """CAS of a class-conditional digits generator: ``sample_fn(classes, seed)`` draws one image of
    each asked class (``num // 10`` per class, :func:`digits_reference`)."""
    reference = digits_reference(num, seed)
    test = digits_test_set()
    requests = reference.labels["digit"].tolist()
    return classification_accuracy_score(
        sample_fn, requests, {"digit": reference.labels["digit"]}, test.images, test.labels,
        task=_with_epochs(DIGITS_TASK, epochs), real_train=reference, seed=seed,
    )


def shapes_cas(
    sample_fn: SampleFn,
    num: int = SHAPES_DEFAULT_NUM,
    seed: int = 0,
    image_size: int = 32,
    holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT,
    num_test: int = DEFAULT_TEST_NUM,
    epochs: int | None = None,
) -> CasResult:
    """CAS of a ``shapes`` text-to-image generator: ``sample_fn(prompts, seed)`` draws one image
    per caption of ``num`` ``train`` images; tested on ``num_test`` real ``test`` images and
    ``num_test // 2`` ``heldout`` ones."""
    num = _check_num(num, "num")
    num_test = _check_num(num_test, "num_test", 2)
    train = ShapesDataset("train", num, seed, image_size, holdout)
    test = ShapesDataset("test", num_test, seed, image_size, holdout)
    heldout = ShapesDataset("heldout", num_test // 2, seed, image_size, holdout)
    requests = list(train.captions)
    return classification_accuracy_score(
        sample_fn, requests, shapes_prompt_labels(requests), test.images, test.labels,
        task=_with_epochs(SHAPES_TASK, epochs), real_train=LabelledImages(train.images, train.labels),
        extra_tests={"heldout": LabelledImages(heldout.images, heldout.labels)}, seed=seed,
    )


def scenes_list_captions(captions: Sequence[Sequence[str]]) -> list[str]:
    """Each image's ``list`` caption (the one that names every object) from a scenes dataset's
    captions (one per kind, in :data:`~ganfuse.data.scenes.CAPTION_KINDS` order)."""
    index = CAPTION_KINDS.index("list")
    return [per_image[index] for per_image in captions]


def scenes_cas(
    sample_fn: SampleFn,
    num: int = SCENES_DEFAULT_NUM,
    seed: int = 0,
    image_size: int = 64,
    holdout: Sequence[tuple[str, str]] = SCENES_HOLDOUT,
    num_test: int = DEFAULT_TEST_NUM,
    epochs: int | None = None,
) -> CasResult:
    """CAS of a ``scenes`` text-to-image generator: ``sample_fn(prompts, seed)`` draws one image
    per list caption of ``num`` ``train`` scenes; the silhouette classifier trains on the windows
    of the asked objects (:func:`asked_windows`), the reference on as many windows of the real
    scenes (a seeded subset when the generated images gave fewer), both are tested on every
    object of ``num_test`` real ``test`` scenes and ``num_test // 2`` ``heldout`` ones."""
    num = _check_num(num, "num")
    num_test = _check_num(num_test, "num_test", 2)
    task = _with_epochs(SCENES_TASK, epochs)
    train = ScenesDataset("train", num, seed, image_size, holdout)
    prompts = scenes_list_captions(train.captions)
    asked = scenes_asked_shapes(prompts)
    tests = {}
    for name, split, count in (("test", "test", num_test), ("heldout", "heldout", num_test // 2)):
        data = ScenesDataset(split, count, seed, image_size, holdout)
        windows, labels = true_windows(data.images, data.graphs)
        tests[name] = (windows, {"shape": labels})
    generated = _check_images(sample_fn(prompts, seed), "the sampler's images")
    if generated.shape[0] != num:
        raise MetricInputError(f"the sampler returned {generated.shape[0]} images for {num} requests")
    gen_windows, gen_labels = asked_windows(generated, asked)
    real_windows, real_labels = asked_windows(train.images, asked)
    if len(gen_labels) < len(real_labels):  # as many real windows as generated ones
        keep = torch.randperm(len(real_labels), generator=torch.Generator().manual_seed(seed))
        keep = keep[: len(gen_labels)].sort().values
        real_windows, real_labels = real_windows[keep], real_labels[keep]
    if len(gen_labels) == 0:  # nothing to learn from: every accuracy is 0
        generated_scores = {name: dict.fromkeys(("shape",), 0.0) for name in tests}
    else:
        generated_scores = _train_and_test(gen_windows, {"shape": gen_labels}, tests, task, seed)
    return CasResult(
        world="scenes",
        num=num,
        epochs=task.settings.epochs,
        steps=task.settings.epochs * -(-len(gen_labels) // task.settings.batch_size),
        seed=seed,
        headline=task.headline,
        generated=generated_scores,
        real=(_train_and_test(real_windows, {"shape": real_labels}, tests, task, seed)
              if len(real_labels) else generated_scores),
        test_images={name: int(x.shape[0]) for name, (x, _) in tests.items()},
        extra={"windows": int(len(gen_labels)), "asked": sum(len(a) for a in asked),
               "yield": len(gen_labels) / max(1, sum(len(a) for a in asked))},
    )


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def class_sampler(run) -> SampleFn:
    """``sample_fn(classes, seed)`` of a class-conditional run (anything with ``num_classes`` and
    ``sample(n, seed=..., class_label=...)``): each class's images drawn in one call, with a seed
    of its own, and put back in request order."""

    def sample(requests: list, seed: int) -> torch.Tensor:
        classes = torch.as_tensor(requests, dtype=torch.int64)
        out: torch.Tensor | None = None
        for k in torch.unique(classes).tolist():
            rows = torch.nonzero(classes == k).flatten()
            images = run.sample(len(rows), seed=(seed * run.num_classes + k) % _SEED_SPACE, class_label=k)
            if out is None:
                out = torch.empty((len(classes), *images.shape[1:]), dtype=images.dtype)
            out[rows] = images
        assert out is not None  # requests are not empty (checked by the caller)
        return out

    return sample


def prompt_sampler(run) -> SampleFn:
    """``sample_fn(prompts, seed)`` of a text-to-image run (``sample(1, seed=..., prompts=...)``):
    one image per prompt, in calls of at most 4096 prompts with seeds ``seed, seed + 1, ...``."""

    def sample(requests: list, seed: int) -> torch.Tensor:
        return torch.cat([
            run.sample(1, seed=(seed + i) % _SEED_SPACE, prompts=requests[start : start + _PROMPTS_PER_CALL])
            for i, start in enumerate(range(0, len(requests), _PROMPTS_PER_CALL))
        ])

    return sample


def cas_of_run(run, num: int | None = None, seed: int = 0, epochs: int | None = None) -> dict[str, object]:
    """CAS of a loaded run (:class:`ganfuse.run.Run` or anything with ``config``, ``path``,
    ``step``, ``num_classes`` and ``sample``): a class-conditional ``digits`` run, or a
    text-to-image ``shapes`` or ``scenes`` run. ``num``: generated (= real) training images,
    default per world (digits: 1390, shapes: 10000, scenes: 5000). The result of
    :meth:`CasResult.to_dict` plus ``run`` and ``step``."""
    data = run.config.data
    family = arch_family(run.config.model.arch)
    if family == "t2i" and data.name == "shapes":
        holdout = parse_holdout(data.holdout) or DEFAULT_HOLDOUT
        result = shapes_cas(prompt_sampler(run), SHAPES_DEFAULT_NUM if num is None else num, seed,
                            data.image_size, holdout, epochs=epochs)
    elif family == "t2i" and data.name == "scenes":
        holdout = parse_holdout(data.holdout) or SCENES_HOLDOUT
        result = scenes_cas(prompt_sampler(run), SCENES_DEFAULT_NUM if num is None else num, seed,
                            data.image_size, holdout, epochs=epochs)
    elif family == "gan" and data.name == "digits" and run.num_classes == 10:
        result = digits_cas(class_sampler(run), num, seed, epochs)
    else:
        what = ("a text-to-image" if family == "t2i"
                else "a class-conditional" if run.num_classes else "an unconditional")
        raise UserError(
            f"--metrics cas scores a class-conditional digits run (ganfuse train digits-cond) or a "
            f"text-to-image shapes or scenes run; {run.path} is {what} run on {data.name!r}"
        )
    return {"run": str(run.path), "step": int(run.step), **result.to_dict()}


def format_cas(result: Mapping[str, object]) -> str:
    """A small table of :func:`cas_of_run`'s (or :meth:`CasResult.to_dict`'s) result: one row per
    real test set and training source, accuracies in percent, then the headline ratio."""
    generated: dict = result["generated"]  # type: ignore[assignment]
    real: dict = result["real"]  # type: ignore[assignment]
    keys = list(next(iter(generated.values())))
    if "windows" in result:  # scenes: the classifier learns from object windows
        what = (f"{result['windows']} object windows cut from {result['num']} generated images "
                f"(yield {100 * float(result['yield']):.1f}% of {result['asked']} asked objects) vs "
                f"as many from the real ones")
    else:
        what = f"{result['num']} generated vs {result['num']} real training images"
    lines = [
        f"CAS on {result['world']}: {what}, {result['epochs']} epochs ({result['steps']} steps), "
        f"seed {result['seed']}",
        f"{'test set':<10} {'trained on':<10} " + " ".join(f"{k:>8}" for k in keys),
    ]
    for name in generated:
        for source, table in (("generated", generated), ("real", real)):
            cells = " ".join(f"{100 * table[name][k]:8.1f}" for k in keys)
            lines.append(f"{name:<10} {source:<10} {cells}")
    lines.append(
        f"CAS {100 * float(result['cas']):.1f}% = {float(result['ratio']):.3f} of the real-trained "
        f"{result['headline']} accuracy ({100 * float(result['real_accuracy']):.1f}%) on "
        f"{result['test_images']['test']} real test {'objects' if 'windows' in result else 'images'}"  # type: ignore[index]
    )
    return "\n".join(lines)
