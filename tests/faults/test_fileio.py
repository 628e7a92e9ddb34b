"""Atomic writes: a failure in the middle keeps the old file and leaves no temporary behind."""

from __future__ import annotations

import pytest

from ganfuse.fileio import atomic_write, atomic_write_text


def test_atomic_write_text_replaces_the_whole_file(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old: 1\n")
    atomic_write_text(path, "new: 2\n")
    assert path.read_text() == "new: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_write_that_fails_halfway_keeps_the_old_content(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"old weights")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_fusion_run_files_are_written_atomically(tmp_path, monkeypatch):
    from torch import nn

    import ganfuse.multimodal.checkpoint as ckpt
    import ganfuse.train.checkpoint as shared
    from ganfuse.errors import CheckpointError
    from ganfuse.multimodal.config import make_config

    def files(folder):
        return {
            str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }

    config = make_config("matching", "early", [])
    meta = {"task": "matching"}
    run = ckpt.save_run(
        tmp_path / "run", "fusion", nn.Linear(2, 2), config, meta, {"acc": 1.0}, step=5
    )
    before = files(run)

    def broken(state, filename):
        open(filename, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    # multimodal runs write the GAN runs' checkpoint format
    monkeypatch.setattr(shared, "save_file", broken)
    with pytest.raises(CheckpointError, match="the disk is full"):
        ckpt.save_run(run, "fusion", nn.Linear(2, 2), config, meta, {"acc": 0.5}, step=9)
    assert files(run) == before  # the earlier run, untouched, and no temporary left behind
