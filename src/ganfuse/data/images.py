"""Reading image files safely: bounded size, known formats, corrupt files reported instead of raised.

Image files come from users and the internet, so the reader treats them as hostile:

- only the decoders for PNG, JPEG (with its multi-picture variant MPO), WebP and BMP run, whatever
  the file is named: Pillow would otherwise pick a decoder from the content, including EPS, which
  hands the file to Ghostscript;
- the pixel count is checked from the header before anything is decoded, so a decompression bomb
  costs a few bytes of memory, not gigabytes. A JPEG is decoded at 1/2, 1/4 or 1/8 of its size
  when that still covers the output (libjpeg's DCT scaling, Pillow's ``draft``), so a 6000x4000
  photo costs the memory of 750x500 pixels; other formats are decoded whole and must stay within
  :data:`MAX_PIXELS`;
- every decoder failure, whatever its exception type, becomes :class:`UnreadableImage` (with a
  short ``reason`` for counting: ``too large``, ``not an image``, ``corrupt``), which callers
  count and skip;
- 16-bit and 32-bit greyscale images are scaled to 8 bits (Pillow's ``convert("L")`` clips them,
  which turns a 16-bit PNG into a white square);
- transparent images (RGBA, LA, PA, and P/L/RGB with a transparent colour) are composited on a
  background colour (white unless asked otherwise) after resizing, with premultiplied alpha, so
  the colour under fully transparent pixels never shows;
- a non-square image is centre-cropped to a square (``fit="crop"``, the default: no borders for
  the discriminator to learn) or padded with the background colour (``fit="pad"``: nothing cut).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # JPEG includes its multi-picture variant (MPO)
# The most pixels a fully decoded image may have: 2**25 = 33.5 Mpx (6000x4000 and 8192x4096 fit;
# 128 MiB as RGBA). A decompression bomb (a tiny file claiming a huge picture) is refused from
# its header.
MAX_PIXELS = 2**25
# The most pixels a JPEG header may claim (8192x8192); it is decoded at a reduced scale, and the
# reduced picture must still fit in MAX_PIXELS. Below Pillow's own bomb warning (89 Mpx).
MAX_JPEG_PIXELS = 2**26
# the fewest usable images a training folder may hold: with one, every batch is that image, the
# discriminator's "another image" (mismatched pairs, minibatch statistics) does not exist, and
# the run learns nothing or diverges; the folder readers refuse fewer up front
MIN_TRAINING_IMAGES = 2
FITS = ("crop", "pad")
WHITE = (255, 255, 255)
_WIDE_GREY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnreadableImage(Exception):
    """A file that is not a decodable image within the limits; ``reason`` is a short label for
    counting (``too large``, ``not an image``, ``corrupt``, ``empty file``)."""

    def __init__(self, message: str, reason: str = "corrupt"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header said: its size in pixels, Pillow mode, format, whether it has
    transparency, and ``scale``, the JPEG reduction used to decode it (1: full size)."""

    width: int
    height: int
    mode: str
    format: str
    transparent: bool
    scale: int = 1


