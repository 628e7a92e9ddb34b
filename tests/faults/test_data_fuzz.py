"""Malformed data never crashes, hangs or exhausts memory; bad items are counted and reported.

Readers under test: the image decoder every data source shares (:func:`read_image`), image
folders, captioned folders (``captions.jsonl`` / ``captions.csv``) and WebDataset shards. Inputs
come from hand-made edge cases (truncated files, bombs, odd modes, disguised formats) and from
hypothesis, which mutates valid files byte by byte.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import struct
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganfuse.data.captions import CaptionedFolderDataset
from ganfuse.data.folder import FolderDataset
from ganfuse.data.images import MAX_PIXELS, UnreadableImage, read_image
from ganfuse.errors import DataError
from tests.faults.conftest import report

HANG_LIMIT_S = 20  # generous for a loaded CI machine; a decode of these files takes milliseconds
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@contextlib.contextmanager
def no_hang(seconds: int = HANG_LIMIT_S) -> Iterator[None]:
    def alarm(*_):
        raise TimeoutError(f"reader still busy after {seconds}s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def peak_memory_growth(fn) -> int:
    """Bytes the resident set grew above its size before ``fn()`` at its peak (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current size
    except OSError:
        pytest.skip("cannot reset the peak-memory counter here")

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(field)

    before = status("VmRSS")
    fn()
    return status("VmHWM") - before


# ------------------------------------------------------------------ files


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _gradient(mode: str, size=(24, 20)) -> Image.Image:
    x = np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint8)
    rgb = Image.fromarray(np.stack([x, x[::-1], np.full_like(x, 90)], axis=-1), "RGB")
    return rgb.convert(mode) if mode != "RGB" else rgb


def seed_files() -> dict[str, bytes]:
    """Valid small images of every format and mode the readers accept."""
    files = {
        f"png-{mode}.png": _encode(_gradient(mode), "PNG")
        for mode in ("RGB", "RGBA", "L", "LA", "P", "1")
    }
    files["png-I16.png"] = _encode(
        Image.fromarray((np.arange(480).reshape(20, 24) * 100).astype(np.uint16)), "PNG"
    )
    files["png-interlaced.png"] = _encode(_gradient("RGB"), "PNG", optimize=False)
    files["jpeg-RGB.jpg"] = _encode(_gradient("RGB"), "JPEG", quality=90)
    files["jpeg-progressive.jpg"] = _encode(_gradient("RGB"), "JPEG", progressive=True)
    files["jpeg-L.jpg"] = _encode(_gradient("L"), "JPEG")
    files["jpeg-CMYK.jpg"] = _encode(_gradient("CMYK"), "JPEG")
    files["webp-RGB.webp"] = _encode(_gradient("RGB"), "WEBP")
    files["webp-RGBA.webp"] = _encode(_gradient("RGBA"), "WEBP", lossless=True)
    files["bmp-RGB.bmp"] = _encode(_gradient("RGB"), "BMP")
    files["bmp-P.bmp"] = _encode(_gradient("P"), "BMP")
    return files


SEEDS = seed_files()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with a tiny (valid) data stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_header_only(width: int, height: int) -> bytes:
    """A real JPEG with the frame size in its SOF0 marker rewritten."""
    data = bytearray(SEEDS["jpeg-RGB.jpg"])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bomb() -> bytes:
    """A valid 1-bit 8192x8192 PNG: 8 KiB of file, 67 megapixels (200 MiB as RGB)."""
    return _encode(Image.new("1", (8192, 8192)), "PNG", optimize=True)


def eps_named_png() -> bytes:
    """PostScript: Pillow would hand it to Ghostscript if the format were not restricted."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n"


def _check_read(path: Path, channels: int) -> np.ndarray | None:
    """``read_image`` must return a valid array or raise UnreadableImage, and never hang."""
    with no_hang():
        try:
            array = read_image(path, 32, channels)
        except UnreadableImage as exc:
            assert str(exc)
            return None
    assert array.dtype == np.uint8 and array.shape == (channels, 32, 32)
    return array


# ------------------------------------------------------------------ the image decoder


@pytest.mark.parametrize("name", sorted(SEEDS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_accepted_format_and_mode_decodes(tmp_path, name, channels):
    path = tmp_path / name
    path.write_bytes(SEEDS[name])
    assert _check_read(path, channels) is not None


def test_16_bit_greyscale_keeps_its_brightness(tmp_path):
    """Pillow's plain convert clips 16-bit values at 255: a mid-grey image came out white."""
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16)).save(path)
    assert read_image(path, 32, 1).mean() == pytest.approx(128, abs=1)
    assert read_image(path, 32, 3).mean() == pytest.approx(128, abs=1)


