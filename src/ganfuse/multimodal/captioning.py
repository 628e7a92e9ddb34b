"""Training and scoring the image-to-text caption decoder on ``shapes`` or ``scenes``.

``world=scenes`` runs train a kind-conditioned decoder that attends over the image's patch tokens
and are scored on ``test`` and ``heldout`` by the exact scene judge: see
:mod:`ganfuse.multimodal.scene_captioning`. Scores of a ``shapes`` run on test images:

- ``bleu``: corpus BLEU (sacrebleu, default tokenisation) of the greedy captions against eight
  references per image, one per caption template with synonyms drawn at a fixed seed; a
  caption is free to pick any template, so every template has a reference;
- ``exact_match``: share of captions that :func:`~ganfuse.data.shapes.parse_caption` reads back
  to exactly the image's four attributes (unparseable counts as wrong), plus each attribute's
  own accuracy.

On ``folder`` (the user's pairs) and ``emoji`` the vocabulary is the training captions' tokens
and the scores (:func:`pair_caption_scores`) are BLEU against every caption of the image and
the share of captions that repeat one of them exactly, on up to ``eval_size`` training images
(``train_``) and on the held-out ones (``heldout_``); a saved run also holds a few held-out
images with their generated captions (``RUN/caption_examples/``).

:func:`cycle_accuracy` closes the loop with a text-to-image generator: caption(generate(prompt))
should state the prompt's attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganfuse.data.base import uint8_to_float
from ganfuse.data.images import write_image_records
from ganfuse.data.scenes import ScenesDataset
from ganfuse.data.shapes import (
    ShapeAttributes,
    ShapesDataset,
    caption_templates,
    make_caption,
    parse_caption,
)
from ganfuse.models.captioner import Captioner, CaptionVocab
from ganfuse.multimodal.checkpoint import (
    RunResult,
    count_parameters,
    load_weights,
    prepare_run_folder,
    read_run,
    save_run,
)
from ganfuse.multimodal.config import PAIR_WORLDS, FuseConfig
from ganfuse.multimodal.folder_world import PairsData, train_eval_rows, training_texts
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import build_image_encoder
from ganfuse.multimodal.negatives import ATTRIBUTE_FIELDS
from ganfuse.multimodal.scene_captioning import (
    encode_targets,
    scene_caption_metrics,
    scene_caption_vocab,
    training_caption,
)
from ganfuse.multimodal.semi_captioning import ImageSource, UnpairedCaptionTerms, caption_split
from ganfuse.multimodal.splits import config_split
from ganfuse.multimodal.train import frozen_image_features, init_image_encoder

REFERENCE_SEED = 2024


def reference_captions(
    attributes: Sequence[ShapeAttributes], seed: int = REFERENCE_SEED
) -> list[list[str]]:
    """sacrebleu's layout: one list per template, each with one reference per image."""
    rng = np.random.default_rng(seed)
    return [
        [make_caption(a, rng, template=t) for a in attributes]
        for t in range(len(caption_templates()))
    ]


def attribute_scores(
    captions: Sequence[str], attributes: Sequence[ShapeAttributes]
) -> dict[str, float]:
    """``exact_match``, ``parse_rate`` and ``{field}_accuracy`` of captions against the truth."""
    parsed = [parse_caption(c) for c in captions]
    n = max(1, len(captions))
    scores = {
        "exact_match": sum(p == a for p, a in zip(parsed, attributes, strict=True)) / n,
        "parse_rate": sum(p is not None for p in parsed) / n,
    }
    for field in ATTRIBUTE_FIELDS:
        scores[f"{field}_accuracy"] = (
            sum(
                p is not None and getattr(p, field) == getattr(a, field)
                for p, a in zip(parsed, attributes, strict=True)
            )
            / n
        )
    return scores


@torch.no_grad()
def caption_images(
    model: Captioner, images: torch.Tensor, batch_size: int = 500, kind: str | None = None
) -> list[str]:
    """Greedy captions of ``(N, 3, S, S)`` images in [-1, 1] (of ``kind`` for a kind-conditioned
    captioner, default its own)."""
    was_training = model.training
    model.eval()
    options = {} if kind is None else {"kind": kind}
    captions = [
        c
        for i in range(0, len(images), batch_size)
        for c in model.caption(images[i : i + batch_size], **options)
    ]
    model.train(was_training)
    return captions


def evaluate_captioner(model: Captioner, data: ShapesDataset) -> dict[str, float]:
    import sacrebleu

    captions = caption_images(model, data.float_images())
    scores = attribute_scores(captions, data.attributes)
    scores["bleu"] = float(
        sacrebleu.corpus_bleu(captions, reference_captions(data.attributes)).score
    )
    return scores


def cycle_accuracy(
    generate: Callable[[list[str]], torch.Tensor],
    captioner: Captioner,
    prompts: Sequence[str],
) -> dict[str, float]:
    """Attribute scores of ``caption(generate(prompts))`` against ``parse_caption(prompt)``.

    ``generate`` maps prompts to images ``(N, 3, S, S)`` in [-1, 1] (a text-to-image run's
    generator); every prompt must parse as a ``shapes`` caption.
    """
    truth = [parse_caption(p) for p in prompts]
    if any(t is None for t in truth):
        raise ValueError("every cycle-check prompt must be a parseable shapes caption")
    return attribute_scores(caption_images(captioner, generate(list(prompts))), truth)


