"""Label efficiency: attribute classifiers trained on 1%, 10% and 100% of the training labels.

Each classifier is an image encoder plus one head per attribute (colour, shape, size, position).
The encoder is either trained from scratch with the heads, or taken from a contrastive
(``zeroshot``) run and frozen, so that only the heads learn from the labels (a probe). Comparing
the two measures what learning from captions saved in labels; comparing contrastive encoders
trained with the pretrained MiniLM and with the small text encoder measures transfer learning on
the text side.

Generated data as training data (:func:`generated_label_efficiency`): a from-scratch classifier
trained on the 1% of labelled images plus images a ``shapes`` text-to-image generator drew for the
captions of the other training images, each labelled with what its caption states (read back from
the text, :func:`ganfuse.metrics.cas.shapes_prompt_labels`), against 1% alone and 100%; the
figure is the share of the 1% -> 100% gap that the generated images close.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.base import to_uint8, uint8_to_float
from ganfuse.errors import ConfigError
from ganfuse.metrics.cas import shapes_prompt_labels
from ganfuse.models.encoders import ImageEncoder
from ganfuse.models.heads import TaskHeads
from ganfuse.multimodal.config import FuseConfig
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import build_image_encoder
from ganfuse.multimodal.splits import config_split, labelled_indices
from ganfuse.multimodal.tasks import ATTRIBUTE_SIZES

FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)


class AttributeClassifier(nn.Module):
    """``(B, 3, S, S)`` in [-1, 1] -> ``{attribute: (B, K)}``: image encoder + one MLP head each."""

    def __init__(self, image_encoder: ImageEncoder, head_hidden: int = 128):
        super().__init__()
        self.image_encoder = image_encoder
        self.heads = TaskHeads(image_encoder.dim, ATTRIBUTE_SIZES, head_hidden)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.image_encoder(images).pooled)


@torch.no_grad()
def _pooled(encoder: ImageEncoder, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pooled features ``(len(index), D)`` of uint8 ``images[index]`` ``(N, 3, S, S)``."""
    encoder.eval()
    return torch.cat(
        [
            encoder(uint8_to_float(images[index[i : i + 500]])).pooled
            for i in range(0, len(index), 500)
        ]
    )


