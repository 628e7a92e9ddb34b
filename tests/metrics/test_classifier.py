"""The reusable classifier training: deterministic, multi-head, safely stored."""

from __future__ import annotations

import pytest
import torch

from ganfuse.errors import CheckpointError
from ganfuse.metrics.classifier import (
    ClassifierSpec,
    TrainSettings,
    build_classifier,
    calibrate_feature_scale,
    head_accuracy,
    load_classifier,
    save_classifier,
    stratified_split,
    train_classifier,
)

SPEC = ClassifierSpec(
    in_channels=3, image_size=8, heads={"colour": 2, "side": 2}, widths=(4,), feature_dim=8
)


def toy_data(n: int = 64) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images whose red or blue channel is lit on the left or right half: two learnable heads."""
    generator = torch.Generator().manual_seed(0)
    colour = torch.randint(0, 2, (n,), generator=generator)
    side = torch.randint(0, 2, (n,), generator=generator)
    images = torch.full((n, 3, 8, 8), -1.0)
    for i in range(n):
        channel = 0 if colour[i] == 0 else 2
        columns = slice(0, 4) if side[i] == 0 else slice(4, 8)
        images[i, channel, :, columns] = 1.0
    return images, {"colour": colour, "side": side}


def test_training_is_deterministic_and_learns_every_head():
    images, targets = toy_data(48)
    settings = TrainSettings(epochs=8, batch_size=16, lr=2e-2, max_shift=0, seed=3)
    first = build_classifier(SPEC, seed=1)
    losses = train_classifier(first, images, targets, settings)
    second = build_classifier(SPEC, seed=1)
    assert losses == train_classifier(second, images, targets, settings)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert losses[-1] < losses[0] / 5
    assert head_accuracy(first, images, targets) == {"colour": 1.0, "side": 1.0}


def test_building_does_not_touch_the_global_rng():
    state = torch.random.get_rng_state()
    build_classifier(SPEC, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())


def test_save_and_load_round_trip(tmp_path):
    images, _ = toy_data(16)
    model = build_classifier(SPEC, seed=0)
    scale = calibrate_feature_scale(model, images)
    assert model.features(images).square().mean().item() == pytest.approx(1.0, rel=1e-5)
    path = tmp_path / "clf.safetensors"
    save_classifier(model, path, {"heldout_accuracy": 0.5})
    loaded, info = load_classifier(path)
    assert loaded.spec == SPEC and info == {"heldout_accuracy": 0.5}
    assert float(loaded.feature_scale) == pytest.approx(scale)
    torch.testing.assert_close(loaded.features(images), model.features(images))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_classifier(tmp_path / "bad.safetensors")


def test_stratified_split_holds_out_every_class():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    train, holdout = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, holdout]).tolist()) == list(range(35))
    assert torch.bincount(labels[holdout]).tolist() == [2, 4, 1]
    assert torch.equal(holdout, stratified_split(labels, 0.2, seed=0)[1])
