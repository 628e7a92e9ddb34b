"""A finished or running GAN run on disk (any family), loaded for sampling without any training
machinery.

    run = ganfuse.load_run("runs/digits")
    images = run.sample(16, seed=0)            # (16, C, H, W) float in [-1, 1]
    digits_7 = run.sample(16, class_label=7)   # class-conditional runs only
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganfuse.config import Config, arch_family, from_dict, validate
from ganfuse.errors import ConfigError, UserError
from ganfuse.inputs import MAX_IMAGES, check_count, check_psi, check_seed, check_truncation
from ganfuse.models.build import build_gan, build_t2i, text_spec_from_config
from ganfuse.text.prompts import PromptEncoder, check_prompts
from ganfuse.train.checkpoint import latest_good_checkpoint
from ganfuse.train.precision import resolve_device


def truncate_psi(z: torch.Tensor, psi: float | None) -> torch.Tensor:
    """The truncation trick with psi: ``z' = mean + psi * (z - mean)`` for latents ``z`` ``(N, z_dim)``.

    The generators here take ``z ~ N(0, I)`` directly (no mapping network), so the mean latent is
    the origin: psi 0 gives every image at ``z = 0`` (the mean image, per class or prompt), psi 1
    the plain sample. ``None`` leaves ``z`` as it is."""
    return z if psi is None else z * psi


@dataclass
class Run:
    path: Path
    config: Config
    step: int
    generator: nn.Module  # EMA weights when the run keeps them, in eval mode
    num_classes: int
    class_names: list[str]
    manifest: dict
    device: torch.device

    @property
    def z_dim(self) -> int:
        return self.config.model.z_dim

    def _labels(self, n: int, class_label: int | None, gen: torch.Generator) -> torch.Tensor | None:
        if class_label is None:
            if not self.num_classes:
                return None
            return torch.randint(0, self.num_classes, (n,), generator=gen).to(self.device)
        if not self.num_classes:
            raise UserError(f"--class given, but the run in {self.path} is not class-conditional")
        if not 0 <= class_label < self.num_classes:
            raise UserError(f"--class must be in 0..{self.num_classes - 1}, got {class_label}")
        return torch.full((n,), class_label, dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def sample_batches(self, n: int, batch_size: int = 256, seed: int = 0, class_label: int | None = None,
                       truncation: float | None = None, *, psi: float | None = None) -> Iterator[torch.Tensor]:
        """Yield ``n`` images in batches of at most ``batch_size``: float ``(b, C, H, W)`` in [-1, 1] on CPU.

        Latents come from a CPU generator seeded with ``seed``, so a seed gives the same images on
        every device and batch size. ``truncation`` clamps latents to ``[-t, t]``; ``psi`` (0 to 1)
        pulls them towards the mean latent (:func:`truncate_psi`).
        """
        n = check_count("the number of images", n, MAX_IMAGES)
        batch_size = check_count("batch_size", batch_size, MAX_IMAGES)
        seed, truncation = check_seed(seed, "seed"), check_truncation(truncation, "truncation")
        psi = check_psi(psi, "psi")
        gen = torch.Generator().manual_seed(seed)
        # All latents are drawn up front (n * z_dim floats: 20 MB for 50k images) so that the
        # images for a seed do not depend on the batch size.
        z_all = truncate_psi(torch.randn(n, self.z_dim, generator=gen), psi)
        if truncation is not None:
            z_all = z_all.clamp(-truncation, truncation)
        labels_all = self._labels(n, class_label, gen)
        for start in range(0, n, batch_size):
            z = z_all[start : start + batch_size].to(self.device)
            labels = None if labels_all is None else labels_all[start : start + batch_size]
            yield self.generator(z, labels).float().cpu()

    def sample(self, n: int, seed: int = 0, class_label: int | None = None, batch_size: int = 256,
               truncation: float | None = None, *, psi: float | None = None) -> torch.Tensor:
        """``n`` images, float ``(n, C, H, W)`` in [-1, 1]."""
        return torch.cat(list(self.sample_batches(n, batch_size, seed, class_label, truncation, psi=psi)))


@dataclass
class TextToImageRun(Run):
    """A text-to-image run: ``sample(n, seed=..., prompts=[...])`` gives ``n`` images per prompt."""

    prompt_encoder: PromptEncoder

    def conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        """The condition tensor of ``prompts`` on the run's device (each distinct prompt encoded
        once): ``(P, E)`` float or ``(P, T)`` int64."""
        prompts = check_prompts(prompts)
        unique = list(dict.fromkeys(prompts))
        table = self.prompt_encoder(unique)
        row = {p: i for i, p in enumerate(unique)}
        return table[[row[p] for p in prompts]].to(self.device)

    @torch.no_grad()
    def sample_batches(self, n: int, batch_size: int = 256, seed: int = 0, class_label: int | None = None,
                       truncation: float | None = None,
                       prompts: Sequence[str] | None = None, *, psi: float | None = None) -> Iterator[torch.Tensor]:
        """Yield ``n`` images per prompt (prompt-major) in batches of at most ``batch_size``:
        float ``(b, 3, H, W)`` in [-1, 1] on CPU. ``psi`` as in :meth:`Run.sample_batches`."""
        if class_label is not None:
            raise UserError(f"the run in {self.path} is text-to-image: give prompts, not a class")
        if prompts is None:
            raise UserError(
                f"the run in {self.path} is text-to-image and needs prompts: "
                f"ganfuse generate {self.path} --prompt 'a large red circle in the center' --num 8 --out DIR"
            )
        n = check_count("the number of images per prompt", n, MAX_IMAGES)
        batch_size = check_count("batch_size", batch_size, MAX_IMAGES)
        seed, truncation = check_seed(seed, "seed"), check_truncation(truncation, "truncation")
        psi = check_psi(psi, "psi")
        cond = self.conditions(prompts)
        total = n * cond.shape[0]
        if total > MAX_IMAGES:
            raise UserError(f"{total} images requested ({n} for each of {cond.shape[0]} prompts); "
                            f"generate at most {MAX_IMAGES} per call")
        gen = torch.Generator().manual_seed(seed)
        # one draw per prompt, all up front: a prompt's latents depend on neither the batch size
        # nor the prompts after it (a single draw would not keep prefixes: randn fills in chunks)
        z_all = torch.cat([torch.randn(n, self.z_dim, generator=gen) for _ in range(cond.shape[0])])
        z_all = truncate_psi(z_all, psi)
        if truncation is not None:
            z_all = z_all.clamp(-truncation, truncation)
        cond = cond.repeat_interleave(n, dim=0)
        for start in range(0, total, batch_size):
            z = z_all[start : start + batch_size].to(self.device)
            yield self.generator(z, cond[start : start + batch_size]).float().cpu()

    @torch.no_grad()
    def from_latents(self, z: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Images for given latents ``z`` ``(N, z_dim)`` and one prompt per row, float
        ``(N, 3, H, W)`` in [-1, 1] on CPU (latent interpolations hold the prompt fixed)."""
        prompts = list(prompts)
        if z.ndim != 2 or z.shape[1] != self.z_dim or z.shape[0] != len(prompts):
            raise UserError(f"from_latents needs z of shape (N, {self.z_dim}) and N prompts; "
                            f"got z {tuple(z.shape)} and {len(prompts)} prompts")
        return self.generator(z.to(self.device), self.conditions(prompts)).float().cpu()

    def sample(self, n: int, seed: int = 0, class_label: int | None = None, batch_size: int = 256,
               truncation: float | None = None, prompts: Sequence[str] | None = None, *,
               psi: float | None = None) -> torch.Tensor:
        """``n`` images per prompt, float ``(n * len(prompts), 3, H, W)`` in [-1, 1], prompt-major."""
        return torch.cat(list(self.sample_batches(n, batch_size, seed, class_label, truncation, prompts,
                                                  psi=psi)))


