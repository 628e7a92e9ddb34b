"""How well an image shows a text, read by a trained multimodal run: the judge that reranks a
text-to-image generator's candidates (``ganfuse generate --rerank``, :mod:`ganfuse.generate`).

    from ganfuse.multimodal.scoring import load_scorer
    scorer = load_scorer("runs/scenes-matching")     # or a zeroshot run
    scores = scorer(images, ["a red circle to the left of a blue star", ...])   # (N,), higher = better

- a fusion run with a ``match`` head (``matching``, ``scenes-matching``, matching on your own
  pairs): the log-probability it gives "the text describes the image". A matching model trained
  with binding swaps and relation reversals as negatives tells "a red circle left of a blue star"
  from "a blue circle left of a red star" and from the circle right of the star;
- a ``zeroshot`` run: the cosine similarity of the image's and the text's embeddings (the CLIP
  reranking of DALL-E, Ramesh et al. 2021). A pooled embedding reads which objects are there far
  better than how they are bound or placed.

Images are float ``(N, C, H, W)`` in [-1, 1] at any size; they are resized to the run's own
image size (area averaging to shrink, bilinear to grow), as its training images were rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ganfuse.errors import CheckpointError, ConfigError
from ganfuse.multimodal.checkpoint import read_run

SCORE_BATCH = 256  # images scored at once


class ImageTextScorer:
    """``scorer(images, texts) -> (N,)`` float scores on CPU, one per image and its text."""

    def __init__(self, run_dir: Path | str):
        record = read_run(Path(run_dir))
        self.path, self.kind, self.world = record.path, record.kind, record.config.world
        self.image_size = record.config.image_size
        # the models are built from this one reading of the checkpoint (its hashes checked once)
        if record.kind == "zeroshot":
            from ganfuse.multimodal.zeroshot import dual_encoder_of

            self.model = dual_encoder_of(record)
            self.measure = "cosine similarity"
        elif record.kind == "fusion" and "match" in record.meta.get("task_sizes", {}):
            from ganfuse.multimodal.train import fusion_model_of

            self.model = fusion_model_of(record)
            self.measure = "log P(match)"
        else:
            task = record.config.task if record.kind == "fusion" else record.kind
            raise CheckpointError(
                f"{record.path} is a {task} run; a reranker needs a run that scores an image against a "
                "text: a matching run (ganfuse fuse train --task scenes-matching, or --task matching on "
                "your own pairs) or a zeroshot run"
            )

    def check_world(self, data_name: str) -> None:
        """A judge trained on another world reads images it has never seen: refused."""
        if self.world != data_name:
            raise ConfigError(
                f"the reranker {self.path} was trained on {self.world!r}, the generator on {data_name!r}; "
                f"train a matching or zeroshot run on {data_name!r}"
            )

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-1]
        if size == self.image_size:
            return images
        mode = "area" if size > self.image_size else "bilinear"
        return F.interpolate(images, size=(self.image_size, self.image_size), mode=mode)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if images.ndim != 4 or images.shape[0] != len(texts):
            raise ValueError(f"one text per image: got images {tuple(images.shape)} and {len(texts)} texts")
        scores = []
        for start in range(0, len(texts), SCORE_BATCH):
            x = self._resize(images[start : start + SCORE_BATCH].float())
            t = texts[start : start + SCORE_BATCH]
            if self.kind == "zeroshot":
                scores.append((self.model.encode_image(x) * self.model.encode_text(t)).sum(-1))
            else:
                logits = self.model({"image": x, "text": t})["match"]
                scores.append(logits.float().log_softmax(-1)[:, 1])
        return torch.cat(scores).cpu() if scores else torch.zeros(0)


def load_scorer(run_dir: Path | str) -> ImageTextScorer:
    """The scorer of a matching fusion run or a zeroshot run (a :class:`CheckpointError` for others)."""
    return ImageTextScorer(run_dir)
