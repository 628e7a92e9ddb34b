"""Train the shapes attribute classifier and write ``src/ganfuse/assets/shapes_classifier.safetensors``.

Deterministic (fixed seeds, one thread, deterministic algorithms), like ``train_extractors.py``.
Prints the record (accuracy per attribute on the real test, held-out and 64x64 test splits) and
refuses to write the asset if any attribute is below 99% on the test split.

    python scripts/train_shapes_classifier.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ganfuse.metrics.attributes import ATTRIBUTE_VALUES, shapes_asset_path, train_shapes_classifier
from ganfuse.metrics.classifier import save_classifier

MIN_TEST_ACCURACY = 0.99


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged asset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, info = train_shapes_classifier()
    seconds = round(time.perf_counter() - start, 1)
    path = args.out or shapes_asset_path()
    print(json.dumps({"extractor": "shapes", "path": str(path), "train_seconds": seconds, **info}))
    test = info["accuracy_test"]
    worst = min(test[k] for k in ATTRIBUTE_VALUES)
    if worst < MIN_TEST_ACCURACY:
        print(f"test accuracy {worst:.4f} is below {MIN_TEST_ACCURACY}; not saved", file=sys.stderr)
        return 1
    save_classifier(model, path, info)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