def text_to_image_run(path: Path, ckpt: Path, config: Config, manifest: dict, weights: dict[str, torch.Tensor],
                      device: torch.device, use_ema: bool = True) -> TextToImageRun:
    """What :func:`load_run` returns for a text-to-image run (weights already verified)."""
    spec = text_spec_from_config(config)
    if spec.kind == "embedding" and spec.embed_dim < 1:
        raise UserError(f"{ckpt}: the config does not record the text embedding width (text.embed_dim)")
    g, _ = build_t2i(config, spec, int(manifest.get("channels", 3)))
    load_generator_weights(g, weights, ckpt, use_ema)
    # channels-last convolutions are about 1.5x faster on CPU for these small feature maps
    g.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format).eval()
    return TextToImageRun(path, config, int(manifest["step"]), g, 0, [], manifest, device, PromptEncoder(spec))


def load_generator_weights(g: nn.Module, weights: dict[str, torch.Tensor], ckpt: Path, use_ema: bool) -> None:
    """Load a checkpoint's generator into ``g``: the EMA weights when asked for and kept, else the
    live ones; weights that do not fit give a :class:`UserError` naming the checkpoint."""
    prefix = "G_ema." if use_ema and any(k.startswith("G_ema.") for k in weights) else "G."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        g.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{ckpt}: weights do not fit the configured generator ({str(exc).splitlines()[0]})") from None


def load_run(path: str | Path, device: str = "cpu", use_ema: bool = True, which: str = "latest") -> Run:
    """Load a GAN run for sampling: its newest intact checkpoint, or with ``which="best"`` the one
    with the best Frechet distance seen during training (``train.eval_every``)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    if which not in ("latest", "best"):
        raise UserError(f"which must be 'latest' or 'best', got {which!r}")
    ckpt, manifest, weights, _ = latest_good_checkpoint(path, "checkpoints" if which == "latest" else "best")
    try:
        config = validate(from_dict(manifest["config"]))
        manifest["channels"], manifest["num_classes"] = int(manifest["channels"]), int(manifest["num_classes"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise UserError(f"{ckpt}: checkpoint metadata is invalid ({exc})") from None
    return LOADERS[arch_family(config.model.arch)](path, ckpt, config, manifest, weights,
                                                   resolve_device(device), use_ema)


def gan_run(path: Path, ckpt: Path, config: Config, manifest: dict, weights: dict[str, torch.Tensor],
            device: torch.device, use_ema: bool = True) -> Run:
    """What :func:`load_run` returns for an unconditional or class-conditional run."""
    channels, num_classes = int(manifest["channels"]), int(manifest["num_classes"])
    g, _ = build_gan(config, channels, num_classes)
    load_generator_weights(g, weights, ckpt, use_ema)
    g.to(device).eval()
    return Run(path, config, int(manifest["step"]), g, num_classes, list(manifest.get("class_names", [])),
               manifest, device)


# how a run of each architecture family (``ganfuse.config.ARCHS``) is loaded for sampling
LOADERS = {"gan": gan_run, "t2i": text_to_image_run}
