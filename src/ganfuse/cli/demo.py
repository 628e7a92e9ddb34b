"""``ganfuse demo``: the whole toolkit in one command, on a CPU laptop, offline.

Stages, each with its own progress bar, run in this order within ``--minutes``:

    digits      train the default ``digits`` GAN (FD and mode-collapse tracked as it trains)
    shapes-t2i  train the text-to-image preset, when this ganfuse ships it
    fusion      a short ``ganfuse fuse benchmark`` (matching, zero-shot, caption), when available
    finish      evaluate the digits run (RUN/eval.json), write one report, a sample grid

The budget is split in proportion to :data:`STAGE_WEIGHTS` over the stages available, and
re-split before each stage from the time actually left, so a slow stage shortens the later ones
instead of overrunning the total. Training stages give :data:`TRAIN_SHARE` of their time to the
training loop and keep the rest for setup, checkpoints and sample grids.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.config import load_config, preset_names
from ganfuse.errors import UserError
from ganfuse.inputs import check_device, check_minutes, check_output_dir, check_seed

log = logging.getLogger("ganfuse")

STAGE_WEIGHTS: dict[str, float] = {"digits": 4.0, "shapes-t2i": 2.5, "fusion": 2.5, "finish": 1.0}
TRAIN_SHARE = 0.85
DEFAULT_MINUTES = 15.0
DEMO_FUSIONS = ("early", "late-mean", "cross-attention", "film")  # one per fusion level, and FiLM
DEMO_TASKS = ("matching", "zeroshot", "caption")
# Below this share the zero-shot runs are left out: encoding every caption with the pretrained
# MiniLM costs minutes on a small CPU whatever the training budget.
ZEROSHOT_MIN_MINUTES = 3.0
EVAL_NUM = 1000


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "demo",
        "Train digits (and shapes-t2i when available) briefly, run a short fusion benchmark, "
        "evaluate, and write one HTML report, within a time budget.",
        "ganfuse demo --out runs/demo --minutes 15",
    )
    p.add_argument(
        "--out", default="runs/demo", help="folder for every run, the report and the sample grid"
    )
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="total wall-clock budget")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def available_stages() -> list[str]:
    """The stages this installation can run, in order."""
    stages = ["digits"]
    if "shapes-t2i" in preset_names():
        stages.append("shapes-t2i")
    if importlib.util.find_spec("ganfuse.multimodal.benchmark") is not None:
        stages.append("fusion")
    return [*stages, "finish"]


def plan_budget(minutes: float, stages: list[str]) -> dict[str, float]:
    """Minutes per stage: ``minutes`` split in proportion to :data:`STAGE_WEIGHTS`."""
    check_minutes(minutes)
    total = sum(STAGE_WEIGHTS[s] for s in stages)
    return {s: minutes * STAGE_WEIGHTS[s] / total for s in stages}


@dataclass
class Clock:
    """The demo's deadline; ``share(stage, left_stages)`` re-splits the time still left."""

    minutes: float
    start: float

    def elapsed(self) -> float:
        return (time.monotonic() - self.start) / 60.0

    def left(self) -> float:
        return max(0.0, self.minutes - self.elapsed())

    def share(self, stage: str, stages_left: list[str]) -> float:
        return plan_budget(max(self.left(), 1e-3), stages_left)[stage]


def _header(
    number: int, total: int, stage: str, minutes: float, clock: Clock, say: Callable[[str], None]
) -> None:
    finish = time.strftime("%H:%M", time.localtime(time.time() + 60 * clock.left()))
    say(
        f"[{number}/{total}] {stage}: {minutes:.1f} min budget | elapsed {clock.elapsed():.1f} min | "
        f"demo ETA {clock.left():.1f} min (done by {finish})"
    )


