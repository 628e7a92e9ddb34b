"""Train a FiLM run on a ``scenes`` fusion task and score it on ``test`` and on the first 1,000
of its own training images, to tell a budget-bound run from an overfitting one
(``benchmarks/scenes.md``).

    python benchmarks/scenes_fit.py scenes-matching RUN steps=2500 threads=1 [KEY=VALUE ...]
    python benchmarks/scenes_fit.py scenes-vqa RUN steps=1000000 max_minutes=20 threads=2 \
        train_size=50000

KEY=VALUE are ``ganfuse fuse train --set`` overrides. Prints one JSON object: steps, training
seconds, and the head accuracies (per question family for ``scenes-vqa``) on both sets.
"""

from __future__ import annotations

import json
import sys

from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.splits import config_split
from ganfuse.multimodal.tasks import eval_batches
from ganfuse.multimodal.train import score_task, train_fusion

TRAIN_IMAGES = 1000
TRAIN_SCORE_SEED = 5  # the questions and negatives drawn for the training images


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    task, out, *overrides = sys.argv[1:]
    config = make_config(task, "film", overrides)
    result = train_fusion(config, out, progress=False, validate=False)
    # the first TRAIN_IMAGES images of the training split are the same for any train_size
    first = config_split(
        make_config(task, "film", [*overrides, f"train_size={TRAIN_IMAGES}"]), config.train_split
    )
    train_scores = score_task(
        result.model, result.task, eval_batches(result.task, first, TRAIN_SCORE_SEED)
    )
    print(
        json.dumps(
            {
                "task": task,
                "overrides": overrides,
                "steps": result.steps,
                "seconds": round(result.train_seconds),
                "train": train_scores,
                "test": result.test_metrics,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
