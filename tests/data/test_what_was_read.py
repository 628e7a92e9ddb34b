"""Training folders say what was read, and refuse what cannot train: an unterminated quote in a
captions CSV, fewer than two usable images; the NaN guard does not blame the learning rate for
a run that never had a good state."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.data.captions import CaptionedFolderDataset
from ganfuse.data.folder import FolderDataset
from ganfuse.data.images import MIN_TRAINING_IMAGES
from ganfuse.errors import DataError
from ganfuse.train.guard import NaNGuard, TrainingDiverged

TINY_T2I = [
    "text.encoder=small",
    "model.z_dim=8",
    "model.g_width=16",
    "model.d_width=8",
    "text.cond_dim=16",
    "train.batch_size=4",
    "train.precision=fp32",
]
TINY_GAN = ["model.g_width=16", "model.d_width=8", "train.batch_size=4", "train.precision=fp32"]


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (20, 20), colour).save(path)


def _captioned(tmp_path: Path, csv_text: str) -> Path:
    folder = tmp_path / "captioned"
    folder.mkdir()
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255)), ("c.png", (0, 255, 0))):
        _png(folder / name, colour)
    (folder / "captions.csv").write_text(csv_text)
    return folder


def _train(kind: str, folder: Path, out: Path, extra: list[str]) -> int:
    args = [
        kind,
        "--out",
        str(out),
        "--steps",
        "2",
        "--no-progress",
        "--set",
        "data.name=folder",
        "--set",
        f"data.path={folder}",
    ]
    for item in extra:
        args += ["--set", item]
    return main(["train", *args])


def test_an_unterminated_quote_is_refused_naming_its_line(tmp_path, capsys):
    folder = _captioned(
        tmp_path, 'file,caption\na.png,"a red square\nb.png,a blue square\nc.png,a green one\n'
    )
    with pytest.raises(
        DataError, match=r"opens on line 2 runs to the end of the file, swallowing 2"
    ):
        CaptionedFolderDataset(folder)
    assert _train("shapes-t2i", folder, tmp_path / "run", TINY_T2I) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganfuse: error: ") and "line 2" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_quote_closed_rows_later_is_refused_too(tmp_path):
    folder = _captioned(tmp_path, 'file,caption\na.png,"red\nb.png,blue"\nc.png,green\n')
    with pytest.raises(DataError, match="opens on line 2 runs to line 3"):
        CaptionedFolderDataset(folder)


def test_a_clean_folder_says_what_it_read(tmp_path, caplog):
    folder = _captioned(tmp_path, "file,caption\na.png,red\na.png,crimson\nb.png,blue\n")
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="ganfuse"):
        warnings.simplefilter("error")
        dataset = CaptionedFolderDataset(folder)
    assert len(dataset) == 3
    assert "2 images with 3 captions; nothing skipped" in caplog.text


def test_skipped_entries_are_counted_in_the_same_line(tmp_path):
    folder = _captioned(tmp_path, "file,caption\na.png,red\nb.png,\nc.png,green\ngone.png,x\n")
    with pytest.warns(UserWarning) as record:
        CaptionedFolderDataset(folder)
    assert [str(w.message) for w in record] == [
        f"captioned folder {folder}: 2 images with 2 captions; skipped 2 entries "
        "(empty caption: 1, missing file: 1)"
    ]


def test_one_usable_captioned_image_is_refused_up_front(tmp_path, capsys):
    folder = _captioned(tmp_path, "file,caption\na.png,red\na.png,crimson\nb.png,\ngone.png,x\n")
    with pytest.warns(UserWarning), pytest.raises(DataError) as info:
        CaptionedFolderDataset(folder)
    assert str(info.value) == (
        f"captioned folder {folder} has 1 usable image with a caption (2 entries skipped); "
        f"training needs at least {MIN_TRAINING_IMAGES} different images"
    )
    with pytest.warns(UserWarning):
        assert _train("shapes-t2i", folder, tmp_path / "run", TINY_T2I) == 2
    err = capsys.readouterr().err
    assert "training needs at least 2 different images" in err and "learning rate" not in err


def test_image_folder_counts_corrupt_files_and_refuses_one_image(tmp_path, caplog, capsys):
    _png(tmp_path / "good.png", (9, 9, 9))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="ganfuse"), pytest.raises(DataError) as info:
        FolderDataset(tmp_path, 16)
    assert str(info.value) == (
        f"image folder {tmp_path} has 1 readable image (2 unreadable skipped); "
        "training needs at least 2 images"
    )
    assert "1 images read; skipped 2 unreadable image(s) of 3" in caplog.text
    assert _train("digits", tmp_path, tmp_path / "run", TINY_GAN) == 2
    assert "training needs at least 2 images" in capsys.readouterr().err
    _png(tmp_path / "second.png", (200, 9, 9))
    assert len(FolderDataset(tmp_path, 16)) == 2


def _guard() -> tuple[NaNGuard, torch.optim.Optimizer]:
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([weight], lr=1e-3)
    guard = NaNGuard(lambda: {"w": weight.detach().clone()}, lambda s: None, [opt], max_retries=2)
    guard.take_snapshot()  # the loop snapshots the starting state
    return guard, opt


def test_guard_does_not_blame_the_learning_rate_when_no_interval_was_ever_finite():
    guard, _ = _guard()
    assert not guard.check(False, 2) and not guard.check(False, 4)
    with pytest.raises(TrainingDiverged) as info:
        guard.check(False, 6)
    message = str(info.value)
    assert "never reached a good state" in message
    assert "learning rate is unlikely to be the cause" in message
    assert "lower train.lr" not in message and "last good checkpoint" not in message


def test_guard_blames_the_learning_rate_after_a_good_interval():
    guard, _ = _guard()
    assert guard.check(True, 2)
    assert not guard.check(False, 4) and not guard.check(False, 6)
    with pytest.raises(TrainingDiverged, match="diverged at step 8.*lower train.lr_g/train.lr_d"):
        guard.check(False, 8)
