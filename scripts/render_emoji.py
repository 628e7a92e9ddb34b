"""Render the ``emoji`` dataset asset from Noto Color Emoji (a maintainer tool, run once).

Needs two Debian packages that a ganfuse install does not: ``fonts-noto-color-emoji`` (the
artwork) and ``unicode-data`` (``emoji-test.txt``: every emoji sequence with its CLDR short name,
Unicode group and subgroup; neither Python's ``unicodedata`` nor the ``emoji`` package on PyPI
has the groups, and the names there are the same CLDR names). Pillow must have Raqm, which lays
out the font's sequence ligatures (ZWJ sequences, flags, keycaps, skin tones).

    apt-get install fonts-noto-color-emoji unicode-data
    python scripts/render_emoji.py [--font PATH] [--emoji-test PATH] [--out-dir DIR]
    python scripts/render_emoji.py --grid docs/images/emoji-grid.png   # a look at the asset

Keeps every fully-qualified or component entry of emoji-test.txt that the font draws as one
colour glyph (every code point in its cmap, one glyph's advance after layout, artwork inside the
kept box), renders it with :func:`ganfuse.data.emoji.render_emoji` (white background, native
128x128) and writes, deterministically (same inputs, same bytes):

- ``emoji_128.zip``: one PNG per emoji, stored uncompressed in the zip (PNG is compressed
  already) with a fixed timestamp; a palette PNG with the image's exact colours where it has at
  most 256, else RGB, so every image is lossless;
- ``emoji.jsonl``: ``file``, ``emoji``, ``codepoints``, ``name``, ``group``, ``subgroup``,
  ``version`` (the Emoji version that added it) per image, in emoji-test.txt order;
- ``emoji_source.json``: font file, SHA-256 and version, emoji-test.txt version, counts;
- ``emoji_LICENSE.txt``: the licence notice of the artwork and the font.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image

from ganfuse.data.emoji import (
    ASSET_IMAGES,
    ASSET_LICENSE,
    ASSET_RECORDS,
    ASSET_SOURCE,
    BACKGROUND,
    FONT_PATH,
    asset_paths,
    load_font,
    load_images,
    render_emoji,
)
from ganfuse.errors import DataError

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
KEPT_STATUSES = ("fully-qualified", "component")
# Code points that select or join and need no glyph of their own.
FORMAT_CODEPOINTS = {0x200D, 0xFE0E, 0xFE0F, 0x20E3} | set(range(0xE0020, 0xE0080))
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
LINE = re.compile(
    r"^(?P<cps>[0-9A-F ]+?)\s*;\s*(?P<status>[\w-]+)\s*#\s*\S+\s+E(?P<version>[\d.]+)\s+(?P<name>.+)$"
)

LICENSE_TEXT = """\
The emoji images in emoji_128.zip are rendered from Noto Color Emoji
(font version: {font_version}; Debian package fonts-noto-color-emoji),
https://github.com/googlefonts/noto-emoji

- The emoji artwork (the images) is licensed under the Apache License,
  Version 2.0: https://www.apache.org/licenses/LICENSE-2.0
  (artwork by Google and the noto-emoji contributors). Flag images are in
  the public domain or otherwise exempt from copyright.
- The font is licensed under the SIL Open Font License, Version 1.1:
  https://openfontlicense.org

The images were changed: drawn at the font's bitmap size, composited on a
white background and cropped to 128x128 pixels by scripts/render_emoji.py
of ganfuse.

The names, groups and subgroups in emoji.jsonl come from the Unicode emoji
data file emoji-test.txt ({emoji_test_version}), Copyright Unicode, Inc.,
used under the Unicode License: https://www.unicode.org/license.txt
"""


@dataclass(frozen=True)
class Entry:
    codepoints: str
    status: str
    version: str
    name: str
    group: str
    subgroup: str

    @property
    def emoji(self) -> str:
        return "".join(chr(int(c, 16)) for c in self.codepoints.split())


def parse_emoji_test(path: Path) -> tuple[list[Entry], str]:
    """Every entry of emoji-test.txt with its group and subgroup, and the file's version line."""
    entries, group, subgroup, version = [], "", "", "unknown version"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# Version:"):
            version = "emoji-test.txt " + line.split(":", 1)[1].strip()
        elif line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            match = LINE.match(line)
            if match is None:
                raise DataError(f"{path}: cannot parse line {line!r}")
            entries.append(
                Entry(
                    match["cps"].strip(),
                    match["status"],
                    match["version"],
                    match["name"].strip(),
                    group,
                    subgroup,
                )
            )
    return entries, version


