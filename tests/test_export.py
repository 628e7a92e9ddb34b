"""Sampling controls (truncation psi, latent walks), export (ONNX, TorchScript) checked against
PyTorch, and the Hugging Face Hub folder (save_pretrained / from_pretrained, model card)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from ganfuse.cli import main
from ganfuse.config import load_config
from ganfuse.errors import UserError
from ganfuse.export import (
    check_export,
    example_inputs,
    export_generator,
    from_pretrained,
    read_export_metadata,
    run_exported,
    save_pretrained,
)
from ganfuse.inputs import InputError, check_psi
from ganfuse.models.build import build_gan, build_t2i, text_spec_from_config
from ganfuse.run import Run, TextToImageRun, load_run
from ganfuse.run_folders import write_eval
from ganfuse.run_images import walk_latents
from ganfuse.text.prompts import PromptEncoder
from ganfuse.train.checkpoint import save_checkpoint

pytest.importorskip("onnx")  # a guard only: the dev extra installs onnx and onnxruntime
pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4
TINY = ["model.g_width=32", "model.d_width=8", "train.precision=fp32"]
WORDS = ["a", "large", "small", "red", "blue", "circle", "square", "in", "the", "center"]


def _randomise_norm_statistics(g: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """A few train-mode passes on ``inputs`` first (spectral norm's power iteration converges, as
    in a trained network: a fresh ``u`` makes sigma tiny and the weights huge), then running
    statistics away from (0, 1), so eval-mode BatchNorm is really in the graph."""
    with torch.no_grad():
        g.train()
        for _ in range(10):
            g(*inputs)
    gen = torch.Generator().manual_seed(3)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return g.eval()


def gan_run(path, preset: str = "digits", overrides: tuple[str, ...] = ()) -> Run:
    config = load_config(preset, [*TINY, *overrides])
    classes = 10 if config.model.conditional else 0
    torch.manual_seed(0)
    g, _ = build_gan(config, 1, classes)
    z, y = torch.randn(4, config.model.z_dim), torch.arange(4) if classes else None
    manifest = {
        "step": 7,
        "channels": 1,
        "num_classes": classes,
        "class_names": [str(i) for i in range(classes)],
        "config": config.to_dict(),
    }
    return Run(
        path,
        config,
        7,
        _randomise_norm_statistics(g, z, y),
        classes,
        manifest["class_names"],
        manifest,
        torch.device("cpu"),
    )


class StubSentenceEncoder:
    """Deterministic 16-d 'sentence embeddings' (a stand-in for MiniLM, which takes seconds to load)."""

    def __call__(self, prompts):
        rows = [
            torch.randn(16, generator=torch.Generator().manual_seed(sum(map(ord, p))))
            for p in prompts
        ]
        return torch.stack(rows)


def t2i_run(path, arch: str = "t2i-dfgan", tokens: bool = False) -> TextToImageRun:
    text = (
        ["text.encoder=small", f"text.vocab=[{', '.join(WORDS)}]"]
        if tokens
        else ["text.embed_dim=16"]
    )
    if arch == "t2i-concat":
        text.append("text.contrastive_weight=0")  # its discriminator has no embedding heads
    config = load_config("shapes-t2i", [*TINY, f"model.arch={arch}", "text.cond_dim=16", *text])
    spec = text_spec_from_config(config)
    torch.manual_seed(0)
    g, _ = build_t2i(config, spec, 3)
    encoder = PromptEncoder(spec) if tokens else StubSentenceEncoder()
    cond = encoder(["a red circle", "a blue square", "a small circle", "the center"])
    manifest = {
        "step": 5,
        "channels": 3,
        "num_classes": 0,
        "class_names": [],
        "config": config.to_dict(),
    }
    g = _randomise_norm_statistics(g, torch.randn(4, 64), cond)
    # channels-last, as ganfuse.run loads text-to-image generators on a CPU
    g.to(memory_format=torch.channels_last)
    return TextToImageRun(path, config, 5, g, 0, [], manifest, torch.device("cpu"), encoder)


RUNS = {
    "dcgan": lambda p: gan_run(p),
    "dcgan-conditional-sn": lambda p: gan_run(p, "digits-cond", ("model.spectral_norm_g=true",)),
    "resnet-conditional": lambda p: gan_run(p, "digits-cond", ("model.arch=resnet",)),
    "t2i-dfgan-embedding": lambda p: t2i_run(p),
    "t2i-concat-words": lambda p: t2i_run(p, "t2i-concat", tokens=True),
}


# ------------------------------------------------------------------------------ truncation psi


def test_psi_0_gives_the_mean_latent_image_and_psi_1_the_plain_sample(tmp_path):
    run = gan_run(tmp_path, "digits-cond")
    mean_image = run.generator(torch.zeros(3, run.z_dim), torch.full((3,), 2))
    at_zero = run.sample(3, seed=5, class_label=2, psi=0.0)
    assert torch.equal(at_zero, mean_image.detach())
    assert torch.equal(
        run.sample(3, seed=5, class_label=2, psi=1.0), run.sample(3, seed=5, class_label=2)
    )
    z = torch.randn(3, run.z_dim, generator=torch.Generator().manual_seed(5))
    halfway = run.generator(0.5 * z, torch.full((3,), 2)).detach()
    assert torch.allclose(run.sample(3, seed=5, class_label=2, psi=0.5), halfway, atol=1e-6)
    assert not torch.equal(at_zero, halfway)


def test_psi_0_gives_one_mean_image_per_prompt(tmp_path):
    run = t2i_run(tmp_path)
    images = run.sample(3, seed=1, prompts=["a red circle", "a blue square"], psi=0.0)
    assert torch.equal(images[0], images[2]) and torch.equal(images[3], images[5])
    assert not torch.equal(images[0], images[3])
    plain = run.sample(3, seed=1, prompts=["a red circle"])
    assert not torch.equal(plain[0], plain[1])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_psi_outside_0_to_1_is_refused_by_name(bad):
    with pytest.raises(InputError, match=r"^--psi must be a number from 0"):
        check_psi(bad)


def test_walk_latents_loop_through_their_keyframes():
    z = walk_latents(8, 12, seed=0, keyframes=3)
    keys = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    assert z.shape == (12, 8)
    assert (
        torch.allclose(z[0], keys[0])
        and torch.allclose(z[4], keys[1])
        and torch.allclose(z[8], keys[2])
    )
    assert torch.allclose(walk_latents(8, 12, seed=0, keyframes=3, psi=0.5), 0.5 * z)


# ------------------------------------------------------------------------------ ONNX / TorchScript


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
@pytest.mark.parametrize("family", list(RUNS))
def test_exports_equal_pytorch_within_1e_4(tmp_path, family, fmt, suffix):
    run = RUNS[family](tmp_path)
    path = export_generator(run, fmt, tmp_path / f"g{suffix}")
    assert check_export(run, path, fmt, n=5) <= TOLERANCE
    meta = read_export_metadata(path, fmt)
    inputs = example_inputs(run, 3, seed=9)
    assert list(meta["inputs"]) == list(inputs)
    assert meta["outputs"]["images"]["shape"][1:] == list(run_exported(path, fmt, inputs).shape[1:])
    if family.startswith("t2i"):
        # the graph takes the prompt encoder's tensor: embeddings (float) or word ids (int64)
        assert meta["inputs"]["text"]["dtype"] == ("int64" if "words" in family else "float32")


def test_export_refuses_a_wrong_suffix_and_an_unknown_format(tmp_path):
    run = gan_run(tmp_path)
    with pytest.raises(UserError, match=r"must end with \.onnx"):
        export_generator(run, "onnx", tmp_path / "g.pt")
    with pytest.raises(UserError, match="--format must be one of onnx, torchscript, hf"):
        export_generator(run, "tflite", tmp_path / "g.tflite")


# ------------------------------------------------------------------------------ Hub folder


def test_save_pretrained_round_trips_with_identical_images(tmp_path):
    run = gan_run(tmp_path / "run", "digits-cond")
    folder = save_pretrained(run, tmp_path / "hub")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    again = from_pretrained(folder)
    assert type(again) is Run and again.num_classes == 10 and again.step == 7
    assert torch.equal(again.sample(6, seed=2, class_label=4), run.sample(6, seed=2, class_label=4))
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "ganfuse" and config["inputs"]["labels"]["dtype"] == "int64"
    with pytest.raises(UserError, match="not empty"):
        save_pretrained(run, folder)


def test_save_pretrained_round_trips_a_text_to_image_run(tmp_path):
    run = t2i_run(tmp_path / "run", "t2i-dfgan", tokens=True)
    again = from_pretrained(save_pretrained(run, tmp_path / "hub"))
    assert isinstance(again, TextToImageRun)
    prompts = ["a large red circle in the center", "a small blue square"]
    assert torch.equal(
        again.sample(2, seed=3, prompts=prompts), run.sample(2, seed=3, prompts=prompts)
    )


def test_model_card_holds_the_runs_metrics_and_dataset(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = gan_run(run_dir, "digits-cond")
    write_eval(
        run_dir,
        [
            {
                "metrics": {"fid": 12.3456, "kid": 0.0123, "kid_std": 0.0011},
                "reference": "digits",
                "n_fake": 500,
                "n_real": 1797,
                "extractor": "digits",
            }
        ],
    )
    (run_dir / "memorization.json").write_text(
        json.dumps(
            {
                "median_ratio": 0.97,
                "closer_share": 0.061,
                "near_copy_share": 0.0,
                "n_samples": 2000,
                "n_train": 1797,
                "extractor": "digits",
            }
        )
    )
    card = (save_pretrained(run, tmp_path / "hub") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: ganfuse\n")
    assert "| fid | 12.35 | digits | digits | 500 / 1797 |" in card
    assert "| kid | 0.0123 ± 0.0011 |" in card
    assert "| memorization closer_share | 0.061 |" in card
    assert "Trained on `digits`, 32x32; classes: 0, 1, 2" in card
    assert "7 steps" in card


def test_from_pretrained_refuses_a_folder_that_is_not_one(tmp_path):
    with pytest.raises(UserError, match="is not a saved generator"):
        from_pretrained(tmp_path)


# ------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder as training leaves it (config.yaml, a checkpoint), written without training."""
    folder = tmp_path_factory.mktemp("export") / "run"
    run = gan_run(folder)
    weights = {f"G.{k}": v for k, v in run.generator.state_dict().items()}
    meta = {"config": run.config.to_dict(), "channels": 1, "num_classes": 0, "class_names": []}
    save_checkpoint(folder, run.step, weights, {}, meta)
    (folder / "config.yaml").write_text(yaml.safe_dump(run.config.to_dict()))
    return folder


