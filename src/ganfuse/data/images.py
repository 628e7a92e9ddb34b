"""Reading image files safely: bounded size, known formats, corrupt files reported instead of raised.

Image files come from users and the internet, so the reader treats them as hostile:

- only the decoders for PNG, JPEG (with its multi-picture variant MPO), WebP and BMP run, whatever
  the file is named: Pillow would otherwise pick a decoder from the content, including EPS, which
  hands the file to Ghostscript;
- the pixel count is checked from the header before anything is decoded, so a decompression bomb
  costs a few bytes of memory, not gigabytes;
- every decoder failure, whatever its exception type, becomes :class:`UnreadableImage`, which
  callers count and skip;
- 16-bit and 32-bit greyscale images are scaled to 8 bits (Pillow's ``convert("L")`` clips them,
  which turns a 16-bit PNG into a white square).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # JPEG includes its multi-picture variant (MPO)
MAX_PIXELS = 4096 * 4096  # refuse anything larger: a decompression bomb would exhaust memory
# the fewest usable images a training folder may hold: with one, every batch is that image, the
# discriminator's "another image" (mismatched pairs, minibatch statistics) does not exist, and
# the run learns nothing or diverges; the folder readers refuse fewer up front
MIN_TRAINING_IMAGES = 2
_WIDE_GREY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


class UnreadableImage(Exception):
    """A file that is not a decodable image within the limits."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """``img`` in a mode whose ``convert`` to L/RGB keeps its brightness."""
    top = _WIDE_GREY.get(img.mode)
    if top is None:
        return img
    values = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode ``path`` and return ``uint8 (channels, size, size)``: centre-cropped square, then resized.

    Raises :class:`UnreadableImage` for truncated, corrupt, zero-byte, oversized files or formats
    other than :data:`IMAGE_FORMATS`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                width, height = img.size
                if width * height > MAX_PIXELS or width < 1 or height < 1:
                    raise UnreadableImage(f"{width}x{height} pixels is over the {MAX_PIXELS} limit")
                img = _to_8bit(img).convert("L" if channels == 1 else "RGB")
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                img = img.crop((left, top, left + side, top + side))
                img = img.resize((size, size), Image.BICUBIC)
                array = np.asarray(img, dtype=np.uint8)
    except UnreadableImage:
        raise
    except MemoryError:
        raise UnreadableImage("not enough memory to decode it") from None
    # Decoders for untrusted bytes raise whatever their parser hits (OSError, ValueError,
    # SyntaxError, struct.error, IndexError, ...): each one means this file cannot be used.
    except Exception as exc:
        raise UnreadableImage(str(exc) or exc.__class__.__name__) from None
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def list_images(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def write_image_records(out: Path | str, index_name: str, images, records: list[dict]) -> int:
    """Write ``images`` (uint8 ``(N, H, W, C)``) as ``00000.png``... into ``out`` and one JSON line
    per image into ``out/index_name`` (each ``records[i]`` plus its ``file``); returns N. The
    file-name width grows with N so names sort in order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(max(len(records) - 1, 0))))
    with open(out / index_name, "w", encoding="utf-8") as handle:
        for i, (image, record) in enumerate(zip(images, records, strict=True)):
            file = f"{i:0{width}d}.png"
            Image.fromarray(image).save(out / file)
            handle.write(json.dumps({"file": file, **record}) + "\n")
    return len(records)
