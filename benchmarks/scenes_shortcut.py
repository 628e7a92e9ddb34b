"""Why `scenes-matching` did not learn relation reversals: its labels can be fitted from the text.

    python benchmarks/scenes_shortcut.py text-only
    python benchmarks/scenes_shortcut.py reversals [--kinds left,right,above,below] [--mirror] \
        [--steps 1000] [--set KEY=VALUE ...]

``text-only``: a logistic regression on the words of each binding pair's two texts and their
positions in the sentence (word-position unigrams and bigrams), fitted on the pairs of 10,000
``train`` images, scored on the pairs of 1,000 ``test`` images, per negative kind: its training
accuracy against its ``test`` pairwise accuracy (which of the two texts it calls true).

``reversals``: FiLM (the ``scenes-matching`` config without its training aids, plus ``--set``
overrides: ``fusion_options.attend=1``, ``object_weight=1``) trained on the
relation-reversal pairs alone, batch 64 pairs, scored every 250 steps on the ``test`` reversal
pairs (each caption alone, and pairwise). ``--kinds`` keeps the pairs whose caption states one of
these relations; ``--mirror`` (left/right only) adds each training image's mirror image with the
two labels swapped: in the mirror the negative is true and the caption false, so no text-only rule
fits the labels; ``--edit`` does the same with the edited image of ``data.scene_edits`` (any
relation; pairs without an edit train alone). One JSON line per evaluation.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scene_edits import dataset_counterfactual
from ganfuse.data.scenes import ScenesDataset, parse_caption
from ganfuse.metrics.scene_negatives import build_binding_pairs
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.model import build_fusion_model
from ganfuse.multimodal.object_targets import ObjectProbe, cell_targets
from ganfuse.multimodal.scene_tasks import SceneMatchingTask, accuracy_by_kind, scene_vocabulary
from ganfuse.multimodal.splits import config_split
from ganfuse.multimodal.tasks import Batch, batch_inputs

KINDS = ("color-swap", "shape-swap", "size-swap", "reversal")


def text_only() -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    def pairs(split: str, num: int):
        data = ScenesDataset(split, num=num, seed=0, image_size=32)
        return build_binding_pairs(data.graphs, data.captions, 0, data.holdout if split == "train" else ())

    def positional(text: str) -> str:
        words = text.split()
        return " ".join([f"{w}_{i}" for i, w in enumerate(words)] + [f"{a}__{b}" for a, b in zip(words, words[1:], strict=False)])

    def rows(p, kind: str) -> tuple[list[str], np.ndarray]:
        texts, labels = [], []
        for positive, negative, k in zip(p.positives, p.negatives, p.negative_kinds, strict=True):
            if kind in ("all", k):
                texts += [positional(positive), positional(negative)]
                labels += [1, 0]
        return texts, np.array(labels)

    train, test = pairs("train", 10000), pairs("test", 1000)
    for kind in (*KINDS, "all"):
        (x_train, y_train), (x_test, _) = rows(train, kind), rows(test, kind)
        words = CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 2)).fit(x_train)
        model = LogisticRegression(max_iter=2000).fit(words.transform(x_train), y_train)
        score = model.decision_function(words.transform(x_test))
        print(json.dumps({
            "kind": kind, "train_pairs": len(y_train) // 2, "test_pairs": len(x_test) // 2,
            "train_accuracy": round(model.score(words.transform(x_train), y_train), 3),
            "test_pairwise": round(float(np.mean(score[0::2] > score[1::2])), 3),
        }), flush=True)


def reversals(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    # the scenes FiLM without this task's training aids (each one is asked for by --set)
    plain = ["replacement_negatives=0", "object_weight=0", "counterfactuals=0", "fusion_options.attend=0"]
    config = make_config("scenes-matching", "film", [*plain, *args.overrides])
    task = SceneMatchingTask()
    train, test = config_split(config, "train"), config_split(config, "test")
    kinds = set(args.kinds.split(","))
    if args.mirror and not kinds <= {"left", "right"}:
        raise SystemExit("--mirror needs --kinds left,right (a mirror keeps the other relations)")

    def reversal_rows(data):
        pairs, _ = task.bank(data)
        return pairs, [
            r for r, kind in enumerate(pairs.negative_kinds)
            if kind == "reversal" and parse_caption(pairs.positives[r]).relations[0].relation in kinds
        ]

    def batch_of(data, pairs, rows, mirror=False, edit=False) -> Batch:
        index = torch.tensor([pairs.image_index[r] for r in rows])
        images = data.images[index]
        texts = [t for r in rows for t in (pairs.positives[r], pairs.negatives[r])]
        labels = [1, 0] * len(rows)
        graphs = [data.graphs[i] for i in index.tolist()]
        if mirror:  # objects' cells are mirrored too: the probe's targets of a mirror are not kept
            images, texts, labels = torch.cat([images, images.flip(-1)]), texts * 2, labels + [0, 1] * len(rows)
            index = torch.cat([index, torch.full((len(rows),), -1)])
        if edit:
            extra = []
            for r in rows:
                edited = dataset_counterfactual(data, pairs.image_index[r], pairs.positives[r], pairs.negatives[r])
                if edited is not None:
                    extra.append(edited[0])
                    graphs.append(edited[1])
                    texts += [pairs.positives[r], pairs.negatives[r]]
                    labels += [0, 1]
            if extra:
                images = torch.cat([images, torch.stack(extra)])
                index = torch.cat([index, torch.full((len(extra),), -1)])
        owners = torch.arange(len(images)).repeat_interleave(2)
        return Batch(uint8_to_float(images), index, texts, owners, {"match": torch.tensor(labels)},
                     ["reversal"] * len(texts), graphs)

    pairs, rows = reversal_rows(train)
    test_pairs, test_rows = reversal_rows(test)
    scored = [batch_of(test, test_pairs, test_rows[i : i + 200]) for i in range(0, len(test_rows), 200)]
    model = build_fusion_model(config, task.task_sizes, vocab=scene_vocabulary(task, train))
    probe = ObjectProbe(model.encoders["image"].token_dim) if config.object_weight and not args.mirror else None
    params = list(model.parameters()) + (list(probe.parameters()) if probe else [])
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        chosen = rng.choice(rows, 32 if args.mirror or args.edit else 64, replace=False).tolist()
        batch = batch_of(train, pairs, chosen, args.mirror, args.edit)
        encoded = model.encode(batch_inputs(batch))
        loss = F.cross_entropy(model.fuse(encoded, batch.pairs)["match"], batch.targets["match"])
        if probe is not None:
            targets = cell_targets(batch.graphs, model.encoders["image"].grid)
            loss = loss + config.object_weight * probe.loss(encoded["image"].tokens, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 250 == 0:
            scores = accuracy_by_kind(model, "match", scored, pairwise=True)
            print(json.dumps({
                "step": step, "seconds": round(time.perf_counter() - start), "train_pairs": len(rows),
                "test_pairs": len(test_rows), "loss": round(loss.item(), 3),
                "test_accuracy": round(scores["reversal_accuracy"], 3),
                "test_pairwise": round(scores["reversal_pairwise"], 3),
            }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["text-only", "reversals"])
    parser.add_argument("--kinds", default="left,right,above,below")
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--edit", action="store_true")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.mode == "text-only":
        text_only()
    else:
        reversals(args)


if __name__ == "__main__":
    main()
