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
import sys
import time
from pathlib import Path

import torch

from ganfuse.metrics.classifier import save_classifier
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
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    settings = dataclasses.replace(EMOJI_SETTINGS, epochs=args.epochs)
    start = time.perf_counter()
    extra = validate_emoji_classifier(settings) if args.validate else {}
    if extra:
        print(json.dumps(extra), flush=True)
    model, info = train_emoji_classifier(settings)
    info.update(extra)
    seconds = round(time.perf_counter() - start, 1)
    path = args.out or emoji_asset_path()
    print(json.dumps({"extractor": "emoji", "path": str(path), "train_seconds": seconds, **info}))
    if info["accuracy_clean"]["group"] < MIN_CLEAN_GROUP_ACCURACY:
        print(f"clean group accuracy below {MIN_CLEAN_GROUP_ACCURACY}; not saved", file=sys.stderr)
        return 1
    save_classifier(model, path, info)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
