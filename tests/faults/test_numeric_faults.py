"""NaN batches and exploding learning rates: the guard recovers, or stops with a clear message;
no checkpoint ever holds NaN weights, and the last good one stays intact (hash-verified)."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.cli import main
from ganfuse.errors import ConfigError, UserError
from ganfuse.train.checkpoint import checkpoint_dirs, latest_good_checkpoint
from ganfuse.train.guard import TrainingDiverged
from ganfuse.train.loop import Trainer
from tests.faults.conftest import assert_every_checkpoint_verifies, cli_args, tiny_config


def _poison(trainer: Trainer, when) -> dict:
    """Replace the real batch by NaNs whenever ``when(trainer)`` holds; counts the poisoned batches."""
    original, count = trainer._next_batch, {"n": 0}

    def next_batch():
        real, *rest = original()  # images, conditions, labels
        if when(trainer):
            count["n"] += 1
            real = torch.full_like(real, float("nan"))
        return (real, *rest)

    trainer._next_batch = next_batch
    return count


def test_nan_between_log_steps_never_reaches_a_checkpoint(tmp_path, caplog):
    """Checkpoints every 3 steps, guard checks every 5: a NaN at step 7 must not be saved at step 9."""
    trainer = Trainer(
        tiny_config("train.checkpoint_every=3", "train.keep_checkpoints=10"),
        tmp_path / "run",
        progress=False,
    )
    poisoned = _poison(trainer, lambda t: t.step == 7 and not poisoned["n"])
    with caplog.at_level("WARNING", logger="ganfuse"):
        trainer.fit()
    assert poisoned["n"] == 1 and trainer.guard.recoveries == 1 and trainer.step == 20
    assert "non-finite loss" in caplog.text
    assert_every_checkpoint_verifies(tmp_path / "run")  # all finite, all hashes match


def test_persistent_nan_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(), run, progress=False)
    _poison(trainer, lambda t: t.step >= 11)
    with pytest.raises(TrainingDiverged, match="diverged at step 15.*last good checkpoint is kept"):
        trainer.fit()
    assert isinstance(TrainingDiverged("x"), UserError)
    assert [p.name for p in checkpoint_dirs(run)] == ["step_00000010", "step_00000005"]
    assert_every_checkpoint_verifies(run)
    path, _, weights, _ = latest_good_checkpoint(run)
    assert path.name == "step_00000010"
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10]  # nothing logged from the diverged interval


def test_guard_lowers_the_learning_rate_until_training_is_stable(tmp_path, caplog):
    """An instability that only exists above lr/8: three reductions, compounding, must clear it."""
    trainer = Trainer(tiny_config(), tmp_path / "run", progress=False)
    lr0 = trainer.opt_d.param_groups[0]["lr"]
    _poison(trainer, lambda t: t.step > 7 and t.opt_d.param_groups[0]["lr"] > lr0 / 8 * 1.001)
    with caplog.at_level("WARNING", logger="ganfuse"):
        trainer.fit()
    assert trainer.step == 20 and trainer.guard.recoveries == 3
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(lr0 / 8)
    assert_every_checkpoint_verifies(tmp_path / "run")
    # the reduced learning rate is part of the checkpoint, so a resumed run keeps it
    _, _, _, state = latest_good_checkpoint(tmp_path / "run")
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(lr0 / 8)


def test_learning_rate_explosion_mid_run_is_rolled_back(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path / "run", progress=False)
    step, exploded = trainer.train_step, []

    def exploding_step():
        if trainer.step == 7 and not exploded:
            exploded.append(True)
            for opt in (trainer.opt_g, trainer.opt_d):
                for group in opt.param_groups:
                    group["lr"] = 1e30
        step()

    trainer.train_step = exploding_step
    trainer.fit()
    assert trainer.guard.recoveries >= 1 and trainer.step == 20
    assert trainer.opt_d.param_groups[0]["lr"] < 1e-3  # the snapshot's rate, lowered
    assert_every_checkpoint_verifies(tmp_path / "run")


@pytest.mark.parametrize("key", ["train.lr_d", "train.lr_g"])
def test_absurd_learning_rate_is_rejected_before_training(key, tmp_path, capsys):
    with pytest.raises(ConfigError, match=key):
        tiny_config(f"{key}=1e6")
    assert main(cli_args(tmp_path / "run", f"{key}=1e6")) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_non_finite_weights_are_never_written(tmp_path):
    """Without the guard, the checkpoint writer itself refuses NaN weights."""
    run = tmp_path / "run"
    trainer = Trainer(tiny_config("train.guard=false"), run, progress=False)
    _poison(trainer, lambda t: t.step >= 6)
    with pytest.raises(UserError, match="refusing to save step 10.*NaN"):
        trainer.fit()
    assert [p.name for p in checkpoint_dirs(run)] == ["step_00000005"]
    assert_every_checkpoint_verifies(run)
