"""Text-to-image generation from a trained run: prompts in, images out.

    from ganfuse.run import load_run
    from ganfuse.generate import generate

    run = load_run("runs/shapes-t2i")                   # a ganfuse.run.TextToImageRun
    images = generate(run, ["a large red circle in the center", "a small blue disc"], n=4, seed=0)
    images.shape                                          # (8, 3, 32, 32), prompt-major, [-1, 1]
    same = run.sample(4, seed=0, prompts=["a large red circle in the center"])  # == images[:4]

Latents are drawn on the CPU from ``seed``, prompt by prompt, so a prompt's images do not depend on
the batch size, the device or the prompts after it. Each distinct prompt is encoded once.

Reranking (``ganfuse generate --rerank JUDGE --candidates K``): every image is the best of K
candidates drawn for it, as a trained multimodal run reads them (:mod:`ganfuse.multimodal.scoring`:
a matching run's "the text describes the image", or a zeroshot run's similarity), as DALL-E
reranks its samples with CLIP. Each image still has its own K latents, so the images of one prompt
stay as different as their candidates are; generation costs K times the generator plus the judge.

    from ganfuse.multimodal.scoring import load_scorer
    best = RerankedRun(run, load_scorer("runs/scenes-matching"), candidates=8)
    images = best.sample(4, seed=0, prompts=["a red circle to the left of a blue star"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from ganfuse.errors import UserError
from ganfuse.inputs import MAX_IMAGES, check_count
from ganfuse.run import Run, TextToImageRun


class RerankedRun:
    """A text-to-image run whose every image is the best of ``candidates`` drawn for it, by
    ``scorer(images, texts) -> (N,) scores`` (higher is better; an
    :class:`~ganfuse.multimodal.scoring.ImageTextScorer`). ``sample`` and ``sample_batches`` take
    the run's arguments; everything else (``config``, ``step``, ``path``) is the run's. With one
    candidate the images are exactly the run's own."""

    def __init__(self, run: TextToImageRun, scorer: Callable[[torch.Tensor, list[str]], torch.Tensor],
                 candidates: int = 8):
        if not isinstance(run, TextToImageRun):
            raise UserError(f"the run in {run.path} is not text-to-image: there are no prompts to rerank by")
        self.run, self.scorer = run, scorer
        self.candidates = check_count("candidates", candidates, MAX_IMAGES)
        check_world = getattr(scorer, "check_world", None)
        if check_world is not None:
            check_world(run.config.data.name)

    def __getattr__(self, name: str):
        return getattr(self.run, name)

    @torch.no_grad()
    def sample_batches(self, n: int, batch_size: int = 256, seed: int = 0, class_label: int | None = None,
                       truncation: float | None = None, prompts: Sequence[str] | None = None, *,
                       psi: float | None = None) -> Iterator[torch.Tensor]:
        """``n`` images per prompt (prompt-major), each the best of its candidates: the run's
        ``n * candidates`` images per prompt, taken ``candidates`` at a time."""
        k = self.candidates
        n = check_count("the number of images per prompt", n, MAX_IMAGES)
        texts = list(prompts) if prompts is not None else []
        if prompts is not None and n * k * len(texts) > MAX_IMAGES:
            raise UserError(f"{n} images for each of {len(texts)} prompts with {k} candidates each is "
                            f"{n * k * len(texts)} images to draw; at most {MAX_IMAGES} per call")
        per_batch = max(1, batch_size // k) * k  # whole groups of candidates in every batch
        done = 0
        for batch in self.run.sample_batches(n * k, per_batch, seed, class_label, truncation, prompts, psi=psi):
            m = batch.shape[0] // k
            group_texts = [texts[(done + j) // (n * k)] for j in range(batch.shape[0])]
            done += batch.shape[0]
            best = self.scorer(batch, group_texts).view(m, k).argmax(1)
            yield batch.view(m, k, *batch.shape[1:])[torch.arange(m), best]

    def sample(self, n: int, seed: int = 0, class_label: int | None = None, batch_size: int = 256,
               truncation: float | None = None, prompts: Sequence[str] | None = None, *,
               psi: float | None = None) -> torch.Tensor:
        """``n`` images per prompt, float ``(n * len(prompts), 3, H, W)`` in [-1, 1], prompt-major."""
        return torch.cat(list(self.sample_batches(n, batch_size, seed, class_label, truncation, prompts, psi=psi)))


def generate(run: Run | RerankedRun, prompts: Sequence[str], n: int = 1, seed: int = 0, batch_size: int = 256,
             truncation: float | None = None) -> torch.Tensor:
    """``n`` images for each prompt from a text-to-image run (or a :class:`RerankedRun`):
    ``(n * len(prompts), 3, H, W)`` in [-1, 1], the images of prompt 0 first. Deterministic for
    ``seed``."""
    if not isinstance(run, TextToImageRun | RerankedRun):
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
