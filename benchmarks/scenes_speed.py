"""Generation speed of the ``scenes`` dataset: images/s, with scene graphs and captions.

    python benchmarks/scenes_speed.py [--images 8192] [--rounds 3] [--threads 2] [--export 2000]

Timed: :func:`ganfuse.data.scenes.generate_scenes` (layout sampling, rasterisation from the
precomputed binary mask bank, scene graphs, four captions per image) at 64 and 32 pixels, the
same without captions, and ``export_scenes`` (the same plus one PNG per image and the jsonl) for
``--export`` images into a temporary folder. Prints one JSON line per measurement with the median
of ``--rounds`` and the machine's load average, which matters on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganfuse.data.scenes import export_scenes, generate_scenes


def median_rate(fn, count: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (numpy is single-threaded here)"
    )
    parser.add_argument(
        "--export", type=int, default=2000, help="images for the export measurement; 0: skip"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for size in (64, 32):
        generate_scenes(
            16, seed=0, split="all", image_size=size
        )  # build the mask and background banks
        for captions in (True, False):
            rate = median_rate(
                lambda size=size, captions=captions: generate_scenes(
                    args.images, seed=1, split="all", image_size=size, captions=captions
                ),
                args.images,
                args.rounds,
            )
            record = {
                "measure": "generate_scenes",
                "image_size": size,
                "captions": captions,
                "images": args.images,
                "images_per_s": round(rate),
                "load_average": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(record), flush=True)
    if args.export:
        with tempfile.TemporaryDirectory() as folder:
            rate = median_rate(
                lambda: export_scenes(args.export, Path(folder), seed=1, image_size=64),
                args.export,
                args.rounds,
            )
        record = {
            "measure": "export_scenes (PNG + jsonl)",
            "image_size": 64,
            "images": args.export,
            "images_per_s": round(rate),
            "load_average": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
