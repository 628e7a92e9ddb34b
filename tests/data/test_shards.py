"""WebDataset shards: pack, stream back exactly, survive damaged shards, divide work, train from them."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.config import DataConfig, load_config
from ganfuse.data import build_dataset, shards
from ganfuse.data.digits import load_digits_tensors
from ganfuse.data.pack import pack_digits, pack_folder
from ganfuse.data.shards import ShardDataset, ShardProblems, iter_records
from ganfuse.errors import ConfigError, DataError, OfflineError


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [-1, 1] -> uint8, exact for images that came from uint8."""
    return ((images + 1.0) * 127.5).round().to(torch.uint8).numpy()


def _captioned_folder(
    root: Path, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, str, str]]:
    """Two class sub-folders of random RGB squares, a captions.jsonl, one unreadable file and one
    caption naming a missing file. Returns file -> (pixels (3, H, W), caption, class)."""
    expected = {}
    lines = []
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            side = 12 + 2 * i
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            file = f"{cls}/{i}.png"
            Image.fromarray(pixels).save(root / file)
            caption = f"a {cls} number {i}, naïve café ☕"
            expected[file] = (pixels.transpose(2, 0, 1), caption, cls)
            lines.append({"file": file, "caption": caption})
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines += [
        {"file": "dog/broken.png", "caption": "broken"},
        {"file": "cat/gone.png", "caption": "missing"},
    ]
    (root / "captions.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8"
    )
    return expected


