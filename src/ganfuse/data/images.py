"""Reading image files safely: bounded size, corrupt files reported instead of raised."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_PIXELS = 4096 * 4096  # refuse anything larger: a decompression bomb would exhaust memory


class UnreadableImage(Exception):
    """A file that is not a decodable image within the limits."""


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode ``path`` and return ``uint8 (channels, size, size)``: centre-cropped square, then resized.

    Raises :class:`UnreadableImage` for truncated, corrupt, zero-byte or oversized files.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS or width < 1 or height < 1:
                    raise UnreadableImage(f"{width}x{height} pixels is over the {MAX_PIXELS} limit")
                img = img.convert("L" if channels == 1 else "RGB")
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                img = img.crop((left, top, left + side, top + side))
                img = img.resize((size, size), Image.BICUBIC)
                array = np.asarray(img, dtype=np.uint8)
    except UnreadableImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(str(exc) or exc.__class__.__name__) from None
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
