"""``emoji``: the 3,664 colour emoji of Noto Color Emoji, with their names, groups and subgroups.

Real artwork with real English names, shipped inside the package, so ``data.name=emoji`` works
offline on a fresh install without the font. ``scripts/render_emoji.py`` built the asset once:

- every emoji of Unicode's ``emoji-test.txt`` (15.0: 3,655 fully-qualified sequences and the 9
  skin-tone and hair components) that the font draws as one colour glyph, drawn by Pillow at the
  font's only bitmap size (``ImageFont.truetype(path, 109)``, ``embedded_color=True``), which
  gives a 136x128 bitmap whose artwork always lies within its central 128x128;
- composited on a **white** background: the artwork is designed for light backgrounds (dark
  outlines, shadows drawn as darker tints), and an RGB training image has no alpha channel, so
  the background has to be chosen once; white is the one every emoji picker shows them on;
- kept at its native 128x128 (a crop, no resampling) and stored losslessly as one PNG per emoji
  in ``assets/emoji_128.zip`` (palette PNGs: all but one emoji hold at most 256 colours; about
  10 MB); ``assets/emoji.jsonl`` holds one record per image (code points, name, group,
  subgroup), ``assets/emoji_source.json`` what it was made from, ``assets/emoji_LICENSE.txt``
  the licence notice (images Apache-2.0, font OFL-1.1).

Sizes 64 and 32 are area averages (2x2 or 4x4 boxes, rounded half up) of the stored 128x128
pixels, computed at load time. Labels: the Unicode group (10 classes) and subgroup (101).
Captions come from the names with light templates (``"red apple"``, ``"an emoji of a red
apple"``, ``"woman technologist: medium skin tone"``, ``"flag: Japan"``).

Held out for zero-shot: every emoji whose *base* (its code points without skin-tone modifiers
and variation selectors) hashes into the lowest 10 % (:func:`is_heldout_base`), so an emoji and
all its skin-tone variants are held out together and no variant of a held-out emoji is trained
on. The choice depends on the base alone, not on which other emoji exist.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, features

from ganfuse.data.base import ImageDataset, uint8_to_float
from ganfuse.data.images import write_image_records
from ganfuse.errors import ConfigError, DataError

ASSET_IMAGES = "emoji_128.zip"
ASSET_RECORDS = "emoji.jsonl"
ASSET_SOURCE = "emoji_source.json"
ASSET_LICENSE = "emoji_LICENSE.txt"
STORED_SIZE = 128
IMAGE_SIZES: tuple[int, ...] = (32, 64, 128)
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
# Debian's fonts-noto-color-emoji; only scripts/render_emoji.py and the round-trip test use it.
FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_PIXELS = 109  # the font's one bitmap strike: 109 px asks Pillow for it
BITMAP_SIZE = (136, 128)  # width, height of every glyph bitmap at that size
ART_BOX = (4, 0, 132, 128)  # the 128x128 part of the bitmap that holds all artwork
BACKGROUND = (255, 255, 255)
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))  # Fitzpatrick modifiers 1-2 .. 6
VARIATION_SELECTORS = frozenset((0xFE0E, 0xFE0F))
HELDOUT_PERCENT = 10
HELDOUT_SALT = "ganfuse-emoji-heldout-v1"
DEFAULT_CAPTION_SEED = 0

# Slot: {name}, or {a_name} (the name with "a"/"an" where it reads as one countable thing).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{name}",
    "an emoji of {a_name}",
    "{name} emoji",
    "a picture of {a_name}",
    "emoji: {name}",
    "{a_name}, drawn as an emoji",
)


@dataclass(frozen=True)
class EmojiRecord:
    """One stored emoji: ``emoji`` the string, ``codepoints`` upper-case hex separated by spaces
    (``"1F9D1 1F3FD 200D 1F4BB"``), ``name`` its CLDR short name, ``group``/``subgroup`` its
    Unicode emoji-test groups, ``file`` its PNG inside the zip."""

    emoji: str
    codepoints: str
    name: str
    group: str
    subgroup: str
    file: str

    @property
    def base(self) -> str:
        """The code points without skin tones and variation selectors: what all variants share."""
        return base_codepoints(self.codepoints)


def base_codepoints(codepoints: str) -> str:
    """``"1F9D1 1F3FD 200D 1F4BB" -> "1F9D1 200D 1F4BB"``: skin-tone modifiers and variation
    selectors removed, so every skin-tone variant of an emoji maps to the same string."""
    kept = [c for c in codepoints.split() if int(c, 16) not in SKIN_TONES | VARIATION_SELECTORS]
    return " ".join(kept) if kept else codepoints  # a lone skin-tone swatch is its own base


def is_heldout_base(base: str) -> bool:
    """Whether an emoji base is held out for zero-shot: the first 8 bytes of
    ``sha256(HELDOUT_SALT + ":" + base)`` modulo 100 below :data:`HELDOUT_PERCENT`."""
    digest = hashlib.sha256(f"{HELDOUT_SALT}:{base}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


def _asset(name: str) -> Path:
    return Path(str(resources.files("ganfuse") / "assets" / name))


def asset_paths() -> dict[str, Path]:
    """The shipped files: ``images``, ``records``, ``source``, ``license``."""
    return {
        "images": _asset(ASSET_IMAGES),
        "records": _asset(ASSET_RECORDS),
        "source": _asset(ASSET_SOURCE),
        "license": _asset(ASSET_LICENSE),
    }


@lru_cache(maxsize=1)
def load_records() -> tuple[EmojiRecord, ...]:
    """Every stored emoji, in the asset's order (emoji-test.txt order)."""
    path = _asset(ASSET_RECORDS)
    if not path.is_file():
        raise DataError(f"the emoji asset is missing: {path} (reinstall ganfuse)")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    fields = EmojiRecord.__dataclass_fields__
    return tuple(EmojiRecord(**{k: row[k] for k in fields}) for row in rows)