def evaluate_scene_captioner(model: Captioner, config: FuseConfig) -> dict[str, float]:
    """Scores of a ``scenes`` captioner on ``test`` (no prefix) and ``heldout`` (``heldout_``),
    headline and per kind: :func:`~ganfuse.multimodal.scene_captioning.scene_caption_metrics`."""
    splits = {name: config_split(config, name) for name in ("test", "heldout")}
    kinds = model.kinds or ("list",)
    return scene_caption_metrics(
        lambda images, kind: caption_images(model, images, kind=kind), splits, kinds
    )


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def pair_caption_scores(
    captions: Sequence[str], data: PairsData, prefix: str
) -> dict[str, float]:
    """``{prefix}_bleu`` (corpus BLEU, sacrebleu's default tokenisation, every caption of an
    image a reference), ``{prefix}_exact_match`` (share of generated captions equal to one of the
    image's, ignoring case and spacing) and ``{prefix}_distinct`` (share of distinct generated
    captions: 1/N when the decoder says the same thing of every image)."""
    import sacrebleu

    most = max(len(texts) for texts in data.captions)
    references = [
        [texts[r] if r < len(texts) else None for texts in data.captions] for r in range(most)
    ]
    exact = [
        _normalised(c) in {_normalised(t) for t in texts}
        for c, texts in zip(captions, data.captions, strict=True)
    ]
    return {
        f"{prefix}_bleu": float(sacrebleu.corpus_bleu(list(captions), references).score),
        f"{prefix}_exact_match": sum(exact) / max(1, len(exact)),
        f"{prefix}_distinct": len(set(captions)) / max(1, len(captions)),
    }


def pair_splits(config: FuseConfig) -> dict[str, PairsData]:
    """The scored splits of ``folder``/``emoji``: up to ``eval_size`` training images and the
    held-out ones."""
    train = config_split(config, "train")
    rows = train_eval_rows(len(train), config.eval_size, config.data_seed)
    return {"train": train.subset(rows), "heldout": config_split(config, "heldout")}


def evaluate_pair_captioner(model: Captioner, config: FuseConfig) -> dict[str, float]:
    """:func:`pair_caption_scores` on the training and the held-out images."""
    metrics: dict[str, float] = {}
    for name, data in pair_splits(config).items():
        captions = caption_images(model, data.float_images())
        metrics.update(pair_caption_scores(captions, data, name))
    return metrics


def write_caption_examples(model: Captioner, config: FuseConfig, out: Path, num: int = 8) -> int:
    """The first ``num`` held-out images as PNGs in ``out`` with ``examples.jsonl`` (each image's
    name, generated caption and reference captions); returns how many."""
    data = config_split(config, "heldout")
    data = data.subset(range(min(num, len(data))))
    captions = caption_images(model, data.float_images())
    records = [
        {"name": name, "generated": caption, "references": texts}
        for name, caption, texts in zip(data.names, captions, data.captions, strict=True)
    ]
    return write_image_records(
        out, "examples.jsonl", data.images.permute(0, 2, 3, 1).numpy(), records
    )


def evaluate_caption_run(model: Captioner, config: FuseConfig) -> dict[str, float]:
    """The test scores of a captioner of any world (what training reports)."""
    if config.world in PAIR_WORLDS:
        return evaluate_pair_captioner(model, config)
    if config.world == "scenes":
        return evaluate_scene_captioner(model, config)
    return evaluate_captioner(model, config_split(config, "test"))


def caption_attention(config: FuseConfig) -> bool:
    """``caption_attention``, where unset on for ``scenes`` and off for ``shapes``."""
    if config.caption_attention is None:
        return config.world == "scenes"
    return config.caption_attention


SCENES_MAX_LENGTH = 48  # tokens; a full four-object list caption has about 26
PAIRS_MAX_LENGTH = 48  # tokens of a generated caption on folder/emoji (user captions vary)


def build_captioner(config: FuseConfig, vocab: CaptionVocab) -> Captioner:
    return Captioner(
        build_image_encoder(config),
        vocab,
        config.decoder_embed,
        config.decoder_hidden,
        attention=caption_attention(config),
        max_length=caption_max_length(config),
    )


def caption_max_length(config: FuseConfig) -> int:
    """The longest caption the decoder writes, in tokens, per world."""
    if config.world == "scenes":
        return SCENES_MAX_LENGTH
    return PAIRS_MAX_LENGTH if config.world in PAIR_WORLDS else 32


