"""Truncated, bit-flipped, deleted or edited checkpoint files are found by their SHA-256.

The previous intact checkpoint is used with a warning (and a resumed run still ends
bit-identical); with none left, a one-line error. Every damage, however random, ends in
:class:`CheckpointError`, never in a crash or in loading the damaged weights.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganfuse.cli import main
from ganfuse.errors import CheckpointError
from ganfuse.train.checkpoint import (
    checkpoint_dirs,
    latest_good_checkpoint,
    load_checkpoint_files,
    verify_checkpoint,
)
from tests.faults.conftest import (
    assert_same_training_result,
    flip_bit,
    rewrite_manifest,
    train_in_process,
)

FILES = ("weights.safetensors", "state.pt", "manifest.json")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path):
    path.write_bytes(b"")


def _flip(path):
    flip_bit(path, 8 * path.stat().st_size // 3 + 5)


def _delete(path):
    path.unlink()


DAMAGES = {"truncated": _truncate, "zero-byte": _zero, "bit-flip": _flip, "deleted": _delete}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", FILES)
def test_damaged_newest_checkpoint_falls_back_with_a_warning(run_copy, caplog, name, damage):
    newest, previous = checkpoint_dirs(run_copy)[:2]
    DAMAGES[damage](newest / name)
    with pytest.raises(CheckpointError):
        verify_checkpoint(newest)
    with caplog.at_level("WARNING", logger="ganfuse"):
        path, manifest, _, state = latest_good_checkpoint(run_copy)
    assert path == previous and manifest["step"] == state["step"] == 15
    assert "skipping damaged checkpoint" in caplog.text and newest.name in caplog.text


def test_resume_after_damage_uses_the_previous_checkpoint_and_ends_identical(
    run_copy, reference_run, caplog
):
    newest = checkpoint_dirs(run_copy)[0]
    flip_bit(newest / "weights.safetensors", 12345)
    with caplog.at_level("INFO", logger="ganfuse"):
        trainer = train_in_process(run_copy, resume=True)
    assert (
        "skipping damaged checkpoint" in caplog.text and "resumed from step_00000015" in caplog.text
    )
    assert trainer.step == 20
    assert_same_training_result(run_copy, reference_run)


def test_all_checkpoints_damaged_is_one_clear_error(run_copy, tmp_path, capsys):
    for path in checkpoint_dirs(run_copy):
        _truncate(path / "state.pt")
    with pytest.raises(CheckpointError, match="all 2 checkpoint.*damaged.*cannot resume"):
        latest_good_checkpoint(run_copy)
    for argv in (
        ["sample", str(run_copy), "--num", "2", "--out", str(tmp_path / "s")],
        ["train", "digits-dcgan", "--out", str(run_copy), "--resume", "--no-progress"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "damaged" in err and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("ganfuse: error:")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(FILES), bit=st.integers(min_value=0, max_value=2**40))
def test_any_single_bit_flip_is_detected(run_copy, name, bit):
    newest = checkpoint_dirs(run_copy)[0]
    original = (newest / name).read_bytes()
    try:
        flip_bit(newest / name, bit)
        with pytest.raises(CheckpointError):
            load_checkpoint_files(newest)
    finally:
        (newest / name).write_bytes(original)
    load_checkpoint_files(newest)  # restored: intact again


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600))
def test_arbitrary_manifest_bytes_never_crash(run_copy, data):
    newest = checkpoint_dirs(run_copy)[0]
    (newest / "manifest.json").write_bytes(data)
    with pytest.raises(CheckpointError):
        verify_checkpoint(newest)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(format=99),
        lambda m: m.update(sha256=["weights.safetensors", "state.pt"]),
        lambda m: m.update(
            sha256={"../../../etc/passwd": "0" * 64, "state.pt": m["sha256"]["state.pt"]}
        ),
        lambda m: m.update(step=999),
        lambda m: m.update(config=[1, 2]),
        lambda m: m["config"].update(model="dcgan"),
    ],
    ids=[
        "future-format",
        "hashes-as-list",
        "foreign-file",
        "wrong-step",
        "config-not-mapping",
        "section-not-mapping",
    ],
)
def test_edited_manifests_are_rejected_not_crashed_on(run_copy, edit):
    newest = checkpoint_dirs(run_copy)[0]
    rewrite_manifest(newest, edit)
    with pytest.raises(CheckpointError):
        verify_checkpoint(newest)
    path, *_ = latest_good_checkpoint(run_copy)
    assert path != newest


def test_manifest_edit_without_resigning_is_detected(run_copy):
    newest = checkpoint_dirs(run_copy)[0]
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest["config"]["model"]["g_width"] = 64
    (newest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="manifest.json does not match"):
        verify_checkpoint(newest)


def test_info_on_a_run_with_a_damaged_manifest(run_copy, capsys):
    _truncate(checkpoint_dirs(run_copy)[0] / "manifest.json")
    assert main(["info", str(run_copy)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err