def test_the_written_run_folder_loads_as_the_run(trained_run):
    loaded = load_run(trained_run)
    assert loaded.step == 7 and torch.equal(
        loaded.sample(2, seed=1), gan_run(trained_run).sample(2, seed=1)
    )


def test_cli_export_checks_against_pytorch(trained_run, tmp_path, capsys):
    assert (
        main(["export", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "g.onnx")])
        == 0
    )
    out = capsys.readouterr().out
    assert "z (N, 100) float32 -> images (N, 1, 32, 32)" in out and "(ok)" in out
    assert main(["export", str(trained_run), "--format", "hf", "--out", str(tmp_path / "hub")]) == 0
    assert (tmp_path / "hub" / "model.safetensors").is_file()


def test_cli_walk_writes_a_gif_with_n_frames(trained_run, tmp_path, capsys):
    gif = tmp_path / "walk.gif"
    assert (
        main(
            [
                "sample",
                str(trained_run),
                "--interpolate",
                "--num",
                "9",
                "--psi",
                "0.8",
                "--out",
                str(gif),
            ]
        )
        == 0
    )
    with Image.open(gif) as image:
        assert image.n_frames == 9 and image.size == (128, 128)
    assert "9-frame latent walk" in capsys.readouterr().out


def test_cli_mp4_walk_without_a_writer_is_one_line(trained_run, tmp_path, capsys):
    from ganfuse.run_images import mp4_writer_available

    code = main(
        [
            "sample",
            str(trained_run),
            "--interpolate",
            "--num",
            "4",
            "--out",
            str(tmp_path / "w.mp4"),
        ]
    )
    if mp4_writer_available():
        assert code == 0 and (tmp_path / "w.mp4").stat().st_size > 0
    else:
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "pip install imageio imageio-ffmpeg" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--format", "tflite", "--out", "g.tflite"],
            "--format must be one of onnx, torchscript, hf",
        ),
        (["--format", "onnx", "--out", "g.pt"], "must end with .onnx"),
        (
            ["--format", "onnx", "--out", "g.onnx", "--which", "oldest"],
            "--which must be latest or best",
        ),
    ],
)
def test_cli_export_bad_input_is_one_line(trained_run, tmp_path, capsys, args, message):
    args = [a if a not in ("g.tflite", "g.pt", "g.onnx") else str(tmp_path / a) for a in args]
    assert main(["export", str(trained_run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_cli_hf_export_never_writes_into_a_run_folder(trained_run, capsys):
    before = sorted(p.name for p in trained_run.iterdir())
    assert (
        main(
            ["export", str(trained_run), "--format", "hf", "--out", str(trained_run), "--overwrite"]
        )
        == 2
    )
    assert "is a training run" in capsys.readouterr().err
    assert sorted(p.name for p in trained_run.iterdir()) == before


def test_cli_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert (
        main(["export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "g.onnx")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a run folder" in err
