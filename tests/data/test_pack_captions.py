"""``ganfuse data pack`` of a folder with Hugging Face ``imagefolder`` metadata keeps its captions
and labels, so the shards train with captions as the folder does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ganfuse.cli import main
from ganfuse.data.captions import CaptionedFolderDataset
from ganfuse.data.pack import pack_folder
from ganfuse.data.shards import ShardDataset, iter_records


def _captioned_folder(root: Path) -> Path:
    """Six 8x8 images in three colours; metadata.jsonl with a caption per image (two for the
    first), a label column ``kind``, a row naming a missing file and a row of bad UTF-8."""
    root.mkdir()
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    rows = []
    for i in range(6):
        name = list(colours)[i % 3]
        Image.fromarray(np.full((8, 8, 3), colours[name], np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "caption": f"a {name} tile number {i}", "kind": name})
    rows.append({"file_name": "0.png", "caption": "the first tile again", "kind": "red"})
    rows.append({"file_name": "gone.png", "caption": "nothing here", "kind": "red"})
    lines = [json.dumps(r).encode() for r in rows] + [b'{"file_name": "1.png", "caption": "\xff"}']
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root


def test_packing_a_metadata_folder_keeps_every_caption_and_label(tmp_path):
    folder = _captioned_folder(tmp_path / "tiles")
    summary = pack_folder(folder, tmp_path / "out", shard_size=4, caption_column="caption",
                          label_column="kind")  # fmt: skip
    assert (summary.samples, summary.shards, summary.skipped) == (7, 2, 2)
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert index["captions"] is True and index["class_names"] == ["blue", "green", "red"]
    records = list(iter_records(str(tmp_path / "out")))
    pairs = sorted((r.meta["file"], r.caption, r.label) for r in records)
    # the same (image, caption, label) items the folder gives training
    data = CaptionedFolderDataset(folder, 8, caption_column="caption", label_column="kind")
    expected = sorted(zip(data.files, data.captions, data.labels.tolist(), strict=True))
    assert pairs == expected
    assert ("0.png", "the first tile again", 2) in pairs
    assert all(r.meta["class"] == ["blue", "green", "red"][r.label] for r in records)
    first = next(r for r in records if r.meta["file"] == "3.png")
    assert first.image[:, 0, 0].tolist() == [255, 0, 0]
    # the shards stream (image, label, caption), as captioned data
    stream = ShardDataset(str(tmp_path / "out"), image_size=8)
    assert stream.has_captions and stream.class_names == ["blue", "green", "red"]


def test_pack_cli_reads_the_caption_and_label_columns(tmp_path, capsys):
    folder = _captioned_folder(tmp_path / "tiles")
    out = tmp_path / "shards"
    code = main(["data", "pack", str(folder), "--out", str(out), "--caption-column", "caption",
                 "--label-column", "kind"])  # fmt: skip
    assert code == 0
    assert "wrote 7 samples" in capsys.readouterr().out
    assert {r.caption for r in iter_records(str(out))} >= {"a blue tile number 2"}
    # metadata without the caption column: every image, with its label, and no captions
    plain = tmp_path / "plain"
    assert main(["data", "pack", str(folder), "--out", str(plain), "--label-column", "kind"]) == 0
    records = list(iter_records(str(plain)))
    assert len(records) == 6 and all(r.caption is None for r in records)
    assert sorted(r.label for r in records) == [0, 0, 1, 1, 2, 2]
    assert main(["data", "pack", "digits", "--out", str(tmp_path / "d"),
                 "--caption-column", "x"]) == 2  # fmt: skip
    assert "image folders only" in capsys.readouterr().err
