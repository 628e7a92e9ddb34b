"""Projection (``ganfuse project``), latent files and rendering them (``ganfuse sample --latent``)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.config import load_config
from ganfuse.data.base import to_uint8
from ganfuse.errors import UserError
from ganfuse.project import load_latent, project, save_latent, walk_between
from ganfuse.run import load_run
from ganfuse.run_images import from_latents
from ganfuse.train.loop import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("project") / "run"
    cfg = load_config(
        "digits-dcgan",
        [
            "train.precision=fp32",
            "model.g_width=32",
            "model.d_width=8",
            "train.batch_size=16",
            "train.steps=3",
            "train.checkpoint_every=1000",
        ],
    )
    Trainer(cfg, path, progress=False).fit()
    return path


def test_projection_recovers_an_image_the_generator_made(run_dir):
    run = load_run(run_dir)
    target = run.sample(1, seed=123)[0]
    result = project(run, target, steps=60, restarts=2)
    assert result.losses[-1] < result.losses[0] / 5
    assert result.extractor == "digits"
    assert result.feature_error < result.random_feature_error / 10
    assert result.pixel_mse < 1e-3
    assert result.progress.shape == (8, 1, 32, 32) and result.progress_steps[-1] == 60
    assert abs(float(result.z.norm()) - run.z_dim**0.5) < 1e-3  # kept on the prior's typical sphere
    assert torch.allclose(from_latents(run, result.z[None])[0], result.image, atol=1e-5)


def test_projection_refuses_a_target_of_another_shape(run_dir):
    run = load_run(run_dir)
    with pytest.raises(UserError, match=r"\(1, 32, 32\) image"):
        project(run, torch.zeros(3, 32, 32), steps=1)
    with pytest.raises(UserError, match="--class given"):
        project(run, torch.zeros(1, 32, 32), steps=1, class_label=1)


def test_latent_file_round_trip(run_dir, tmp_path):
    run = load_run(run_dir)
    z = torch.randn(3, run.z_dim)
    path = save_latent(tmp_path / "z.safetensors", run, z, class_label=4, prompt=None)
    latent = load_latent(path, run.z_dim)
    assert torch.equal(latent.z, z) and latent.class_label == 4 and latent.prompt is None
    assert latent.meta["run"] == str(run.path)
    with pytest.raises(UserError, match=f"holds {run.z_dim}-d latents"):
        load_latent(path, run.z_dim + 1)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="is not a latent file"):
        load_latent(tmp_path / "bad.safetensors")


def test_walk_between_loops_from_a_to_b():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = walk_between(a, b, 8)
    assert z.shape == (8, 2) and torch.allclose(z[0], a) and torch.allclose(z[4], b)
    assert torch.allclose(z.norm(dim=1), torch.ones(8), atol=1e-6)  # slerp keeps the norm


def test_project_cli_writes_its_files_and_sample_renders_the_latent(run_dir, tmp_path, capsys):
    run = load_run(run_dir)
    image = tmp_path / "real.png"
    Image.fromarray(to_uint8(run.sample(1, seed=5))[0, 0].numpy()).save(image)
    out = tmp_path / "proj"
    assert (
        main(
            [
                "project",
                str(run_dir),
                "--image",
                str(image),
                "--out",
                str(out),
                "--steps",
                "30",
                "--restarts",
                "1",
            ]
        )
        == 0
    )
    for name in (
        "projected.png",
        "comparison.png",
        "progress.png",
        "latent.safetensors",
        "projection.json",
    ):
        assert (out / name).is_file(), name
    assert Image.open(out / "projected.png").size == (32, 32)
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--latent",
                str(out / "latent.safetensors"),
                "--out",
                str(tmp_path / "again.png"),
            ]
        )
        == 0
    )
    assert (
        Image.open(tmp_path / "again.png").tobytes() == Image.open(out / "projected.png").tobytes()
    )
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--interpolate",
                "--latents",
                str(out / "latent.safetensors"),
                str(out / "latent.safetensors"),
                "--num",
                "4",
                "--out",
                str(tmp_path / "walk.gif"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "walk.gif").n_frames >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "@missing"], "cannot read --image"),
        (["--image", "@real", "--steps", "0"], "--steps"),
        (["--image", "@real", "--restarts", "1000"], "--restarts"),
        (
            ["--image", "@real", "--prompt", "a red circle"],
            "--prompt applies to text-to-image runs",
        ),
    ],
)
def test_project_cli_errors_are_one_line(run_dir, tmp_path, capsys, argv, message):
    real = tmp_path / "real.png"
    Image.new("L", (32, 32)).save(real)
    argv = [{"@missing": str(tmp_path / "none.png"), "@real": str(real)}.get(a, a) for a in argv]
    assert main(["project", str(run_dir), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganfuse: error: ") and message in err and "\n" not in err


def test_sample_latent_errors(run_dir, tmp_path, capsys):
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--latent",
                str(tmp_path / "none.safetensors"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "latent file not found" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--latents", "a", "b", "--out", str(tmp_path / "x")]) == 2
    assert "--latents A B is for --interpolate" in capsys.readouterr().err
