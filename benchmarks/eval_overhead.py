"""What evaluation and sample grids cost a training run, as a share of its wall clock (issue 14: at
most 5% at the presets' defaults).

    python benchmarks/eval_overhead.py [--presets digits-dcgan,digits,shapes-t2i] [--steps 20]
        [--threads 1] [--price-eval-every 1000] [--set key=value ...]

For each preset the script builds the trainer exactly as ``ganfuse train`` does (``build_trainer``:
the preset's callbacks, FD for GAN runs with ``train.eval_every``, the attribute monitor for
text-to-image on shapes), times ``--steps`` training steps (median), then runs the loop's periodic
hooks at every step where one is due over one whole cycle of the intervals (their least common
multiple), in the loop's order (callbacks at log steps, then the sample grid, then the
checkpoint), each timed:

- ``eval``: the callbacks (FD or the attribute monitor; nothing where ``eval_every`` is 0). The
  first evaluation of a run also loads the feature extractor and the reference statistics (cached
  on disk after the first run on a machine); it is timed apart and left out of the share;
- ``grid``: ``save_grid`` (the EMA generator's BatchNorm statistics are recomputed first when the
  run keeps an EMA, once per step whatever uses it, so it is charged to the first user);
- ``checkpoint``: ``save``, reported for completeness (the 5% target is eval + grids).

share = (hook seconds per cycle) / (cycle steps x median step seconds + hook seconds per cycle),
i.e. the fraction of a long run's wall clock. ``--price-eval-every N`` also prices FD every N steps
for presets that ship without it (``digits``, ``digits-dcgan``). One markdown row per preset.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganfuse.bench import time_steps
from ganfuse.config import load_config
from ganfuse.train.loop import build_trainer


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hook_costs(trainer) -> dict[str, float]:
    """Seconds per cycle of each periodic hook, run at its due steps as ``Trainer.fit`` runs them,
    plus ``first_eval`` (the one-off set-up of the first evaluation) and ``cycle`` (steps)."""
    t = trainer.config.train
    intervals = [t.log_every, t.sample_every, t.checkpoint_every]
    if t.eval_every:
        intervals.append(t.eval_every)
    cycle = math.lcm(*intervals)
    costs = {"eval": 0.0, "grid": 0.0, "checkpoint": 0.0, "first_eval": 0.0, "cycle": cycle}
    trained_step = trainer.step
    first = True
    try:
        for step in range(trained_step + 1, trained_step + cycle + 1):
            trainer.step = step  # the hooks read the step: their intervals, file names, EMA cache
            if step % t.log_every == 0:
                seconds = _timed(lambda: [callback(trainer) for callback in trainer.callbacks])
                if first and t.eval_every and step % t.eval_every == 0:
                    costs["first_eval"], first = seconds, False  # set-up included: timed again
                    trainer._ema_calibrated_step = -1  # the repeat must recalibrate, as it did
                    seconds = _timed(lambda: [callback(trainer) for callback in trainer.callbacks])
                costs["eval"] += seconds
            if step % t.sample_every == 0:
                costs["grid"] += _timed(trainer.save_grid)
            if step % t.checkpoint_every == 0:
                costs["checkpoint"] += _timed(trainer.save)
    finally:
        trainer.step = trained_step
    return costs


def measure(preset: str, overrides: list[str], steps: int) -> dict[str, float]:
    config = load_config(preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, Path(tmp) / "run", progress=False)
        for _ in range(3):
            trainer.train_step()
        step_seconds = statistics.median(time_steps(trainer, 0.0, min_steps=steps))
        costs = hook_costs(trainer)
        costs["step"] = step_seconds
        costs["precision"] = trainer.precision.name
        costs["intervals"] = (
            f"eval {config.train.eval_every or '-'}, grid {config.train.sample_every}, "
            f"ckpt {config.train.checkpoint_every}"
        )
    return costs


def share(costs: dict, keys: tuple[str, ...]) -> float:
    hooks = sum(costs[k] for k in keys)
    return hooks / (costs["cycle"] * costs["step"] + hooks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="digits-dcgan,digits,shapes-t2i")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--price-eval-every",
        type=int,
        default=0,
        metavar="N",
        help="also price FD every N steps for presets without evaluation",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        "| preset | intervals (steps) | precision | step ms | eval s/cycle | grid s/cycle | "
        "ckpt s/cycle | cycle | **eval + grids** | + checkpoints | first eval s | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        runs = [list(args.overrides)]
        preset_eval = load_config(preset, args.overrides).train.eval_every
        if args.price_eval_every and not preset_eval:
            runs.append([*args.overrides, f"train.eval_every={args.price_eval_every}"])
        for overrides in runs:
            load = os.getloadavg()[0]
            c = measure(preset, overrides, args.steps)
            priced = " (priced)" if overrides is not runs[0] else ""
            print(
                f"| `{preset}`{priced} | {c['intervals']} | {c['precision']} | "
                f"{1e3 * c['step']:.0f} | {c['eval']:.2f} | {c['grid']:.2f} | "
                f"{c['checkpoint']:.2f} | {c['cycle']} | "
                f"**{100 * share(c, ('eval', 'grid')):.2f}%** | "
                f"{100 * share(c, ('eval', 'grid', 'checkpoint')):.2f}% | {c['first_eval']:.1f} | "
                f"{load:.2f}-{os.getloadavg()[0]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
