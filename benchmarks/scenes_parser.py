"""Accuracy and speed of the shipped ``scenes`` parser on real images it was not trained on.

    python benchmarks/scenes_parser.py [--images 2000] [--seed 0] [--noise 12 25]

For each of the ``test`` and ``heldout`` splits at 64 and 32 pixels: the exact-graph accuracy
(every object's colour, shape, size and centre, nothing missing or extra), the count accuracy and
the fraction of objects found, on ``--images`` images generated with ``--seed`` (the classifier
was trained on seed 10000 and 10001 of the ``all`` split); then the same on the 64-pixel test
split with Gaussian pixel noise of each ``--noise`` sigma (per-image sigma uniform in
``[0, sigma]``), and the parser's speed. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ganfuse.data.scenes import generate_scenes
from ganfuse.metrics.scenes import EVALUATION_SPLITS, add_pixel_noise, parser_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="*", default=[12.0, 25.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, split, size in EVALUATION_SPLITS:
        images, graphs, _ = generate_scenes(args.images, args.seed, split, size, captions=False)
        start = time.perf_counter()
        accuracy = parser_accuracy(images, graphs)
        seconds = time.perf_counter() - start
        record = {"set": name, "split": split, "image_size": size, "images": args.images}
        record |= {k: round(v, 5) for k, v in accuracy.items()}
        record["images_per_s"] = round(args.images / seconds)
        print(json.dumps(record), flush=True)
    images, graphs, _ = generate_scenes(args.images, args.seed, "test", 64, captions=False)
    for sigma in args.noise:
        noisy = add_pixel_noise(images, np.random.default_rng(args.seed), max_sigma=sigma)
        record = {"set": f"test64+noise{sigma:g}", "images": args.images}
        record |= {k: round(v, 5) for k, v in parser_accuracy(noisy, graphs).items()}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
