"""Projection (GAN inversion): the latent whose generated image reproduces a given real image.

    run = ganfuse.load_run("runs/digits")
    result = project(run, target)            # target: float (C, H, W) in [-1, 1] at the run's size
    result.image, result.z, result.feature_error

Adam on ``z`` (all restarts as one batch) minimises

    feature_weight * ||f(G(z)) - f(x)||^2 / ||f(x)||^2  +  pixel_weight * (MSE + L1)(G(z), x)

where ``f`` is the penultimate layer of the shipped classifier of the run's dataset
(:data:`EXTRACTOR_OF_DATASET`; ``digits``, ``shapes``, ``emoji``), used differentiably; a run on
other data is projected on pixels alone. ``z`` is kept on the prior's typical set by
re-normalisation: after every step each latent is scaled back to norm ``sqrt(z_dim)``, where
``N(0, I)`` samples concentrate. The learning rate ramps up over the first 5% of the steps and
down with a cosine over the last 25% (as in StyleGAN2's projector). ``restarts`` random starts
are optimised together; for a class-conditional run without a given class every class gets
``restarts`` starts. The lowest final loss wins.

``feature_error`` is the relative feature distance ``||f(G(z)) - f(x)|| / ||f(x)||`` (0 is a
perfect match); ``random_feature_error`` is the median of the same over random samples of the
run with the same class or prompt: the yardstick a projection must beat.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ganfuse.errors import UserError
from ganfuse.metrics.extractors import ClassifierExtractor, get_extractor
from ganfuse.metrics.images import _LUMA
from ganfuse.run import Run, TextToImageRun
from ganfuse.run_images import slerp

EXTRACTOR_OF_DATASET = {"digits": "digits", "mnist": "digits", "shapes": "shapes", "emoji": "emoji"}
LATENT_KIND = "ganfuse-latent"
MAX_STEPS = 100_000
MAX_RESTARTS = 256


class FeatureLoss:
    """A classifier extractor's features ``(B, feature_dim)`` of float images ``(B, C, H, W)`` in
    [-1, 1], with gradients: channels matched (grey repeated, RGB to luma) and resized as
    :class:`~ganfuse.metrics.extractors.ClassifierExtractor` does for uint8 inputs."""

    def __init__(self, extractor: ClassifierExtractor, device: torch.device):
        self.name = extractor.name
        self.model = extractor.model.to(device).eval().requires_grad_(False)
        self.size, self.channels = extractor.input_size, extractor.channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            x = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return self.model.features_and_logits(x)[0].float()


def feature_loss_for(run: Run, name: str | None = None) -> FeatureLoss | None:
    """The feature loss of the run's dataset (or of extractor ``name``); None when the run's data
    has no shipped classifier (the projection then uses pixels alone)."""
    name = name or EXTRACTOR_OF_DATASET.get(run.config.data.name)
    if name is None:
        return None
    extractor = get_extractor(name)
    if not isinstance(extractor, ClassifierExtractor):
        raise UserError(
            f"the {name!r} extractor cannot serve as a projection loss; use a dataset classifier "
            f"({', '.join(sorted(set(EXTRACTOR_OF_DATASET.values())))})"
        )
    return FeatureLoss(extractor, run.device)


@dataclass
class Projection:
    """The best latent found for one target image."""

    z: torch.Tensor  # (z_dim,) float32
    class_label: int | None
    prompt: str | None
    image: torch.Tensor  # (C, H, W) float in [-1, 1], G(z)
    progress: torch.Tensor  # (S, C, H, W): G(z) of the winning restart at ``progress_steps``
    progress_steps: list[int]
    losses: list[float]  # the winning restart's loss at ``progress_steps``
    feature_error: float | None  # ||f(G(z)) - f(x)|| / ||f(x)||; None without a feature loss
    random_feature_error: float | None  # the median of the same over random samples
    pixel_mse: float  # mean squared pixel error in [-1, 1] units
    extractor: str | None
    restarts: int
    steps: int
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "feature_error": self.feature_error,
            "random_feature_error": self.random_feature_error,
            "ratio": None
            if not self.random_feature_error or self.feature_error is None
            else self.feature_error / self.random_feature_error,
            "pixel_mse": self.pixel_mse,
            "extractor": self.extractor,
            "class": self.class_label,
            "prompt": self.prompt,
            "steps": self.steps,
            "restarts": self.restarts,
            "loss_at_step": dict(zip(map(str, self.progress_steps), self.losses, strict=True)),
            "prior": "re-normalisation to |z| = sqrt(z_dim) after every step",
            **self.meta,
        }


def _generate(
    run: Run, z: torch.Tensor, labels: torch.Tensor | None, cond: torch.Tensor | None
) -> torch.Tensor:
    return run.generator(z, cond if cond is not None else labels).float()


def _renormalise(z: torch.Tensor) -> torch.Tensor:
    return z * (math.sqrt(z.shape[1]) / z.norm(dim=1, keepdim=True).clamp_min(1e-8))


def _lr_at(step: int, steps: int, lr: float) -> float:
    t = step / max(1, steps)
    ramp_down = min(1.0, (1.0 - t) / 0.25)
    ramp_up = min(1.0, t / 0.05)
    return lr * ramp_up * 0.5 * (1 - math.cos(math.pi * ramp_down)) if t < 1 else 0.0


def _conditions(run: Run, class_label: int | None, prompt: str | None, restarts: int):
    """Per-start class labels ``(n,)`` or text conditions ``(n, E)`` (or both None): ``restarts``
    starts, times the number of classes for a class-conditional run without ``class_label``."""
    if isinstance(run, TextToImageRun):
        if not prompt:
            raise UserError(
                f"the run in {run.path} is text-to-image: give the caption with --prompt TEXT"
            )
        return None, run.conditions([prompt]).expand(restarts, -1)
    if prompt:
        raise UserError(f"--prompt applies to text-to-image runs; the run in {run.path} is not one")
    if not run.num_classes:
        if class_label is not None:
            raise UserError(f"--class given, but the run in {run.path} is not class-conditional")
        return None, None
    if class_label is not None:
        if not 0 <= class_label < run.num_classes:
            raise UserError(f"--class must be in 0..{run.num_classes - 1}, got {class_label}")
        return torch.full((restarts,), class_label, dtype=torch.int64, device=run.device), None
    return torch.arange(run.num_classes, device=run.device).repeat_interleave(restarts), None


def check_target(run: Run, target: torch.Tensor) -> torch.Tensor:
    """``target`` as float32 in [-1, 1]; one not of the run's ``(C, S, S)`` is a :class:`UserError`."""
    c, s = int(run.manifest.get("channels", 3)), run.config.data.image_size
    if target.ndim != 3 or tuple(target.shape) != (c, s, s):
        raise UserError(
            f"the target must be a ({c}, {s}, {s}) image for this run, got {tuple(target.shape)}"
        )
    if not torch.isfinite(target).all():
        raise UserError("the target image has non-finite values")
    return target.float().clamp(-1, 1)


