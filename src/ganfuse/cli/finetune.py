"""``ganfuse finetune``: a new run that starts from a trained run's G, D and EMA on new data."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import check_count, check_device, check_seed


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "finetune",
        "Fine-tune a trained GAN run on a new, small dataset (10-100 images): FreezeD, ADA, "
        "a lower learning rate and an EMA warm-up; the result is an ordinary run. A "
        "text-to-image run learns the folder's captions (metadata.jsonl), e.g. 'my logo', "
        "and keeps its old prompts by prior preservation.",
        "ganfuse finetune runs/emoji --data my_images/ --out runs/mine --max-minutes 5",
    )
    p.add_argument("source", metavar="SOURCE_RUN", help="the trained run to start from")
    p.add_argument(
        "--data",
        help="the new data: a dataset name (digits, shapes, emoji, ...) or an image "
        "folder (captions and labels from its metadata.jsonl); required unless --resume",
    )
    p.add_argument(
        "--out", required=True, help="the new run's folder (a folder holding a run needs --resume)"
    )
    p.add_argument(
        "--freeze-d",
        type=int,
        help="D blocks, from the input up, whose weights stay the "
        "source's (default: half of D's blocks, rounded down; DCGAN 1 of 3)",
    )
    p.add_argument(
        "--lr-scale",
        type=float,
        default=0.5,
        help="learning rates = the source's times this, in (0, 1]",
    )
    p.add_argument(
        "--prior-fraction",
        type=float,
        help="text-to-image sources: share of the training pairs that are the source's own "
        "images of its own prompts, so the new captions are learnt without forgetting the old "
        "ones (prior preservation; default 0.5, 0 = off)",
    )
    p.add_argument("--steps", type=int, help="total generator steps (default 1000)")
    p.add_argument(
        "--max-minutes", type=float, help="wall-clock budget; stops at whichever comes first"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.ada_target= (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the fine-tune in --out from its last "
        "good checkpoint, with the run's own config.yaml",
    )
    p.add_argument("--seed", type=int, help="random seed (train.seed), 0 to 2**32-1")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


DEFAULT_STEPS = 1000


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={check_seed(args.seed)}")
    if args.device is not None:
        overrides.append(f"train.device={check_device(args.device)}")
    if args.steps is not None:
        overrides.append(f"train.steps={check_count('--steps', args.steps, 10**9)}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes!r}")
    if args.freeze_d is not None and args.freeze_d < 0:
        raise UserError(f"--freeze-d must be >= 0, got {args.freeze_d}")

    from ganfuse.config import load_config, parse_override, set_value, validate
    from ganfuse.train.finetune import finetune_config
    from ganfuse.train.loop import train

    out = Path(args.out)
    if args.resume:
        if args.data or args.freeze_d is not None or args.prior_fraction is not None:
            raise UserError(
                "--resume continues with the run's own config.yaml: leave out --data, --freeze-d "
                "and --prior-fraction"
            )
        if not (out / "config.yaml").is_file():
            raise UserError(f"--resume: no fine-tune to continue in {out} (no config.yaml)")
        config = load_config(str(out / "config.yaml"), overrides)
    else:
        if not args.data:
            raise UserError("--data is required: a dataset name or an image folder")
        config = finetune_config(
            args.source, args.data, args.freeze_d, args.lr_scale, args.prior_fraction
        )
        config.train.steps = DEFAULT_STEPS
        for item in overrides:
            set_value(config, *parse_override(item))
        validate(config)
    train(config, out, resume=args.resume, progress=not args.no_progress)
    prior = config.train.prior_fraction
    print(
        f"fine-tuned run saved in {out} (from {config.train.init_from}, D blocks frozen: "
        f"{config.train.freeze_d}{f', prior preservation {prior:g}' if prior else ''})"
    )
    return 0
