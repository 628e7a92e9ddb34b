"""Partly paired training of the dual encoder: the paired split (sizes, determinism, disjoint
parts, nothing held out), the unpaired pool, what a run trains on, and a tiny run that records
its fraction and alignment metrics."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.cli import main
from ganfuse.data.scenes import parse_caption as parse_scene_caption
from ganfuse.data.shapes import DEFAULT_HOLDOUT, parse_caption
from ganfuse.errors import ConfigError
from ganfuse.multimodal import zeroshot
from ganfuse.multimodal.alignment import paired_split
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.splits import scenes_split, shapes_split

TINY = ["train_size=200", "eval_size=24", "batch_size=16", "steps=6", "warmup_steps=1",
        "threads=1", "precision=fp32"]
UNPAIRED = ["paired_fraction=0.1", "adversarial_weight=0.5", "cycle_weight=1", "pseudo_weight=1",
            "pseudo_every=2", "pseudo_threshold=-1"]
HELD = set(DEFAULT_HOLDOUT)


def test_paired_split_sizes_are_as_asked_and_the_parts_disjoint():
    for fraction, paired in ((0.01, 10), (0.1, 100), (0.5, 500), (1.0, 1000)):
        split = paired_split(1000, fraction, seed=3)
        rest = 1000 - paired
        assert len(split.paired) == paired
        assert (len(split.unpaired_images), len(split.unpaired_texts)) == (
            (rest + 1) // 2,
            rest // 2,
        )
        every = torch.cat([split.paired, split.unpaired_images, split.unpaired_texts])
        assert sorted(every.tolist()) == list(range(1000))  # disjoint and complete
        assert split.has_unpaired == (fraction < 1)
    assert len(paired_split(50, 0.001, seed=0).paired) == 1  # at least one pair


def test_paired_split_is_deterministic_from_the_seed_and_nested():
    a, b = paired_split(1000, 0.1, seed=7), paired_split(1000, 0.1, seed=7)
    for part in ("paired", "unpaired_images", "unpaired_texts"):
        assert torch.equal(getattr(a, part), getattr(b, part))
    assert not torch.equal(a.paired, paired_split(1000, 0.1, seed=8).paired)
    small = paired_split(1000, 0.01, seed=7)
    assert set(small.paired.tolist()) <= set(a.paired.tolist())
    with pytest.raises(ValueError, match="paired fraction"):
        paired_split(1000, 0.0, seed=0)


def test_the_unpaired_pool_holds_no_caption_of_an_unpaired_image_and_no_held_out_pair():
    train = shapes_split("train", 300, 0, 32)
    split = paired_split(len(train), 0.1, seed=0)
    pool = zeroshot.unpaired_pool(train, split)
    assert torch.equal(pool.images, train.images[split.unpaired_images])
    assert pool.texts == [train.captions[i] for i in split.unpaired_texts.tolist()]
    # Every caption comes from an image that is neither paired nor among the unpaired images.
    used_images = set(split.unpaired_images.tolist()) | set(split.paired.tolist())
    assert not used_images & set(split.unpaired_texts.tolist())
    assert pool.text_keys == [parse_caption(t) for t in pool.texts]
    assert all(key.color_shape not in HELD for key in pool.text_keys)

    scenes = scenes_split("train", 80, 0, 32)
    scene_split = paired_split(len(scenes), 0.1, seed=0)
    scene_pool = zeroshot.unpaired_pool(scenes, scene_split)
    rows = scene_split.unpaired_texts.tolist()
    assert scene_pool.texts == [c for i in rows for c in scenes.captions[i]]
    assert scene_pool.text_keys == [parse_scene_caption(t) for t in scene_pool.texts]


class Recorder:
    """Every image and text the encoders see while the training loop runs."""

    def __init__(self, monkeypatch):
        self.images: list[torch.Tensor] = []
        self.texts: list[str] = []
        self.on = False
        encode_image = zeroshot.ImageEncoder.forward  # every image a step encodes passes here
        encode_text = zeroshot.DualEncoder.encode_text
        optimise = zeroshot.optimise

        def spy_image(encoder, images):
            if self.on:
                self.images.append(images.detach().clone())
            return encode_image(encoder, images)

        def spy_text(model, texts):
            if self.on:
                self.texts.extend(texts)
            return encode_text(model, texts)

        def spy_optimise(*args, **kwargs):
            self.on = True
            try:
                return optimise(*args, **kwargs)
            finally:
                self.on = False

        monkeypatch.setattr(zeroshot.ImageEncoder, "forward", spy_image)
        monkeypatch.setattr(zeroshot.DualEncoder, "encode_text", spy_text)
        monkeypatch.setattr(zeroshot, "optimise", spy_optimise)


def _float_rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in (images.float() / 127.5 - 1.0)}


def test_a_partly_paired_shapes_run_trains_on_training_data_only(monkeypatch):
    recorder = Recorder(monkeypatch)
    zeroshot.train_zeroshot(make_config("zeroshot", None, [*TINY, *UNPAIRED]), progress=False)
    train = shapes_split("train", 200, 0, 32)
    assert all(a.color_shape not in HELD for a in train.attributes)
    seen = torch.cat(recorder.images)
    assert len(seen) > 6 * 16  # the paired batch plus unpaired images (and pseudo-pairs)
    assert {row.numpy().tobytes() for row in seen} <= _float_rows(train.images)
    assert recorder.texts
    assert all(parse_caption(t).color_shape not in HELD for t in recorder.texts)


def test_a_partly_paired_scenes_run_names_no_held_out_pair(monkeypatch):
    recorder = Recorder(monkeypatch)
    binding_calls = []
    binding_loss = zeroshot.binding_loss

    def spy_binding(image_emb, text_emb, scale, negative_of):
        binding_calls.append((len(image_emb), len(text_emb), len(negative_of)))
        return binding_loss(image_emb, text_emb, scale, negative_of)

    monkeypatch.setattr(zeroshot, "binding_loss", spy_binding)
    # counterfactual images (edits of paired images, not training images) are off here: what is
    # checked is which of the training images and captions a step sees
    overrides = [*TINY, *UNPAIRED, "world=scenes", "train_size=80", "counterfactuals=0"]
    config = make_config("zeroshot", None, overrides)
    zeroshot.train_zeroshot(config, progress=False)
    # The binding term sees the paired batch alone (8 pairs: 10% of 80), its negatives right
    # after its captions, never the unpaired rows appended behind them.
    assert binding_calls and all(
        images == 8 and texts == 8 + negatives for images, texts, negatives in binding_calls
    )
    train = scenes_split("train", 80, 0, 32)
    held = set(train.holdout)  # the scenes world holds out its own pairs
    assert all((o.color, o.shape) not in held for g in train.graphs for o in g.objects)
    assert {row.numpy().tobytes() for row in torch.cat(recorder.images)} <= _float_rows(
        train.images
    )
    for text in recorder.texts:  # captions, and the binding negatives of the paired ones
        for spec in parse_scene_caption(text).objects:
            assert (spec.color, spec.shape) not in held


def test_a_tiny_run_records_its_fraction_and_alignment_metrics(tmp_path):
    out = tmp_path / "zs"
    overrides = [*TINY, *UNPAIRED[1:]]
    code = main(["fuse", "train", "--task", "zeroshot", "--paired-fraction", "0.1", "--out",
                 str(out), "--quiet", *[a for o in overrides for a in ("--set", o)]])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["paired_fraction"] == 0.1
    record = json.loads((out / "metrics.json").read_text())
    alignment = record["alignment"]
    assert alignment["paired_fraction"] == 0.1
    assert (alignment["paired_images"], alignment["unpaired_images"]) == (20, 90)
    assert alignment["unpaired_text_images"] == 90
    assert 0.0 <= alignment["modality_d_accuracy"] <= 1.0
    assert alignment["pseudo_minings"] == 2  # steps 2 and 4 of 6
    assert 0 < alignment["pseudo_pairs"] <= 90
    assert 0.0 <= alignment["pseudo_pair_precision"] <= 1.0
    assert 0.0 <= record["test"]["modality_probe_accuracy"] <= 1.0
    assert "heldout_i2t_r1" in record["test"]


def test_paired_fraction_is_checked_and_zeroshot_and_caption_only(capsys):
    with pytest.raises(ConfigError, match=r"paired_fraction must be in \(0, 1\]"):
        make_config("zeroshot", None, ["paired_fraction=0"])
    with pytest.raises(ConfigError, match="zeroshot and caption only"):
        make_config("color", None, ["paired_fraction=0.5"])
    with pytest.raises(ConfigError, match="adversarial_mode must be one of grl, alternating"):
        make_config("zeroshot", None, ["adversarial_mode=sometimes"])
    train = ["fuse", "train", "--out", "x", "--paired-fraction"]
    assert main([*train, "0.5", "--task", "matching"]) == 2
    assert "--paired-fraction applies to --task zeroshot or caption only" in capsys.readouterr().err
    assert main([*train, "1.5", "--task", "zeroshot"]) == 2
    assert "paired_fraction must be in (0, 1]" in capsys.readouterr().err


def test_the_view_term_trains_a_projection_head_on_every_image_and_is_checked(monkeypatch):
    calls = []
    view_loss = zeroshot.view_loss

    def spy(first, second, scale):
        calls.append((len(first), len(second), scale))
        return view_loss(first, second, scale)

    monkeypatch.setattr(zeroshot, "view_loss", spy)
    config = make_config("zeroshot", None, [*TINY, "paired_fraction=0.1", "ssl_weight=1"])
    result = zeroshot.train_zeroshot(config, progress=False)
    # every step: the paired batch (16 of the 20 pairs, 10% of 200) and 16 unpaired images,
    # each against its shifted view, at temperature 0.1
    assert calls == [(32, 32, 10.0)] * result.steps == [(32, 32, 10.0)] * 6
    # the projection head is training-only: the saved model is the plain dual encoder
    assert not any("ssl" in name for name in result.model.state_dict())
    with pytest.raises(ConfigError, match="ssl_weight applies to task zeroshot only"):
        make_config("color", None, ["ssl_weight=1"])
    with pytest.raises(ConfigError, match="ssl_shift must be at least 1"):
        make_config("zeroshot", None, ["ssl_shift=0"])
