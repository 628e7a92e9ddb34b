"""Label efficiency: fractions of labels, frozen probes versus training from scratch."""

from __future__ import annotations

import torch

from ganfuse.models.encoders import ImageEncoder
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.label_efficiency import label_efficiency

from .conftest import TINY


def test_rows_per_encoder_and_fraction_and_the_probe_stays_frozen():
    torch.manual_seed(0)
    encoder = ImageEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = make_config("multitask", None, [*TINY, "train_size=200"])
    rows = label_efficiency(
        config, {"scratch": None, "pretrained": encoder}, fractions=(0.05, 1.0), probe_steps=3
    )
    assert [(r["init"], r["fraction"], r["labels"]) for r in rows] == [
        ("scratch", 0.05, 10.0),
        ("scratch", 1.0, 200.0),
        ("pretrained", 0.05, 10.0),
        ("pretrained", 1.0, 200.0),
    ]
    for row in rows:
        accuracies = [row[f"{a}_accuracy"] for a in ("color", "shape", "size", "position")]
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        assert abs(row["mean_accuracy"] - sum(accuracies) / 4) < 1e-9
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
