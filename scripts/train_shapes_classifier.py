"""Train the shapes attribute classifier and write ``src/ganfuse/assets/shapes_classifier.safetensors``.

Deterministic (fixed seeds, one thread, deterministic algorithms), like ``train_extractors.py``.
Prints the record (accuracy per attribute on the real test, held-out and 64x64 test splits) and
refuses to write the asset if any attribute is below 99% on the test split.

    python scripts/train_shapes_classifier.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ganfuse.metrics.attributes import ATTRIBUTE_VALUES, shapes_asset_path, train_shapes_classifier
from ganfuse.metrics.classifier import train_and_write_asset

MIN_TEST_ACCURACY = 0.99


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged asset")
    args = parser.parse_args()

    def shortfall(info: dict) -> str | None:
        worst = min(info["accuracy_test"][k] for k in ATTRIBUTE_VALUES)
        return (
            f"test accuracy {worst:.4f} is below {MIN_TEST_ACCURACY}"
            if worst < MIN_TEST_ACCURACY
            else None
        )

    path = args.out or shapes_asset_path()
    return train_and_write_asset("shapes", train_shapes_classifier, path, shortfall)


if __name__ == "__main__":
    raise SystemExit(main())
