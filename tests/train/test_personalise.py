"""Personalising a text-to-image run (``ganfuse finetune T2I_RUN --data FOLDER``): a new caption
bound to a user's few images, with prior preservation from the frozen source generator."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganfuse.cli import main
from ganfuse.config import load_config, parse_override, set_value, validate
from ganfuse.data import shapes
from ganfuse.data.base import to_uint8, uint8_to_float
from ganfuse.data.emoji import EmojiDataset
from ganfuse.errors import ConfigError, UserError
from ganfuse.run import load_run
from ganfuse.text.prompts import PromptEncoder
from ganfuse.train.checkpoint import checkpoint_dirs
from ganfuse.train.finetune import finetune_config
from ganfuse.train.loop import Trainer
from ganfuse.train.prior import PRIOR_SEED_OFFSET, mix_with_prior

TINY_T2I = ["model.z_dim=8", "model.g_width=16", "model.d_width=8", "text.cond_dim=16",
            "train.batch_size=8", "train.log_every=2", "train.sample_every=1000",
            "train.checkpoint_every=1000", "train.ema_decay=0.9", "train.precision=fp32",
            "train.eval_every=0"]
FT = ["train.log_every=2", "train.sample_every=1000", "train.checkpoint_every=1000",
      "train.batch_size=8", "train.prior_images=16"]
SHAPES_TRAIN = 96  # the source's training split, kept small


class FakeSentenceEncoder:
    """Stands in for MiniLM: a deterministic 12-d embedding per text."""

    def encode_cached(self, texts):
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            rows.append(torch.randn(12, generator=torch.Generator().manual_seed(seed)))
        return SimpleNamespace(pooled=torch.stack(rows))


def _patch(mp: pytest.MonkeyPatch, cache) -> None:
    mp.setenv("GANFUSE_CACHE", str(cache))
    mp.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", SHAPES_TRAIN)
    encoder = FakeSentenceEncoder()
    mp.setattr(PromptEncoder, "sentence_encoder", property(lambda self: encoder))


@pytest.fixture(autouse=True)
def fake_text(monkeypatch, tmp_path_factory):
    _patch(monkeypatch, tmp_path_factory.mktemp("fake-minilm-cache"))


def _logo_folder(path, caption="my logo", n=10):
    """Ten yellow smiley emoji at 32 px, each captioned ``caption`` (Hugging Face imagefolder)."""
    path.mkdir(parents=True)
    data = EmojiDataset("all", 32)
    rows = (data.labels["subgroup"] == data.subgroup_names.index("face-smiling")).nonzero()
    lines = []
    for k, i in enumerate(rows.flatten()[:n].tolist()):
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(path / f"{k:02d}.png")
        lines.append(json.dumps({"file_name": f"{k:02d}.png", "text": caption}))
    (path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return path, uint8_to_float(data.images[rows.flatten()[:n]])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny shapes-t2i run (fake sentence encoder), and a 10-image "my logo" folder."""
    root = tmp_path_factory.mktemp("personalise")
    with pytest.MonkeyPatch.context() as mp:
        _patch(mp, root / "cache")
        cfg = load_config("shapes-t2i", TINY_T2I + ["train.steps=20"])
        Trainer(cfg, root / "source", progress=False).fit()
        folder, images = _logo_folder(root / "logo")
    return root / "source", folder, images


def _config(src, folder, *overrides, prior=None):
    config = finetune_config(src, str(folder), prior_fraction=prior)
    for item in [*FT, *overrides]:
        set_value(config, *parse_override(item))
    return validate(config)


def _distance_to_folder(run_dir, targets):
    """Mean over 16 "my logo" samples of the L2 distance to the nearest folder image."""
    run = load_run(run_dir, device="cpu")
    samples = run.sample(16, seed=3, prompts=["my logo"])
    return torch.cdist(samples.flatten(1), targets.flatten(1)).min(1).values.mean().item()


def test_finetune_config_turns_prior_preservation_on_for_text_to_image(source):
    src, folder, _ = source
    config = finetune_config(src, str(folder))
    assert (config.train.prior_fraction, config.train.prior_images) == (0.5, 200)
    assert config.train.max_minutes is None
    assert finetune_config(src, str(folder), prior_fraction=0).train.prior_fraction == 0
    with pytest.raises(UserError, match=r"--prior-fraction must be in \[0, 1\)"):
        finetune_config(src, str(folder), prior_fraction=1.0)
    with pytest.raises(ConfigError, match="train.prior_fraction.*text-to-image fine-tune"):
        load_config("shapes-t2i", ["train.prior_fraction=0.5"])