class _ShapesTargets:
    """Fresh random captions of ``shapes`` training images (no kind tokens)."""

    def __init__(self, train, rng: np.random.Generator):
        self.train, self.rng = train, rng
        self.vocab = CaptionVocab.from_texts(train.captions)

    def encode(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vocab.encode([make_caption(self.train.attributes[i], self.rng) for i in index])


class _PairsTargets:
    """One caption of each ``folder``/``emoji`` training image, drawn among its captions; the
    vocabulary is every token of the training captions."""

    def __init__(self, train: PairsData, rng: np.random.Generator):
        self.train, self.rng = train, rng
        self.vocab = CaptionVocab.from_texts(training_texts(train))

    def encode(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        captions = self.train.captions
        return self.vocab.encode(
            [captions[i][int(self.rng.integers(len(captions[i])))] for i in index]
        )


class _ScenesTargets:
    """Fresh captions of ``scenes`` training images, each of a kind drawn uniformly from
    ``config.caption_kinds`` and started by that kind's token."""

    def __init__(self, train: ScenesDataset, rng: np.random.Generator, config: FuseConfig):
        self.train, self.rng = train, rng
        self.kinds, self.order = list(config.caption_kinds), config.caption_order
        self.vocab = scene_caption_vocab(train.graphs, train.captions, self.kinds)

    def encode(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        kinds = [self.kinds[k] for k in self.rng.integers(len(self.kinds), size=len(index))]
        texts = [
            training_caption(self.train.graphs[i], kind, self.rng, self.order)
            for i, kind in zip(index, kinds, strict=True)
        ]
        return encode_targets(self.vocab, texts, kinds)


@uses_config_threads
def train_captioner(
    config: FuseConfig,
    out: Path | str | None = None,
    progress: bool = True,
    image_source: ImageSource | None = None,
) -> RunResult:
    """Teacher-forced training on fresh random captions of ``train`` images; scored on ``test``
    (and, on ``scenes``, ``heldout``) by :func:`evaluate_caption_run`.

    With ``paired_fraction < 1`` (``shapes``) only that share of the training images is captioned
    (:func:`~ganfuse.multimodal.semi_captioning.caption_split`); the unpaired terms of
    :class:`~ganfuse.multimodal.semi_captioning.UnpairedCaptionTerms` learn from the rest, through
    ``image_source`` (a text-to-image generator; default: the run ``cycle_run``) where they need one.
    ``image_encoder_init`` starts the image encoder from a ``zeroshot`` run; with
    ``freeze_image_encoder`` only the decoder trains. ``out`` is checked before any work (a run
    already there, or a read-only folder, is refused)."""
    if out is not None:
        prepare_run_folder(Path(out), "caption")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train = config_split(config, "train")
    if config.world in PAIR_WORLDS:
        source = _PairsTargets(train, rng)
    elif config.world == "scenes":
        source = _ScenesTargets(train, rng, config)
    else:
        source = _ShapesTargets(train, rng)
    vocab = source.vocab
    model = build_captioner(config, vocab)
    if config.image_encoder_init:
        init_image_encoder(model.image_encoder, config.image_encoder_init)
    frozen = None
    if config.freeze_image_encoder:
        # A frozen encoder's features are computed once; only the decoder trains.
        model.image_encoder.requires_grad_(False)
        frozen = frozen_image_features(config, "train", model.image_encoder)
    attends = model.decoder.attention is not None
    generator = torch.Generator().manual_seed(config.seed)
    # Partly paired data (multimodal.semi_captioning): only the paired rows' captions are used.
    split = caption_split(len(train), config.paired_fraction, config.data_seed)
    paired = split.paired
    unpaired = (
        UnpairedCaptionTerms(config, train, split, model, image_source)
        if config.paired_fraction < 1.0
        else None
    )

    def compute_loss(step: int) -> torch.Tensor:
        index = paired[torch.randperm(len(paired), generator=generator)[: config.batch_size]]
        inputs, targets = source.encode(index.tolist())
        if frozen is None:
            logits = model(uint8_to_float(train.images[index]), inputs)
        else:
            patches = frozen.tokens[index] if attends else None
            logits = model.decoder(frozen.pooled[index], inputs, patches)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=vocab.pad)
        if unpaired is not None and unpaired.active:
            loss = loss + unpaired.loss(step, model)
        return loss

    model.train()
    if frozen is not None:
        model.image_encoder.eval()
    parameters = [*model.parameters(), *(unpaired.parameters() if unpaired else [])]
    stats = optimise(parameters, compute_loss, config, "caption", progress, out)
    metrics = evaluate_caption_run(model, config)
    result = RunResult(model, metrics, stats.seconds, stats.steps, count_parameters(model), None)
    if out is not None:
        extra = {"unpaired": unpaired.summary()} if unpaired is not None else {}
        record = stats.record(result.params, test=metrics, **extra)
        result.run_dir = save_run(
            Path(out), "caption", model, config, {"vocab": vocab.tokens}, record, step=stats.steps
        )
        if config.world in PAIR_WORLDS:
            write_caption_examples(model, config, Path(out) / "caption_examples")
    return result


def load_captioner(run_dir: Path | str) -> Captioner:
    """The trained captioner of a ``caption`` run, in eval mode."""
    record = read_run(Path(run_dir), kind="caption")
    model = build_captioner(record.config, CaptionVocab(record.meta["vocab"]))
    load_weights(model, record)
    return model.eval()
