"""Personalising a text-to-image run: new captions bound to a user's few images, old prompts kept.

A text-to-image fine-tune (``ganfuse finetune T2I_RUN --data FOLDER``) trains on the folder's
(image, caption) pairs, e.g. ten pictures captioned "my logo". Two things make that work:

- **Words the source knows.** A run with the small word encoder has a fixed vocabulary (its word
  embedding table has one row per word); a caption with other words would silently read as
  "unknown". :func:`check_caption_words` refuses such captions with one line naming the words.
  A sentence-encoder (MiniLM) run reads any caption.
- **Prior preservation** (DreamBooth, Ruiz et al. 2023, re-implemented for GANs). Trained on "my
  logo" alone, G and D drift and the source's prompts get worse. With ``train.prior_fraction`` f
  > 0, :func:`source_prior` has the *frozen* source EMA generator draw ``train.prior_images``
  images, one per prompt drawn from the source's own training captions; those (image, prompt)
  pairs join the user's pairs as training data (:func:`mix_with_prior`), the user's pairs repeated
  so that a share f of all pairs (and so of each batch, in expectation) is prior pairs. D then keeps
  seeing the old prompts' images as real and G keeps being asked for them, which is DreamBooth's
  prior-preservation term (a loss on the source model's own samples for the old prompts) in the
  form the matching-aware GAN objective takes it: as data.

The prior set is a pure function of the source's newest good checkpoint, ``prior_images`` and the
run's seed, made before training on the training device in fp32: a resumed fine-tune makes the same
set again (so it needs the source run; ``--set train.prior_fraction=0`` continues without it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ganfuse.config import Config
from ganfuse.data.base import to_uint8
from ganfuse.errors import UserError
from ganfuse.models.build import build_t2i, text_spec_from_config
from ganfuse.text.encoders import split_words
from ganfuse.text.prompts import PromptEncoder
from ganfuse.train.finetune import source_checkpoint, source_config

log = logging.getLogger("ganfuse")

PRIOR_SEED_OFFSET = 4099  # the prior set's latents and prompts: a stream of their own
PRIOR_BATCH = 64  # images per generator call when making the prior set


def check_caption_words(captions: Sequence[str], vocab: Sequence[str], source: str) -> None:
    """Refuse captions with words outside a small-encoder source's vocabulary (one line naming
    them); the word embedding table of the source has a row for its words only."""
    known = set(vocab)
    unknown = sorted({w for text in captions for w in split_words(text) if w not in known})
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UserError(
            f"the source run {source} reads captions with a fixed vocabulary of {len(known)} "
            f"words, and these caption words are not among them: {shown}; write the captions "
            "with its words (see text.vocab in its config.yaml) or fine-tune a run with a "
            "sentence encoder (text.encoder=minilm), which reads any caption"
        )


@torch.no_grad()
def source_prior(
    source: str | Path,
    source_prompts: Callable[[Config], list[str]],
    num: int,
    seed: int,
    device: torch.device,
    image_size: int,
) -> tuple[torch.Tensor, list[str]]:
    """The prior set of a fine-tune of ``source``: images uint8 ``(num, 3, S, S)`` made by the
    source's frozen EMA generator (eval mode, fp32, on ``device``) and their prompts (``num``
    strings drawn with replacement from ``source_prompts(source config)``, the source's training
    captions). Latents and prompt choice come from a CPU generator seeded from ``seed``."""
    ckpt, manifest, weights = source_checkpoint(source)
    config = source_config(ckpt, manifest)
    if config.data.image_size != image_size:
        raise UserError(
            f"the source run {source} makes {config.data.image_size}x{config.data.image_size} "
            f"images; the new data is configured at {image_size} (data.image_size)"
        )
    spec = text_spec_from_config(config)
    g, _ = build_t2i(config, spec, int(manifest["channels"]))
    prefix = "G_ema." if any(k.startswith("G_ema.") for k in weights) else "G."
    g.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    g.to(device).eval()
    captions = source_prompts(config)
    gen = torch.Generator().manual_seed(seed + PRIOR_SEED_OFFSET)
    rows = torch.randint(0, len(captions), (num,), generator=gen)
    prompts = [captions[i] for i in rows.tolist()]
    z = torch.randn(num, config.model.z_dim, generator=gen)
    cond = PromptEncoder(spec).encode_many(prompts)
    images = [
        to_uint8(g(z[i : i + PRIOR_BATCH].to(device), cond[i : i + PRIOR_BATCH].to(device)).float()).cpu()
        for i in range(0, num, PRIOR_BATCH)
    ]
    log.info("prior preservation: %d images of the source's prompts from %s (step %s)", num, ckpt,
             manifest.get("step"))
    return torch.cat(images), prompts


def mix_with_prior(
    images: torch.Tensor,
    captions: list[str],
    prior_images: torch.Tensor,
    prior_captions: list[str],
    fraction: float,
) -> tuple[torch.Tensor, list[str]]:
    """The user's pairs (images uint8 ``(N, 3, S, S)``, N captions) repeated ``r`` times, then the
    prior pairs (``(P, 3, S, S)``, P captions): ``r = round(P (1 - f) / (f N))``, at least 1, so the
    prior share ``P / (r N + P)`` is as close to ``fraction`` f as whole repeats allow. The epoch
    sampler then draws that share of every epoch's pairs from the prior."""
    n, p = images.shape[0], prior_images.shape[0]
    repeats = max(1, round(p * (1 - fraction) / (fraction * n)))
    share = p / (repeats * n + p)
    log.info("prior preservation: %d user pairs x %d and %d prior pairs (prior share %.2f)", n, repeats,
             p, share)
    return (torch.cat([images.repeat(repeats, 1, 1, 1), prior_images]),
            captions * repeats + list(prior_captions))

