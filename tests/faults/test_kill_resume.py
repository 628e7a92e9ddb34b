"""kill -9 at any moment, then ``--resume``: the run ends bit-identical to an uninterrupted one.

Two kinds of trial, each a real ``ganfuse train`` command in a child process:

- at a chosen stage of a checkpoint write (``GANFUSE_FAULT_CHECKPOINT_KILL``): every stage of
  the write, rename, pointer update and pruning, including the first and the last checkpoint;
- at a random moment (during start-up, or a random fraction of a second after a random step),
  one or two kills per trial, with a short sleep at each stage of a
  checkpoint write (``GANFUSE_FAULT_CHECKPOINT_DELAY``) so a good share of kills land mid-write.

After the kills the same command with ``--resume`` runs to the end. Asserted every time: exit code
0, weights, optimiser moments, counters and logged losses identical to the uninterrupted run, no
step logged twice, no temporaries left, every checkpoint on disk verifies, and the work redone
after a kill is at most one checkpoint interval.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from tests.faults.conftest import (
    STEPS,
    assert_every_checkpoint_verifies,
    assert_same_training_result,
    cli_args,
    leftovers,
    report,
    start_cli,
)

CHECKPOINT_EVERY = 5
STAGE_TRIALS = [
    ("tmp_created", 5),  # the first checkpoint: nothing to resume from, the run starts over
    ("renamed", 5),
    ("weights_written", 10),
    ("manifest_written", 10),
    ("state_written", 15),
    ("latest_written", 15),
    ("pruning", 15),
    ("weights_written", 20),  # the final checkpoint
    ("pruning", 20),  # killed while deleting an old checkpoint, nothing left to train
]
RANDOM_TRIALS = 8
RANDOM_TRIALS_SLOW = 40
WRITE_DELAY_S = "0.03"


def _check_finished_run(final, run, reference_run, kills: list[dict]) -> None:
    """``final``: the last, uninterrupted start. Fills in each kill's ``steps_lost``."""
    assert final.process.exitcode == 0, final.output()
    assert_same_training_result(run, reference_run)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY))
    assert leftovers(run) == []
    assert_every_checkpoint_verifies(run)
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:08d}"
    # Work lost to a kill: the steps it had done minus the step the next start that got as far
    # as training resumed from (a start killed during its own set-up resumes nothing).
    for kill in kills:
        kill["steps_lost"] = max(0, kill["step_at_kill"] - kill["resumed_next_from"])
        assert kill["steps_lost"] <= CHECKPOINT_EVERY, (kills, final.output())


def _resume(forkserver, run, log, env=None):
    child = start_cli(forkserver, cli_args(run, resume=True), log, env)
    child.wait()
    return child


@pytest.mark.parametrize(("stage", "step"), STAGE_TRIALS, ids=[f"{s}@{n}" for s, n in STAGE_TRIALS])
def test_kill_during_checkpoint_stage(forkserver, reference_run, tmp_path, stage, step):
    run = tmp_path / "run"
    child = start_cli(
        forkserver,
        cli_args(run),
        tmp_path / "killed.log",
        {"GANFUSE_FAULT_CHECKPOINT_KILL": f"{stage}@{step}"},
    )
    code = child.wait()
    assert code == -9, f"expected the injected SIGKILL, got exit {code}:\n{child.output()}"
    assert child.progress.value == step and child.in_checkpoint.value == 1
    kill = {"trial": f"{stage}@{step}", "step_at_kill": step, "in_checkpoint": True}
    resumed = _resume(forkserver, run, tmp_path / "resume.log")
    assert resumed.process.exitcode == 0, resumed.output()
    kill["resumed_next_from"] = resumed.start_step.value
    expected_from = (
        step if stage in ("renamed", "latest_written", "pruning") else step - CHECKPOINT_EVERY
    )
    assert resumed.start_step.value == expected_from, resumed.output()
    if expected_from == 0:
        assert "starting from step 0" in resumed.output()
    _check_finished_run(resumed, run, reference_run, [kill])
    report({"kind": "stage", **kill})


def _note_start(kills: list[dict], start_step: int) -> None:
    """Record where a start resumed from on the kills before it that still lack one."""
    if start_step < 0:
        return  # killed before it got to training
    for kill in kills:
        kill.setdefault("resumed_next_from", start_step)


def _wait_for_random_moment(child, rng: random.Random) -> None:
    """Return at a random moment of ``child``'s run: during its start-up (one time in five), else
    a random fraction of a second after it reaches a random step, which with the slowed writes
    often falls inside a checkpoint write."""
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0.0, 0.3))
        return
    target = rng.randrange(STEPS)
    while child.process.is_alive() and child.progress.value < target:
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.25))


