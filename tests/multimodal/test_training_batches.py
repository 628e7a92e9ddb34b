"""What training sees: no held-out colour-shape pair in any batch, in images or in texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfuse.data.shapes import DEFAULT_HOLDOUT, ShapesDataset, parse_caption
from ganfuse.multimodal import tasks as tasks_module
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.splits import labelled_indices
from ganfuse.multimodal.tasks import build_task
from ganfuse.multimodal.train import train_fusion

HELD = set(DEFAULT_HOLDOUT)


def _named_pairs(text: str) -> set[tuple[str, str]]:
    """Every (colour, shape) pair a caption or question names."""
    parsed = parse_caption(text)
    if parsed is not None:
        return {(parsed.color, parsed.shape)}
    words = text.rstrip("?").split()
    if text.startswith("is there a"):
        return {(words[-2], words[-1])}
    return set()


@pytest.mark.parametrize("task_name", ["matching", "multitask", "vqa"])
def test_no_held_out_pair_in_any_training_batch(task_name):
    train = ShapesDataset("train", num=600)
    task = build_task(task_name)
    rng = np.random.default_rng(0)
    for start in range(0, len(train), 100):
        index = torch.arange(start, start + 100)
        batch = task.make_batch(train, index, rng)
        for i in index.tolist():
            assert train.attributes[i].color_shape not in HELD
        for text in batch.texts:
            assert not (_named_pairs(text) & HELD), text


def test_matching_batches_pair_each_image_with_a_true_and_a_one_off_caption():
    train = ShapesDataset("train", num=50)
    batch = build_task("multitask").make_batch(train, torch.arange(50), np.random.default_rng(1))
    assert len(batch.texts) == 100 and batch.images.shape == (50, 3, 32, 32)
    for row, text in enumerate(batch.texts):
        truth = train.attributes[int(batch.pairs[row])]
        said = parse_caption(text)
        differences = sum(
            getattr(said, f) != getattr(truth, f) for f in ("color", "shape", "size", "position")
        )
        assert differences == (0 if batch.targets["match"][row] == 1 else 1)
        assert batch.targets["color"][row] == train.labels["color"][int(batch.pairs[row])]


def test_training_draws_only_from_the_train_split(monkeypatch):
    seen_splits = []
    original = tasks_module.PairTask.make_batch

    def spy(self, data, indices, rng):
        seen_splits.append(data.split)
        batch = original(self, data, indices, rng)
        if data.split == "train":
            for text in batch.texts:
                assert not (_named_pairs(text) & HELD)
        return batch

    monkeypatch.setattr(tasks_module.PairTask, "make_batch", spy)
    config = make_config(
        "matching",
        "early",
        ["train_size=48", "eval_size=16", "batch_size=8", "steps=4", "threads=1"],
    )
    train_fusion(config, progress=False)
    # 4 training batches, then evaluation batches of val and test only.
    assert seen_splits[:4] == ["train"] * 4
    assert set(seen_splits[4:]) == {"val", "test"}


def test_label_fractions_are_nested_subsets():
    small, large = labelled_indices(1000, 0.01), labelled_indices(1000, 0.1)
    assert len(small) == 10 and len(large) == 100
    assert set(small.tolist()) <= set(large.tolist())
    assert len(labelled_indices(1000, 1.0)) == 1000
