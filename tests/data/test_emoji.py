"""The embedded ``emoji`` dataset: loads without the font, labels and captions agree with the
names, the held-out list is fixed and closed over skin-tone variants, the stored pixels are the
font's rendering, and the shipped extractor classifies real emoji."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.cache import sha256_of_file
from ganfuse.config import DataConfig, load_config
from ganfuse.data import build_dataset
from ganfuse.data import emoji as emoji_module
from ganfuse.data.emoji import (
    HELDOUT_PERCENT,
    EmojiDataset,
    area_downsample,
    base_codepoints,
    export_emoji,
    group_names,
    heldout_names,
    is_heldout_base,
    load_images,
    load_records,
    make_caption,
    source_info,
    subgroup_names,
)
from ganfuse.errors import ConfigError, DataError

N_EMOJI = 3664


def _record(name: str):
    return next(r for r in load_records() if r.name == name)


def test_loads_from_the_package_without_the_font(monkeypatch):
    import PIL.ImageFont

    def no_font(*args, **kwargs):
        raise AssertionError("loading the emoji dataset must not open a font")

    monkeypatch.setattr(PIL.ImageFont, "truetype", no_font)
    monkeypatch.setattr(emoji_module, "FONT_PATH", Path("/nonexistent/NotoColorEmoji.ttf"))
    for cached in (emoji_module.load_records, load_images):
        cached.cache_clear()
    data = EmojiDataset("all", image_size=32)
    assert data.images.shape == (N_EMOJI, 3, 32, 32) and data.images.dtype == torch.uint8
    paths = emoji_module.asset_paths()
    assert all(p.is_file() for p in paths.values())
    notice = " ".join(paths["license"].read_text(encoding="utf-8").split())
    assert "Apache License, Version 2.0" in notice and "Open Font License, Version 1.1" in notice


def test_images_labels_names_and_groups_are_consistent():
    data = EmojiDataset("all", image_size=64)
    assert len(data) == N_EMOJI and data.images.shape == (N_EMOJI, 3, 64, 64)
    assert len(group_names()) == data.num_classes == 10 and len(subgroup_names()) == 101
    assert data.class_names[0] == "Smileys & Emotion" and data.class_names[-1] == "Flags"
    groups, subgroups = data.labels["group"], data.labels["subgroup"]
    assert groups.dtype == subgroups.dtype == torch.int64
    assert set(groups.tolist()) == set(range(10)) and set(subgroups.tolist()) == set(range(101))
    # every subgroup lies in exactly one group
    parents = defaultdict(set)
    for g, s in zip(groups.tolist(), subgroups.tolist(), strict=True):
        parents[s].add(g)
    assert all(len(p) == 1 for p in parents.values())
    counts = Counter(data.class_names[g] for g in groups.tolist())
    assert counts["People & Body"] == 2148 and counts["Flags"] == 269 and counts["Component"] == 9
    for name, group, subgroup, codepoints in [
        ("red apple", "Food & Drink", "food-fruit", "1F34E"),
        (
            "woman technologist: medium skin tone",
            "People & Body",
            "person-role",
            "1F469 1F3FD 200D 1F4BB",
        ),
        ("flag: Japan", "Flags", "country-flag", "1F1EF 1F1F5"),
        ("keycap: 1", "Symbols", "keycap", "0031 FE0F 20E3"),
    ]:
        i = data.names.index(name)
        assert data.class_names[int(groups[i])] == group
        assert data.subgroup_names[int(subgroups[i])] == subgroup
        assert data.codepoints[i] == codepoints
        assert data.emoji[i] == "".join(chr(int(c, 16)) for c in codepoints.split())
    image, label, caption = data[data.names.index("red apple")]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert -1.0 <= float(image.min()) and float(image.max()) == 1.0  # white background
    assert label == data.class_names.index("Food & Drink") and "red apple" in caption
    x, y = data.batch(torch.tensor([0, 5]))
    assert x.shape == (2, 3, 64, 64) and y.tolist() == groups[[0, 5]].tolist()


def test_the_background_is_white_and_the_apple_is_red():
    images = load_images(64)
    border = torch.cat(
        [images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], -1
    )
    white = (
        (border == 255).all(dim=1).float().mean(dim=1)
    )  # per image, share of white border pixels
    assert float((white > 0.5).float().mean()) > 0.95
    apple = images[EmojiDataset("all", 64).names.index("red apple")].float()
    centre = apple[:, 16:48, 16:48].mean(dim=(1, 2))
    assert centre[0] > 150 and centre[1] < 80 and centre[2] < 80


def test_smaller_sizes_are_area_averages_of_the_stored_pixels():
    full, half, quarter = load_images(128), load_images(64), load_images(32)
    rows = torch.tensor([0, 1000, 3663])
    for small, k in ((half, 2), (quarter, 4)):
        boxes = full[rows].double().unflatten(2, (-1, k)).unflatten(4, (-1, k)).mean(dim=(3, 5))
        assert torch.equal(small[rows], torch.floor(boxes + 0.5).to(torch.uint8))
    with pytest.raises(ConfigError):
        area_downsample(np.zeros((1, 3, 128, 128), np.uint8), 48)


def test_captions_come_from_the_names_with_light_templates():
    assert make_caption("red apple") == "red apple"
    assert make_caption("red apple", 1) == "an emoji of a red apple"
    assert make_caption("alien", 1) == "an emoji of an alien"
    assert make_caption("flag: Japan", 1) == "an emoji of the flag of Japan"
    assert make_caption("people hugging", 3) == "a picture of people hugging"
    assert make_caption("woman technologist: medium skin tone", 0) == (
        "woman technologist: medium skin tone"
    )
    with pytest.raises(ConfigError, match="template"):
        make_caption("red apple", 99)
    data = EmojiDataset("all", 32)
    assert all(
        n in c or n.split(": ", 1)[-1] in c for n, c in zip(data.names, data.captions, strict=True)
    )
    templates = Counter(c == n for n, c in zip(data.names, data.captions, strict=True))
    assert 0.1 < templates[True] / len(data) < 0.25  # about 1 in 6 is the bare name
    assert EmojiDataset("all", 32, caption_seed=0).captions == data.captions
    assert EmojiDataset("all", 32, caption_seed=1).captions != data.captions


def test_the_heldout_list_is_fixed_disjoint_and_takes_every_skin_tone_together():
    train, held, every = (EmojiDataset(s, 32) for s in ("train", "heldout", "all"))
    assert len(held) == 357 and len(train) == N_EMOJI - 357  # pinned: the list never moves
    assert set(train.indices.tolist()).isdisjoint(held.indices.tolist())
    assert sorted(train.indices.tolist() + held.indices.tolist()) == list(range(N_EMOJI))
    assert set(held.bases).isdisjoint(train.bases)  # no variant of a held-out emoji is trained on
    assert held.names == heldout_names() and held.names[:2] == [
        "grinning face with sweat",
        "smiling face with heart-eyes",
    ]
    bases = {r.base for r in load_records()}
    share = sum(map(is_heldout_base, bases)) / len(bases)
    assert abs(share - HELDOUT_PERCENT / 100) < 0.02
    assert "leftwards pushing hand: dark skin tone" in held.names
    assert base_codepoints("1F469 1F3FD 200D 1F4BB") == "1F469 200D 1F4BB"
    assert base_codepoints("1F590 FE0F") == base_codepoints("1F590 1F3FF") == "1F590"
    assert torch.equal(held.images, every.images[held.indices])
    with pytest.raises(ConfigError, match="split"):
        EmojiDataset("test")
    with pytest.raises(ConfigError, match="image_size"):
        EmojiDataset("all", image_size=48)


def test_data_name_emoji_builds_a_labelled_training_set():
    config = load_config("digits", ["data.name=emoji", "data.image_size=64", "model.arch=resnet"])
    data = build_dataset(config.data)
    assert len(data) == N_EMOJI and data.num_classes == 10 and data.image_size == 64
    images, labels = data.batch(torch.arange(4))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert labels.tolist() == EmojiDataset("all", 64).labels["group"][:4].tolist()
    with pytest.raises(ConfigError):
        build_dataset(DataConfig(name="emoji", image_size=16))


def test_export_writes_pngs_and_captions(tmp_path):
    assert export_emoji(3, tmp_path, seed=5, image_size=32) == 3
    rows = [
        json.loads(line) for line in (tmp_path / "captions.jsonl").read_text("utf-8").splitlines()
    ]
    data = EmojiDataset("all", 32, caption_seed=5)
    for row in rows:
        i = data.names.index(row["name"])
        pixels = np.asarray(Image.open(tmp_path / row["file"]))
        assert np.array_equal(pixels, data.images[i].permute(1, 2, 0).numpy())
        assert row["caption"] == data.captions[i] and row["emoji"] == data.emoji[i]


def _font_or_skip():
    from PIL import features

    path = emoji_module.FONT_PATH
    if not path.is_file():
        pytest.skip(f"the emoji font is not installed ({path}; Debian: fonts-noto-color-emoji)")
    if not features.check("raqm"):
        pytest.skip("Pillow has no Raqm layout; emoji sequences cannot be rendered")
    if sha256_of_file(path) != source_info()["font_sha256"]:
        pytest.skip(f"{path} is another version than the one the asset was rendered from")
    return emoji_module.load_font(path)


def test_stored_pixels_equal_a_fresh_rendering():
    font = _font_or_skip()
    records = load_records()
    names = ["red apple", "woman technologist: medium skin tone", "flag: Japan", "keycap: 1"]
    rows = [records.index(_record(n)) for n in names] + [7, 1234, 3000]
    stored = load_images(128)
    for row in rows:
        fresh = emoji_module.render_emoji(records[row].emoji, font)
        assert np.array_equal(fresh, stored[row].permute(1, 2, 0).numpy()), records[row].name
    with pytest.raises(DataError, match="one glyph"):
        emoji_module.render_emoji("\U0001f468\u200d\U0001f34e", font)  # not an emoji: two glyphs


def test_the_shipped_extractor_classifies_real_emoji_at_its_reported_accuracy():
    from ganfuse.metrics.classifier import load_classifier
    from ganfuse.metrics.emoji import emoji_asset_path
    from ganfuse.metrics.extractors import get_extractor
    from ganfuse.metrics.sources import DATASET_EXTRACTORS, is_reference_dataset

    extractor = get_extractor("emoji")
    assert extractor.feature_dim == 128 and extractor.num_classes == 10
    assert is_reference_dataset("emoji") and DATASET_EXTRACTORS["emoji"] == "emoji"
    _, info = load_classifier(emoji_asset_path())
    data = EmojiDataset("all", 64)
    rows = torch.from_numpy(np.random.default_rng(0).choice(len(data), 400, replace=False))
    features, probs = extractor.features_and_probs(data.images[rows])
    assert features.shape == (400, 128) and torch.allclose(probs.sum(1), torch.ones(400), atol=1e-5)
    accuracy = float((probs.argmax(1) == data.labels["group"][rows]).float().mean())
    assert accuracy >= info["accuracy_clean"]["group"] - 0.03
    assert info["accuracy_clean"]["group"] >= 0.90


def test_an_emoji_gan_run_can_leave_whole_groups_out():
    from ganfuse.config import load_config
    from ganfuse.data import build_dataset
    from ganfuse.errors import ConfigError

    every = build_dataset(load_config("emoji", []).data)
    without = build_dataset(load_config("emoji", ["data.holdout=[Flags]"]).data)
    flags = every.class_names.index("Flags")
    n_flags = int((every.labels == flags).sum())
    assert n_flags > 200  # the few-shot target group has enough emoji to hold out 100
    assert len(without) == len(every) - n_flags and not (without.labels == flags).any()
    assert without.class_names == every.class_names  # labels keep their meaning
    with pytest.raises(ConfigError, match="unknown emoji groups"):
        build_dataset(load_config("emoji", ["data.holdout=[Flag]"]).data)
    with pytest.raises(ConfigError, match="data.holdout"):
        load_config("digits", ["data.holdout=[Flags]"])
