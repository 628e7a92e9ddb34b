"""End-to-end training on the embedded digits with tiny networks."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganfuse.config import load_config
from ganfuse.train.checkpoint import checkpoint_dirs
from ganfuse.train.loop import Trainer


def _weights(run_dir):
    return load_file(str(checkpoint_dirs(run_dir)[0] / "weights.safetensors"))


def test_short_run_writes_checkpoint_grid_and_metrics(tmp_path, tiny_overrides):
    cfg = load_config("digits-dcgan", tiny_overrides + ["train.steps=12"])
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    run = tmp_path / "run"
    assert [p.name for p in checkpoint_dirs(run)] == ["step_00000012", "step_00000010"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000012"
    grid = Image.open(run / "samples" / "step_00000012.png")
    assert grid.size[0] > 8 * 32 and grid.size == (grid.size[0], grid.size[0])  # an 8x8 grid of 32px images
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 12]
    for key in ("time", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g", "grad_norm_d", "img_per_s"):
        assert key in records[-1]
    assert records[-1]["images"] == 12 * 16
    assert (run / "config.yaml").is_file()


def test_max_minutes_stops_early_and_saves(tmp_path, tiny_overrides):
    cfg = load_config("digits-dcgan", tiny_overrides + ["train.steps=100000", "train.max_minutes=0.02"])
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    ckpts = checkpoint_dirs(tmp_path / "run")
    assert ckpts and 0 < int(ckpts[0].name[5:]) < 100000


@pytest.mark.parametrize("extra", [[], ["train.ema_decay=0.9", "train.ema_warmup_steps=5",
                                        "train.augment=translation,cutout,color", "train.ada_target=0.6",
                                        "train.ada_interval=2", "train.loss=hinge", "model.spectral_norm_d=true",
                                        "train.r1_gamma=1.0", "train.r1_every=4"]])
def test_resume_is_exact(tmp_path, tiny_overrides, extra):
    base = tiny_overrides + extra + ["train.checkpoint_every=1000"]
    straight = tmp_path / "straight"
    Trainer(load_config("digits-dcgan", base + ["train.steps=20"]), straight, progress=False).fit()
    split = tmp_path / "split"
    Trainer(load_config("digits-dcgan", base + ["train.steps=10"]), split, progress=False).fit()
    Trainer(load_config("digits-dcgan", base + ["train.steps=20"]), split, resume=True, progress=False).fit()
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]


def test_refuses_to_overwrite_a_run(tmp_path, tiny_overrides):
    from ganfuse.errors import UserError

    cfg = load_config("digits-dcgan", tiny_overrides + ["train.steps=2"])
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    with pytest.raises(UserError, match="--resume"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_folder_with_a_corrupt_image_trains_and_reports(tmp_path, tiny_overrides, caplog):
    folder = tmp_path / "imgs"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            color = (255, 0, 0) if cls == "a" else (0, 0, 255)
            Image.new("RGB", (40, 36), color).save(folder / cls / f"{i}.png")
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "b" / "empty.jpg").write_bytes(b"")
    cfg = load_config("digits-dcgan", tiny_overrides + ["train.steps=3", "data.name=folder", f"data.path={folder}",
                                                         "train.batch_size=4"])
    with caplog.at_level("WARNING", logger="ganfuse"):
        trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert "skipped 2 unreadable image(s) of 14" in caplog.text
    assert len(trainer.dataset) == 12 and trainer.dataset.num_classes == 2 and trainer.channels == 3
    assert trainer.dataset.images[0, :, 0, 0].tolist() == [255, 0, 0]
    trainer.fit()
    assert checkpoint_dirs(tmp_path / "run")


def test_nan_guard_recovers_from_an_injected_nan(tmp_path, tiny_overrides, caplog):
    cfg = load_config("digits-dcgan", tiny_overrides + ["train.steps=15"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    poisoned = {"done": False}
    original = trainer._next_batch

    def next_batch():
        real, *rest = original()  # images, conditions, labels
        if trainer.step == 7 and not poisoned["done"]:
            poisoned["done"] = True
            real = real.clone()
            real[0, 0, 0, 0] = float("nan")
        return (real, *rest)

    trainer._next_batch = next_batch
    with caplog.at_level("WARNING", logger="ganfuse"):
        trainer.fit()
    assert poisoned["done"] and "non-finite loss" in caplog.text
    weights = _weights(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)  # halved once
    assert trainer.guard.recoveries == 1
