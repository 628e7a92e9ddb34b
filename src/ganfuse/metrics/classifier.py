"""Small convolutional classifiers trained on a dataset's real images, used as that dataset's
feature extractor (penultimate layer) and probability model (softmax of a head).

One backbone serves any number of heads, so a dataset with several attributes (``shapes``:
colour, shape, size, position) trains one network with one cross-entropy per head::

    spec = ClassifierSpec(in_channels=3, image_size=32, heads={"colour": 7, "shape": 3})
    model = build_classifier(spec, seed=0)
    train_classifier(model, images, {"colour": colour_labels, "shape": shape_labels}, TrainSettings())
    calibrate_feature_scale(model, images)
    save_classifier(model, path, {"heldout_accuracy": head_accuracy(model, x_val, y_val)})

Weights are stored as safetensors with the spec as JSON metadata: loading never runs pickled code.
The backbone keeps spatial layout until a linear layer (no global pooling), so position is
learnable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ganfuse.errors import CheckpointError, ConfigError

# One metadata key: safetensors writes several keys in an arbitrary order, which would make two
# identical trainings give files that differ in their header bytes.
_METADATA_KEY = "ganfuse.classifier"


@dataclass(frozen=True)
class ClassifierSpec:
    """Architecture: input ``(in_channels, image_size, image_size)`` in [-1, 1], one conv block per
    width (3x3 conv, ReLU, 2x2 max-pool), a ``feature_dim`` ReLU layer, then one linear head per entry
    of ``heads`` (name -> number of classes)."""

    in_channels: int
    image_size: int
    heads: dict[str, int]
    widths: tuple[int, ...] = (16, 32, 64)
    feature_dim: int = 64

    def __post_init__(self) -> None:
        if self.image_size % (2 ** len(self.widths)) != 0:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**{len(self.widths)}"
            )
        if not self.heads:
            raise ValueError("a classifier needs at least one head")


class ConvClassifier(nn.Module):
    """``(B, C, S, S)`` float in [-1, 1] -> ``{head: logits (B, K_head)}``; :meth:`features` gives
    the penultimate ``(B, feature_dim)``."""

    def __init__(self, spec: ClassifierSpec):
        super().__init__()
        self.spec = spec
        blocks: list[nn.Module] = []
        channels = spec.in_channels
        for width in spec.widths:
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        side = spec.image_size // 2 ** len(spec.widths)
        self.backbone = nn.Sequential(
            *blocks, nn.Flatten(), nn.Linear(channels * side * side, spec.feature_dim), nn.ReLU()
        )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(spec.feature_dim, k) for name, k in spec.heads.items()}
        )
        # Features are reported times this scale (set by calibrate_feature_scale) so that their
        # magnitude, which KID's polynomial kernel is sensitive to, does not depend on training.
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images) * self.feature_scale

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.features_and_logits(images)[1]

    def features_and_logits(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One pass: scaled features ``(B, feature_dim)`` and ``{head: logits (B, K_head)}``."""
        hidden = self.backbone(images)
        return hidden * self.feature_scale, {
            name: head(hidden) for name, head in self.heads.items()
        }


