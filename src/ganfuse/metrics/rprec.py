"""R-precision: does an image-text model rank an image's own prompt above 99 others?

As text-to-image papers report it (AttnGAN's R-precision with R = 1): for each image, its prompt
and ``num_distractors`` other prompts are scored by cosine similarity in a contrastive model's
space; the image scores a hit when its own prompt ranks first. The result is the share of hits,
so chance is ``1 / (num_distractors + 1)``.

A pure function of the images, the prompts and an embedder; loading a trained model (a ``zeroshot``
run) is the caller's job (:func:`ganfuse.multimodal.zeroshot.load_dual_encoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from ganfuse.data.shapes import parse_caption
from ganfuse.metrics.inputs import MetricInputError


class ImageTextEmbedder(Protocol):
    """What R-precision needs of a model: normalised embeddings of images and of texts."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


@torch.no_grad()
def r_precision(
    images: torch.Tensor,
    prompts: Sequence[str],
    model: ImageTextEmbedder,
    num_distractors: int = 99,
    seed: int = 0,
    distractor_pool: Sequence[str] | None = None,
    batch_size: int = 500,
) -> float:
    """Share of ``images`` ``(N, 3, S, S)`` in [-1, 1] whose prompt ``prompts[i]`` outscores
    ``num_distractors`` prompts drawn (with ``seed``) from ``distractor_pool`` (default: the other
    prompts). A distractor never says the same thing as the true prompt: the same text, or, for
    ``shapes`` captions, the same attributes. ``model``: a dual encoder (anything with
    ``encode_image`` and ``encode_text`` returning normalised embeddings).
    """
    if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
        raise MetricInputError(
            f"R-precision needs a model with encode_image and encode_text, got {type(model).__name__}"
            " (load a zeroshot run with ganfuse.multimodal.zeroshot.load_dual_encoder)"
        )
    prompts = list(prompts)
    if len(prompts) != len(images):
        raise MetricInputError(f"{len(images)} images but {len(prompts)} prompts")
    pool = list(dict.fromkeys(prompts if distractor_pool is None else distractor_pool))
    if hasattr(model, "eval"):
        model.eval()
    texts = list(dict.fromkeys(prompts + pool))
    position = {t: i for i, t in enumerate(texts)}
    text_emb = torch.cat(
        [model.encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    )
    image_emb = torch.cat(
        [model.encode_image(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    rng = np.random.default_rng(seed)
    pool_index = np.array([position[t] for t in pool])
    # Each text's meaning as an id: equal ids say the same thing; -1 for a text that does not parse.
    meanings: dict = {}
    meaning = np.array(
        [
            -1 if (m := parse_caption(t)) is None else meanings.setdefault(m, len(meanings))
            for t in texts
        ]
    )
    pool_meaning = meaning[pool_index]
    chosen = np.empty((len(prompts), num_distractors), dtype=np.int64)
    own = np.array([position[p] for p in prompts])
    for i in range(len(prompts)):
        allowed = pool_index != own[i]
        if meaning[own[i]] >= 0:
            allowed &= pool_meaning != meaning[own[i]]
        candidates = np.nonzero(allowed)[0]
        if not len(candidates):
            raise MetricInputError(f"no distractor prompt differs from prompt {prompts[i]!r}")
        replace = len(candidates) < num_distractors
        chosen[i] = pool_index[rng.choice(candidates, size=num_distractors, replace=replace)]
    true_score = (image_emb * text_emb[torch.from_numpy(own)]).sum(-1)
    hits = 0
    for start in range(0, len(prompts), batch_size):
        block = torch.from_numpy(chosen[start : start + batch_size])
        scores = torch.einsum("ne,nke->nk", image_emb[start : start + batch_size], text_emb[block])
        hits += int((true_score[start : start + batch_size] > scores.amax(dim=1)).sum())
    return hits / len(prompts)