def project(
    run: Run,
    target: torch.Tensor,
    *,
    steps: int = 300,
    restarts: int = 4,
    lr: float = 0.1,
    class_label: int | None = None,
    prompt: str | None = None,
    feature_weight: float = 1.0,
    pixel_weight: float = 1.0,
    feature_loss: FeatureLoss | None | str = "auto",
    seed: int = 0,
    snapshots: int = 8,
    random_samples: int = 64,
) -> Projection:
    """Find the latent whose image best reproduces ``target`` (float ``(C, H, W)`` in [-1, 1] at
    the run's image size and channels); see the module docstring for the loss and the prior."""
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be from 1 to {MAX_STEPS}, got {steps}")
    if not 1 <= restarts <= MAX_RESTARTS:
        raise UserError(f"--restarts must be from 1 to {MAX_RESTARTS}, got {restarts}")
    run.generator.eval().requires_grad_(False)
    with torch.no_grad():
        target = check_target(run, target).to(run.device)
    floss = feature_loss_for(run) if feature_loss == "auto" else feature_loss
    labels, cond = _conditions(run, class_label, prompt, restarts)
    n = restarts if labels is None else len(labels)
    gen = torch.Generator().manual_seed(seed)
    z = _renormalise(torch.randn(n, run.z_dim, generator=gen)).to(run.device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999))
    x = target[None]
    with torch.no_grad():
        f_target = floss(x) if floss is not None else None
        f_norm2 = f_target.pow(2).sum().clamp_min(1e-12) if f_target is not None else None

    def losses(images: torch.Tensor) -> torch.Tensor:  # (n,)
        diff = images - x
        loss = pixel_weight * (diff.pow(2).mean(dim=(1, 2, 3)) + diff.abs().mean(dim=(1, 2, 3)))
        if floss is not None:
            loss = loss + feature_weight * (floss(images) - f_target).pow(2).sum(1) / f_norm2
        return loss

    marks = sorted({round(i * steps / max(1, snapshots - 1)) for i in range(snapshots)})
    shots, history = [], []
    for step in range(steps + 1):
        images = _generate(run, z, labels, cond)
        per = losses(images)
        if step in marks:
            shots.append(images.detach().cpu())
            history.append(per.detach().cpu())
        if step == steps:
            break
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        per.sum().backward()
        opt.step()
        with torch.no_grad():
            z.copy_(_renormalise(z))
    best = int(torch.argmin(history[-1]))
    z_best = z.detach()[best].cpu()
    label = None if labels is None else int(labels[best])
    image = shots[-1][best]
    with torch.no_grad():
        feature_error = random_error = None
        if floss is not None:
            feature_error = _relative_feature_error(floss, image[None].to(run.device), f_target)[0]
            rz = torch.randn(random_samples, run.z_dim, generator=gen).to(run.device)
            r_labels = (
                None if label is None else torch.full((random_samples,), label, device=run.device)
            )
            r_cond = None if cond is None else cond[:1].expand(random_samples, -1)
            randoms = _generate(run, rz, r_labels, r_cond)
            random_error = float(_relative_feature_error(floss, randoms, f_target).median())
            feature_error = float(feature_error)
    return Projection(
        z_best,
        label,
        prompt,
        image,
        torch.stack([s[best] for s in shots]),
        marks,
        [float(h[best]) for h in history],
        feature_error,
        random_error,
        float((image - target.cpu()).pow(2).mean()),
        None if floss is None else floss.name,
        restarts,
        steps,
    )