def source_info() -> dict[str, object]:
    """What the asset was rendered from (font, its SHA-256 and version, emoji-test version)."""
    return json.loads(_asset(ASSET_SOURCE).read_text(encoding="utf-8"))


def _groups(records: Sequence[EmojiRecord], key: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for record in records:
        seen.setdefault(getattr(record, key), None)
    return tuple(seen)


def group_names() -> tuple[str, ...]:
    """The 10 Unicode emoji groups in emoji-test.txt order; label ``i`` is ``group_names()[i]``."""
    return _groups(load_records(), "group")


def subgroup_names() -> tuple[str, ...]:
    """The 101 subgroups in emoji-test.txt order; label ``i`` is ``subgroup_names()[i]``."""
    return _groups(load_records(), "subgroup")


def decode_png(data: bytes) -> np.ndarray:
    """One stored PNG -> uint8 ``(128, 128, 3)``."""
    with Image.open(io.BytesIO(data), formats=("PNG",)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _read_stored_images() -> np.ndarray:
    """Decode the zip: uint8 ``(N, 3, 128, 128)``."""
    records = load_records()
    path = _asset(ASSET_IMAGES)
    if not path.is_file():
        raise DataError(f"the emoji asset is missing: {path} (reinstall ganfuse)")
    images = np.empty((len(records), 3, STORED_SIZE, STORED_SIZE), dtype=np.uint8)
    with zipfile.ZipFile(path) as archive:
        for i, record in enumerate(records):
            images[i] = decode_png(archive.read(record.file)).transpose(2, 0, 1)
    return images


def area_downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, C, S, S)`` -> uint8 ``(N, C, size, size)``, each output pixel the mean of its
    ``(S/size)^2`` box rounded half up; ``size`` must divide ``S``."""
    side = images.shape[-1]
    if side % size:
        raise ConfigError(f"cannot area-downsample {side} px to {size} px")
    k = side // size
    total = np.full((*images.shape[:2], size, size), k * k // 2, dtype=np.uint16)
    for dy in range(k):  # k*k strided adds: far faster than a sum over reshaped axes
        for dx in range(k):
            total += images[:, :, dy::k, dx::k]
    return (total // (k * k)).astype(np.uint8)


@lru_cache(maxsize=len(IMAGE_SIZES))
def load_images(image_size: int = 64) -> torch.Tensor:
    """Every stored emoji as uint8 ``(N, 3, image_size, image_size)`` (N = 3,664): a tensor
    shared by every caller in the process, so copy it before changing it. The 128x128 set is
    decoded once (a few seconds) and the smaller ones are computed from it."""
    _check_image_size(image_size)
    if image_size == STORED_SIZE:
        return torch.from_numpy(_read_stored_images())
    return torch.from_numpy(area_downsample(load_images(STORED_SIZE).numpy(), image_size))


def _check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ConfigError(f"emoji image_size must be one of {IMAGE_SIZES}, got {image_size}")


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def _with_article(name: str) -> str:
    """``"red apple" -> "a red apple"``, ``"flag: Japan" -> "the flag of Japan"``; names of
    several things ("people hugging", "two hearts") and keycaps stay bare."""
    head, _, detail = name.partition(": ")
    if head == "flag" and detail:
        return f"the flag of {detail}"
    if head == "keycap":
        return name
    words = head.split(" with ")[0].split()
    last = words[-1].lower() if words else ""
    plural = (last.endswith("s") and not last.endswith(("ss", "us", "is", "'s"))) or words[:1] in (
        ["two"],
        ["people"],
        ["family"],
    )
    if plural:
        return name
    article = "an" if name[:1].lower() in "aeio" else "a"
    return f"{article} {name}"


def make_caption(name: str, template: int = 0) -> str:
    """The caption of an emoji named ``name`` with template ``template`` (0 is the bare name)."""
    if not 0 <= template < len(CAPTION_TEMPLATES):
        raise ConfigError(f"emoji caption template must be in 0..{len(CAPTION_TEMPLATES) - 1}")
    return CAPTION_TEMPLATES[template].format(name=name, a_name=_with_article(name))


def caption_templates(names: Sequence[str], seed: int = DEFAULT_CAPTION_SEED) -> np.ndarray:
    """One template index per name ``(N,)``, drawn uniformly from ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, 18])).integers(
        0, len(CAPTION_TEMPLATES), len(names)
    )


