"""Text-to-image generation from a trained run: prompts in, images out.

    from ganfuse.run import load_run
    from ganfuse.generate import generate

    run = load_run("runs/shapes-t2i")                   # a ganfuse.run.TextToImageRun
    images = generate(run, ["a large red circle in the center", "a small blue disc"], n=4, seed=0)
    images.shape                                          # (8, 3, 32, 32), prompt-major, [-1, 1]
    same = run.sample(4, seed=0, prompts=["a large red circle in the center"])  # == images[:4]

Latents are drawn on the CPU from ``seed``, prompt by prompt, so a prompt's images do not depend on
the batch size, the device or the prompts after it. Each distinct prompt is encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ganfuse.errors import UserError
from ganfuse.run import Run, TextToImageRun


def generate(run: Run, prompts: Sequence[str], n: int = 1, seed: int = 0, batch_size: int = 256,
             truncation: float | None = None) -> torch.Tensor:
    """``n`` images for each prompt from a text-to-image run: ``(n * len(prompts), 3, H, W)`` in
    [-1, 1], the images of prompt 0 first. Deterministic for ``seed``."""
    if not isinstance(run, TextToImageRun):
        raise UserError(f"the run in {run.path} is not text-to-image (model.arch={run.config.model.arch}); "
                        "use ganfuse sample for it")
    return run.sample(n, seed=seed, batch_size=batch_size, truncation=truncation, prompts=prompts)


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
