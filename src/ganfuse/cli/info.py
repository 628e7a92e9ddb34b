"""``ganfuse info``: a run's config, step and latest metrics; or the list of presets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ganfuse.cli import add_command
from ganfuse.config import preset_names
from ganfuse.errors import UserError


def register(subparsers) -> None:
    p = add_command(subparsers, "info", "Show a run's config, step and latest metrics.",
                    "ganfuse info runs/digits")
    p.add_argument("run", metavar="RUN", nargs="?", help="run directory")
    p.add_argument("--presets", action="store_true", help="list the shipped presets instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganfuse.train.checkpoint import checkpoint_dirs

    if args.presets or not args.run:
        print("presets: " + ", ".join(preset_names()))
        return 0
    path = Path(args.run)
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a ganfuse run (no config.yaml)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path / 'config.yaml'} cannot be read as YAML ({exc.__class__.__name__}); "
                        "the run folder is damaged") from None
    print(f"run: {path}")
    print("config:")
    print("  " + yaml.safe_dump(config, sort_keys=False).replace("\n", "\n  ").rstrip())
    ckpts = checkpoint_dirs(path)
    print(f"checkpoints: {', '.join(c.name for c in ckpts) or 'none'}")
    if ckpts:
        try:
            manifest = json.loads((ckpts[0] / "manifest.json").read_text(encoding="utf-8"))
            print(f"step: {manifest['step']}  precision: {manifest.get('precision')}")
        except (OSError, ValueError, KeyError, TypeError):
            print(f"step: unknown (the manifest of {ckpts[0].name} is damaged)")
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_bytes().decode("utf-8", errors="replace").strip().splitlines()
        if lines:
            print("latest metrics: " + lines[-1])
    return 0