def parse_colour(value: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """``(r, g, b)`` of a colour name (``white``, ``black``, ``grey``, any CSS name), ``#rrggbb``
    or ``rgb(r, g, b)``; a :class:`ValueError` saying what is accepted otherwise."""
    if isinstance(value, tuple):
        return value
    try:
        rgb = ImageColor.getrgb(str(value).strip())
    except ValueError:
        rgb = (-1,)
    if not all(0 <= c <= 255 for c in rgb):
        raise ValueError(
            f"{value!r} is not a colour: use a name (white, black, grey, ...), '#rrggbb' or "
            "'rgb(r, g, b)' with components 0 to 255"
        )
    return rgb[0], rgb[1], rgb[2]


def _to_8bit(img: Image.Image) -> Image.Image:
    """``img`` in a mode whose ``convert`` to L/RGB keeps its brightness: 16/32-bit greyscale is
    scaled from 0..65535 to 0..255 (rounded) in Pillow's 32-bit integer mode, 4 bytes a pixel."""
    top = _WIDE_GREY.get(img.mode)
    if top is None:
        return img
    wide = img if img.mode == "I" else img.convert("I")
    return wide.point(lambda v: v * (255.0 / top) + 0.5).convert("L")


def _is_transparent(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or (
        img.mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    )


def _square(img: Image.Image, size: int, fit: str, fill: tuple) -> Image.Image:
    """``img`` as a ``size`` square: the centred square resized (crop), or the whole image resized
    to fit and centred on ``fill`` (pad). Large reductions go through ``reduce`` first."""
    width, height = img.size
    if fit == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = img.crop((left, top, left + side, top + side))  # no filter reads past the crop
        return square.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new(img.mode, (size, size), fill)
    canvas.paste(
        img.resize(inner, Image.BICUBIC, reducing_gap=3.0),
        ((size - inner[0]) // 2, (size - inner[1]) // 2),
    )
    return canvas


def read_image_info(
    path: str | os.PathLike | io.BytesIO,
    size: int,
    channels: int,
    background: str | tuple[int, int, int] = WHITE,
    fit: str = "crop",
) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` and return ``uint8 (channels, size, size)`` and what its header said.

    ``channels`` is 1 (greyscale, ITU-R 601 luma) or 3 (RGB). ``background`` (a colour, see
    :func:`parse_colour`) fills transparent pixels and, with ``fit="pad"``, the borders.
    Raises :class:`UnreadableImage` for truncated, corrupt, zero-byte, oversized files or formats
    other than :data:`IMAGE_FORMATS`.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    rgb = parse_colour(background)
    if isinstance(path, (str, os.PathLike)):
        try:
            empty = os.stat(path).st_size == 0
        except OSError as exc:
            raise UnreadableImage(exc.strerror or str(exc), "corrupt") from None
        if empty:
            raise UnreadableImage("the file is empty (0 bytes)", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                array, info = _decode(img, size, channels, rgb, fit)
    except UnreadableImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UnreadableImage(str(exc), "too large") from None
    except MemoryError:
        raise UnreadableImage("not enough memory to decode it", "too large") from None
    except UnidentifiedImageError:
        raise UnreadableImage(
            f"not a {', '.join(IMAGE_FORMATS)} image (whatever its name says)", "not an image"
        ) from None
    # Decoders for untrusted bytes raise whatever their parser hits (OSError, ValueError,
    # SyntaxError, struct.error, IndexError, ...): each one means this file cannot be used.
    except Exception as exc:
        raise UnreadableImage(str(exc) or exc.__class__.__name__, "corrupt") from None
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array), info


def _decode(
    img: Image.Image, size: int, channels: int, rgb: tuple[int, int, int], fit: str
) -> tuple[np.ndarray, ImageInfo]:
    width, height = img.size
    jpeg = img.format in ("JPEG", "MPO")
    limit = MAX_JPEG_PIXELS if jpeg else MAX_PIXELS
    if width < 1 or height < 1:
        raise UnreadableImage(f"{width}x{height} pixels: an image needs at least one", "corrupt")
    if width * height > limit:
        raise UnreadableImage(
            f"{width}x{height} pixels is over the {limit} pixel limit for {img.format}", "too large"
        )
    fmt, mode, transparent = img.format, img.mode, _is_transparent(img)
    scale = 1
    if jpeg and min(width, height) >= 2 * size:
        img.draft(None, (size, size))  # decode at 1/2, 1/4 or 1/8 scale, still >= size
        scale = max(1, width // img.size[0])
    if img.size[0] * img.size[1] > MAX_PIXELS:
        raise UnreadableImage(
            f"{width}x{height} pixels is over the {MAX_PIXELS} pixel limit", "too large"
        )
    info = ImageInfo(width, height, mode, str(fmt), transparent, scale)
    img = _to_8bit(img)
    if transparent:
        work, fill = img.convert("RGBA"), (0, 0, 0, 0)
    elif img.mode == "RGB":
        work, fill = img, rgb
    elif img.mode in ("L", "1"):
        work = img.convert("L") if img.mode == "1" else img
        fill = round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
    else:  # P, CMYK, YCbCr, ...
        work, fill = img.convert("RGB"), rgb
    small = _square(work, size, fit, fill)
    if small.mode == "RGBA":
        small = Image.alpha_composite(Image.new("RGBA", small.size, (*rgb, 255)), small)
    return np.asarray(small.convert("L" if channels == 1 else "RGB"), dtype=np.uint8), info


def read_image(
    path: str | os.PathLike | io.BytesIO,
    size: int,
    channels: int,
    background: str | tuple[int, int, int] = WHITE,
    fit: str = "crop",
) -> np.ndarray:
    """Decode ``path`` and return ``uint8 (channels, size, size)``: a square (centre-cropped, or
    padded with ``background`` when ``fit="pad"``), resized, transparency composited on
    ``background``. See :func:`read_image_info`.

    Raises :class:`UnreadableImage` for truncated, corrupt, zero-byte, oversized files or formats
    other than :data:`IMAGE_FORMATS`.
    """
    return read_image_info(path, size, channels, background, fit)[0]


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