def _accuracies(
    logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    metrics = {
        f"{a}_accuracy": float((logits[a].argmax(-1) == labels[a]).float().mean())
        for a in ATTRIBUTE_SIZES
    }
    metrics["mean_accuracy"] = sum(metrics.values()) / len(metrics)
    return metrics


@dataclass(frozen=True)
class GeneratedImages:
    """Images a generator drew, uint8 ``(M, 3, S, S)``, and the labels their prompts state,
    attribute -> ``(M,)`` int64."""

    images: torch.Tensor
    labels: Mapping[str, torch.Tensor]
    prompts: tuple[str, ...] = ()


SampleFn = Callable[[list[str], int], torch.Tensor]  # (prompts, seed) -> (N, 3, H, W) in [-1, 1]


def generate_labelled_images(
    sample_fn: SampleFn, prompts: Sequence[str], image_size: int, seed: int = 0
) -> GeneratedImages:
    """One image per prompt from ``sample_fn(prompts, seed)``, quantised to uint8 as a saved PNG
    would be and resized (antialiased bilinear) to ``image_size``, labelled with the attributes
    each ``shapes`` prompt states."""
    prompts = list(prompts)
    labels = shapes_prompt_labels(prompts)
    images = sample_fn(prompts, seed)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[:2] != (len(prompts), 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"the sampler must return ({len(prompts)}, 3, H, W) images, one per prompt; got {shape}")
    images = to_uint8(images.detach().cpu())
    if images.shape[-2:] != (image_size, image_size):
        resized = F.interpolate(uint8_to_float(images), size=(image_size, image_size), mode="bilinear",
                                antialias=True, align_corners=False)
        images = to_uint8(resized)
    return GeneratedImages(images.contiguous(), {a: labels[a] for a in ATTRIBUTE_SIZES}, tuple(prompts))


def _check_share(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"generated_share must be in [0, 1] (the share of each batch drawn from "
                          f"generated images), got {share}")
    return float(share)


@uses_config_threads
def train_attribute_classifier(
    config: FuseConfig,
    fraction: float,
    encoder: ImageEncoder | None = None,
    progress: bool = True,
    generated: GeneratedImages | None = None,
    generated_share: float = 0.5,
) -> dict[str, float]:
    """Test accuracies after training on ``fraction`` of the labels, plus ``train_seconds``,
    ``labels``, ``generated`` (images) and ``steps``. ``encoder``: a pretrained encoder to freeze
    (probe); ``None``: from scratch. ``generated``: images with the labels their prompts state,
    ``generated_share`` of every batch drawn from them (1: from them alone, the labelled images
    unused)."""
    torch.manual_seed(config.seed)
    train, test = config_split(config, "train"), config_split(config, "test")
    labelled = labelled_indices(len(train), fraction, config.data_seed)
    generator = torch.Generator().manual_seed(config.seed)
    probe = encoder is not None
    share = _check_share(generated_share) if generated is not None else 0.0
    from_generated = round(share * config.batch_size)
    if generated is not None and generated.images.shape[-2:] != train.images.shape[-2:]:
        raise ConfigError(f"generated images are {tuple(generated.images.shape[-2:])}, the training images "
                          f"{tuple(train.images.shape[-2:])}; make them with generate_labelled_images")
    model = AttributeClassifier(
        encoder if probe else build_image_encoder(config), config.head_hidden
    )
    if probe:
        model.image_encoder.requires_grad_(False)
        # A frozen encoder's features are computed once; the heads then train in milliseconds.
        features = _pooled(model.image_encoder, train.images, labelled)
        if generated is not None:
            generated_features = _pooled(model.image_encoder, generated.images,
                                         torch.arange(generated.images.shape[0]))

    def compute_loss(step: int) -> torch.Tensor:
        pick = torch.randint(len(labelled), (config.batch_size - from_generated,), generator=generator)
        targets = {a: train.labels[a][labelled[pick]] for a in ATTRIBUTE_SIZES}
        if probe:
            inputs = features[pick]
        else:
            inputs = train.images[labelled[pick]]
        if from_generated:
            rows = torch.randint(generated.images.shape[0], (from_generated,), generator=generator)
            extra = generated_features[rows] if probe else generated.images[rows]
            inputs = torch.cat([inputs, extra])
            targets = {a: torch.cat([targets[a], generated.labels[a][rows]]) for a in ATTRIBUTE_SIZES}
        logits = model.heads(inputs) if probe else model(uint8_to_float(inputs))
        return sum(F.cross_entropy(logits[a], targets[a]) for a in ATTRIBUTE_SIZES)

    model.train()
    if probe:
        model.image_encoder.eval()
    desc = f"labels {fraction:.0%} {'probe' if probe else 'scratch'}"
    if generated is not None:
        desc += f" + generated {share:.0%}"
    stats = optimise(model.parameters(), compute_loss, config, desc, progress)
    model.eval()
    with torch.no_grad():
        index = torch.arange(len(test))
        logits = model.heads(_pooled(model.image_encoder, test.images, index))
    metrics = _accuracies(logits, test.labels)
    metrics.update(
        train_seconds=stats.seconds,
        labels=float(len(labelled)) if share < 1.0 else 0.0,
        generated=float(generated.images.shape[0]) if share > 0.0 else 0.0,
        steps=float(stats.steps),
    )
    return metrics


def gap_closed(low: float, high: float, value: float) -> float:
    """The share of the gap from ``low`` to ``high`` that ``value`` closes (1: all of it; above 1:
    beyond ``high``); NaN when there is no gap."""
    return (value - low) / (high - low) if high > low else float("nan")


def generated_label_efficiency(
    config: FuseConfig,
    sample_fn: SampleFn,
    fraction: float = 0.01,
    num_generated: int | None = None,
    generated_share: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, object]:
    """Attribute classifiers from scratch, each for ``config.steps`` steps (``config.max_minutes``
    each, when set) on the config's ``shapes`` splits: ``fraction`` of the labels alone, the same
    labels plus generated images, generated images alone, and 100% of the labels.

    The generated images are ``sample_fn(prompts, seed)`` for the captions of the training images
    whose labels are not used (the first ``num_generated`` of them; default all), labelled with
    what each caption states. Returns ``{"rows": {name: metrics}, "gap_closed": ...}``: the share
    of the gap in mean test accuracy between ``fraction`` and 100% of the labels that adding the
    generated images closes."""
    if config.world != "shapes":
        raise ConfigError(f"label efficiency with generated images runs on the shapes world, not {config.world!r}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction must be in (0, 1): the share of labels the small set keeps, got {fraction}")
    _check_share(generated_share)
    train = config_split(config, "train")
    labelled = set(labelled_indices(len(train), fraction, config.data_seed).tolist())
    unlabelled = [i for i in range(len(train)) if i not in labelled]
    if num_generated is not None:
        if isinstance(num_generated, bool) or not isinstance(num_generated, int) or num_generated < 1:
            raise ConfigError(f"num_generated must be a positive integer, got {num_generated!r}")
        unlabelled = unlabelled[:num_generated]
    prompts = [train.captions[i] for i in unlabelled]
    generated = generate_labelled_images(sample_fn, prompts, config.image_size, seed)
    name = f"{fraction:.0%}"
    rows = {
        f"labels {name}": train_attribute_classifier(config, fraction, None, progress),
        f"labels {name} + generated": train_attribute_classifier(
            config, fraction, None, progress, generated, generated_share),
        "generated only": train_attribute_classifier(config, fraction, None, progress, generated, 1.0),
        "labels 100%": train_attribute_classifier(config, 1.0, None, progress),
    }
    low, high = rows[f"labels {name}"]["mean_accuracy"], rows["labels 100%"]["mean_accuracy"]
    return {
        "fraction": fraction,
        "labels": len(labelled),
        "generated": int(generated.images.shape[0]),
        "generated_share": generated_share,
        "rows": rows,
        "gap_closed": gap_closed(low, high, rows[f"labels {name} + generated"]["mean_accuracy"]),
        "gap_closed_generated_only": gap_closed(low, high, rows["generated only"]["mean_accuracy"]),
    }


def label_efficiency(
    config: FuseConfig,
    encoders: Mapping[str, ImageEncoder | None],
    fractions: Sequence[float] = FRACTIONS,
    probe_steps: int = 400,
    progress: bool = True,
) -> list[dict[str, float | str]]:
    """One row per (encoder name, fraction): ``{"init", "fraction", ...test accuracies}``.

    ``encoders`` maps a name to a pretrained encoder (frozen, heads only, at most ``probe_steps``
    steps) or to ``None`` (from scratch, ``config.steps`` steps). ``config.max_minutes``, when
    set, is the time of the whole study: a from-scratch run gets three times a probe's share.
    """
    weights = {name: 1.0 if encoder is not None else 3.0 for name, encoder in encoders.items()}
    unit = config.max_minutes / (sum(weights.values()) * len(fractions))
    rows: list[dict[str, float | str]] = []
    for name, encoder in encoders.items():
        run_config = replace(config, max_minutes=unit * weights[name])
        if encoder is not None:
            run_config = replace(run_config, steps=probe_steps)
        for fraction in fractions:
            metrics = train_attribute_classifier(run_config, fraction, encoder, progress)
            rows.append({"init": name, "fraction": fraction, **metrics})
    return rows
