"""The user's own images and captions: Hugging Face ``imagefolder`` metadata, odd image files,
``ganfuse data check`` and ``ganfuse data preview``."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.config import load_config
from ganfuse.data import build_dataset
from ganfuse.data.captions import CaptionedFolderDataset, read_pairs, scan_folder
from ganfuse.data.folder import FolderDataset, inspect_folder
from ganfuse.data.images import read_image, read_image_info
from ganfuse.errors import ConfigError, DataError
from tests.faults.test_data_fuzz import peak_memory_growth

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png(path: Path, colour, size=(20, 20), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def _jsonl(path: Path, rows: list) -> None:
    path.write_bytes(
        b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows) + b"\n"
    )


# ------------------------------------------------------------------ metadata


def test_metadata_jsonl_captions_labels_missing_files_extra_columns_and_bad_utf8(tmp_path):
    _png(tmp_path / "a.png", RED)
    _png(tmp_path / "b.png", GREEN)
    _png(tmp_path / "c.png", BLUE)
    _jsonl(
        tmp_path / "metadata.jsonl",
        [
            {"file_name": "a.png", "text": "a red square", "label": "warm", "score": 0.5},
            {"file_name": "a.png", "text": "crimson", "label": "warm", "tags": ["x"]},
            {"file_name": "b.png", "text": "  a green square ", "label": "cold"},
            {"file_name": "gone.png", "text": "missing", "label": "cold"},
            b'{"file_name": "c.png", "text": "caf\xe9"}',  # latin-1, not UTF-8
            {"file_name": "../outside.png", "text": "escape"},
            b"not json",
            {"text": "no file name"},
            {"file_name": "c.png", "text": "", "label": "cold"},
        ],
    )
    contents = scan_folder(tmp_path)
    assert contents.images == ["a.png", "b.png", "c.png"]
    assert contents.captions == {"a.png": ["a red square", "crimson"], "b.png": ["a green square"]}
    assert contents.columns == ["label", "score", "tags", "text"]  # extra columns seen, unused
    assert contents.label_source == "column 'label'"
    assert contents.labels == {"a.png": "warm", "b.png": "cold", "c.png": "cold"}
    assert contents.class_names == ["cold", "warm"]
    assert dict(contents.problems.counts) == {
        "missing file": 1,
        "bad utf-8": 1,
        "path outside the folder": 1,
        "bad json": 1,
        "no file_name": 1,
        "empty caption": 1,
    }
    assert contents.problems.first["bad utf-8"] == "metadata.jsonl line 5"
    assert contents.problems.first["missing file"] == "metadata.jsonl line 4: gone.png"

    with pytest.warns(UserWarning, match="skipped 6 entries"):
        images, captions, labels, classes = read_pairs(tmp_path, 8)
    assert captions == ["a red square", "crimson", "a green square"]
    assert classes == ["cold", "warm"] and labels.tolist() == [1, 1, 0]
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert images[0, :, 4, 4].tolist() == list(RED) and images[2, :, 4, 4].tolist() == list(GREEN)


def test_metadata_csv_in_sub_folders_with_a_chosen_label_column(tmp_path):
    for i in range(2):
        _png(tmp_path / "train" / f"r{i}.png", RED)
        _png(tmp_path / "test" / f"b{i}.png", BLUE)
    (tmp_path / "train" / "metadata.csv").write_bytes(
        b"file_name,text,colour,unused\n"
        b"r0.png,a red one,10,x\n"
        b'r1.png,"red, again",2,y\n'
        b"r9.png,no such file,2,z\n"
        b"r1.png,bad \xff bytes,2,z\n"
    )
    (tmp_path / "test" / "metadata.csv").write_text(
        "file_name,text,colour\nb0.png,a blue one,2\nb1.png,another blue,10\n"
    )
    contents = scan_folder(tmp_path, label_column="colour")
    assert contents.metadata_files == ["test/metadata.csv", "train/metadata.csv"]
    assert contents.captions["train/r1.png"] == ["red, again"]  # relative to its metadata file
    assert contents.class_names == ["2", "10"]  # integer labels sort as numbers
    assert contents.problems.first == {
        "missing file": "train/metadata.csv line 4: train/r9.png",
        "bad utf-8": "train/metadata.csv line 5",
    }
    dataset = FolderDataset(tmp_path, 16, label_column="colour")
    by_file = dict(zip(contents.images, dataset.labels.tolist(), strict=True))
    assert by_file == {"test/b0.png": 0, "test/b1.png": 1, "train/r0.png": 1, "train/r1.png": 0}
    with pytest.raises(DataError, match=r"no metadata column 'kind' for the labels \(columns: "):
        scan_folder(tmp_path, label_column="kind")


def test_a_csv_without_file_name_is_one_error_naming_the_file(tmp_path):
    _png(tmp_path / "a.png", RED)
    (tmp_path / "metadata.csv").write_text("file,text\na.png,red\n")
    with pytest.raises(DataError, match=r"metadata.csv: the first line must name a file_name"):
        scan_folder(tmp_path)


def test_sub_folders_stay_classes_without_metadata(tmp_path):
    for name, colour in (("cats", RED), ("dogs", BLUE)):
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", colour)
    dataset = FolderDataset(tmp_path, 8)
    assert dataset.class_names == ["cats", "dogs"] and dataset.labels.tolist() == [0, 0, 1, 1]
    assert FolderDataset(tmp_path, 8, use_labels=False).labels.tolist() == [-1] * 4


def test_images_without_a_label_are_skipped_and_counted(tmp_path, caplog):
    for name in ("a", "b", "c"):
        _png(tmp_path / f"{name}.png", RED)
    _jsonl(
        tmp_path / "metadata.jsonl",
        [{"file_name": "a.png", "label": 1}, {"file_name": "b.png", "label": 2}],
    )
    with caplog.at_level(logging.WARNING, logger="ganfuse"):
        dataset = FolderDataset(tmp_path, 8)
    assert len(dataset) == 2 and dataset.skip_reasons == {"no label": 1}
    assert "skipped 1 unreadable image(s) of 3 (no label: 1" in caplog.text
    assert len(FolderDataset(tmp_path, 8, use_labels=False)) == 3


def test_captions_for_text_to_image_come_from_the_chosen_column(tmp_path):
    for name, colour in (("a", RED), ("b", BLUE)):
        _png(tmp_path / f"{name}.png", colour)
    _jsonl(
        tmp_path / "metadata.jsonl",
        [{"file_name": "a.png", "prompt": "red"}, {"file_name": "b.png", "prompt": "blue"}],
    )
    with pytest.raises(
        DataError, match=r"no metadata column 'text' for the captions \(columns: prompt\)"
    ):
        CaptionedFolderDataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = CaptionedFolderDataset(tmp_path, 8, caption_column="prompt")
    assert dataset.captions == ["red", "blue"] and dataset.labels.tolist() == [-1, -1]


def test_text_to_image_training_reads_metadata_through_the_config(tmp_path):
    for i in range(4):
        _png(tmp_path / "data" / f"{i}.png", RED if i % 2 else BLUE, size=(30, 20))
    _jsonl(
        tmp_path / "data" / "metadata.jsonl",
        [{"file_name": f"{i}.png", "caption": "red" if i % 2 else "blue"} for i in range(4)],
    )
    tiny = ["text.encoder=small", "model.z_dim=8", "model.g_width=16", "model.d_width=8",
            "text.cond_dim=16", "train.batch_size=4", "train.precision=fp32",
            "data.name=folder", f"data.path={tmp_path / 'data'}", "data.caption_column=caption"]  # fmt: skip
    argv = ["train", "shapes-t2i", "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress"]
    assert main([*argv, *[a for item in tiny for a in ("--set", item)]]) == 0
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    vocab = load_config(str(tmp_path / "run" / "config.yaml")).text.vocab
    assert {"red", "blue"} <= set(vocab)


def test_new_data_keys_are_validated():
    base = ["data.name=folder", "data.path=/x"]
    with pytest.raises(ConfigError, match="data.fit must be crop or pad"):
        load_config("digits", [*base, "data.fit=squash"])
    with pytest.raises(ConfigError, match="data.background must be a colour"):
        load_config("digits", [*base, "data.background=rgb(300,0,0)"])
    assert (
        load_config("digits", [*base, "data.background=rgb(1,2,3)"]).data.background == "rgb(1,2,3)"
    )


# ------------------------------------------------------------------ odd image files


def _transparent(mode: str) -> Image.Image:
    """A 20x20 image: left half opaque red (or black for L), right half fully transparent."""
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 255)
    rgba[:, 10:] = (0, 255, 0, 0)  # green under zero alpha must never show
    image = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        return image.convert("LA")
    if mode == "P":
        palette = image.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=4)
        index = palette.getpixel((15, 5))
        palette.info["transparency"] = index
        return palette
    return image


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
@pytest.mark.parametrize("background", ["white", "black"])
def test_transparency_is_composited_on_the_background(tmp_path, mode, background):
    path = tmp_path / f"{mode}.png"
    _transparent(mode).save(path)
    pixels, info = read_image_info(path, 20, 3, background=background, fit="crop")
    assert info.transparent and info.mode == mode
    expected = 255 if background == "white" else 0
    assert pixels[:, 5, 15].tolist() == [expected] * 3  # the transparent half
    left = pixels[:, 5, 3].tolist()
    assert left == ([255, 0, 0] if mode != "LA" else [76, 76, 76])  # luma of red: 0.299 * 255


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("L", 100, 100), ("1", 1, 255), ("CMYK", (0, 255, 255, 0), (255, 0, 0)), ("I;16", 32768, 128)],
)
def test_greyscale_cmyk_and_16_bit_keep_their_values(tmp_path, mode, value, expected):
    if mode == "I;16":
        image = Image.fromarray(np.full((12, 12), value, dtype=np.uint16))
    else:
        image = Image.new(mode, (12, 12), value)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path, **({"quality": 100} if mode == "CMYK" else {}))
    pixels, info = read_image_info(path, 8, 3)
    assert info.mode == image.mode
    want = [expected] * 3 if isinstance(expected, int) else list(expected)
    assert np.abs(pixels[:, 4, 4].astype(int) - want).max() <= 3, pixels[:, 4, 4]
    assert read_image(path, 8, 1).shape == (1, 8, 8)


def test_non_square_images_are_centre_cropped_or_padded(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10], wide[:, 10:30], wide[:, 30:] = BLUE, RED, GREEN
    Image.fromarray(wide).save(tmp_path / "wide.png")
    crop = read_image(tmp_path / "wide.png", 8, 3)
    assert (crop.reshape(3, -1).T == RED).all()  # only the centre square is kept
    pad = read_image(tmp_path / "wide.png", 8, 3, background="black", fit="pad")
    assert (pad[:, :2] == 0).all() and (pad[:, 6:] == 0).all()  # 40x20 -> 8x4, centred
    assert pad[:, 4, 0].tolist() == list(BLUE) and pad[:, 4, 7].tolist() == list(GREEN)


def test_a_6000x4000_photo_is_downscaled_in_bounded_memory(tmp_path):
    image = Image.linear_gradient("L").resize((6000, 4000)).convert("RGB")
    image.save(tmp_path / "photo.jpg", quality=85)
    image.save(tmp_path / "photo.png", compress_level=1)
    del image
    result = {}
    growth = peak_memory_growth(
        lambda: result.update(jpeg=read_image_info(tmp_path / "photo.jpg", 64, 3))
    )
    pixels, info = result["jpeg"]
    assert (info.width, info.height, info.scale) == (6000, 4000, 8)
    assert pixels.shape == (3, 64, 64)
    assert growth < 20 * 2**20, f"a 6000x4000 JPEG grew memory by {growth / 2**20:.0f} MiB"
    png, png_info = read_image_info(tmp_path / "photo.png", 64, 3)  # decoded whole: 24 Mpx fits
    assert png_info.scale == 1 and np.abs(png.astype(int) - pixels.astype(int)).mean() < 3


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """Every odd file the issue names, plus what is left out: 9 usable, 3 not. Shared: copy it
    before adding anything."""
    root = tmp_path_factory.mktemp("odd")
    _transparent("RGBA").save(root / "rgba.png")
    _transparent("LA").save(root / "la.png")
    _transparent("P").save(root / "p.png")
    Image.new("L", (30, 20), 90).save(root / "l.png")
    Image.new("1", (20, 20), 1).save(root / "one.png")
    Image.new("CMYK", (20, 30), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(root / "i16.png")
    Image.fromarray(np.full((20, 20), 9000, np.int32), "I").save(root / "i32.png")  # as 16-bit
    Image.linear_gradient("L").resize((3000, 2000)).save(root / "big.jpg", quality=60)
    Image.new("RGB", (64, 64), RED).save(root / "whole.jpg")
    (root / "cut.jpg").write_bytes((root / "whole.jpg").read_bytes()[:300])  # truncated
    (root / "whole.jpg").unlink()
    (root / "text.png").write_text("this is not a picture")
    (root / "empty.webp").write_bytes(b"")
    return root


def test_a_folder_of_odd_files_trains_on_what_decodes_and_counts_the_rest(odd_folder, caplog):
    root = odd_folder
    with caplog.at_level(logging.WARNING, logger="ganfuse"):
        dataset = FolderDataset(root, 16, channels=3)
    assert len(dataset) == 9 and dataset.skipped == 3
    assert dataset.skip_reasons == {"corrupt": 1, "not an image": 1, "empty file": 1}
    assert "skipped 3 unreadable image(s) of 12" in caplog.text
    report = inspect_folder(root, 16)
    assert (report.files, report.usable, report.transparent, report.reduced) == (12, 9, 3, 1)
    assert report.modes == {
        "RGBA": 1,
        "LA": 1,
        "P": 1,
        "L": 2,
        "1": 1,
        "CMYK": 1,
        "I;16": 2,  # Pillow writes a 32-bit "I" image as a 16-bit PNG
    }
    assert dict(report.problems) == {"corrupt": 1, "not an image": 1, "empty file": 1}


def test_a_folder_with_too_few_usable_images_is_a_clear_error(tmp_path):
    _png(tmp_path / "only.png", RED)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(
        DataError, match=r"1 readable image \(1 unreadable skipped\); training needs at least 2"
    ):
        build_dataset(load_config("digits", ["data.name=folder", f"data.path={tmp_path}"]).data)


# ------------------------------------------------------------------ ganfuse data check / preview


def test_data_check_prints_what_would_be_used(odd_folder, tmp_path, capsys):
    root = Path(shutil.copytree(odd_folder, tmp_path / "odd"))
    _jsonl(
        root / "metadata.jsonl",
        [{"file_name": "rgba.png", "text": "half red", "extra": 1},
         {"file_name": "l.png", "text": "grey"}, {"file_name": "gone.png", "text": "x"}],
    )  # fmt: skip
    assert main(["data", "check", str(root), "--image-size", "32"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert "image files: 12, usable: 9 (at 32 px)" in lines
    assert "modes: L: 2, I;16: 2, CMYK: 1, LA: 1, 1: 1, P: 1, ... (1 more)" in lines
    assert "transparent: 3 (composited on white)" in lines
    assert "large JPEGs decoded at reduced scale: 1" in lines
    assert "smaller than 32 px on the short side (upscaled): 8" in lines
    assert "captions: 2 on 2 usable images (column 'text')" in lines
    assert "  rgba.png: 'half red'" in lines
    assert "labels: none (unconditional training only)" in lines
    assert "  missing file: 1 (first: metadata.jsonl line 3: gone.png)" in lines
    assert any(line.startswith("  corrupt: 1 (first: cut.jpg: ") for line in lines)
    assert "  empty file: 1 (first: empty.webp: the file is empty (0 bytes))" in lines


def test_data_check_exits_2_when_nothing_is_usable(tmp_path, capsys):
    (tmp_path / "a.png").write_text("text")
    _png(tmp_path / "b.png", RED)
    assert main(["data", "check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "image files: 2, usable: 1 (at 64 px)" in out
    assert err.strip().splitlines() == [
        f"ganfuse: error: {tmp_path}: 1 usable image(s) of 2 files; training needs at least 2"
    ]
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"ganfuse: error: folder not found: {tmp_path / 'nope'}"
    )
    assert main(["data", "check", str(tmp_path), "--background", "rgb(1,2)"]) == 2
    assert "--background 'rgb(1,2)' is not a colour" in capsys.readouterr().err


def test_data_preview_writes_a_grid_of_the_expected_size(tmp_path, capsys):
    for i, colour in enumerate((RED, GREEN, BLUE)):
        _png(tmp_path / "imgs" / f"{i}.png", colour, size=(40, 30))
    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(tmp_path / "imgs"), "--out", str(out), "--image-size", "16",
                 "--num", "2", "--augment", "translation,cutout"]) == 0  # fmt: skip
    with Image.open(out) as grid:
        assert grid.size == (8 * 18 + 2, 2 * 18 + 2)
        pixels = np.asarray(grid.convert("RGB"))
    originals = [pixels[2:18, 2:18], pixels[20:36, 2:18]]
    assert all(len(np.unique(o.reshape(-1, 3), axis=0)) == 1 for o in originals)  # flat colours
    augmented = pixels[2:18, 20:]
    assert (augmented != pixels[2:18, 2:18].max()).any()  # cutout/translation changed something
    assert (
        "2 images, the original then 7 draws of translation, cutout (p=1) each"
        in capsys.readouterr().out
    )
    # no ops: every column is the original
    assert main(["data", "preview", str(tmp_path / "imgs"), "--out", str(out), "--image-size", "16",
                 "--num", "1", "--augment", "", "--overwrite"]) == 0  # fmt: skip
    with Image.open(out) as grid:
        row = np.asarray(grid.convert("RGB"))[2:18]
    tiles = [row[:, 2 + 18 * c : 18 + 18 * c] for c in range(8)]
    assert all((t == tiles[0]).all() for t in tiles)
    assert main(["data", "preview", str(tmp_path / "imgs"), "--out", str(out)]) == 2
    assert "ganfuse: error: --out" in capsys.readouterr().err  # exists, no --overwrite
    fresh = str(tmp_path / "new.png")
    assert (
        main(["data", "preview", str(tmp_path / "imgs"), "--out", fresh, "--augment", "flip"]) == 2
    )
    assert capsys.readouterr().err.strip() == (
        "ganfuse: error: --augment must list some of translation, cutout, color, got flip"
    )
    assert not Path(fresh).exists()
