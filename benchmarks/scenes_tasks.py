"""The data of the multimodal tasks on ``scenes``: answer balance of the relational questions,
binding negatives and the bag-of-words baseline.

    python benchmarks/scenes_tasks.py [--images 2000] [--seed 0] [--repeat 3]

Questions: on ``--images`` images of the ``train`` split (held-out pairs never named) and of the
``test`` split, one and two questions per family per image, and with ``tolerance=0``: per balance
group the answer counts and the max/min ratio, the images that admit no question of a family and
those rejected; then a blind baseline, the most frequent training answer of each exact question
text (else of its group), scored on the test questions. Negatives: per caption kind, the captions
eligible, those without a binding negative, the kinds drawn, and the bag-of-words accuracy.
Each bank is built ``--repeat`` times (identical every time); ``seconds`` and ``ms_per_image`` are
the median wall-clock time. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TypeVar

from ganfuse.data.scenes import DEFAULT_HOLDOUT, generate_scenes
from ganfuse.metrics.scene_negatives import bag_of_words_accuracy, build_binding_pairs
from ganfuse.multimodal.scene_questions import GROUP_ANSWERS, QuestionSet, generate_questions

T = TypeVar("T")


def timed(build: Callable[[], T], repeat: int) -> tuple[T, float]:
    """``build()``'s result and its median wall-clock time in seconds over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        made = build()
        times.append(time.perf_counter() - start)
    return made, statistics.median(times)


def balance_record(name: str, made: QuestionSet, seconds: float) -> dict:
    flat = made.flat()
    return {
        "set": name,
        "questions": len(flat),
        "seconds": round(seconds, 2),
        "ms_per_image": round(1000 * seconds / max(len(made.questions), 1), 3),
        "ratio": {g: round(made.balance_ratio(g), 4) for g in GROUP_ANSWERS},
        "counts": {g: dict(sorted(made.answer_counts[g].items())) for g in GROUP_ANSWERS},
        "per_family": dict(Counter(q.family for _, q in flat)),
        "query_via": dict(Counter(q.via for _, q in flat if q.via)),
        "unavailable": dict(made.unavailable),
        "rejected": dict(made.rejected),
    }


def blind_baseline(train: QuestionSet, test: QuestionSet) -> dict[str, float]:
    by_text: dict[str, Counter] = defaultdict(Counter)
    by_group: dict[str, Counter] = defaultdict(Counter)
    for _, q in train.flat():
        by_text[q.text][q.answer] += 1
        by_group[q.group][q.answer] += 1
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _, q in test.flat():
        table = by_text.get(q.text) or by_group[q.group]
        hits[q.family][0] += table.most_common(1)[0][0] == q.answer
        hits[q.family][1] += 1
    return {family: round(h / n, 4) for family, (h, n) in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="median time of this many builds")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    data = {
        split: generate_scenes(args.images, args.seed, split)[1:] for split in ("train", "test")
    }
    made = {}
    for split, per_family, tolerance in (
        ("train", 1, None),
        ("train", 2, None),
        ("train", 2, 0),
        ("test", 1, None),
    ):
        forbidden = DEFAULT_HOLDOUT if split == "train" else ()
        build = functools.partial(
            generate_questions,
            data[split][0],
            args.seed,
            per_family=per_family,
            forbidden_pairs=forbidden,
            tolerance=tolerance,
        )
        bank, seconds = timed(build, args.repeat)
        made[split, per_family, tolerance] = bank
        name = f"{split} per_family={per_family} tolerance={tolerance}"
        print(json.dumps(balance_record(name, bank, seconds)), flush=True)
    print(
        json.dumps(
            {"blind_baseline_test": blind_baseline(made["train", 1, None], made["test", 1, None])}
        )
    )
    for split in ("train", "test"):
        graphs, captions = data[split]
        forbidden = DEFAULT_HOLDOUT if split == "train" else ()
        build = functools.partial(build_binding_pairs, graphs, captions, args.seed, forbidden)
        pairs, seconds = timed(build, args.repeat)
        images = [graphs[i] for i in pairs.image_index]
        record = {
            "set": f"negatives {split}",
            "pairs": len(pairs),
            "seconds": round(seconds, 2),
            "ms_per_image": round(1000 * seconds / max(len(graphs), 1), 3),
            "eligible": dict(pairs.eligible),
            "skipped": dict(pairs.skipped),
            "one_object": dict(pairs.one_object),
            "kinds": dict(pairs.kinds),
            "bag_of_words": bag_of_words_accuracy(pairs.positives, pairs.negatives, images),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
