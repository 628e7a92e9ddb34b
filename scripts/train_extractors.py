"""Train the dataset-specific feature extractors shipped in ``src/ganfuse/assets``.

Deterministic: every random choice (initialisation, split, batch order, augmentation) comes from
fixed seeds, and one thread is used so reductions run in a fixed order.

    python scripts/train_extractors.py            # all
    python scripts/train_extractors.py digits     # one
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ganfuse.metrics.classifier import ConvClassifier, save_classifier
from ganfuse.metrics.digits import digits_asset_path, train_digits_classifier

# name -> (trainer returning (model, info), asset path). A new dataset adds one line.
TRAINERS: dict[
    str, tuple[Callable[[], tuple[ConvClassifier, dict[str, object]]], Callable[[], Path]]
] = {
    "digits": (train_digits_classifier, digits_asset_path),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {sorted(TRAINERS)}; all when omitted"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(TRAINERS))
    if unknown:
        parser.error(f"unknown extractor(s) {unknown}; choose from {sorted(TRAINERS)}")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for name in args.names or list(TRAINERS):
        trainer, asset_path = TRAINERS[name]
        start = time.perf_counter()
        model, info = trainer()
        info["train_seconds"] = round(time.perf_counter() - start, 1)
        path = asset_path()
        save_classifier(model, path, {k: v for k, v in info.items() if k != "train_seconds"})
        print(
            json.dumps({"extractor": name, "path": str(path), "bytes": path.stat().st_size, **info})
        )


if __name__ == "__main__":
    main()
