"""Feature extractors: uint8 images in, float features (and optionally class probabilities) out.

Every extractor has ``name``, ``input_size`` (the side it works at), ``channels``,
``feature_dim``, ``resize`` (how inputs are brought to ``input_size``; recorded with every
result), ``num_classes`` (0 when it gives no probabilities) and ``fingerprint`` (identifies its
weights, so cached reference statistics are never reused across different weights), plus

    features(images_uint8 (B, C, H, W)) -> float32 (B, feature_dim)
    probs(images_uint8 (B, C, H, W))    -> float32 (B, num_classes), rows summing to 1

Registered names (:func:`get_extractor`): ``inception`` (the standard FID Inception-v3 through
torch-fidelity) and ``digits`` (a classifier trained on the real digits, shipped in the package);
``shapes`` and ``emoji`` register themselves from their modules (:data:`_PROVIDERS`). Another
dataset adds its own with :func:`register_extractor`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch

from ganfuse.cache import sha256_of_file
from ganfuse.errors import ConfigError
from ganfuse.metrics.classifier import ConvClassifier, load_classifier
from ganfuse.metrics.digits import digits_asset_path
from ganfuse.metrics.images import match_channels, resize_bicubic_pil
from ganfuse.metrics.inception_weights import INCEPTION_SHA256, resolve_inception_weights
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.settings import RESIZE_MODES


class FeatureExtractor(ABC):
    name: str
    input_size: int
    channels: int
    feature_dim: int
    resize: str
    num_classes: int = 0
    fingerprint: str
    batch_size: int = 256  # a batch that keeps peak memory modest on a CPU

    @abstractmethod
    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward pass: features ``(B, feature_dim)`` and probs ``(B, num_classes)`` or None."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_probs(images)[0]

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        probs = self.features_and_probs(images)[1]
        if probs is None:
            raise MetricInputError(f"the {self.name!r} extractor gives no class probabilities")
        return probs

    def describe(self) -> dict[str, object]:
        return {
            "extractor": self.name,
            "resize": self.resize,
            "feature_dim": self.feature_dim,
            "fingerprint": self.fingerprint,
        }


def _check_uint8(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise MetricInputError(
            f"extractors take uint8 images (B, C, H, W); got {images.dtype} {tuple(images.shape)} "
            "(convert [-1, 1] floats with ganfuse.metrics.to_uint8)"
        )


class InceptionExtractor(FeatureExtractor):
    """The FID Inception-v3 (``pt_inception-2015-12-05``): 2048-d pool features and softmax over the
    1008 logits without bias (the ``logits_unbiased`` torch-fidelity and the original IS code use).

    ``resize="tf"`` lets torch-fidelity resize to 299 with its TF1-compatible bilinear filter;
    ``resize="clean"`` resizes to 299 with PIL bicubic first (torch-fidelity's resize is then the
    identity).
    """

    input_size = 299
    channels = 3
    feature_dim = 2048
    num_classes = 1008
    batch_size = 32

    def __init__(
        self, weights: str | Path | None = None, resize: str = "tf", download: bool = True
    ):
        if resize not in RESIZE_MODES:
            raise ConfigError(f"unknown resize {resize!r}; choose one of {sorted(RESIZE_MODES)}")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_inception_weights(weights, download=download)
        self.name = "inception"
        self.resize = resize
        self.fingerprint = f"{INCEPTION_SHA256[:12]}-{resize}"
        self.weights_path = path
        # The file is verified by SHA-256 above; torch-fidelity then loads it from that path.
        self.network = FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(path),
        )
        self.network.eval()

    @torch.inference_mode()
    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_uint8(images)
        images = match_channels(images, 3)
        if self.resize == "clean":
            images = resize_bicubic_pil(images, self.input_size)
        features, logits = self.network(images.contiguous())
        return features.float(), logits.double().softmax(dim=1).float()


class ClassifierExtractor(FeatureExtractor):
    """A :class:`ConvClassifier`'s penultimate layer as features and one head's softmax as probs.

    Images of another size are resized to the classifier's with antialiased bilinear
    interpolation; RGB is converted to grey (or grey repeated) to match its channels.
    """

    resize = "bilinear-antialias"
    batch_size = 512

    def __init__(self, name: str, model: ConvClassifier, probs_head: str, fingerprint: str):
        if probs_head not in model.spec.heads:
            raise ValueError(f"head {probs_head!r} not in {sorted(model.spec.heads)}")
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.probs_head = probs_head
        self.input_size = model.spec.image_size
        self.channels = model.spec.in_channels
        self.feature_dim = model.spec.feature_dim
        self.num_classes = model.spec.heads[probs_head]
        self.fingerprint = fingerprint

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        _check_uint8(images)
        x = match_channels(images, self.channels).float() / 127.5 - 1.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = torch.nn.functional.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return x

    @torch.inference_mode()
    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = self.model.features_and_logits(self._inputs(images))
        return feats.float(), logits[self.probs_head].double().softmax(dim=1).float()


def load_classifier_extractor(name: str, path: Path, probs_head: str) -> ClassifierExtractor:
    model, _ = load_classifier(path)
    return ClassifierExtractor(name, model, probs_head, fingerprint=sha256_of_file(path)[:12])


def shipped_classifier_extractor(
    name: str,
    asset_path: Callable[[], Path],
    probs_head: str,
    load: Callable[[Path], ConvClassifier] | None = None,
) -> Callable[..., ClassifierExtractor]:
    """The factory of the ``name`` extractor of a classifier shipped at ``asset_path()``: it takes
    no options, loads with ``load`` (default: a fresh :func:`load_classifier`) and fingerprints the
    file, so cached features of another asset are never reused."""

    def factory(**kwargs: object) -> ClassifierExtractor:
        if kwargs:
            raise ConfigError(f"the {name} extractor takes no options, got {sorted(kwargs)}")
        path = asset_path()
        model = load(path) if load is not None else load_classifier(path)[0]
        return ClassifierExtractor(name, model, probs_head, fingerprint=sha256_of_file(path)[:12])

    factory.__doc__ = f"The ``{name}`` feature extractor (probabilities of ``{probs_head}``)."
    return factory


_digits = shipped_classifier_extractor("digits", digits_asset_path, "digit")


def _inception(**kwargs) -> FeatureExtractor:
    return InceptionExtractor(**kwargs)


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {"inception": _inception, "digits": _digits}
# Extractors defined elsewhere register themselves on import; this says which module to import.
_PROVIDERS: dict[str, str] = {
    "shapes": "ganfuse.metrics.attributes",
    "emoji": "ganfuse.metrics.emoji",
}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> None:
    """Make ``get_extractor(name, **kw)`` call ``factory(**kw)``."""
    _REGISTRY[name] = factory


def extractor_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_PROVIDERS))


def get_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Build a registered extractor: ``inception`` takes ``weights=``, ``resize=`` and ``download=``."""
    if name not in _REGISTRY and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown extractor {name!r}; choose one of {extractor_names()}")
    return _REGISTRY[name](**kwargs)
