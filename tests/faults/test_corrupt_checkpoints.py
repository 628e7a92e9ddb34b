"""Truncated, bit-flipped, deleted or edited checkpoint files are found by their SHA-256.

The previous intact checkpoint is used with a warning (and a resumed run still ends
bit-identical); with none left, a one-line error. Every damage, however random, ends in
:class:`CheckpointError`, never in a crash or in loading the damaged weights.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganfuse.cli import main
from ganfuse.errors import CheckpointError
from ganfuse.train.checkpoint import (
    checkpoint_dirs,
    latest_good_checkpoint,
    load_checkpoint_files,
    safe_torch_load,
    save_checkpoint,
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


# ------------------------------------------------------------------ resuming after a fallback

WALL_CLOCK = ("time", "img_per_s")


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_after_damage_moves_the_damaged_checkpoint_aside(run_copy, reference_run, caplog):
    newest, previous = checkpoint_dirs(run_copy)[:2]
    flip_bit(newest / "weights.safetensors", 12345)
    damaged = _tree(newest)
    with caplog.at_level("WARNING", logger="ganfuse"):
        train_in_process(run_copy, resume=True)
    aside = run_copy / "checkpoints" / "damaged" / newest.name
    assert _tree(aside) == damaged  # kept, byte for byte, for inspection
    assert f"moved the damaged checkpoint {newest.name} aside" in caplog.text
    # the step 20 written again and the step 15 resumed from, both intact; nothing pruned wrongly
    assert [p.name for p in checkpoint_dirs(run_copy)] == ["step_00000020", previous.name]
    for path in checkpoint_dirs(run_copy):
        verify_checkpoint(path)
    assert_same_training_result(run_copy, reference_run)


def test_pruning_never_removes_the_checkpoint_resumed_from(run_copy):
    """A damaged checkpoint newer than any the resumed run writes (a run that stopped at step 22)
    used to count towards keep_checkpoints: the run's next save pruned the good step 20 and kept
    the damaged 22. It is moved aside; the good one stays."""
    newest = checkpoint_dirs(run_copy)[0]
    stray = run_copy / "checkpoints" / "step_00000022"
    shutil.copytree(newest, stray)  # its manifest names step 20: damaged
    with pytest.raises(CheckpointError):
        verify_checkpoint(stray)
    trainer = train_in_process(run_copy, resume=True, steps=25)
    assert trainer.step == 25
    assert [p.name for p in checkpoint_dirs(run_copy)] == ["step_00000025", "step_00000020"]
    for path in checkpoint_dirs(run_copy):
        verify_checkpoint(path)
    assert (run_copy / "checkpoints" / "damaged" / "step_00000022").is_dir()
    assert (run_copy / "checkpoints" / "latest").read_text().strip() == "step_00000025"


def test_pruning_keeps_what_was_just_written_and_newer_folders(tmp_path):
    weights = {"w": torch.ones(2)}
    for step in (10, 30):
        save_checkpoint(tmp_path, step, weights, {"step": step}, {}, keep=5)
    save_checkpoint(tmp_path, 20, weights, {"step": 20}, {}, keep=1)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_00000030", "step_00000020"]
    save_checkpoint(tmp_path, 25, weights, {"step": 25}, {}, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == [
        "step_00000030",
        "step_00000025",
        "step_00000020",
    ]


def test_a_second_damage_of_the_same_step_is_kept_apart(run_copy):
    newest = checkpoint_dirs(run_copy)[0]
    aside = run_copy / "checkpoints" / "damaged"
    for _ in range(2):
        flip_bit(checkpoint_dirs(run_copy)[0] / "state.pt", 999)
        train_in_process(run_copy, resume=True)
    assert sorted(p.name for p in aside.iterdir()) == [newest.name, f"{newest.name}.2"]


LOG_ROUNDING = 5e-4  # metrics.jsonl keeps the training time to the millisecond


def test_resumed_log_continues_the_training_time(run_copy):
    before = _log(run_copy)
    newest, previous = checkpoint_dirs(run_copy)[:2]
    saved_seconds = safe_torch_load(previous / "state.pt")["train_seconds"]
    # step 15's state: at least step 15's log time, which the log rounds to the millisecond (0.12395 s
    # saved was once logged as 0.124): compared to within that rounding
    assert saved_seconds >= before[-2]["time"] - LOG_ROUNDING and before[-2]["time"] > 0
    flip_bit(newest / "weights.safetensors", 777)
    train_in_process(run_copy, resume=True)
    after = _log(run_copy)
    assert [r["step"] for r in after] == [5, 10, 15, 20]
    assert after[:3] == before[:3]  # lines up to the checkpoint are kept as they were
    assert after[3]["time"] > saved_seconds >= after[2]["time"] - LOG_ROUNDING
    final = safe_torch_load(checkpoint_dirs(run_copy)[0] / "state.pt")["train_seconds"]
    assert final >= after[3]["time"] - LOG_ROUNDING


@pytest.fixture(scope="module")
def reference_log_every_10(tmp_path_factory):
    """An uninterrupted 20-step run that logs every 10 steps and checkpoints every 5: the
    checkpoint at step 15 falls in the middle of a log interval."""
    run = tmp_path_factory.mktemp("reference10") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train_in_process(run, "train.log_every=10")
    torch.set_num_threads(before)
    return run


def test_resume_mid_interval_logs_exactly_the_uninterrupted_losses(reference_log_every_10, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_log_every_10, run)
    newest, previous = checkpoint_dirs(run)[:2]
    assert previous.name == "step_00000015"
    # the checkpoint holds the statistics of steps 11-15
    stats = safe_torch_load(previous / "state.pt")["stats"]
    assert set(stats["counts"]) >= {"loss_d", "loss_g"} and stats["counts"]["loss_g"] == 5
    flip_bit(newest / "weights.safetensors", 4242)
    train_in_process(run, "train.log_every=10", resume=True)
    mine, theirs = _log(run), _log(reference_log_every_10)
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [10, 20]
    for a, b in zip(mine, theirs, strict=True):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k not in WALL_CLOCK} == {
            k: v for k, v in b.items() if k not in WALL_CLOCK
        }  # == on floats: bit-identical means
    assert_same_training_result(run, reference_log_every_10)
