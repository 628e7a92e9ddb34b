"""The data of the multimodal tasks on ``scenes``: answer balance of the relational questions,
binding negatives and the bag-of-words baseline.

    python benchmarks/scenes_tasks.py [--images 2000] [--seed 0]

Questions: on ``--images`` images of the ``train`` split (held-out pairs never named) and of the
``test`` split, one and two questions per family per image, and with ``tolerance=0``: per balance
group the answer counts and the max/min ratio, the images that admit no question of a family and
those rejected; then a blind baseline, the most frequent training answer of each exact question
text (else of its group), scored on the test questions. Negatives: per caption kind, the captions
eligible, those without a binding negative, the kinds drawn, and the bag-of-words accuracy.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict

from ganfuse.data.scenes import DEFAULT_HOLDOUT, generate_scenes
from ganfuse.multimodal.scene_negatives import bag_of_words_accuracy, build_binding_pairs
from ganfuse.multimodal.scene_questions import GROUP_ANSWERS, QuestionSet, generate_questions


def balance_record(name: str, made: QuestionSet, seconds: float) -> dict:
    flat = made.flat()
    return {
        "set": name,
        "questions": len(flat),
        "seconds": round(seconds, 2),
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
    args = parser.parse_args()
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
        start = time.perf_counter()
        made[split, per_family, tolerance] = generate_questions(
            data[split][0],
            args.seed,
            per_family=per_family,
            forbidden_pairs=forbidden,
            tolerance=tolerance,
        )
        name = f"{split} per_family={per_family} tolerance={tolerance}"
        record = balance_record(
            name, made[split, per_family, tolerance], time.perf_counter() - start
        )
        print(json.dumps(record), flush=True)
    print(
        json.dumps(
            {"blind_baseline_test": blind_baseline(made["train", 1, None], made["test", 1, None])}
        )
    )
    for split in ("train", "test"):
        graphs, captions = data[split]
        forbidden = DEFAULT_HOLDOUT if split == "train" else ()
        start = time.perf_counter()
        pairs = build_binding_pairs(graphs, captions, args.seed, forbidden)
        seconds = time.perf_counter() - start
        images = [graphs[i] for i in pairs.image_index]
        record = {
            "set": f"negatives {split}",
            "pairs": len(pairs),
            "seconds": round(seconds, 2),
            "eligible": dict(pairs.eligible),
            "skipped": dict(pairs.skipped),
            "one_object": dict(pairs.one_object),
            "kinds": dict(pairs.kinds),
            "bag_of_words": bag_of_words_accuracy(pairs.positives, pairs.negatives, images),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