def test_colour_modes_keep_their_colours(tmp_path):
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    for name, image, fmt in [
        ("p.png", red.convert("P"), "PNG"),
        ("rgba.png", red.convert("RGBA"), "PNG"),
        ("cmyk.jpg", red.convert("CMYK"), "JPEG"),
        ("bmp.bmp", red, "BMP"),
    ]:
        image.save(tmp_path / name, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
        pixel = read_image(tmp_path / name, 8, 3)[:, 4, 4]
        assert abs(int(pixel[0]) - 255) < 8 and pixel[1] < 8 and pixel[2] < 8, (name, pixel)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("zero.png", b""),
        ("zero.jpg", b""),
        ("text.jpg", b"hello, I am not a picture\n" * 10),
        ("half.png", SEEDS["png-RGB.png"][: len(SEEDS["png-RGB.png"]) // 2]),
        ("half.jpg", SEEDS["jpeg-RGB.jpg"][: len(SEEDS["jpeg-RGB.jpg"]) // 2]),
        ("header-only.png", SEEDS["png-RGB.png"][:33]),
        ("no-eoi.jpg", SEEDS["jpeg-progressive.jpg"][:-200]),
        ("huge-header.png", png_header_only(100_000, 100_000)),
        ("over-limit.png", png_header_only(8000, 6000)),
        ("zero-size.png", png_header_only(0, 10)),
        ("huge-header.jpg", jpeg_header_only(65_000, 65_000)),
        ("eps.png", eps_named_png()),
        ("gif.png", _encode(_gradient("P"), "GIF")),
        ("tiff.jpg", _encode(_gradient("RGB"), "TIFF")),
    ],
)
def test_malformed_images_are_refused_quickly(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    assert _check_read(path, 3) is None


def test_decompression_bomb_costs_no_memory(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb())
    assert path.stat().st_size < 100_000 and 8192 * 8192 > MAX_PIXELS
    growth = peak_memory_growth(lambda: _check_read(path, 3))
    report(
        {
            "kind": "bomb",
            "pixels": 8192 * 8192,
            "file_bytes": path.stat().st_size,
            "rss_growth": growth,
        }
    )
    assert growth < 30 * 2**20, f"reading a refused bomb grew memory by {growth / 2**20:.0f} MiB"


def test_ghostscript_is_never_started(tmp_path, monkeypatch):
    import subprocess

    started = []
    monkeypatch.setattr(
        subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("subprocess")
    )
    path = tmp_path / "eps.jpg"
    path.write_bytes(eps_named_png())
    assert _check_read(path, 3) is None and not started


_MUTATION = st.sampled_from(sorted(SEEDS)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.lists(
            st.tuples(st.integers(0, len(SEEDS[name]) - 1), st.integers(0, 255)),
            min_size=1,
            max_size=8,
        ),
        st.one_of(st.none(), st.integers(0, len(SEEDS[name]))),
    )
)


@FUZZ
@given(mutation=_MUTATION)
def test_fuzzed_images_never_crash_or_hang(tmp_path, mutation):
    name, edits, cut = mutation
    data = bytearray(SEEDS[name])
    for position, value in edits:
        data[position] = value
    if cut is not None:
        data = data[:cut]
    path = tmp_path / name
    path.write_bytes(bytes(data))
    _check_read(path, 3)


@FUZZ
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".png", ".jpg", ".webp", ".bmp"]))
def test_random_bytes_never_crash(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _check_read(path, 1)


# ------------------------------------------------------------------ image folders


def test_folder_counts_every_bad_file_and_trains_on_the_rest(tmp_path, caplog):
    for i, (name, data) in enumerate(sorted(SEEDS.items())):
        (tmp_path / f"{i:02d}-{name}").write_bytes(data)
    bad = {
        "zero.png": b"",
        "half.jpg": SEEDS["jpeg-RGB.jpg"][:300],
        "bomb.png": png_bomb(),
        "huge.jpg": jpeg_header_only(65_000, 65_000),
        "eps.png": eps_named_png(),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "dir.png").mkdir()  # a folder with an image's name
    os.mkfifo(tmp_path / "fifo.png")  # would block a reader forever
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "self").symlink_to(tmp_path / "loop", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="ganfuse"), no_hang():
        dataset = FolderDataset(tmp_path, 32, channels=3, use_labels=False)
    assert len(dataset) == len(SEEDS)
    assert dataset.skipped == len(bad)
    assert f"skipped {len(bad)} unreadable image(s)" in caplog.text