def test_my_logo_moves_towards_the_folder_images(source, tmp_path):
    src, folder, targets = source
    before = _distance_to_folder(src, targets)
    out = tmp_path / "ft"
    Trainer(_config(src, folder, "train.steps=40", prior=0.0), out, progress=False).fit()
    after = _distance_to_folder(out, targets)
    assert after < 0.9 * before, (before, after)  # measured: 63.2 -> 52.4


def test_prior_pairs_are_the_frozen_source_generators_images(source, tmp_path):
    src, folder, _ = source
    trainer = Trainer(_config(src, folder, "train.steps=4", prior=0.5), tmp_path / "ft",
                      progress=False)
    captions = trainer.objective.captions
    # 10 user pairs x round(16 * 0.5 / (0.5 * 10)) = 2, then the 16 prior pairs
    assert captions[:20] == ["my logo"] * 20 and len(captions) == 36
    prior_images, prior_prompts = trainer.dataset.images[20:], captions[20:]
    source_captions = set(shapes.ShapesDataset("train", image_size=32).captions)
    assert set(prior_prompts) <= source_captions
    # the same latents and prompts through the source run's EMA generator give the same pixels
    gen = torch.Generator().manual_seed(trainer.config.train.seed + PRIOR_SEED_OFFSET)
    rows = torch.randint(0, SHAPES_TRAIN, (16,), generator=gen)
    z = torch.randn(16, 8, generator=gen)
    run = load_run(src, device="cpu")
    assert [shapes.ShapesDataset("train", image_size=32).captions[i] for i in rows] == prior_prompts
    # the same pixels up to float rounding at a uint8 step: the two paths batch differently, and
    # at one thread one value in 50,000 landed one step apart
    again = to_uint8(run.from_latents(z, prior_prompts)).int()
    assert (again - prior_images.int()).abs().max() <= 1
    assert (again != prior_images.int()).float().mean() < 1e-3
    # training moves G, not the prior set: it stays the frozen source's
    trainer.fit()
    assert torch.equal(trainer.dataset.images[20:], prior_images)
    with torch.no_grad():
        now = to_uint8(trainer.G.eval()(z, trainer.objective.encode(prior_prompts)).float())
    assert not torch.equal(now, prior_images)


def test_prior_share_follows_the_fraction():
    images = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    prior = torch.ones(200, 3, 4, 4, dtype=torch.uint8)
    for fraction, user_rows in ((0.5, 200), (0.8, 50), (0.2, 800), (0.99, 10)):
        mixed, captions = mix_with_prior(images, ["my logo"] * 10, prior, ["old"] * 200, fraction)
        assert captions.count("my logo") == user_rows and captions[user_rows:] == ["old"] * 200
        assert torch.equal(mixed[user_rows:], prior) and not mixed[:user_rows].any()


def test_text_to_image_finetune_with_prior_resumes_exactly(source, tmp_path):
    src, folder, _ = source
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(_config(src, folder, "train.steps=8", prior=0.5), straight, progress=False).fit()
    Trainer(_config(src, folder, "train.steps=4", prior=0.5), split, progress=False).fit()
    Trainer(load_config(str(split / "config.yaml"), ["train.steps=8"]), split, resume=True,
            progress=False).fit()
    a = load_file(str(checkpoint_dirs(straight)[0] / "weights.safetensors"))
    b = load_file(str(checkpoint_dirs(split)[0] / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_small_encoder_source_refuses_unknown_caption_words(tmp_path, capsys):
    src = tmp_path / "small"
    Trainer(load_config("shapes-t2i", TINY_T2I + ["text.encoder=small", "train.steps=2"]), src,
            progress=False).fit()
    folder, _ = _logo_folder(tmp_path / "logo")
    argv = ["finetune", str(src), "--data", str(folder), "--out", str(tmp_path / "ft"), "--steps",
            "2", "--no-progress", "--set", "train.batch_size=8", "--set", "train.prior_images=8"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganfuse: error: ") and "\n" not in err
    assert "'logo', 'my'" in err and "fixed vocabulary" in err
    # captions in the source's words are fine
    known, _ = _logo_folder(tmp_path / "known", caption="a large yellow circle in the center")
    argv[3] = str(known)
    assert main(argv) == 0
    assert load_config(str(tmp_path / "ft" / "config.yaml")).train.prior_fraction == 0.5


def test_identical_captions_are_no_mismatch(source, tmp_path):
    """Without prior pairs every caption is "my logo": the mismatched-caption term has nothing to
    contrast, so it must not call the user's real images with their own caption fake."""
    src, folder, _ = source
    trainer = Trainer(_config(src, folder, "train.steps=2", "train.log_every=1", prior=0.0),
                      tmp_path / "ft", progress=False)
    trainer.train_step()
    stats = trainer.stats.flush()
    assert stats["acc_mismatch"] == 0.0 and stats["d_mismatch"] == 0.0