# ---------------------------------------------------------------------------------------------
# Rendering (needs the font; only scripts/render_emoji.py and the round-trip test call it)
# ---------------------------------------------------------------------------------------------


def load_font(path: str | Path = FONT_PATH):
    """Noto Color Emoji at its bitmap size, laid out by Raqm (which applies the font's sequence
    ligatures: ZWJ sequences, flags, keycaps, skin tones)."""
    if not Path(path).is_file():
        raise DataError(
            f"emoji font not found: {path} (Debian: apt-get install fonts-noto-color-emoji)"
        )
    if not features.check("raqm"):
        raise DataError("Pillow was built without Raqm; emoji sequences cannot be laid out")
    return ImageFont.truetype(str(path), FONT_PIXELS, layout_engine=ImageFont.Layout.RAQM)


def render_emoji(sequence: str, font) -> np.ndarray:
    """Draw ``sequence`` with ``font`` (:func:`load_font`) on a white background: uint8
    ``(128, 128, 3)``, the artwork at its native resolution, centred as the font places it.

    Raises :class:`DataError` when the font does not draw it as one glyph of the expected size or
    draws artwork outside the 128x128 box that is kept."""
    width = font.getlength(sequence)
    if abs(width - BITMAP_SIZE[0]) > 1:  # an unsupported sequence falls apart into several glyphs
        raise DataError(
            f"the font does not draw {sequence!r} as one glyph (advance {width:.1f} px)"
        )
    layer = Image.new("RGBA", BITMAP_SIZE, (*BACKGROUND, 0))
    ImageDraw.Draw(layer).text((0, 0), sequence, font=font, embedded_color=True)
    alpha = layer.getchannel("A")
    box = alpha.getbbox()
    if box is None:
        raise DataError(f"the font draws nothing for {sequence!r}")
    if box[0] < ART_BOX[0] or box[2] > ART_BOX[2]:
        raise DataError(f"artwork of {sequence!r} extends outside the kept box: {box}")
    white = Image.new("RGBA", BITMAP_SIZE, (*BACKGROUND, 255))
    return np.asarray(Image.alpha_composite(white, layer).convert("RGB").crop(ART_BOX))


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


