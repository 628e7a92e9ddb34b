"""Dense object supervision of the ``scenes`` image encoder: cell labels from the scene graphs,
the probe's loss, and the switch in a fusion run."""

from __future__ import annotations

import pytest
import torch

from ganfuse.data.scenes import SceneGraph, SceneObject, ScenesDataset
from ganfuse.errors import ConfigError
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.object_targets import ObjectProbe, cell_targets
from ganfuse.multimodal.train import train_fusion


def _object(color: str, shape: str, size: str, x: float, y: float) -> SceneObject:
    return SceneObject(color, shape, size, (x, y), (int(x) - 3, int(y) - 3, int(x) + 3, int(y) + 3))


def test_cell_targets_label_the_cell_of_each_centre_and_nothing_else():
    graph = SceneGraph(
        (_object("red", "circle", "small", 5.5, 2.0), _object("orange", "star", "large", 31.9, 20.0)),
        image_size=32,
    )
    targets = cell_targets([graph], (8, 8))
    assert targets.shape == (1, 3, 8, 8)
    # x 5.5 -> column 1, y 2 -> row 0; x 31.9 -> column 7 (the last), y 20 -> row 5
    assert targets[0, :, 0, 1].tolist() == [1 + 0, 1 + 0, 1 + 0]  # red, circle, small
    assert targets[0, :, 5, 7].tolist() == [1 + 7, 1 + 4, 1 + 1]  # orange, star, large
    assert int((targets > 0).sum()) == 6  # two cells, three fields each


def test_cell_targets_count_every_object_of_real_scenes():
    data = ScenesDataset("train", num=64, seed=3, image_size=32)
    targets = cell_targets(data.graphs, (8, 8))
    labelled = (targets[:, 0] > 0).sum(dim=(1, 2))
    assert labelled.tolist() == [len(g.objects) for g in data.graphs]  # the gap keeps cells apart
    assert ((targets[:, 0] > 0) == (targets[:, 1] > 0)).all()


def test_the_probe_learns_the_labels_of_separable_tokens():
    torch.manual_seed(0)
    targets = torch.randint(0, 3, (4, 3, 2, 2))  # classes 0-2 of every field
    tokens = torch.nn.functional.one_hot(targets.flatten(2).transpose(1, 2), 3).flatten(2).float()
    probe = ObjectProbe(token_dim=9)
    optimiser = torch.optim.Adam(probe.parameters(), lr=0.1)
    first = probe.loss(tokens, targets).item()
    for _ in range(200):
        loss = probe.loss(tokens, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert first > 1.5 and loss.item() < 0.05


def test_object_weight_trains_the_image_encoder_and_is_refused_where_it_has_no_graphs(tmp_path):
    with pytest.raises(ConfigError, match="object_weight"):
        make_config("matching", "film", ["object_weight=1"])
    with pytest.raises(ConfigError, match="object_weight"):
        make_config("scenes-matching", "film", ["object_weight=-1"])
    small = ["train_size=64", "eval_size=32", "steps=2", "batch_size=8", "fused_dim=32"]
    runs = {}
    for weight in (0, 1):
        torch.manual_seed(0)
        config = make_config("scenes-matching", "film", [*small, f"object_weight={weight}"])
        runs[weight] = train_fusion(config, tmp_path / f"w{weight}", progress=False, validate=False)
    stem = {w: r.model.encoders["image"].stem[0].weight for w, r in runs.items()}
    assert not torch.equal(stem[0], stem[1])  # the probe's gradient reached the image encoder
    # the probe is training-only: both saved models hold the same parameters
    assert runs[0].model.state_dict().keys() == runs[1].model.state_dict().keys()


def test_object_weight_reaches_the_dual_encoders_image_encoder_on_scenes(tmp_path):
    from ganfuse.multimodal.zeroshot import train_zeroshot

    with pytest.raises(ConfigError, match="object_weight"):
        make_config("zeroshot", None, ["object_weight=1"])  # world=shapes: no scene graphs
    small = ["world=scenes", "train_size=64", "eval_size=16", "steps=2", "batch_size=8"]
    stems = {}
    plain = ["counterfactuals=0"]
    for name, extra in (("plain", plain), ("objects", [*plain, "object_weight=1"]), ("edits", [])):
        torch.manual_seed(0)
        config = make_config("zeroshot", None, [*small, *extra])
        model = train_zeroshot(config, tmp_path / name, progress=False).model
        stems[name] = model.image_encoder.stem[0].weight
    # the probe's loss, and the counterfactual images' binding loss, reach the image encoder
    assert not torch.equal(stems["plain"], stems["objects"])
    assert not torch.equal(stems["plain"], stems["edits"])
