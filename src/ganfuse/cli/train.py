"""``ganfuse train``: train a GAN from a preset or YAML config."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ganfuse.cli import add_command
from ganfuse.config import load_config
from ganfuse.inputs import check_count, check_seed

MAX_PROCESSES = 256  # data-parallel processes on one machine


def register(subparsers) -> None:
    p = add_command(subparsers, "train", "Train a GAN from a preset or a YAML config.",
                    "ganfuse train digits --out runs/digits --max-minutes 3")
    p.add_argument("config", metavar="PRESET_OR_YAML", help="preset name (see `ganfuse info --presets`) or YAML file")
    p.add_argument("--out", required=True, help="run directory for checkpoints, samples and logs (a folder holding a run needs --resume)")
    p.add_argument("--steps", type=int, help="total generator steps (default: the config's train.steps)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget; stops at whichever comes first")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr_g=1e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the GAN run in --out from its last good checkpoint")
    p.add_argument("--seed", type=int, help="random seed (train.seed), 0 to 2**32-1")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help=f"data-parallel processes on this machine, 1 to {MAX_PROCESSES}: relaunches itself under torchrun")
    p.add_argument("--profile", action="store_true", help="report the share of step time spent waiting for data")
    p.add_argument("--logger", choices=("jsonl", "tensorboard"), default="jsonl",
                   help="metrics.jsonl is always written; tensorboard adds event files (pip install -e '.[tensorboard]')")
    p.set_defaults(func=run)


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run this command under ``torchrun --nproc_per_node nproc`` (without ``--nproc``)."""
    cleaned, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if not item.startswith("--nproc="):
            cleaned.append(item)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ganfuse", *cleaned]
    return subprocess.call(cmd)


def run(args: argparse.Namespace) -> int:
    check_count("--nproc", args.nproc, MAX_PROCESSES)
    if args.seed is not None:
        check_seed(args.seed)

    from ganfuse.train.loop import train

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(args.nproc, args.argv)
    overrides = list(args.overrides)
    if args.profile:
        overrides.append("train.profile=true")
    if args.logger == "tensorboard":
        overrides.append("train.loggers=[tensorboard]")
    for key, value in (("train.steps", args.steps), ("train.max_minutes", args.max_minutes),
                       ("train.seed", args.seed), ("train.device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    run_dir = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"run saved in {run_dir} (checkpoints/, samples/, metrics.jsonl, config.yaml)")
    return 0
