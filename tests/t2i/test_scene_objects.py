"""The object-level term of text-to-image on ``scenes`` (``text.object_weight``): windows, the
object discriminator, the descriptions a caption states, and the one-to-one matching of slots to
objects."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.config import load_config
from ganfuse.data import scenes
from ganfuse.data.scenes import MAX_OBJECTS, ScenesDataset
from ganfuse.models.t2i_words import OBJECT_WINDOW, ObjectHead, crop_windows
from ganfuse.train.objects import (
    CLASSES,
    UNSTATED,
    SceneObjectTargets,
    match_slots,
    object_d_loss,
    object_g_loss,
    wrong_labels,
)
from tests.t2i.test_scenes_words import TINY_SCENES_T2I


def test_a_window_at_a_pixel_boundary_is_the_image_patch():
    images = torch.randn(2, 3, 64, 64)
    centres = torch.tensor([[[0.5, 0.5], [20 / 64, 40 / 64]], [[0.25, 0.75], [0.5, 0.5]]])
    crops = crop_windows(images, centres, 24 / 64, 24)
    assert crops.shape == (2, 2, 3, 24, 24)
    torch.testing.assert_close(crops[0, 0], images[0, :, 20:44, 20:44])
    torch.testing.assert_close(crops[0, 1], images[0, :, 28:52, 8:32])  # rows are y, columns x
    torch.testing.assert_close(crops[1, 0], images[1, :, 36:60, 4:28])
    # beyond the canvas a window reads zeros
    edge = crop_windows(images[:1], torch.tensor([[[0.0, 0.0]]]), 24 / 64, 24)
    assert edge[0, 0, :, :12, :].abs().sum() == 0 and edge[0, 0, :, 12:, 12:].abs().sum() > 0


def test_targets_hold_the_graphs_objects_and_what_the_caption_states():
    data = ScenesDataset("test", image_size=64, num=40)
    pick = next(i for i, g in enumerate(data.graphs) if len(g.objects) == 2)
    graph = data.graphs[pick]
    a, b = graph.objects
    caption = f"a {a.color} {a.shape} and a {b.size} {b.color} {b.shape}"  # a's size left open
    targets = SceneObjectTargets([graph], [caption], 64, torch.device("cpu"))
    torch.testing.assert_close(targets.centres[0, 0], torch.tensor(a.center) / 64)
    colours, shapes, sizes = list(scenes.COLORS), scenes.SHAPES, scenes.SIZES
    assert targets.real[0, 1].tolist() == [colours.index(b.color), shapes.index(b.shape), sizes.index(b.size)]
    assert targets.stated[0, 0].tolist() == [colours.index(a.color), shapes.index(a.shape), UNSTATED]
    assert targets.stated[0, 1, 2] == sizes.index(b.size)
    assert (targets.real[0, 2:] == UNSTATED).all() and (targets.stated[0, 2:] == UNSTATED).all()


def test_wrong_labels_change_the_colour_or_the_shape_of_each_object():
    labels = torch.tensor([[[0, 0, 1], [7, 4, 0], [UNSTATED] * 3, [3, 2, UNSTATED]]]).repeat(64, 1, 1)
    wrong = wrong_labels(labels, torch.Generator().manual_seed(0))
    present = (labels >= 0).any(-1)
    changed = (wrong != labels)[present]  # (objects, 3)
    assert (changed.sum(-1) == 1).all()  # exactly one attribute, never to the same value
    assert not changed[:, 2].any()  # sizes are kept
    assert changed[:, 0].any() and changed[:, 1].any()  # both kinds occur
    assert (wrong[~present] == UNSTATED).all()
    assert ((wrong[..., 0] < CLASSES[0]) & (wrong[..., 1] < CLASSES[1])).all()


def test_slots_are_matched_one_to_one_to_the_named_objects():
    # slot 2 fits object 0 best, slot 0 object 1; slot 1 fits both a little; object 2 is padding
    logits = torch.tensor([[[0.0, 5.0, 9.0], [1.0, 1.0, 9.0], [6.0, 0.0, 9.0], [-3.0, -3.0, 9.0]]])
    labels = torch.tensor([[[0, 2, UNSTATED], [1, 1, 0], [UNSTATED] * 3]])
    image, slot, obj = match_slots(logits, labels)
    assert sorted(zip(slot.tolist(), obj.tolist(), strict=True)) == [(0, 1), (2, 0)]
    assert image.tolist() == [0, 0]
    # two identical named objects need two slots, even when one slot fits both best
    twins = torch.tensor([[[0, 0, UNSTATED], [0, 0, UNSTATED]]])
    _, slot, _ = match_slots(torch.tensor([[[9.0, 9.0], [1.0, 1.0]]]), twins)
    assert sorted(slot.tolist()) == [0, 1]


def test_object_losses_are_hinges_over_own_wrong_and_matched_fake_windows():
    labels = torch.tensor([[[0, 1, 0], [UNSTATED] * 3]])  # one real object, one padding row
    real = torch.tensor([[[2.0, 0.0, -3.0, 0.0], [7.0, 7.0, 7.0, 7.0]]])  # own 2 (hinge 0), wrong -3 (hinge 0)
    fake = torch.tensor([[[0.5, 0.0], [-4.0, 0.0]]])  # matched: slot 0 (logit 0.5)
    loss, seen = object_d_loss(real, labels, fake, labels)
    assert loss.item() == pytest.approx(0.5 * 1.5)  # only the fake term: relu(1 + 0.5) / 2
    assert seen["obj_real"].item() == 2.0 and seen["obj_wrong"].item() == -3.0 and seen["obj_fake"].item() == 0.5
    real_bad = torch.tensor([[[0.0, 0.0, 1.0, 0.0], [0.0] * 4]])
    loss, _ = object_d_loss(real_bad, labels, fake, labels)
    assert loss.item() == pytest.approx(1.0 + 0.5 * (1.5 + 2.0))
    fake_g = fake.clone().requires_grad_(True)
    g = object_g_loss(fake_g, labels)
    assert g.item() == -0.5
    g.backward()
    assert fake_g.grad[0, 0, 0] == -1.0 and fake_g.grad.abs().sum() == 1.0  # only the matched pair


def test_an_open_attribute_adds_nothing_to_the_description():
    torch.manual_seed(0)
    head = ObjectHead(CLASSES).eval()
    images, centres = torch.randn(1, 3, 64, 64), torch.tensor([[[0.5, 0.5]]])
    stated = head(images, centres, torch.tensor([[[2, 3, UNSTATED], [2, 3, 0], [2, 3, 1]]]))[0, 0]
    h = head.net(crop_windows(images, centres, OBJECT_WINDOW, head.crop)[0])
    base = head.unconditional(h)[0, 0] + (h[0] * (head.embed[0].weight[2] + head.embed[1].weight[3])).sum()
    torch.testing.assert_close(stated[0], base)
    torch.testing.assert_close(stated[1] - stated[0], (h[0] * head.embed[2].weight[0]).sum())
    assert stated[1] != stated[2]


def test_the_object_discriminator_learns_real_shapes_from_their_windows():
    """Sixty steps of the matching-aware object hinge on real objects (own description real, a
    colour or shape changed fake) rank held-out objects' own descriptions above shape changes."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train, test = ScenesDataset("train", num=600), ScenesDataset("test", num=200)

    def tensors(data):
        targets = SceneObjectTargets(data.graphs, [c[0] for c in data.captions], 64, torch.device("cpu"))
        return data.images.float() / 127.5 - 1, targets

    (x, t), (x_test, t_test) = tensors(train), tensors(test)
    head = ObjectHead(CLASSES)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, betas=(0.0, 0.99))
    for _ in range(60):
        rows = torch.randint(0, x.shape[0], (32,), generator=gen)
        labels = t.real[rows]
        logits = head(x[rows], t.centres[rows], torch.cat([labels, wrong_labels(labels, gen)], dim=1))
        no_fakes = logits.new_full((len(rows), 1, MAX_OBJECTS), -1.0)
        loss, _ = object_d_loss(logits, labels, no_fakes, torch.full_like(labels, UNSTATED))
        opt.zero_grad()
        loss.backward()
        opt.step()
    labels = t_test.real
    other = labels.clone()
    other[..., 1] = torch.where(labels[..., 1] >= 0, (labels[..., 1] + 1 + torch.randint(0, 4, labels.shape[:2],
                                                                                          generator=gen)) % 5, -1)
    with torch.no_grad():
        logits = head(x_test, t_test.centres, torch.cat([labels, other], dim=1))
    m, present = MAX_OBJECTS, (labels >= 0).any(-1)
    own, changed = logits[:, :, :m].diagonal(dim1=1, dim2=2), logits[:, :, m:].diagonal(dim1=1, dim2=2)
    assert (own > changed)[present].float().mean() > 0.9  # 97% measured; 55% untrained


def test_a_tiny_run_trains_the_object_head_and_asks_g_for_the_named_objects(tmp_path, monkeypatch):
    import ganfuse

    monkeypatch.setitem(scenes.DEFAULT_SPLIT_SIZES, "train", 64)
    config = load_config("scenes-t2i", TINY_SCENES_T2I + [
        "train.steps=3", "train.sample_every=3", "train.checkpoint_every=3", "train.eval_every=0",
        "text.object_weight=1.0"])
    out = ganfuse.train(config, out=tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "obj_d" in r][-1]
    # hinge terms of a barely trained object discriminator: near 1 + (1 + 1) / 2 = 2 at logits 0
    assert 0.5 < last["obj_d"] < 4.0 and abs(last["obj_g"]) < 3.0
    assert {"obj_real", "obj_wrong", "obj_fake"} <= set(last)
    from safetensors.torch import load_file

    weights = load_file(next((out / "checkpoints").glob("step_*")) / "weights.safetensors")
    assert any(k.startswith("D.objects.") for k in weights)  # the head is part of D's checkpoint
