"""Train the emoji group/subgroup classifier and write
``src/ganfuse/assets/emoji_classifier.safetensors`` (the ``emoji`` feature extractor).

Deterministic (fixed seeds, one thread, deterministic algorithms), like ``train_extractors.py``.
Prints the record: accuracy per head on the 3,664 clean emoji and on two augmented views of
each that training never drew. ``--validate`` first trains a second model on 80 % of the base
emoji and reports its accuracy on the other 20 % (emoji it never saw), recorded in the asset.
Refuses to write the asset if the clean group accuracy is below 90 %.

    python scripts/train_emoji_extractor.py [--validate] [--epochs N] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ganfuse.metrics.classifier import train_and_write_asset
from ganfuse.metrics.emoji import (
    EMOJI_SETTINGS,
    emoji_asset_path,
    train_emoji_classifier,
    validate_emoji_classifier,
)

MIN_CLEAN_GROUP_ACCURACY = 0.90


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged asset")
    parser.add_argument("--epochs", type=int, default=EMOJI_SETTINGS.epochs)
    parser.add_argument(
        "--validate", action="store_true", help="also report accuracy on unseen emoji"
    )
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    settings = dataclasses.replace(EMOJI_SETTINGS, epochs=args.epochs)

    def train() -> tuple:
        extra = validate_emoji_classifier(settings) if args.validate else {}
        if extra:
            print(json.dumps(extra), flush=True)
        model, info = train_emoji_classifier(settings)
        return model, {**info, **extra}

    def shortfall(info: dict) -> str | None:
        group = info["accuracy_clean"]["group"]
        return (
            f"clean group accuracy below {MIN_CLEAN_GROUP_ACCURACY}"
            if group < MIN_CLEAN_GROUP_ACCURACY
            else None
        )

    path = args.out or emoji_asset_path()
    return train_and_write_asset("emoji", train, path, shortfall)


if __name__ == "__main__":
    raise SystemExit(main())
