"""Text-to-image generation from a trained run: prompts in, images out.

    from ganfuse.run import load_run
    from ganfuse.generate import generate

    run = load_run("runs/shapes-t2i")                   # a TextToImageRun for t2i runs
    images = generate(run, ["a large red circle in the center", "a small blue disc"], n=4, seed=0)
    images.shape                                          # (8, 3, 32, 32), prompt-major, [-1, 1]
    same = run.sample(4, seed=0, prompts=["a large red circle in the center"])  # == images[:4]

Latents are drawn on the CPU from ``seed``, prompt by prompt, so a prompt's images do not depend on
the batch size, the device or the prompts after it. Each distinct prompt is encoded once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ganfuse.config import Config
from ganfuse.errors import UserError
from ganfuse.models.t2i import PromptEncoder, build_t2i, check_prompts, text_spec_from_config
from ganfuse.run import Run, load_generator_weights

MAX_IMAGES = 1_000_000  # latents for more are drawn up front: refuse what cannot fit in memory


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
                       prompts: Sequence[str] | None = None) -> Iterator[torch.Tensor]:
        """Yield ``n`` images per prompt (prompt-major) in batches of at most ``batch_size``:
        float ``(b, 3, H, W)`` in [-1, 1] on CPU."""
        if class_label is not None:
            raise UserError(f"the run in {self.path} is text-to-image: give prompts, not a class")
        if prompts is None:
            raise UserError(
                f"the run in {self.path} is text-to-image and needs prompts: "
                f"ganfuse generate {self.path} --prompt 'a large red circle in the center' --num 8 --out DIR"
            )
        if n < 1:
            raise UserError(f"the number of images per prompt must be >= 1, got {n}")
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        cond = self.conditions(prompts)
        total = n * cond.shape[0]
        if total > MAX_IMAGES:
            raise UserError(f"{total} images requested; generate at most {MAX_IMAGES} per call")
        gen = torch.Generator().manual_seed(seed)
        # one draw per prompt, all up front: a prompt's latents depend on neither the batch size
        # nor the prompts after it (a single draw would not keep prefixes: randn fills in chunks)
        z_all = torch.cat([torch.randn(n, self.z_dim, generator=gen) for _ in range(cond.shape[0])])
        if truncation is not None:
            if truncation <= 0:
                raise UserError(f"truncation must be > 0, got {truncation}")
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
               truncation: float | None = None, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """``n`` images per prompt, float ``(n * len(prompts), 3, H, W)`` in [-1, 1], prompt-major."""
        return torch.cat(list(self.sample_batches(n, batch_size, seed, class_label, truncation, prompts)))


def generate(run: Run, prompts: Sequence[str], n: int = 1, seed: int = 0, batch_size: int = 256,
             truncation: float | None = None) -> torch.Tensor:
    """``n`` images for each prompt from a text-to-image run: ``(n * len(prompts), 3, H, W)`` in
    [-1, 1], the images of prompt 0 first. Deterministic for ``seed``."""
    if not isinstance(run, TextToImageRun):
        raise UserError(f"the run in {run.path} is not text-to-image (model.arch={run.config.model.arch}); "
                        "use ganfuse sample for it")
    return run.sample(n, seed=seed, batch_size=batch_size, truncation=truncation, prompts=prompts)


def text_to_image_run(path: Path, ckpt: Path, config: Config, manifest: dict, weights: dict[str, torch.Tensor],
                      device: torch.device, use_ema: bool = True) -> TextToImageRun:
    """What :func:`ganfuse.run.load_run` returns for a ``t2i-*`` run (weights already verified)."""
    spec = text_spec_from_config(config)
    if spec.kind == "embedding" and spec.embed_dim < 1:
        raise UserError(f"{ckpt}: the config does not record the text embedding width (text.embed_dim)")
    g, _ = build_t2i(config, spec, int(manifest.get("channels", 3)))
    load_generator_weights(g, weights, ckpt, use_ema)
    # channels-last convolutions are about 1.5x faster on CPU for these small feature maps
    g.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format).eval()
    return TextToImageRun(path, config, int(manifest["step"]), g, 0, [], manifest, device, PromptEncoder(spec))


def read_prompts_file(path: str | Path) -> list[str]:
    """One prompt per line (UTF-8); blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise UserError(f"prompts file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"prompts file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read prompts file {path}: {exc.strerror or exc}") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise UserError(f"prompts file {path} holds no prompts (one per line)")
    return prompts