def test_pack_digits_round_trips_images_and_labels_exactly(tmp_path):
    summary = pack_digits(tmp_path, shard_size=50, num=120, seed=3)
    assert (summary.samples, summary.shards, summary.skipped) == (120, 3, 0)
    index = json.loads((tmp_path / "shards.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [50, 50, 20]
    assert (index["channels"], index["image_size"], index["captions"]) == (1, 32, False)
    assert index["class_names"] == [str(d) for d in range(10)]

    images, labels = load_digits_tensors(32)
    records = list(iter_records(str(tmp_path)))
    keys = [int(r.key) for r in records]
    assert sorted(keys) == list(range(120)) and keys != sorted(keys)  # all there, shuffled order
    for r in records:
        i = int(r.key)
        assert r.image.dtype == np.uint8 and r.image.shape == (1, 32, 32)
        np.testing.assert_array_equal(r.image, _to_uint8(images[i]))
        assert r.label == int(labels[i]) and r.caption is None and r.meta == {"class": str(r.label)}

    ds = ShardDataset(tmp_path, 32, shuffle_buffer=0)
    assert (ds.channels, ds.num_classes, ds.has_captions, ds.num_samples) == (1, 10, False, 120)
    streamed = list(ds)
    assert len(streamed) == 120 and all(len(item) == 2 for item in streamed)
    by_order = {int(r.key): r for r in records}
    for (image, label), key in zip(streamed, keys, strict=True):  # stored order when not shuffled
        assert image.dtype == torch.float32 and image.min() >= -1 and image.max() <= 1
        np.testing.assert_array_equal(_to_uint8(image), by_order[key].image)
        assert label == by_order[key].label


def test_pack_folder_cli_round_trips_images_captions_and_labels(tmp_path, capsys):
    folder, out = tmp_path / "pics", tmp_path / "shards"
    expected = _captioned_folder(folder, np.random.default_rng(0))
    assert main(["data", "pack", str(folder), "--out", str(out), "--shard-size", "4"]) == 0
    out_text = capsys.readouterr().out
    assert "wrote 6 samples in 2 shard(s)" in out_text and "(skipped 2)" in out_text

    index = json.loads((out / "shards.json").read_text())
    assert (
        index["class_names"] == ["cat", "dog"]
        and index["captions"] is True
        and index["image_size"] is None
    )
    records = list(iter_records(str(out)))  # stored size: every image comes back pixel for pixel
    assert sorted(r.meta["file"] for r in records) == sorted(expected)
    for r in records:
        pixels, caption, cls = expected[r.meta["file"]]
        np.testing.assert_array_equal(r.image, pixels)
        assert r.caption == caption
        assert index["class_names"][r.label] == cls == r.meta["class"]

    ds = ShardDataset(out, 16, shuffle_buffer=0)
    items = list(ds)
    assert len(items) == 6 and all(img.shape == (3, 16, 16) for img, _, _ in items)
    assert sorted(c for _, _, c in items) == sorted(c for _, c, _ in expected.values())
    # the 16x16 image needs no resize, so it streams back exactly too
    ((image, _, _),) = [it for it in items if it[2] == expected["cat/2.png"][1]]
    np.testing.assert_array_equal(_to_uint8(image), expected["cat/2.png"][0])

    assert main(["data", "pack", str(folder), "--out", str(out)]) == 2  # never overwrites shards
    assert "already holds shards" in capsys.readouterr().err


def test_pack_cli_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    assert main(["data", "pack", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image folder not found" in err


def _rewrite_members(path: Path, change) -> None:
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            data = change(info.name, data)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_damaged_shards_and_samples_are_reported_once_and_skipped(tmp_path, caplog):
    pack_digits(tmp_path, shard_size=10, num=40)
    names = [f"shard-{i:06d}.tar" for i in range(4)]
    # shard 1 breaks off inside a member's data
    raw = (tmp_path / names[1]).read_bytes()
    (tmp_path / names[1]).write_bytes(raw[: len(raw) // 2 + 100])
    # shard 2 ends cleanly after 3 samples: only the index reveals it is short
    members_per_sample = 3  # digits samples have .png, .cls and .json
    with tarfile.open(tmp_path / names[2]) as tar:
        cut = tar.getmembers()[3 * members_per_sample].offset
    (tmp_path / names[2]).write_bytes((tmp_path / names[2]).read_bytes()[:cut])
    # shard 3 holds one sample whose PNG is garbage and one whose label is out of range
    changed = []

    def corrupt(name: str, data: bytes) -> bytes:
        if name.endswith(".png") and not changed:
            changed.append(name)
            return b"\x89PNG\r\n\x1a\n" + bytes(40)
        if name.endswith(".cls") and len(changed) == 1 and not name.startswith(changed[0][:8]):
            changed.append(name)
            return b"10"
        return data

    _rewrite_members(tmp_path / names[3], corrupt)

    problems = ShardProblems()
    per_pass = len(list(iter_records(str(tmp_path), problems=problems)))
    assert (problems.bad_shards, problems.bad_samples) == (
        2,
        1,
    )  # the label is only checked for training
    assert 10 + 0 + 3 + 9 < per_pass < 10 + 10 + 3 + 9  # shard 1 keeps the samples before its break
    per_pass -= 1  # the out-of-range label

    # caplog's handler sits on the ganfuse logger (tests/conftest.py); with propagation also on
    # (no CLI run yet in this process) the root logger would record every line a second time
    logger = logging.getLogger("ganfuse")
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with caplog.at_level(logging.WARNING, logger="ganfuse"):
            ds = ShardDataset(tmp_path, 32, shuffle_buffer=0, repeat=True)
            stream = iter(ds)
            items = [
                next(stream) for _ in range(3 * per_pass + 1)
            ]  # into a 4th pass of an endless stream
    finally:
        logger.propagate = propagate
    assert all(image.shape == (1, 32, 32) for image, _ in items)
    assert (ds.bad_shards, ds.skipped) == (3 * 2, 3 * 2)
    assert all(0 <= label < 10 for _, label in items)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # one line, not one per pass
    assert "skipped 2 truncated or unreadable shard(s) and 2 unusable sample(s)" in warnings[0]
    assert names[1] in warnings[0]


def _captions_seen(ds: ShardDataset, rank: int, world: int, workers: int, monkeypatch) -> list[str]:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    seen = []
    for worker in range(workers):
        info = (
            SimpleNamespace(id=worker, num_workers=workers, seed=17 + worker)
            if workers > 1
            else None
        )
        monkeypatch.setattr(shards, "get_worker_info", lambda info=info: info)
        seen += [caption for _, _, caption in ds]
    return seen


@pytest.mark.parametrize("world,workers", [(2, 1), (2, 2), (4, 1), (1, 5)])
def test_ranks_and_workers_read_disjoint_shares_that_cover_a_pass(
    tmp_path, monkeypatch, world, workers
):
    _captioned_folder(tmp_path / "pics", np.random.default_rng(1))
    pack_folder(tmp_path / "pics", tmp_path / "out", shard_size=2)  # 3 shards of 2
    ds = ShardDataset(tmp_path / "out", 8, shuffle_buffer=4)
    everything = sorted(c for _, _, c in ds)
    shares = [_captions_seen(ds, rank, world, workers, monkeypatch) for rank in range(world)]
    assert sorted(sum(shares, [])) == everything  # nothing read twice, nothing missed
    assert all(shares)  # even with more readers than shards, every rank gets data


def test_dataloader_workers_divide_the_stream(tmp_path):
    pack_digits(tmp_path, shard_size=7, num=21)
    ds = ShardDataset(tmp_path, 32, shuffle_buffer=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    labels = sorted(int(label) for _, label in loader)
    assert labels == sorted(r.label for r in iter_records(str(tmp_path)))


def test_config_and_hugging_face_errors_say_what_to_do(monkeypatch):
    with pytest.raises(ConfigError, match="data.path"):
        load_config("digits-dcgan", ["data.name=shards"])
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed
    with pytest.raises(DataError, match="not found"):
        build_dataset(DataConfig(name="shards", path="no/such/shards"))
    with pytest.raises(OfflineError, match="pip install datasets"):
        build_dataset(DataConfig(name="shards", path="hf://someone/pictures"))


def test_train_from_shards_end_to_end(tmp_path):
    pack_digits(tmp_path / "shards", shard_size=64, num=128)
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "digits-dcgan",
            "--out",
            str(run),
            "--steps",
            "3",
            "--no-progress",
            "--set",
            "data.name=shards",
            "--set",
            f"data.path={tmp_path / 'shards'}",
            "--set",
            "model.g_width=32",
            "--set",
            "model.d_width=8",
            "--set",
            "train.batch_size=8",
        ]
    )
    assert rc == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3 and records[-1]["images"] == 3 * 8
    assert np.isfinite(records[-1]["loss_d"]) and np.isfinite(records[-1]["loss_g"])
    assert (run / "checkpoints" / "step_00000003").is_dir()
    grid = Image.open(run / "samples" / "step_00000003.png")
    assert grid.size[0] > 32
