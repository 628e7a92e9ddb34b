"""Captioned folders: good entries load, bad ones are counted and skipped, never a crash."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.data.captions import CaptionedFolderDataset
from ganfuse.data.shapes import ShapeAttributes, export_shapes, generate_shapes
from ganfuse.errors import DataError


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 20)) -> None:
    Image.new("RGB", size, colour).save(path)


def test_exported_shapes_folder_round_trips(tmp_path):
    export_shapes(6, tmp_path, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean folder warns about nothing
        dataset = CaptionedFolderDataset(tmp_path, image_size=32)
    images, attributes, captions = generate_shapes(6, seed=2, split="all")
    assert len(dataset) == 6 and dataset.skipped == 0
    assert torch.equal(dataset.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert dataset.captions == captions and dataset.attributes == attributes
    image, label, caption = dataset[1]
    assert image.shape == (3, 32, 32) and label == -1 and caption == captions[1]
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert torch.equal(dataset.float_images()[1], image)


def test_jsonl_with_bad_entries_skips_and_counts_them(tmp_path):
    _png(tmp_path / "a.png", (255, 0, 0))
    _png(tmp_path / "b.png", (0, 0, 255))
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    lines = [
        json.dumps({"file": "a.png", "caption": "a red thing"}).encode(),
        json.dumps({"file": "a.png", "caption": "something red"}).encode(),  # second caption
        json.dumps({"file": "b.png", "caption": "blue"}).encode(),
        json.dumps({"file": "missing.png", "caption": "gone"}).encode(),
        json.dumps({"file": "b.png", "caption": "   "}).encode(),  # empty caption
        b'{"file": "b.png", "caption": "caf\xe9 latin-1"}',  # not UTF-8
        b"{not json",
        json.dumps({"caption": "no file"}).encode(),
        json.dumps({"file": "broken.png", "caption": "corrupt"}).encode(),
        b"",
    ]
    (tmp_path / "captions.jsonl").write_bytes(b"\n".join(lines))
    with pytest.warns(UserWarning, match="skipped 6 entries") as record:
        dataset = CaptionedFolderDataset(tmp_path, image_size=16)
    assert len(record) == 1  # one warning line, whatever the number of bad entries
    assert len(dataset) == 3
    assert dataset.captions == ["a red thing", "something red", "blue"]
    assert dataset.files == ["a.png", "a.png", "b.png"]
    assert dataset.skip_reasons == {
        "missing file": 1,
        "empty caption": 1,
        "bad utf-8": 1,
        "bad json": 1,
        "missing column": 1,
        "unreadable image": 1,
    }
    assert dataset.skipped == 6
    # Centre-cropped and resized; a flat colour stays that colour.
    assert dataset.images.shape == (3, 3, 16, 16)
    assert torch.all(dataset.images[0, 0] == 255) and torch.all(dataset.images[2, 2] == 255)
    assert dataset.attributes == [None, None, None]


def test_csv_with_several_captions_and_bad_rows(tmp_path):
    _png(tmp_path / "x.png", (0, 255, 0))
    _png(tmp_path / "y.png", (255, 255, 255))
    content = (
        b"file,caption\n"
        b"x.png,a green square\n"
        b'x.png,"green, and flat"\n'
        b"y.png,white\n"
        b"y.png\n"  # missing caption column
        b"y.png,\n"  # empty caption
        b"nope.png,missing image\n"
        b"y.png,\xff\xfe bad bytes\n"
    )
    (tmp_path / "captions.csv").write_bytes(content)
    with pytest.warns(UserWarning, match="skipped 4 entries"):
        dataset = CaptionedFolderDataset(tmp_path)
    assert dataset.captions == ["a green square", "green, and flat", "white"]
    assert dataset.skip_reasons == {
        "missing column": 1,
        "empty caption": 1,
        "missing file": 1,
        "bad utf-8": 1,
    }


def test_csv_without_required_columns_is_skipped_but_jsonl_still_loads(tmp_path):
    _png(tmp_path / "x.png", (0, 255, 0))
    _png(tmp_path / "y.png", (0, 0, 255))
    (tmp_path / "captions.csv").write_text("image,text\nx.png,hello\nx.png,again\n")
    rows = [{"file": "x.png", "caption": "ok"}, {"file": "y.png", "caption": "blue"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.warns(UserWarning) as record:
        dataset = CaptionedFolderDataset(tmp_path)
    messages = [str(w.message) for w in record]
    assert any("'file' and 'caption'" in m for m in messages)
    assert any("skipped 2 entries (missing column: 2)" in m for m in messages)
    assert dataset.captions == ["ok", "blue"]


def test_attributes_in_jsonl_are_parsed_and_bad_ones_become_none(tmp_path):
    _png(tmp_path / "x.png", (255, 0, 0))
    _png(tmp_path / "y.png", (0, 255, 0))
    good = {"color": "red", "shape": "circle", "size": "small", "position": "center"}
    bad = dict(good, color="purple")
    lines = [
        {"file": "x.png", "caption": "one", "attributes": good},
        {"file": "y.png", "caption": "two", "attributes": bad},
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    dataset = CaptionedFolderDataset(tmp_path)
    assert dataset.attributes == [ShapeAttributes("red", "circle", "small", "center"), None]


def test_oversized_image_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("ganfuse.data.images.MAX_PIXELS", 200 * 200)
    _png(tmp_path / "big.png", (1, 2, 3), size=(300, 300))
    _png(tmp_path / "ok.png", (1, 2, 3), size=(10, 10))
    _png(tmp_path / "ok2.png", (1, 2, 3), size=(12, 12))
    rows = [
        {"file": "big.png", "caption": "big"},
        {"file": "ok.png", "caption": "ok"},
        {"file": "ok2.png", "caption": "ok too"},
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.warns(UserWarning, match="unreadable image: 1"):
        dataset = CaptionedFolderDataset(tmp_path, image_size=8)
    assert dataset.captions == ["ok", "ok too"]
    assert np.all(dataset.images.numpy() == np.array([1, 2, 3])[None, :, None, None])


def test_missing_or_empty_folder_is_a_data_error_naming_the_path(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DataError, match="does-not-exist"):
        CaptionedFolderDataset(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        CaptionedFolderDataset(empty)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "captions.jsonl").write_text(json.dumps({"file": "no.png", "caption": "x"}))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="only_bad"):
        CaptionedFolderDataset(only_bad)