def build_classifier(spec: ClassifierSpec, seed: int) -> ConvClassifier:
    """A freshly initialised classifier whose weights depend only on ``spec`` and ``seed``."""
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        return ConvClassifier(spec)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2  # random translation in pixels, so features tolerate small misplacements
    seed: int = 0
    head_weights: dict[str, float] = field(default_factory=dict)  # default 1.0 per head


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of ``(B, C, H, W)`` by up to ``max_shift`` pixels, filling with -1."""
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


def train_classifier(
    model: ConvClassifier,
    images: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    settings: TrainSettings,
) -> list[float]:
    """Train ``model`` in place on ``images`` ``(N, C, S, S)`` in [-1, 1] and ``targets`` (head ->
    ``(N,)`` int64); returns the mean loss of each epoch. Deterministic given ``settings.seed``."""
    missing = set(model.spec.heads) ^ set(targets)
    if missing:
        raise ValueError(
            f"targets must have exactly the heads {sorted(model.spec.heads)}; mismatch {sorted(missing)}"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.lr,
        total_steps=settings.epochs * -(-images.shape[0] // settings.batch_size),
    )
    model.train()
    history = []
    for _ in range(settings.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        total, count = 0.0, 0
        for rows in order.split(settings.batch_size):
            batch = random_shift(images[rows], settings.max_shift, generator)
            logits = model(batch)
            loss = sum(
                settings.head_weights.get(name, 1.0)
                * F.cross_entropy(logits[name], targets[name][rows])
                for name in model.spec.heads
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        history.append(total / count)
    model.eval()
    return history


@torch.no_grad()
def calibrate_feature_scale(
    model: ConvClassifier, images: torch.Tensor, batch_size: int = 512
) -> float:
    """Set ``model.feature_scale`` so that the mean of ``|f|^2 / feature_dim`` over ``images`` is 1
    (the cubic KID kernel ``(x.y/d + 1)^3`` then sees values of order 1, as with Inception
    features); returns the scale."""
    model.eval()
    model.feature_scale.fill_(1.0)
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        total += float(model.features(images[start : start + batch_size]).double().square().sum())
    mean_square = total / (images.shape[0] * model.spec.feature_dim)
    model.feature_scale.fill_(1.0 / mean_square**0.5 if mean_square > 0 else 1.0)
    return float(model.feature_scale)


@torch.no_grad()
def head_accuracy(
    model: ConvClassifier,
    images: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    batch_size: int = 512,
) -> dict[str, float]:
    """Fraction of ``images`` ``(N, C, S, S)`` classified correctly, per head."""
    model.eval()
    correct = dict.fromkeys(targets, 0)
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size])
        for name, labels in targets.items():
            correct[name] += int(
                (logits[name].argmax(dim=1) == labels[start : start + batch_size]).sum()
            )
    return {name: correct[name] / images.shape[0] for name in targets}


def stratified_split(
    labels: torch.Tensor, holdout_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, holdout)``: ``holdout_fraction`` of every class held out, chosen by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    train, holdout = [], []
    for label in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == label).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        cut = round(len(rows) * holdout_fraction)
        holdout.append(rows[:cut])
        train.append(rows[cut:])
    return torch.cat(train).sort().values, torch.cat(holdout).sort().values


def save_classifier(
    model: ConvClassifier, path: str | Path, info: Mapping[str, object] | None = None
) -> None:
    """Write weights (float32) and spec + ``info`` (JSON-serialisable) as safetensors metadata."""
    record = {"spec": asdict(model.spec), "info": dict(info or {})}
    metadata = {_METADATA_KEY: json.dumps(record, sort_keys=True)}
    tensors = {name: t.detach().float().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def load_classifier(path: str | Path) -> tuple[ConvClassifier, dict[str, object]]:
    """Read a classifier written by :func:`save_classifier`; returns the model (eval mode) and its info."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"classifier weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if _METADATA_KEY in metadata:
            record = json.loads(metadata[_METADATA_KEY])
        else:  # the first format: spec and info under separate keys
            record = {
                "spec": json.loads(metadata["ganfuse.classifier_spec"]),
                "info": json.loads(metadata.get("ganfuse.info", "{}")),
            }
        raw, info = record["spec"], record["info"]
        spec = ClassifierSpec(**{**raw, "widths": tuple(raw["widths"])})
        model = ConvClassifier(spec)
        model.load_state_dict(load_file(str(path)))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path} is not a ganfuse classifier file ({exc})") from None
    model.eval().requires_grad_(False)
    return model, info


@lru_cache(maxsize=8)
def _load_cached(path: str) -> ConvClassifier:
    return load_classifier(path)[0]


def load_shipped_classifier(path: str | Path, heads: Iterable[str], what: str) -> ConvClassifier:
    """The classifier at ``path``, frozen and in eval mode, loaded once per process and shared (so
    do not train it in place); a :class:`ConfigError` naming ``what`` it should have been when its
    heads are not ``heads``."""
    model = _load_cached(str(Path(path)))
    if set(model.spec.heads) != set(heads):
        raise ConfigError(f"{path} is not {what} (heads {sorted(model.spec.heads)})")
    return model


def train_and_write_asset(
    name: str,
    train: Callable[[], tuple[ConvClassifier, dict[str, object]]],
    path: Path,
    shortfall: Callable[[dict[str, object]], str | None],
) -> int:
    """What every ``scripts/train_*`` does: train on one thread with deterministic algorithms, print
    the record as JSON, and write the asset to ``path`` unless ``shortfall(record)`` names why not
    (printed; exit code 1)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, info = train()
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"model": name, "path": str(path), "train_seconds": seconds, **info}))
    reason = shortfall(info)
    if reason:
        print(f"{reason}; not saved", file=sys.stderr)
        return 1
    save_classifier(model, path, info)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0
