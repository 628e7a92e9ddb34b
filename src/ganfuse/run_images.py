"""Images from a loaded run for people to look at: grids, latent interpolations, class and prompt
grids, and PNG encoding. Used by the HTML report, the web app and the demo, so it sits in the runs
layer below all three.

``run`` is a :class:`ganfuse.run.Run` (or anything with ``z_dim``, ``num_classes``, ``generator``
and ``sample``). A text-to-image run is asked through ``run.sample(n, seed=..., prompts=[...])``;
its latent interpolation needs ``run.from_latents(z, prompts=[...])`` (the hook a text-conditional
Run provides), since such a generator takes a sentence embedding instead of a class label.
"""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganfuse.data.base import to_uint8
from ganfuse.errors import UserError

DEFAULT_PROMPTS = (
    "a large red circle in the center",
    "a small blue triangle in the top left",
    "a large green square in the bottom right",
    "a small yellow circle in the top right",
)


def rgb_pixels(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` float in [-1, 1] (C = 1 or 3) -> ``(N, H, W, 3)`` uint8, grey repeated to
    RGB: the layout PIL and the web app show."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) images, got shape {tuple(images.shape)}")
    x = to_uint8(images.detach().cpu())
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def grid_image(images: torch.Tensor, ncol: int, scale: int = 2, padding: int = 2) -> Image.Image:
    """Images ``(N, C, H, W)`` in [-1, 1] tiled row by row, ``ncol`` per row, on a grey background,
    each upscaled ``scale`` times with nearest neighbours so 32-pixel images stay crisp."""
    pixels = rgb_pixels(images)
    n, h, w, _ = pixels.shape
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    canvas = np.full(
        (nrow * (h + padding) + padding, ncol * (w + padding) + padding, 3), 96, np.uint8
    )
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        canvas[top : top + h, left : left + w] = pixels[i]
    image = Image.fromarray(canvas)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` ``(D,)`` at fractions ``t`` ``(T,)``
    -> ``(T, D)``. Gaussian latents live near a sphere, so a straight line would pass through
    unlikely, low-norm points in its middle; slerp stays on typical norms."""
    a64, b64 = a.double(), b.double()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    t = t.double()[:, None]
    if float(omega) < 1e-6:  # (nearly) parallel: the linear path is the arc
        out = (1 - t) * a64 + t * b64
    else:
        out = (torch.sin((1 - t) * omega) * a64 + torch.sin(t * omega) * b64) / torch.sin(omega)
    return out.to(a.dtype)


def interpolation_latents(
    z_dim: int, steps: int, seed: int, truncation: float | None = None
) -> torch.Tensor:
    """``(steps, z_dim)`` latents on the arc between two latents drawn from ``seed``."""
    if steps < 2:
        raise UserError(f"an interpolation needs at least 2 steps, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    ends = torch.randn(2, z_dim, generator=gen)
    z = slerp(ends[0], ends[1], torch.linspace(0.0, 1.0, steps))
    return z.clamp(-truncation, truncation) if truncation is not None else z


@torch.no_grad()
def from_latents(
    run, z: torch.Tensor, class_label: int | None = None, prompt: str | None = None
) -> torch.Tensor:
    """Images ``(N, C, H, W)`` in [-1, 1] for latents ``z`` ``(N, z_dim)``: one class for
    class-conditional runs (0 when not given), one prompt for text-to-image runs."""
    if prompt is not None:
        hook = getattr(run, "from_latents", None)
        if hook is None:
            raise UserError(
                "this text-to-image run cannot generate from given latents (no Run.from_latents)"
            )
        return hook(z, prompts=[prompt] * len(z)).float().cpu()
    device = next(run.generator.parameters()).device
    labels = None
    if run.num_classes:
        label = 0 if class_label is None else class_label
        if not 0 <= label < run.num_classes:
            raise UserError(f"class must be in 0..{run.num_classes - 1}, got {label}")
        labels = torch.full((len(z),), label, dtype=torch.int64, device=device)
    return run.generator(z.to(device), labels).float().cpu()


def interpolation_strip(
    run,
    steps: int = 8,
    seed: int = 0,
    class_label: int | None = None,
    prompt: str | None = None,
    truncation: float | None = None,
) -> torch.Tensor:
    """``(steps, C, H, W)``: the images along a latent interpolation."""
    z = interpolation_latents(run.z_dim, steps, seed, truncation)
    return from_latents(run, z, class_label, prompt)


def walk_latents(
    z_dim: int, frames: int, seed: int, keyframes: int = 4, psi: float | None = None
) -> torch.Tensor:
    """``(frames, z_dim)`` latents of a looping latent walk: ``keyframes`` latents drawn from
    ``seed``, joined by slerp arcs, the last arc returning to the first so an animation loops
    without a jump. ``psi`` pulls every latent towards the mean (see ``ganfuse.run.truncate_psi``)."""
    if frames < 2:
        raise UserError(f"a latent walk needs at least 2 frames, got {frames}")
    if keyframes < 2:
        raise UserError(f"a latent walk needs at least 2 keyframes, got {keyframes}")
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(keyframes, z_dim, generator=gen)
    # frame i sits at position i * keyframes / frames along the closed loop of arcs
    position = torch.arange(frames, dtype=torch.float64) * keyframes / frames
    arc, frac = position.floor().long(), position - position.floor()
    z = torch.stack(
        [
            slerp(keys[a], keys[(a + 1) % keyframes], f.reshape(1))[0]
            for a, f in zip(arc, frac, strict=True)
        ]
    )
    return z if psi is None else z * psi


ANIMATION_SUFFIXES = (".gif", ".mp4")


def mp4_writer_available() -> bool:
    """Whether MP4 can be written: imageio with its ffmpeg plugin (``pip install imageio-ffmpeg``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg"))


def write_animation(images: torch.Tensor, path, fps: float = 12.0, scale: int = 4) -> int:
    """Write frames ``(T, C, H, W)`` in [-1, 1] as a looping GIF (Pillow) or an MP4 (imageio-ffmpeg,
    when installed), each frame upscaled ``scale`` times; returns the number of frames written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise UserError(
            f"an animation is written as {' or '.join(ANIMATION_SUFFIXES)}, not {path.name}"
        )
    frames = [grid_image(images[i : i + 1], 1, scale=scale, padding=0) for i in range(len(images))]
    if suffix == ".gif":
        # Pillow stores a frame identical to the one before as a longer display of that one
        frames[0].save(
            path,
            save_all=True,
            append_images=frames[1:],
            duration=round(1000 / fps),
            loop=0,
            optimize=False,
        )
        return len(frames)
    if not mp4_writer_available():
        raise UserError(
            f"no MP4 writer installed for {path.name} (pip install imageio imageio-ffmpeg); "
            "write a .gif instead"
        )
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame))
    return len(frames)


def class_grid(
    run, per_class: int = 8, seed: int = 0, truncation: float | None = None
) -> torch.Tensor:
    """``(K * per_class, C, H, W)``: row k holds ``per_class`` samples of class k, the same seed
    (so the same latents) for every class, which shows what the label alone changes."""
    if not run.num_classes:
        raise UserError("a class grid needs a class-conditional run")
    rows = [
        run.sample(per_class, seed=seed, class_label=k, truncation=truncation)
        for k in range(run.num_classes)
    ]
    return torch.cat(rows)


def prompt_grid(
    run, prompts: tuple[str, ...] | list[str], per_prompt: int = 8, seed: int = 0
) -> torch.Tensor:
    """``(len(prompts) * per_prompt, C, H, W)``: one row of samples per prompt (text-to-image runs)."""
    rows = [run.sample(per_prompt, seed=seed, prompts=[p] * per_prompt) for p in prompts]
    return torch.cat(rows)
