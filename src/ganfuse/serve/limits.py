"""The limits of the web app, checked before any work so that a request over them costs nothing
and gets a message that says what to change.

Uploads are also bounded in bytes by Gradio itself (``max_file_size``) before they reach a
handler; :func:`check_upload` repeats that check and adds the pixel size (read from the header,
so an image bomb is refused without decoding it) and the folder the file lies in, so a request
can never make the app read a file that was not uploaded to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ganfuse.errors import UserError


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many requests the server takes on at once."""

    max_prompt_chars: int = 500
    max_images: int = 64
    max_upload_bytes: int = 5 * 1024 * 1024
    max_upload_side: int = 4096
    # the app's upload folder (uploads and the images it sends back), oldest deleted first:
    # twenty uploads of the largest size, ten times what the server computes on at once
    max_upload_folder_bytes: int = 100 * 1024 * 1024
    max_interpolation_steps: int = 16
    concurrency: int = 2  # requests computing at once; the rest wait in the queue
    max_queue: int = 32  # requests waiting; more are refused with "queue is full"


class LimitError(UserError):
    """A request over one of the app's :class:`Limits`; the message is shown to the user."""


NOT_AN_IMAGE = "the upload is not an image this app can read; use PNG, JPEG, WebP or BMP"
UPLOAD_GONE = "the uploaded image is gone from the server; upload it again"


def check_text(text: str | None, limits: Limits, what: str = "prompt") -> str:
    """``text`` stripped; over ``max_prompt_chars`` is a :class:`LimitError`."""
    text = (text or "").strip()
    if len(text) > limits.max_prompt_chars:
        raise LimitError(
            f"the {what} is {len(text)} characters long; the limit is {limits.max_prompt_chars}. Shorten it."
        )
    return text


def is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_upload(path: str | Path | None, limits: Limits, upload_folder: Path | None) -> Path:
    """An uploaded image's path, checked: present, inside ``upload_folder`` (when given), at most
    ``max_upload_bytes`` and ``max_upload_side`` pixels a side, and an image PIL can identify."""
    if path is None or str(path) == "":
        raise LimitError("upload an image first")
    path = Path(path)
    if upload_folder is not None and not is_inside(path, upload_folder):
        raise LimitError("only images uploaded to this app can be analysed")
    if not path.is_file():
        raise LimitError(UPLOAD_GONE)
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise LimitError(
            f"the image is {size / 2**20:.1f} MB; the limit is {limits.max_upload_bytes / 2**20:.0f} MB. Upload a smaller file."
        )
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        raise LimitError(NOT_AN_IMAGE) from None
    if max(width, height) > limits.max_upload_side:
        raise LimitError(
            f"the image is {width}x{height} pixels; the limit is {limits.max_upload_side} a side. Resize it."
        )
    return path
