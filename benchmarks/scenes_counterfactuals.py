"""Counterfactual ``scenes`` images (``data.scene_edits``): how many binding pairs find an edit,
whether the shipped parser and the exact judge agree with every edit, and what an edit costs.

    python benchmarks/scenes_counterfactuals.py [--images 2000] [--size 32] [--picture FILE.png]

For every binding pair of the first ``--images`` training images (seed 0): the image edited so
that the negative is true and the caption false. Prints one JSON object: per negative kind the
pairs and the edits found, the edited images the parser reads as their edited graph, the pairs
where the judge calls the negative true and the caption false on that graph, and milliseconds
per pair. ``--picture`` writes six (image, edit) pairs per kind, one row per kind.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image

from ganfuse.data.scene_edits import counterfactual
from ganfuse.data.scenes import ScenesDataset
from ganfuse.metrics.scene_negatives import build_binding_pairs
from ganfuse.metrics.scenes import graphs_equal, parse_scenes, score_caption

KINDS = ("color-swap", "shape-swap", "size-swap", "reversal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--picture", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = ScenesDataset("train", num=args.images, seed=0, image_size=args.size)
    pairs = build_binding_pairs(data.graphs, data.captions, 0, data.holdout)
    images = data.images.permute(0, 2, 3, 1).numpy()
    found: dict[str, list] = {kind: [] for kind in KINDS}
    attempts = {kind: 0 for kind in KINDS}
    start = time.perf_counter()
    for row, index in enumerate(pairs.image_index):
        kind = pairs.negative_kinds[row]
        attempts[kind] += 1
        edited = counterfactual(images[index], data.graphs[index], pairs.positives[row], pairs.negatives[row])
        if edited is not None:
            found[kind].append((index, row, *edited))
    seconds = time.perf_counter() - start
    every = [item for kind in KINDS for item in found[kind]]
    parsed = parse_scenes(torch.from_numpy(np.stack([e[2] for e in every])).permute(0, 3, 1, 2))
    parser_agrees = sum(graphs_equal(p, e[3], 0.5) for p, e in zip(parsed, every, strict=True))
    judge_agrees = sum(
        score_caption(pairs.negatives[row], graph).correct and not score_caption(pairs.positives[row], graph).correct
        for _, row, _, graph in every
    )
    print(json.dumps({
        "images": args.images, "size": args.size,
        "pairs": attempts, "edits": {kind: len(found[kind]) for kind in KINDS},
        "parser_reads_the_edited_graph": f"{parser_agrees}/{len(every)}",
        "judge_negative_true_caption_false": f"{judge_agrees}/{len(every)}",
        "ms_per_pair": round(1000 * seconds / len(pairs.image_index), 3),
    }))
    if args.picture:
        gap = np.full((args.size, 2, 3), 255, np.uint8)
        space = np.full((args.size, 6, 3), 128, np.uint8)
        rows = [
            np.concatenate([np.concatenate([images[i], gap, edited, space], axis=1) for i, _, edited, _ in found[kind][:6]], axis=1)
            for kind in KINDS
        ]
        grid = np.concatenate(rows, axis=0)
        Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(args.picture)


if __name__ == "__main__":
    main()