def _random_trials(forkserver, reference_run, tmp_path, trials: int, seed: int):
    rng = random.Random(seed)
    summary = {
        "trials": 0,
        "kills": 0,
        "kills_in_checkpoint": 0,
        "kills_before_first_checkpoint": 0,
        "max_steps_lost": 0,
    }
    for trial in range(trials):
        run = tmp_path / f"trial{trial}"
        kills: list[dict] = []
        for attempt in range(rng.choice((1, 1, 2))):
            child = start_cli(
                forkserver,
                cli_args(run, resume=attempt > 0),
                tmp_path / f"trial{trial}_{attempt}.log",
                {"GANFUSE_FAULT_CHECKPOINT_DELAY": WRITE_DELAY_S},
            )
            _wait_for_random_moment(child, rng)
            step, writing = child.progress.value, child.in_checkpoint.value
            if not child.kill():
                assert child.process.exitcode == 0, child.output()
                break  # finished before the kill landed
            _note_start(kills, child.start_step.value)
            kills.append({"step_at_kill": max(step, 0), "in_checkpoint": bool(writing)})
        if not kills:
            continue
        final = _resume(forkserver, run, tmp_path / f"trial{trial}_final.log")
        _note_start(kills, final.start_step.value)
        _check_finished_run(final, run, reference_run, kills)
        summary["trials"] += 1
        summary["kills"] += len(kills)
        summary["kills_in_checkpoint"] += sum(k["in_checkpoint"] for k in kills)
        summary["kills_before_first_checkpoint"] += sum(
            k["step_at_kill"] < CHECKPOINT_EVERY for k in kills
        )
        summary["max_steps_lost"] = max(
            summary["max_steps_lost"], *(k["steps_lost"] for k in kills)
        )
    report({"kind": "random", **summary})
    print("random kill trials:", summary)
    return summary


def test_kill_at_random_moments(forkserver, reference_run, tmp_path):
    summary = _random_trials(forkserver, reference_run, tmp_path, RANDOM_TRIALS, seed=20240611)
    assert summary["kills"] >= RANDOM_TRIALS - 2, summary


@pytest.mark.slow
def test_kill_at_random_moments_many(forkserver, reference_run, tmp_path):
    summary = _random_trials(forkserver, reference_run, tmp_path, RANDOM_TRIALS_SLOW, seed=7)
    assert summary["kills"] >= RANDOM_TRIALS_SLOW - 5 and summary["kills_in_checkpoint"] >= 5, (
        summary
    )


def test_resume_without_a_checkpoint_starts_the_run(tmp_path, caplog):
    """``--resume`` is safe to pass on every start: with nothing to resume it trains from step 0."""
    from ganfuse.cli import main

    run = tmp_path / "never-started"
    assert main(cli_args(run, resume=True, steps=5)) == 0
    assert "no checkpoint" in caplog.text and "starting from step 0" in caplog.text
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")] == [
        "step_00000005"
    ]


def test_kill_in_the_middle_of_a_log_interval_resumes_the_same_log(forkserver, tmp_path):
    """Log every 10 steps, checkpoint every 5, kill -9 right after checkpoint 15: the resumed
    run's step-20 line averages steps 11-20 like the uninterrupted run's (the checkpoint carries
    the statistics of 11-15), bit for bit, and its ``time`` goes on from the killed run's."""
    from ganfuse.cli import main

    log_every = "train.log_every=10"
    reference = tmp_path / "reference"
    assert main(cli_args(reference, log_every)) == 0
    run = tmp_path / "run"
    child = start_cli(
        forkserver,
        cli_args(run, log_every),
        tmp_path / "killed.log",
        {"GANFUSE_FAULT_CHECKPOINT_KILL": "latest_written@15"},
    )
    assert child.wait() == -9, child.output()
    killed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in killed] == [10]
    resumed = start_cli(forkserver, cli_args(run, log_every, resume=True), tmp_path / "resume.log")
    assert resumed.wait() == 0, resumed.output()
    assert resumed.start_step.value == 15
    mine, theirs = (
        [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for folder in (run, reference)
    )
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [10, 20]
    for a, b in zip(mine, theirs, strict=True):
        assert a.keys() == b.keys()
        wall = ("time", "img_per_s")
        assert {k: v for k, v in a.items() if k not in wall} == {
            k: v for k, v in b.items() if k not in wall
        }
    assert mine[0] == killed[0] and mine[1]["time"] > killed[0]["time"]
    assert_same_training_result(run, reference)
