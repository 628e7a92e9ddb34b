"""Answers of a trained multimodal run for one image (and one text): what ``ganfuse fuse predict``
and ``ganfuse caption`` print.

- a fusion run answers its task: ``match`` yes/no for matching, the answer word for VQA, the
  attribute value for an attribute head, each with its softmax probability;
- a ``zeroshot`` run gives the image-text cosine similarity and, on ``shapes``, the best
  colour-shape class (``shapes`` only);
- a ``caption`` run writes a caption.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.images import UnreadableImage, read_image
from ganfuse.data.shapes import ATTRIBUTE_VALUES, COLOR_SHAPE_CLASSES
from ganfuse.errors import ConfigError, DataError
from ganfuse.multimodal.captioning import load_captioner
from ganfuse.multimodal.checkpoint import read_run
from ganfuse.multimodal.scene_questions import ANSWERS as SCENE_ANSWERS
from ganfuse.multimodal.train import load_fusion_run
from ganfuse.multimodal.vqa import ANSWERS
from ganfuse.multimodal.zeroshot import class_embeddings, load_dual_encoder, prompt_templates

LABELS: dict[str, tuple[str, ...]] = {"match": ("no", "yes"), "answer": ANSWERS, **ATTRIBUTE_VALUES}


def load_image(
    path: Path | str, image_size: int, background: str = "white", fit: str = "crop"
) -> torch.Tensor:
    """One image file as ``(1, 3, S, S)`` float in [-1, 1] (centre crop or pad with
    ``background``, resize), read as the run's images were; a missing or unreadable file is a
    :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"image file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a file; give the path of one image")
    try:
        array = read_image(path, image_size, 3, background=background, fit=fit)
    except UnreadableImage as exc:
        raise DataError(
            f"{path} is not a readable image ({exc}); give a PNG, JPEG, WebP or BMP file"
        ) from None
    return uint8_to_float(torch.from_numpy(array))[None]


def check_text(text: str | None) -> str:
    if text is None or not text.strip():
        raise ConfigError(
            "the text is empty; give the caption or question to pair with the image (--text)"
        )
    return text.strip()


@torch.no_grad()
def predict(run_dir: Path | str, image_path: Path | str, text: str | None = None) -> dict:
    """The run's answer for one image and text, as a JSON-ready dict with ``kind`` and ``lines``
    (human-readable, one per answer)."""
    record = read_run(Path(run_dir))
    config = record.config
    image = load_image(image_path, config.image_size, config.background, config.fit)
    if record.kind == "caption":
        caption = load_captioner(record.path).caption(image)[0]
        return {"kind": "caption", "caption": caption, "lines": [caption]}
    text = check_text(text)
    if record.kind == "zeroshot":
        model = load_dual_encoder(record.path)
        image_emb = model.encode_image(image)
        similarity = float(image_emb[0] @ model.encode_text([text])[0])
        if record.config.world != "shapes":  # no classes: a scene holds several objects,
            # and the user's pairs and the emoji have no colour-shape classes
            lines = [f"similarity: {similarity:.3f}"]
            return {"kind": "zeroshot", "similarity": similarity, "lines": lines}
        classes = class_embeddings(model.encode_text, COLOR_SHAPE_CLASSES, prompt_templates())
        probs = (model.scale() * image_emb @ classes.t()).softmax(-1)[0]
        best = int(probs.argmax())
        name = " ".join(COLOR_SHAPE_CLASSES[best])
        return {
            "kind": "zeroshot",
            "similarity": similarity,
            "class": name,
            "class_probability": float(probs[best]),
            "lines": [f"similarity: {similarity:.3f}", f"class: {name} ({float(probs[best]):.3f})"],
        }
    model, _, _ = load_fusion_run(record.path)
    logits = model({"image": image, "text": [text]})
    labels = {**LABELS, "answer": SCENE_ANSWERS} if record.config.world == "scenes" else LABELS
    answers, lines = {}, []
    for head, values in logits.items():
        probs = values.float().softmax(-1)[0]
        best = int(probs.argmax())
        answers[head] = {"answer": labels[head][best], "probability": float(probs[best])}
        lines.append(f"{head}: {labels[head][best]} ({float(probs[best]):.3f})")
    return {"kind": "fusion", "task": record.config.task, "answers": answers, "lines": lines}