def test_folder_with_nothing_readable_is_a_clear_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 image files"):
        FolderDataset(tmp_path, 32)


# ------------------------------------------------------------------ captioned folders


def _captioned(tmp_path: Path) -> Path:
    folder = tmp_path / "captioned"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(SEEDS["png-RGB.png"])
    (folder / "b.jpg").write_bytes(SEEDS["jpeg-RGB.jpg"])
    (folder / "bad.png").write_bytes(b"")
    return folder


def _load_captions(folder: Path) -> CaptionedFolderDataset | None:
    """The dataset, or None when nothing was usable (the one allowed error)."""
    with warnings.catch_warnings(), no_hang():
        warnings.simplefilter("ignore")
        try:
            dataset = CaptionedFolderDataset(folder, image_size=16)
        except DataError:
            return None
    assert len(dataset) == len(dataset.captions) >= 1
    assert all(isinstance(c, str) and c for c in dataset.captions)
    return dataset


_LINE = st.one_of(
    st.binary(max_size=80),
    st.fixed_dictionaries(
        {
            "file": st.sampled_from(
                ["a.png", "b.jpg", "bad.png", "missing.png", "../a.png", "/etc/hostname", ""]
            ),
            "caption": st.one_of(st.text(max_size=30), st.none(), st.integers()),
        }
    ).map(lambda d: json.dumps(d).encode()),
)


@FUZZ
@given(lines=st.lists(_LINE, max_size=12))
def test_fuzzed_captions_jsonl_never_crashes(tmp_path, lines):
    folder = _captioned(tmp_path)
    (folder / "captions.jsonl").write_bytes(b"\n".join(lines))
    _load_captions(folder)


_CELL = st.one_of(
    st.text(max_size=15), st.sampled_from(["a.png", "b.jpg", "bad.png", '"', '""', "\x00", "\r"])
)


@FUZZ
@given(
    header=st.lists(st.sampled_from(["file", "caption", "label", "", "FILE", "x"]), max_size=4),
    rows=st.lists(st.lists(_CELL, max_size=4), max_size=8),
    garbage=st.binary(max_size=40),
)
def test_fuzzed_captions_csv_never_crashes(tmp_path, header, rows, garbage):
    folder = _captioned(tmp_path)
    text = (
        "\n".join(",".join(row) for row in [header, *rows]).encode("utf-8", "surrogatepass")
        + garbage
    )
    (folder / "captions.csv").write_bytes(text)
    _load_captions(folder)


def test_captions_with_bad_utf8_and_missing_columns_are_counted(tmp_path):
    folder = _captioned(tmp_path)
    (folder / "captions.csv").write_bytes(
        b"file,caption\na.png,fine\nb.jpg\n,no file\nbad.png,unreadable\nb.jpg,caf\xe9\nb.jpg,another\n"
    )
    with pytest.warns(UserWarning, match="skipped 4 entries"):
        dataset = CaptionedFolderDataset(folder, image_size=16)
    assert dataset.captions == ["fine", "another"]
    assert dataset.skip_reasons == {"missing column": 2, "unreadable image": 1, "bad utf-8": 1}


def test_csv_with_an_unterminated_quote_and_a_long_tail(tmp_path):
    folder = _captioned(tmp_path)
    rows = "\n".join(f"a.png,caption {i}" for i in range(20_000))
    (folder / "captions.csv").write_text(f'file,caption\nb.jpg,"never closed\n{rows}\n')
    # the quote swallows the whole file: nothing is usable, which is the clear DataError
    # (None here), not a csv.Error escaping the reader
    assert _load_captions(folder) is None


