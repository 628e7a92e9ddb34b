"""Train the scene parser's silhouette classifier and write ``src/ganfuse/assets/scene_parser.safetensors``.

Deterministic (fixed seeds, one thread, deterministic algorithms), like
``train_shapes_classifier.py``. Prints the record (training accuracy, and the parser's exact-graph
accuracy on 2,000 real ``test`` and ``heldout`` images at 64 and 32 pixels) and refuses to write
the asset if the exact-graph accuracy on the 64-pixel test split is below 99.5%.

    python scripts/train_scene_parser.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ganfuse.metrics.classifier import save_classifier
from ganfuse.metrics.scenes import scene_parser_asset_path, train_scene_parser

MIN_GRAPH_ACCURACY_64 = 0.995


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged asset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, info = train_scene_parser()
    seconds = round(time.perf_counter() - start, 1)
    path = args.out or scene_parser_asset_path()
    print(
        json.dumps({"model": "scene_parser", "path": str(path), "train_seconds": seconds, **info})
    )
    accuracy = info["accuracy_test64"]["graph"]
    if accuracy < MIN_GRAPH_ACCURACY_64:
        print(
            f"exact-graph accuracy {accuracy:.4f} at 64 px is below {MIN_GRAPH_ACCURACY_64}; not saved",
            file=sys.stderr,
        )
        return 1
    save_classifier(model, path, info)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
