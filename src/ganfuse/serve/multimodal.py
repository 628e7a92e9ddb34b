"""The "Multimodal" tab's work, free of any web framework: one uploaded image and one text,
answered by every multimodal run given to serve (each loaded once).

- a ``fusion`` run answers its task: ``matching`` gives the match score (probability that the
  text describes the image), ``vqa`` the answer to the text as a question, attribute heads
  their predicted values;
- a ``zeroshot`` run gives the image-text cosine similarity and the colour-shape classes ranked
  by their prompt-ensemble embeddings (zero-shot labels);
- a ``caption`` run writes a caption of the image (the text is not needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ganfuse.data.shapes import COLOR_SHAPE_CLASSES
from ganfuse.errors import DataError
from ganfuse.multimodal.captioning import load_captioner
from ganfuse.multimodal.checkpoint import read_run
from ganfuse.multimodal.predict import LABELS, load_image
from ganfuse.multimodal.train import load_fusion_run
from ganfuse.multimodal.zeroshot import class_embeddings, load_dual_encoder, prompt_templates
from ganfuse.serve.limits import (
    NOT_AN_IMAGE,
    UPLOAD_GONE,
    LimitError,
    Limits,
    check_text,
    check_upload,
)

NO_RUN_MESSAGE = (
    "No multimodal run was given to ganfuse serve, so this tab cannot answer. Start it with a "
    "fusion, zero-shot or caption run, or a benchmark folder, e.g. "
    "`ganfuse serve runs/digits bench/fusion` after `ganfuse fuse benchmark --out bench/fusion`."
)
TOP_LABELS = 5


@dataclass
class MultimodalAnswer:
    """Every answer the loaded runs give; a missing kind of run leaves its field empty and adds a note."""

    match: dict[str, float] = field(default_factory=dict)  # label -> probability, for gr.Label
    answer: str = ""
    labels: dict[str, float] = field(default_factory=dict)  # zero-shot class -> probability
    caption: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Loaded:
    name: str
    kind: str
    image_size: int
    model: torch.nn.Module
    task: str = ""
    class_embeddings: torch.Tensor | None = None
    background: str = "white"  # how the run's own images were read: under transparency, around padding
    fit: str = "crop"

    @property
    def reading(self) -> tuple[int, str, str]:
        """What decoding an upload for this run depends on."""
        return self.image_size, self.background, self.fit


def _load(name: str, path: Path) -> _Loaded:
    record = read_run(path)
    size, reading = record.config.image_size, {"background": record.config.background, "fit": record.config.fit}
    if record.kind == "caption":
        return _Loaded(name, "caption", size, load_captioner(path).eval(), **reading)
    if record.kind == "zeroshot":
        model = load_dual_encoder(path).eval()
        if record.config.world != "shapes":  # the colour-shape labels describe shapes images only
            return _Loaded(name, "zeroshot", size, model, **reading)
        with torch.no_grad():
            classes = class_embeddings(model.encode_text, COLOR_SHAPE_CLASSES, prompt_templates())
        return _Loaded(name, "zeroshot", size, model, class_embeddings=classes, **reading)
    model, config, _ = load_fusion_run(path)
    return _Loaded(name, "fusion", size, model.eval(), task=config.task, **reading)


def _decode_upload(path: Path, image_size: int, background: str = "white", fit: str = "crop") -> torch.Tensor:
    """The checked upload decoded, ``(1, 3, S, S)`` in [-1, 1]; a file that is gone or that only
    looked like an image (a header without its pixels, a format outside PNG/JPEG/WebP/BMP) is a
    :class:`LimitError` whose message names no server path."""
    if not path.is_file():
        raise LimitError(UPLOAD_GONE)
    try:
        return load_image(path, image_size, background, fit)
    except DataError:
        raise LimitError(NOT_AN_IMAGE) from None


class MultimodalService:
    """Loads the multimodal runs ``{name: folder}`` once and answers image + text requests."""

    def __init__(self, runs: dict[str, Path], limits: Limits, upload_folder: Path | None = None):
        self.limits = limits
        self.upload_folder = upload_folder
        self.runs = [_load(name, Path(path)) for name, path in runs.items()]

    @property
    def available(self) -> bool:
        return bool(self.runs)

    def describe(self) -> str:
        if not self.runs:
            return NO_RUN_MESSAGE
        parts = [f"{r.name} ({r.kind}{': ' + r.task if r.task else ''})" for r in self.runs]
        return "Runs answering: " + ", ".join(parts)

    @torch.no_grad()
    def answer(self, image_path: str | Path | None, text: str | None) -> MultimodalAnswer:
        """Check the request against the limits, then ask every run."""
        if not self.runs:
            raise LimitError(NO_RUN_MESSAGE)
        path = check_upload(image_path, self.limits, self.upload_folder)
        text = check_text(text, self.limits, "text")
        out = MultimodalAnswer()
        needs_text = [r for r in self.runs if r.kind != "caption"]
        if needs_text and not text:
            out.notes.append(
                "type a caption or a question to get the match score, answer and similarity"
            )
        images: dict[tuple[int, str, str], torch.Tensor] = {}  # one decoding per way of reading
        for run in self.runs:
            if run.reading not in images:
                images[run.reading] = _decode_upload(path, *run.reading)
            image = images[run.reading]
            if run.kind == "caption":
                out.caption = run.model.caption(image)[0]
            elif run.kind == "zeroshot" and run.class_embeddings is not None:
                emb = run.model.encode_image(image)
                probs = (run.model.scale() * emb @ run.class_embeddings.t()).softmax(-1)[0]
                top = probs.topk(min(TOP_LABELS, len(probs)))
                labels = {
                    " ".join(COLOR_SHAPE_CLASSES[int(i)]): float(p)
                    for p, i in zip(top.values, top.indices, strict=True)
                }
                if (
                    not out.labels
                ):  # the first zero-shot run fills the labels, later ones add a note
                    out.labels = labels
                    out.notes.append(f"zero-shot labels from {run.name}")
                else:
                    best, p = next(iter(labels.items()))
                    out.notes.append(f"{run.name}: zero-shot label {best} ({p:.2f})")
                if text:
                    similarity = float(emb[0] @ run.model.encode_text([text])[0])
                    out.notes.append(f"{run.name}: image-text cosine similarity {similarity:.3f}")
            elif text:
                logits = run.model({"image": image, "text": [text]})
                for head, values in logits.items():
                    probs = values.float().softmax(-1)[0]
                    best = int(probs.argmax())
                    if head == "match":
                        out.match = {"match": float(probs[1]), "no match": float(probs[0])}
                    elif head == "answer":
                        out.answer = f"{LABELS[head][best]} ({float(probs[best]):.2f})"
                    else:
                        out.notes.append(
                            f"{run.name}: {head} = {LABELS[head][best]} ({float(probs[best]):.2f})"
                        )
        kinds = {r.kind for r in self.runs} | {r.task for r in self.runs}
        for kind, what in (
            ("matching", "match score"),
            ("vqa", "answer"),
            ("zeroshot", "zero-shot labels"),
            ("caption", "caption"),
        ):
            if kind not in kinds and not (kind == "matching" and out.match):
                out.notes.append(f"no {kind} run given: no {what}")
        return out