def _train(
    preset: str, out: Path, minutes: float, seed: int, device: str, extra: list[str]
) -> Path:
    """Train ``preset`` within ``minutes``, setup included: the time spent building the trainer
    (data, the text encoder and caption embeddings on a first run) comes out of the loop's share."""
    from ganfuse.train.loop import build_trainer

    start = time.monotonic()
    overrides = [f"train.seed={seed}", f"train.device={device}", *extra]
    trainer = build_trainer(load_config(preset, overrides), out, progress=True)
    left = minutes * TRAIN_SHARE - (time.monotonic() - start) / 60.0
    try:
        return trainer.fit(max_minutes=max(0.05, left))
    finally:
        trainer.dist.close()


def fusion_tasks(minutes: float) -> tuple[str, ...]:
    """The benchmark tasks the demo runs in a fusion stage of ``minutes``."""
    if minutes >= ZEROSHOT_MIN_MINUTES:
        return DEMO_TASKS
    return tuple(t for t in DEMO_TASKS if t != "zeroshot")


def _fusion(out: Path, minutes: float, seed: int, say: Callable[[str], None]) -> Path:
    from ganfuse.multimodal.benchmark import run_benchmark

    run_benchmark(
        out,
        max_minutes=minutes,
        tasks=fusion_tasks(minutes),
        fusions=DEMO_FUSIONS,
        overrides=[f"seed={seed}"],
        progress=True,
        log=say,
    )
    return out


def _finish(
    out: Path, digits_run: Path, reported: list[Path], seed: int, say: Callable[[str], None]
) -> Path:
    from ganfuse.metrics.evaluate import evaluate_source
    from ganfuse.report.build import build_report
    from ganfuse.run import load_run
    from ganfuse.run_folders import write_eval
    from ganfuse.run_images import grid_image

    say(f"evaluating {digits_run} against the real digits ({EVAL_NUM} images each side)")
    run = load_run(digits_run)
    result = evaluate_source(
        run, "digits", extractor="digits", num=EVAL_NUM, seed=seed, progress=True
    )
    write_eval(digits_run, [result.to_dict()])
    say(result.format_table())
    grid_image(run.sample(64, seed=seed), ncol=8, scale=2).save(
        out / "digits-samples.png"
    )
    return build_report(reported, out / "report.html", seed=seed, progress=say)


def run_demo(
    out: Path,
    minutes: float = DEFAULT_MINUTES,
    seed: int = 0,
    device: str = "auto",
    say: Callable[[str], None] = print,
) -> Path:
    """Run every available stage within ``minutes``; returns the report's path."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose another --out or delete it first")
    stages = available_stages()
    plan = plan_budget(minutes, stages)
    skipped = [s for s in ("shapes-t2i", "fusion") if s not in stages]
    say(
        "ganfuse demo plan (minutes): "
        + ", ".join(f"{s} {m:.1f}" for s, m in plan.items())
        + (f"; not available here: {', '.join(skipped)}" if skipped else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(minutes, time.monotonic())
    reported: list[Path] = []
    digits_run = out / "digits"
    for number, stage in enumerate(stages, start=1):
        share = clock.share(stage, stages[number - 1 :])
        _header(number, len(stages), stage, share, clock, say)
        if stage == "digits":
            reported.append(
                _train(
                    "digits",
                    digits_run,
                    share,
                    seed,
                    device,
                    ["train.eval_every=500", "train.eval_num=500", "train.monitor_every=500"],
                )
            )
        elif stage == "shapes-t2i":
            reported.append(_train("shapes-t2i", out / "shapes-t2i", share, seed, device, []))
        elif stage == "fusion":
            reported.append(_fusion(out / "fusion", share, seed, say))
        else:
            report = _finish(out, digits_run, reported, seed, say)
    say(f"demo finished in {clock.elapsed():.1f} min (budget {minutes:g})")
    return report


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    check_device(args.device)
    check_seed(args.seed)
    check_minutes(args.minutes)
    report = run_demo(Path(args.out), args.minutes, args.seed, args.device)
    print(f"report: {report.resolve()}")
    print(
        f"open it in a browser, or explore the runs with: ganfuse serve {' '.join(str(p) for p in _served(Path(args.out)))}"
    )
    return 0


def _served(out: Path) -> list[Path]:
    return [p for p in (out / "digits", out / "shapes-t2i", out / "fusion") if p.exists()]