class EmojiDataset(ImageDataset):
    """The ``emoji`` split held in memory.

    ``split``: ``all`` (3,664 images), ``train`` (held-out bases excluded) or ``heldout``.
    Items are ``(image, group, caption)``: image float ``(3, S, S)`` in [-1, 1], ``group`` the
    Unicode group index (into :attr:`class_names`), caption a string. ``images`` is uint8
    ``(N, 3, S, S)``; ``labels`` maps ``group`` and ``subgroup`` to ``(N,)`` int64; ``names``,
    ``captions``, ``codepoints``, ``emoji`` and ``bases`` are lists of N strings; ``indices``
    ``(N,)`` the rows of the full asset.
    """

    channels = 3
    name = "emoji"

    def __init__(
        self, split: str = "all", image_size: int = 64, caption_seed: int = DEFAULT_CAPTION_SEED
    ):
        if split not in SPLITS:
            raise ConfigError(f"unknown emoji split {split!r}; choose one of {', '.join(SPLITS)}")
        _check_image_size(image_size)
        records = load_records()
        groups, subgroups = group_names(), subgroup_names()
        held = np.array([is_heldout_base(r.base) for r in records])
        keep = {"all": np.ones_like(held), "train": ~held, "heldout": held}[split]
        self.indices = torch.from_numpy(np.flatnonzero(keep))
        rows = [records[i] for i in self.indices.tolist()]
        self.split = split
        self.image_size = image_size
        self.class_names = list(groups)
        self.num_classes = len(groups)
        self.subgroup_names = list(subgroups)
        self.images = load_images(image_size)[self.indices]
        self.labels = {
            "group": torch.tensor([groups.index(r.group) for r in rows], dtype=torch.int64),
            "subgroup": torch.tensor(
                [subgroups.index(r.subgroup) for r in rows], dtype=torch.int64
            ),
        }
        self.names = [r.name for r in rows]
        self.emoji = [r.emoji for r in rows]
        self.codepoints = [r.codepoints for r in rows]
        self.bases = [r.base for r in rows]
        # Templates are drawn over the whole asset, so an emoji's caption is the same in every split.
        templates = caption_templates(records, caption_seed)[self.indices.numpy()]
        self.captions = [
            make_caption(n, int(t)) for n, t in zip(self.names, templates, strict=True)
        ]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        image = uint8_to_float(self.images[index])
        return image, int(self.labels["group"][index]), self.captions[index]

    def float_images(self) -> torch.Tensor:
        """All images ``(N, 3, S, S)`` float32 in [-1, 1]."""
        return uint8_to_float(self.images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch by index: images ``(B, 3, S, S)`` float in [-1, 1], groups ``(B,)``."""
        return uint8_to_float(self.images[indices]), self.labels["group"][indices]


def heldout_names() -> list[str]:
    """Names of the held-out emoji (all skin-tone variants included), in asset order."""
    return [r.name for r in load_records() if is_heldout_base(r.base)]


def export_emoji(num: int, out: Path, seed: int = 0, image_size: int = 64) -> int:
    """Write ``num`` emoji (a ``seed``-shuffled choice of all of them) as PNGs plus
    ``captions.jsonl`` (``file``, ``caption``, ``name``, ``emoji``, ``codepoints``, ``group``,
    ``subgroup``) into ``out``; returns the number written (at most 3,664)."""
    data = EmojiDataset("all", image_size, caption_seed=seed)
    order = np.random.default_rng(seed).permutation(len(data))[:num]
    images = data.images[torch.from_numpy(order)].permute(0, 2, 3, 1).numpy()
    records = [
        {
            "caption": data.captions[i],
            "name": data.names[i],
            "emoji": data.emoji[i],
            "codepoints": data.codepoints[i],
            "group": data.class_names[int(data.labels["group"][i])],
            "subgroup": data.subgroup_names[int(data.labels["subgroup"][i])],
        }
        for i in order.tolist()
    ]
    return write_image_records(out, "captions.jsonl", images, records)
