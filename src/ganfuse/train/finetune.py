"""Fine-tuning a trained GAN run on a new, small dataset (transfer learning, personalisation).

A fine-tune is an ordinary run of :class:`ganfuse.train.loop.Trainer` whose config says two more
things (``train`` section):

- ``init_from``: a run folder; at step 0 the trainer loads G, D and the EMA generator from that
  run's newest intact checkpoint (:func:`init_from_source`). A resumed fine-tune reads its own
  checkpoints instead, so the source run may be gone by then.
- ``freeze_d``: how many of D's lowest blocks keep their weights (FreezeD, Mo et al. 2020): their
  parameters get no gradient and are left out of D's optimiser (:func:`freeze_lower_blocks`).
  The lowest layers see edges and strokes, which a new dataset of a few images shares with the
  source; training them on 10-100 images only overfits them.

:func:`finetune_config` builds that config from the source run: the source's model (and text)
sections, so the networks match by construction, the new data, and fine-tuning defaults for the
learning rate, the EMA warm-up and adaptive augmentation (see :data:`FINETUNE_DEFAULTS`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ganfuse.config import DATASETS, Config, DataConfig, arch_family, from_dict, validate
from ganfuse.errors import ConfigError, UserError
from ganfuse.models.build import build_gan, build_t2i, text_spec_from_config
from ganfuse.train.checkpoint import latest_good_checkpoint

log = logging.getLogger("ganfuse")

# Children of a discriminator that are not on its image path (heads, text conditioners, embedding
# heads): never counted as blocks, never frozen.
_NOT_BLOCKS = ("head", "text", "image_embed", "text_embed")
# Containers whose children are D's blocks, in order.
_BLOCK_CONTAINERS = ("blocks", "trunk")

LR_SCALE = 0.5  # fine-tuning learning rate = the source's times this
PRIOR_FRACTION = 0.5  # text-to-image fine-tunes: share of prior-preservation pairs (train/prior.py)
EMA_WARMUP_STEPS = 100  # the EMA forgets the first fine-tuning steps quickly (ramp from 0)
ADA_TARGET = 0.6  # ADA's r_t target (Karras et al. 2020)
ADA_KIMG = 2.0  # p moves by 1 over 2000 images: on 10-100 images D overfits within tens of steps


def discriminator_blocks(d: nn.Module) -> list[list[nn.Module]]:
    """D's image-path blocks from the input up, each a list of modules holding parameters.

    The top-level children in definition order (the order every discriminator here applies them),
    with the children of a ``blocks``/``trunk`` container as blocks of their own; heads and text
    conditioners are left out, and a child without a convolution or linear layer (a norm after a
    convolution) joins the block before it. DCGAN: ``conv1``, ``conv2 + norm2``, ``conv3 + norm3``;
    ResNet and the text-to-image ones: the stem and each residual/down block."""
    units: list[nn.Module] = []
    for name, child in d.named_children():
        if name in _NOT_BLOCKS:
            continue
        if name in _BLOCK_CONTAINERS:
            units.extend(child.children())
        else:
            units.append(child)
    blocks: list[list[nn.Module]] = []
    for unit in units:
        if not any(True for _ in unit.parameters()):
            continue
        has_weights = any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in unit.modules())
        if has_weights or not blocks:
            blocks.append([unit])
        else:
            blocks[-1].append(unit)
    return blocks


def default_freeze_d(d: nn.Module) -> int:
    """Half of D's blocks, rounded down, at least 1 (DCGAN: 1 of 3; ResNet at 32 px: 2 of 4)."""
    return max(1, len(discriminator_blocks(d)) // 2)


def freeze_lower_blocks(d: nn.Module, n: int) -> list[nn.Parameter]:
    """Stop gradients to the parameters of D's lowest ``n`` blocks; returns those parameters.

    ``n`` must leave at least one block trainable (the head is never frozen either). Buffers
    (BatchNorm running statistics, spectral-norm vectors) are not parameters and keep updating in
    train mode; D uses batch statistics in training, so the frozen weights define the layer."""
    blocks = discriminator_blocks(d)
    if n < 0 or n >= len(blocks):
        raise ConfigError(
            f"train.freeze_d must be from 0 to {len(blocks) - 1} for this discriminator "
            f"({len(blocks)} blocks), got {n}"
        )
    frozen = [p for block in blocks[:n] for unit in block for p in unit.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def source_checkpoint(source: str | Path) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """The newest intact checkpoint of the run folder ``source``: ``(path, manifest, weights)``."""
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"source run not found: {source}")
    ckpt, manifest, weights, _ = latest_good_checkpoint(source)
    return ckpt, manifest, weights


def source_config(ckpt: Path, manifest: dict) -> Config:
    """The validated config a checkpoint's manifest records (and its channels and classes as ints)."""
    try:
        config = validate(from_dict(manifest["config"]))
        manifest["channels"], manifest["num_classes"] = (
            int(manifest["channels"]),
            int(manifest["num_classes"]),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise UserError(f"{ckpt}: checkpoint metadata is invalid ({exc})") from None
    return config


def init_from_source(trainer) -> None:
    """Load G, D and the EMA generator of ``trainer`` (a fresh :class:`Trainer`) from the run in
    ``trainer.config.train.init_from``; a source whose networks differ from the trainer's (image
    size, channels, classes, architecture) is a one-line :class:`UserError`."""
    source = trainer.config.train.init_from
    ckpt, manifest, weights = source_checkpoint(source)
    saved = source_config(ckpt, manifest)
    cfg = trainer.config
    if saved.data.image_size != cfg.data.image_size:
        raise UserError(
            f"the source run {source} makes {saved.data.image_size}x{saved.data.image_size} images; "
            f"the new data is configured at {cfg.data.image_size} (data.image_size)"
        )
    if manifest["channels"] != trainer.channels:
        raise UserError(
            f"the source run {source} makes {manifest['channels']}-channel images; the new data "
            f"({trainer.dataset.name}) has {trainer.channels} channel(s)"
        )
    if manifest["num_classes"] != trainer.num_classes:
        raise UserError(
            f"the source run {source} is conditioned on {manifest['num_classes']} classes; the new "
            f"data gives {trainer.num_classes} (a class-conditional run needs the same classes)"
        )
    differ = [k for k, v in saved.to_dict()["model"].items() if cfg.to_dict()["model"][k] != v]
    if differ:
        raise UserError(
            f"the source run {source} has another model.{differ[0]} "
            f"({getattr(saved.model, differ[0])!r}, here {getattr(cfg.model, differ[0])!r}); "
            "fine-tune with the source's model section"
        )

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {
            k[len(prefix) :]: v.to(trainer.device)
            for k, v in weights.items()
            if k.startswith(prefix)
        }

    try:
        trainer.G.load_state_dict(part("G."))
        trainer.D.load_state_dict(part("D."))
        if trainer.ema is not None:
            trainer.ema.model.load_state_dict(part("G_ema.") or part("G."))
    except RuntimeError as exc:
        raise UserError(
            f"{ckpt}: the source's weights do not fit the fine-tuned networks "
            f"({str(exc).splitlines()[0][:200]})"
        ) from None
    log.info("fine-tuning from %s (step %s)", ckpt, manifest.get("step"))


def _data_section(data: str, image_size: int) -> DataConfig:
    """``data`` as ``--data`` takes it: a dataset name, or a folder of images (``data.name=folder``)."""
    section = DataConfig(image_size=image_size)
    if data in DATASETS and data != "folder":
        section.name = data
    elif Path(data).is_dir():
        section.name, section.path = "folder", str(data)
    else:
        raise UserError(
            f"--data must be a dataset name ({', '.join(d for d in DATASETS if d != 'folder')}) "
            f"or an image folder; {data!r} is neither"
        )
    return section


def finetune_config(
    source: str | Path,
    data: str,
    freeze_d: int | None = None,
    lr_scale: float = LR_SCALE,
    prior_fraction: float | None = None,
) -> Config:
    """The config of a fine-tune of ``source`` on ``data`` (a dataset name or an image folder).

    Model and text sections are the source's; data is the new dataset at the source's image size;
    train starts from the source's (loss, optimiser betas, batch size, precision, ...) with:
    ``init_from`` = the source, ``freeze_d`` (default :func:`default_freeze_d`), the learning rates
    times ``lr_scale``, an EMA (the source's decay, or 0.99) warmed up over
    :data:`EMA_WARMUP_STEPS` steps, ADA on translation, cutout and colour with target
    :data:`ADA_TARGET`, no wall-clock budget (the source's ``max_minutes`` was for the source) and,
    for a text-to-image source, prior preservation with ``prior_fraction`` (default
    :data:`PRIOR_FRACTION`; :mod:`ganfuse.train.prior`). ``--set`` overrides apply on top
    (``ganfuse finetune``)."""
    if not 0 < lr_scale <= 1:
        raise UserError(f"--lr-scale must be in (0, 1], got {lr_scale:g}")
    ckpt, manifest, _ = source_checkpoint(source)
    config = source_config(ckpt, manifest)
    config.preset = f"finetune:{Path(source).name}"
    config.data = _data_section(data, config.data.image_size)
    t = config.train
    t.init_from = str(source)
    t.lr_g, t.lr_d = t.lr_g * lr_scale, t.lr_d * lr_scale
    t.ema_decay = t.ema_decay or 0.99
    t.ema_warmup_steps = EMA_WARMUP_STEPS
    t.augment, t.ada_target, t.ada_kimg = ["translation", "cutout", "color"], ADA_TARGET, ADA_KIMG
    t.eval_every = 0  # the source's FD reference is for its own data
    t.max_minutes = None
    t2i = arch_family(config.model.arch) == "t2i"
    if prior_fraction is not None and not t2i:
        raise UserError("--prior-fraction is for text-to-image sources; this one is a "
                        f"{config.model.arch} run")
    t.prior_fraction = (PRIOR_FRACTION if prior_fraction is None else prior_fraction) if t2i else 0.0
    if not 0 <= t.prior_fraction < 1:
        raise UserError(f"--prior-fraction must be in [0, 1), got {t.prior_fraction:g}")
    if freeze_d is None:
        if not t2i:
            _, d = build_gan(config, manifest["channels"], manifest["num_classes"])
        else:
            _, d = build_t2i(config, text_spec_from_config(config), manifest["channels"])
        freeze_d = default_freeze_d(d)
    t.freeze_d = freeze_d
    return validate(config)