def _load_metadata_folder(folder: Path) -> None:
    """Every reader of a Hugging Face imagefolder: a result, or a DataError (one line), never
    another exception or a hang."""
    from ganfuse.data.folder import inspect_folder

    _load_captions(folder)
    with warnings.catch_warnings(), no_hang():
        warnings.simplefilter("ignore")
        for read in (lambda: FolderDataset(folder, 16), lambda: inspect_folder(folder, 16)):
            try:
                read()
            except DataError as exc:
                assert "\n" not in str(exc)


_META_LINE = st.one_of(
    st.binary(max_size=80),
    st.fixed_dictionaries(
        {
            "file_name": st.one_of(
                st.sampled_from(["a.png", "b.jpg", "bad.png", "gone.png", "../a.png", "/etc/hostname", ""]),
                st.integers(),
                st.text(max_size=10),
            ),
            "text": st.one_of(st.text(max_size=30), st.none(), st.integers(), st.lists(st.integers(), max_size=2)),
            "label": st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none()),
        }
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(FUZZ, max_examples=40)
@given(lines=st.lists(_META_LINE, max_size=12))
def test_fuzzed_metadata_jsonl_never_crashes(tmp_path, lines):
    folder = _captioned(tmp_path)
    (folder / "metadata.jsonl").write_bytes(b"\n".join(lines))
    _load_metadata_folder(folder)


@settings(FUZZ, max_examples=40)
@given(
    header=st.lists(st.sampled_from(["file_name", "text", "label", "", "x", "file_name"]), max_size=4),
    rows=st.lists(st.lists(_CELL, max_size=4), max_size=8),
    garbage=st.binary(max_size=40),
)
def test_fuzzed_metadata_csv_never_crashes(tmp_path, header, rows, garbage):
    folder = _captioned(tmp_path)
    text = "\n".join(",".join(row) for row in [header, *rows]).encode("utf-8", "surrogatepass") + garbage
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "metadata.csv").write_bytes(text)
    _load_metadata_folder(folder)


# ------------------------------------------------------------------ WebDataset shards


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory) -> Path:
    from ganfuse.data.shards import ShardWriter

    out = tmp_path_factory.mktemp("shards")
    writer = ShardWriter(out, shard_size=4)
    rng = np.random.default_rng(0)
    for i in range(8):
        writer.write(
            f"{i:08d}",
            rng.integers(0, 256, (3, 16, 16), dtype=np.uint8),
            label=i % 2,
            caption=f"caption {i}",
            meta={"i": i},
        )
    writer.close("fuzz", ["even", "odd"])
    return out


def _read_all_shards(folder: Path) -> tuple[int, object]:
    from ganfuse.data.shards import ShardProblems, iter_records

    problems = ShardProblems()
    with no_hang():
        try:
            count = sum(1 for _ in iter_records(str(folder), 16, 3, problems))
        except DataError:
            return -1, problems
    return count, problems


@FUZZ
@given(
    shard=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_fuzzed_shards_never_crash(tmp_path, shard_folder, shard, edits, cut):
    folder = tmp_path / "shards"
    if not folder.exists():
        folder.mkdir()
    for f in shard_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    name = folder / f"shard-{shard:06d}.tar"
    data = bytearray(name.read_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    name.write_bytes(bytes(data))
    count, problems = _read_all_shards(folder)
    assert count == -1 or 0 <= count <= 8
    if count != -1 and count < 8:
        assert problems.any  # every lost sample is accounted for


def test_shard_index_damage_is_a_clear_error(tmp_path, shard_folder):
    from ganfuse.data.shards import ShardDataset

    for f in shard_folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "shards.json").write_bytes(b'{"shards": 3')
    with pytest.raises(DataError, match="not a valid shard index"):
        ShardDataset(tmp_path, 16)


def _gzip_bomb_shard(path: Path, member_bytes: int) -> None:
    """A .tar.gz shard whose single PNG member inflates to ``member_bytes`` of zeros."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("00000000.png")
        info.size = member_bytes

        class Zeros(io.RawIOBase):
            left = member_bytes

            def readable(self):
                return True

            def readinto(self, buffer):
                n = min(len(buffer), self.left)
                buffer[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))


def test_compressed_shard_bomb_costs_bounded_memory(tmp_path):
    _gzip_bomb_shard(tmp_path / "bomb.tar.gz", 160 * 2**20)
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 2 * 2**20
    growth = peak_memory_growth(lambda: _read_all_shards(tmp_path))
    assert growth < 64 * 2**20, f"reading a 1 MiB shard grew memory by {growth / 2**20:.0f} MiB"