def _relative_feature_error(
    floss: FeatureLoss, images: torch.Tensor, f_target: torch.Tensor
) -> torch.Tensor:
    """``||f(images) - f(x)|| / ||f(x)||`` per image ``(B,)``."""
    return (floss(images) - f_target).norm(dim=1) / f_target.norm().clamp_min(1e-12)


# ------------------------------------------------------------------ latent files


def save_latent(
    path: str | Path,
    run: Run,
    z: torch.Tensor,
    class_label: int | None = None,
    prompt: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write latents ``z`` ``(N, z_dim)`` or ``(z_dim,)`` as safetensors (tensor ``z``) with
    metadata: kind, z_dim, the run and its step, the class and the prompt they go with."""
    z = z.detach().float().cpu().reshape(-1, run.z_dim).contiguous()
    meta = {
        "kind": LATENT_KIND,
        "z_dim": str(run.z_dim),
        "run": str(run.path),
        "step": str(run.step),
        "class": "" if class_label is None else str(int(class_label)),
        "prompt": prompt or "",
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    save_file({"z": z}, str(path), metadata=meta)
    return path


@dataclass
class Latent:
    z: torch.Tensor  # (N, z_dim)
    class_label: int | None
    prompt: str | None
    meta: dict


def load_latent(path: str | Path, z_dim: int | None = None) -> Latent:
    """Read a file written by :func:`save_latent`; a file of another kind or of latents of another
    width than ``z_dim`` is a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latent file not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a latent file ({str(exc).splitlines()[0][:120]})") from None
    z = tensors.get("z")
    if meta.get("kind") != LATENT_KIND or z is None or z.ndim != 2 or not torch.isfinite(z).all():
        raise UserError(f"{path} is not a ganfuse latent file (written by ganfuse project)")
    if z_dim is not None and z.shape[1] != z_dim:
        raise UserError(
            f"{path} holds {z.shape[1]}-d latents; this run's generator takes {z_dim}-d ones"
        )
    label = meta.get("class", "")
    return Latent(
        z.float(),
        int(label) if label.lstrip("-").isdigit() else None,
        meta.get("prompt") or None,
        meta,
    )


def walk_between(a: torch.Tensor, b: torch.Tensor, frames: int) -> torch.Tensor:
    """``(frames, z_dim)`` latents from ``a`` to ``b`` and back on slerp arcs (a looping walk
    between two projected latents); ``frames >= 2``."""
    if frames < 2:
        raise UserError(f"a latent walk needs at least 2 frames, got {frames}")
    there = frames // 2 + 1
    forward = slerp(a, b, torch.linspace(0.0, 1.0, there))
    back = forward.flip(0)[1 : frames - there + 1]
    return torch.cat([forward, back])