def encode_png(image: np.ndarray) -> bytes:
    """uint8 ``(H, W, 3)`` -> PNG bytes that decode to exactly ``image``: a palette of its own
    colours (sorted) when it has at most 256, else RGB."""
    pixels = image.reshape(-1, 3).astype(np.uint32)
    packed = pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]
    colours, index = np.unique(packed, return_inverse=True)
    if len(colours) <= 256:
        png = Image.fromarray(index.reshape(image.shape[:2]).astype(np.uint8), "P")
        rgb = np.stack([colours >> 16, colours >> 8 & 255, colours & 255], axis=1)
        png.putpalette(rgb.astype(np.uint8).tobytes())
    else:
        png = Image.fromarray(image, "RGB")
    buffer = io.BytesIO()
    png.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def font_version(path: Path) -> str:
    return str(TTFont(str(path), lazy=True)["name"].getDebugName(5))


def font_cmap(path: Path) -> set[int]:
    return set(TTFont(str(path), lazy=True).getBestCmap())


def file_name(codepoints: str) -> str:
    return "-".join(c.lower() for c in codepoints.split()) + ".png"


def write_grid(path: Path, num: int = 64, seed: int = 0, image_size: int = 64) -> None:
    """A square grid of ``num`` emoji of the shipped asset chosen by ``seed``, 2 px apart."""
    images = load_images(image_size).permute(0, 2, 3, 1).numpy()
    chosen = images[np.sort(np.random.default_rng(seed).choice(len(images), num, replace=False))]
    cols = int(np.ceil(np.sqrt(num)))
    rows, cell = -(-num // cols), image_size + 2
    sheet = np.full((rows * cell + 2, cols * cell + 2, 3), 255, dtype=np.uint8)
    for i, image in enumerate(chosen):
        y, x = divmod(i, cols)
        sheet[
            2 + y * cell : 2 + y * cell + image_size, 2 + x * cell : 2 + x * cell + image_size
        ] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--font", type=Path, default=FONT_PATH)
    parser.add_argument("--emoji-test", type=Path, default=EMOJI_TEST)
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="default: the package's assets folder"
    )
    parser.add_argument(
        "--grid", type=Path, default=None, help="only write a grid of 64 random emoji to this PNG"
    )
    args = parser.parse_args()
    if args.grid is not None:
        write_grid(args.grid)
        print(f"wrote {args.grid}")
        return 0
    if not args.emoji_test.is_file():
        print(f"{args.emoji_test} not found (apt-get install unicode-data)", file=sys.stderr)
        return 2
    try:
        font = load_font(args.font)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = args.out_dir or asset_paths()["images"].parent
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    entries, test_version = parse_emoji_test(args.emoji_test)
    cmap = font_cmap(args.font)
    kept, dropped = [], []
    for entry in entries:
        if entry.status not in KEPT_STATUSES:
            continue
        missing = [
            c
            for c in entry.codepoints.split()
            if int(c, 16) not in cmap and int(c, 16) not in FORMAT_CODEPOINTS
        ]
        if missing:
            dropped.append((entry, f"code points {missing} not in the font"))
            continue
        try:
            kept.append((entry, render_emoji(entry.emoji, font)))
        except DataError as exc:
            dropped.append((entry, str(exc)))
    records, sizes, palette = [], 0, 0
    with zipfile.ZipFile(out / ASSET_IMAGES, "w", compression=zipfile.ZIP_STORED) as archive:
        for entry, image in kept:
            data = encode_png(image)
            palette += data[25] == 3  # IHDR colour type 3: indexed
            name = file_name(entry.codepoints)
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
            sizes += len(data)
            records.append(
                {
                    "file": name,
                    "emoji": entry.emoji,
                    "codepoints": entry.codepoints,
                    "name": entry.name,
                    "group": entry.group,
                    "subgroup": entry.subgroup,
                    "version": entry.version,
                }
            )
    with open(out / ASSET_RECORDS, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    version = font_version(args.font)
    source = {
        "font": args.font.name,
        "font_sha256": hashlib.sha256(args.font.read_bytes()).hexdigest(),
        "font_version": version,
        "emoji_test": test_version,
        "statuses": list(KEPT_STATUSES),
        "images": len(records),
        "palette_pngs": int(palette),
        "dropped": [f"{e.codepoints} {e.name}: {why}" for e, why in dropped],
        "background": list(BACKGROUND),
        "stored_size": 128,
    }
    (out / ASSET_SOURCE).write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
    (out / ASSET_LICENSE).write_text(
        LICENSE_TEXT.format(font_version=version, emoji_test_version=test_version),
        encoding="utf-8",
    )
    groups = {r["group"] for r in records}
    subgroups = {r["subgroup"] for r in records}
    print(
        json.dumps(
            {
                "images": len(records),
                "dropped": len(dropped),
                "groups": len(groups),
                "subgroups": len(subgroups),
                "palette_pngs": int(palette),
                "png_bytes": sizes,
                "zip_bytes": (out / ASSET_IMAGES).stat().st_size,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
