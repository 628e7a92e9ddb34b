"""Fine-tuning (``ganfuse finetune``): a Trainer initialised from a source run, with FreezeD."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganfuse.cli import main
from ganfuse.config import load_config
from ganfuse.data.base import to_uint8
from ganfuse.data.digits import DigitsDataset
from ganfuse.errors import UserError
from ganfuse.models.dcgan import DCGANDiscriminator
from ganfuse.train.checkpoint import checkpoint_dirs
from ganfuse.train.finetune import default_freeze_d, discriminator_blocks, finetune_config
from ganfuse.train.loop import Trainer

FT = [
    "train.log_every=2",
    "train.checkpoint_every=1000",
    "train.sample_every=1000",
    "train.batch_size=8",
]


def _folder(path, start, n):
    path.mkdir(parents=True)
    images = to_uint8(DigitsDataset(32).images[start : start + n])
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).convert("RGB").save(path / f"{i:03d}.png")
    return path


def _weights(run):
    return load_file(str(checkpoint_dirs(run)[0] / "weights.safetensors"))


@pytest.fixture(scope="module")
def source(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("finetune")
    tiny = [
        "train.precision=fp32",
        "model.g_width=32",
        "model.d_width=8",
        "train.batch_size=16",
        "train.ema_decay=0.9",
        "train.checkpoint_every=1000",
        "train.log_every=5",
    ]
    src = _folder(root / "src_images", 0, 40)
    cfg = load_config(
        "digits-dcgan", [*tiny, "data.name=folder", f"data.path={src}", "train.steps=4"]
    )
    Trainer(cfg, root / "source", progress=False).fit()
    return root / "source", _folder(root / "new_images", 100, 20)


def test_dcgan_discriminator_has_three_blocks_and_freezes_one_by_default():
    d = DCGANDiscriminator(channels=1, width=8)
    blocks = discriminator_blocks(d)
    assert [[type(m).__name__ for m in b] for b in blocks] == [
        ["Conv2d"],
        ["Conv2d", "BatchNorm2d"],
        ["Conv2d", "BatchNorm2d"],
    ]
    assert default_freeze_d(d) == 1


def test_finetune_trains_with_the_lowest_d_block_bit_identical(source, tmp_path):
    src, new = source
    config = finetune_config(src, str(new), freeze_d=2)
    cfg = load_config_from(config, FT + ["train.steps=6"])
    assert (cfg.train.freeze_d, cfg.train.ada_target, cfg.train.lr_g) == (2, 0.6, 1e-4)
    Trainer(cfg, tmp_path / "ft", progress=False).fit()
    before, after = _weights(src), _weights(tmp_path / "ft")
    assert before.keys() == after.keys()
    frozen = [
        k
        for k in before
        if k.startswith(("D.conv1.", "D.conv2.", "D.norm2."))
        and "running" not in k
        and "num_batches" not in k
    ]
    assert frozen
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    for key in (
        "D.conv3.weight_orig",
        "D.head.linear.weight_orig",
        "G.fc.weight",
        "G_ema.fc.weight",
    ):
        key = key if key in before else key.replace("_orig", "")
        assert not torch.equal(before[key], after[key]), key
    # the G it started from is the source's: a few small steps stay close to it, unlike a fresh G
    drift = (after["G.fc.weight"] - before["G.fc.weight"]).abs().max()
    assert drift < 0.01


def load_config_from(config, overrides):
    """``config`` with ``key=value`` overrides applied, validated."""
    from ganfuse.config import parse_override, set_value, validate

    for item in overrides:
        set_value(config, *parse_override(item))
    return validate(config)


def test_finetune_resume_is_exact(source, tmp_path):
    src, new = source
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(
        load_config_from(finetune_config(src, str(new)), FT + ["train.steps=8"]),
        straight,
        progress=False,
    ).fit()
    Trainer(
        load_config_from(finetune_config(src, str(new)), FT + ["train.steps=4"]),
        split,
        progress=False,
    ).fit()
    # the resumed run reads its own config.yaml, as `ganfuse finetune --resume` does
    Trainer(
        load_config(str(split / "config.yaml"), ["train.steps=8"]),
        split,
        resume=True,
        progress=False,
    ).fit()
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_finetune_refuses_a_source_of_other_channels(source, tmp_path):
    src, _ = source  # trained on RGB images; the digits dataset is greyscale
    cfg = load_config_from(finetune_config(src, "digits"), FT + ["train.steps=2"])
    with pytest.raises(UserError, match="3-channel images.*1 channel") as info:
        Trainer(cfg, tmp_path / "ft", progress=False)
    assert "\n" not in str(info.value)


def test_finetune_refuses_a_freeze_past_the_last_block(source, tmp_path):
    src, new = source
    cfg = load_config_from(finetune_config(src, str(new), freeze_d=3), FT)
    with pytest.raises(UserError, match=r"train.freeze_d must be from 0 to 2"):
        Trainer(cfg, tmp_path / "ft", progress=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "no/such/folder"], "--data must be a dataset name"),
        (["--data", "@new", "--lr-scale", "0"], "--lr-scale must be in"),
        (["--data", "@new", "--freeze-d", "-1"], "--freeze-d must be >= 0"),
        ([], "--data is required"),
        (["--resume"], "no fine-tune to continue"),
    ],
)
def test_finetune_cli_errors_are_one_line(source, tmp_path, capsys, argv, message):
    src, new = source
    argv = [str(new) if a == "@new" else a for a in argv]
    assert main(["finetune", str(src), "--out", str(tmp_path / "ft"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganfuse: error: ") and message in err and "\n" not in err


def test_finetune_cli_missing_source(tmp_path, capsys):
    assert (
        main(
            ["finetune", str(tmp_path / "nope"), "--data", "digits", "--out", str(tmp_path / "ft")]
        )
        == 2
    )
    assert "source run not found" in capsys.readouterr().err


def test_finetune_cli_trains_and_records_the_source(source, tmp_path, capsys):
    src, new = source
    out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                str(src),
                "--data",
                str(new),
                "--out",
                str(out),
                "--steps",
                "2",
                "--no-progress",
                "--set",
                "train.batch_size=8",
            ]
        )
        == 0
    )
    saved = load_config(str(out / "config.yaml"))
    assert (
        saved.train.init_from == str(src) and saved.train.freeze_d == 1 and saved.train.steps == 2
    )
    assert [p.name for p in checkpoint_dirs(out)] == ["step_00000002"]
