"""A full disk or a read-only output folder: a clear error, before training where it can be known,
and no half-written files.

Two ways in: ``OSError(ENOSPC)`` injected into the writes of an in-process run (always runs), and
real file systems: a tiny or read-only tmpfs mounted in a private mount namespace of a child process
(runs where the machine allows mounts, as root in CI containers; skipped elsewhere).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from ganfuse.cli import main
from ganfuse.errors import CheckpointError, UserError
from ganfuse.train import checkpoint as checkpoint_module
from ganfuse.train.checkpoint import checkpoint_dirs
from ganfuse.train.loop import Trainer
from tests.faults.conftest import (
    assert_every_checkpoint_verifies,
    cli_args,
    leftovers,
    start_cli_with_mounts,
    tiny_config,
)

UNAVAILABLE = 97  # a mount-namespace child's exit code when mounts are not allowed here


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_enospc(real):
    """Wrap a writer ``real(obj, path)`` so it writes a truncated file, then fails like a full disk."""

    def write(obj, path, *args, **kwargs):
        real(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 3])
        _enospc()

    return write


@pytest.mark.parametrize("writer", ["torch.save", "save_file", "manifest"])
def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch, writer):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(), run, progress=False)
    trainer.fit(steps=10)
    if writer == "torch.save":
        monkeypatch.setattr(
            checkpoint_module.torch, "save", _half_then_enospc(checkpoint_module.torch.save)
        )
    elif writer == "save_file":
        monkeypatch.setattr(
            checkpoint_module, "save_file", _half_then_enospc(checkpoint_module.save_file)
        )
    else:
        monkeypatch.setattr(checkpoint_module.Path, "write_text", _enospc)
    with pytest.raises(CheckpointError) as info:
        trainer.fit(steps=20)
    message = str(info.value)
    assert "disk is full" in message and "step_00000010" in message and "--resume" in message
    assert [p.name for p in checkpoint_dirs(run)] == ["step_00000010", "step_00000005"]
    assert leftovers(run) == []
    assert_every_checkpoint_verifies(run)


def test_disk_full_while_logging_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    run = tmp_path / "run"
    trainer = Trainer(tiny_config(), run, progress=False)
    trainer.fit(steps=5)
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if Path(str(file)).name == "metrics.jsonl" and any(c in mode for c in "aw"):
            _enospc()
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(UserError, match="disk is full|No space left"):
        trainer.fit(steps=10)
    monkeypatch.undo()
    assert leftovers(run) == []
    assert_every_checkpoint_verifies(run)


def test_not_enough_space_for_the_checkpoints_is_refused_before_training(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        checkpoint_module.shutil, "disk_usage", lambda _: usage._replace(free=200_000)
    )
    with pytest.raises(CheckpointError, match="not enough free space.*keep_checkpoints"):
        Trainer(tiny_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_output_folder_is_refused_before_training(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(UserError, match="cannot write to the run directory.*Read-only"):
        Trainer(tiny_config(), tmp_path / "run", progress=False)


def test_output_path_under_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(cli_args(tmp_path / "file" / "run")) == 2
    assert "cannot write to the run directory" in capsys.readouterr().err


# ------------------------------------------------------------------ real file systems


def _run_with_mounts(forkserver, tmp_path, argv, mounts, **kwargs):
    child = start_cli_with_mounts(forkserver, argv, tmp_path / "child.log", mounts, **kwargs)
    code = child.wait()
    if code == UNAVAILABLE:
        pytest.skip("this machine does not allow mounting a tmpfs in a private mount namespace")
    return code, child.output()


def test_real_tiny_disk_is_refused_before_training(forkserver, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, out = _run_with_mounts(
        forkserver,
        tmp_path,
        cli_args(mnt / "run"),
        [["-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)]],
    )
    assert code == 2, out
    assert "not enough free space" in out and "Traceback" not in out
    assert "training dcgan" not in out  # refused before the first step


def test_real_disk_filling_up_during_training(forkserver, tmp_path):
    """The disk fills up after the start (another process writing); ~100 KiB stay free, enough for
    the log, not for a checkpoint. The tmpfs dies with the child, so the test looks at the error."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, out = _run_with_mounts(
        forkserver,
        tmp_path,
        [*cli_args(mnt / "run"), "--set", "train.keep_checkpoints=1"],
        [["-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)]],
        fill_after_start=str(mnt / "filler"),
        leave_free=100_000,
    )
    assert code == 2, out
    assert "could not write the checkpoint of step 5" in out and "disk is full" in out, out
    assert "Traceback" not in out


def test_real_read_only_output_folder(forkserver, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, out = _run_with_mounts(
        forkserver,
        tmp_path,
        cli_args(mnt / "run"),
        [["-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", str(mnt)]],
    )
    assert code == 2, out
    assert "cannot write to the run directory" in out and "Read-only file system" in out


def test_real_read_only_run_cannot_resume_and_stays_intact(forkserver, run_copy, tmp_path):
    before = {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file()}
    code, out = _run_with_mounts(
        forkserver,
        tmp_path,
        cli_args(run_copy, resume=True, steps=30),
        [["--bind", str(run_copy), str(run_copy)], ["-o", "remount,bind,ro", str(run_copy)]],
    )
    assert code == 2, out
    assert "cannot write to the run directory" in out
    assert {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file()} == before
