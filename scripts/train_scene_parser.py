"""Train the scene parser's silhouette classifier and write ``src/ganfuse/assets/scene_parser.safetensors``.

Deterministic (fixed seeds, one thread, deterministic algorithms), like
``train_shapes_classifier.py``. Prints the record (training accuracy, and the parser's exact-graph
accuracy on 2,000 real ``test`` and ``heldout`` images at 64 and 32 pixels) and refuses to write
the asset if the exact-graph accuracy on the 64-pixel test split is below 99.5%.

    python scripts/train_scene_parser.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ganfuse.metrics.classifier import train_and_write_asset
from ganfuse.metrics.scenes import scene_parser_asset_path, train_scene_parser

MIN_GRAPH_ACCURACY_64 = 0.995


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged asset")
    args = parser.parse_args()

    def shortfall(info: dict) -> str | None:
        accuracy = info["accuracy_test64"]["graph"]
        if accuracy < MIN_GRAPH_ACCURACY_64:
            return f"exact-graph accuracy {accuracy:.4f} at 64 px is below {MIN_GRAPH_ACCURACY_64}"
        return None

    path = args.out or scene_parser_asset_path()
    return train_and_write_asset("scene_parser", train_scene_parser, path, shortfall)


if __name__ == "__main__":
    raise SystemExit(main())
