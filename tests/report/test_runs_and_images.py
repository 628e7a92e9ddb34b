"""Reading run folders and drawing images: exact values on small inputs."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse import run_images as images
from ganfuse.errors import UserError
from ganfuse.run_folders import (
    detect_kind,
    display_names,
    generation_mode,
    pick_evenly,
    read_eval,
    read_metrics,
)


def test_read_metrics_skips_cut_lines_and_non_finite_values(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 20, "loss_d": 0.5}\n'
        '{"step": 10, "loss_d": NaN, "loss_g": 1.5, "fd_best": true, "note": "x"}\n'
        '{"step": 30, "loss_d": 0.2'  # cut by a kill
    )
    assert read_metrics(tmp_path) == [{"step": 10.0, "loss_g": 1.5}, {"step": 20.0, "loss_d": 0.5}]


def test_pick_evenly_keeps_first_and_last():
    assert pick_evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert pick_evenly([1, 2], 6) == [1, 2]
    assert pick_evenly(list(range(5)), 1) == [4]


@pytest.mark.parametrize(
    ("config", "manifest", "mode"),
    [
        ({"model": {"conditional": False}}, {"num_classes": 0}, "unconditional"),
        ({"model": {"conditional": True}}, {"num_classes": 10}, "class"),
        ({"model": {}}, {"kind": "t2i"}, "text"),
        (
            {"model": {"arch": "t2i-dfgan"}, "text": {"encoder": "minilm"}},
            {"num_classes": 0},
            "text",
        ),
        (
            {"model": {"arch": "dcgan"}, "text": {"encoder": "minilm"}},
            {"num_classes": 0},
            "unconditional",
        ),
    ],
)
def test_generation_mode(config, manifest, mode):
    assert generation_mode(config, manifest) == mode


def test_detect_kind_names_what_it_expected(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text("[]")
    assert detect_kind(tmp_path / "b") == "benchmark"
    with pytest.raises(UserError, match="expected config.yaml"):
        detect_kind(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        detect_kind(tmp_path / "f.txt")


def test_read_eval_accepts_one_result_or_a_list_and_rejects_others(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"metrics": {"fid": 1.0}}))
    assert read_eval(tmp_path) == [{"metrics": {"fid": 1.0}}]
    (tmp_path / "eval.json").write_text(json.dumps([{"fid": 1.0}]))
    with pytest.raises(UserError, match="metrics"):
        read_eval(tmp_path)


def test_display_names_are_unique():
    from pathlib import Path

    assert display_names([Path("a/run"), Path("b/run"), Path("c/x")]) == ["a/run", "b/run", "x"]
    assert display_names([Path("a/run"), Path("a/run")]) == ["a/run", "a/run (2)"]


def test_slerp_hits_the_ends_and_keeps_the_norm_of_orthogonal_latents():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    z = images.slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(z[0], a) and torch.allclose(z[-1], b)
    assert torch.allclose(z.norm(dim=1), torch.full((5,), 3.0))
    assert torch.allclose(z[2], torch.tensor([3.0, 3.0]) / 2**0.5)


def test_interpolation_latents_are_seeded_and_truncated():
    z1 = images.interpolation_latents(8, 5, seed=3, truncation=0.5)
    assert torch.equal(z1, images.interpolation_latents(8, 5, seed=3, truncation=0.5))
    assert z1.shape == (5, 8) and float(z1.abs().max()) <= 0.5
    with pytest.raises(UserError):
        images.interpolation_latents(8, 1, seed=0)


def test_grid_image_layout_and_pixels():
    x = torch.full((3, 1, 4, 4), -1.0)
    x[1] = 1.0
    grid = images.grid_image(x, ncol=2, scale=1, padding=2)
    assert grid.size == (2 * 6 + 2, 2 * 6 + 2)
    assert grid.getpixel((2, 2)) == (0, 0, 0)  # first image: black
    assert grid.getpixel((8, 2)) == (255, 255, 255)  # second: white
    assert grid.getpixel((8, 8)) == (96, 96, 96)  # empty fourth cell: background


class FakeTextRun:
    """Stands for a text-to-image Run: the hooks the report and app call."""

    z_dim, num_classes, step = 4, 0, 1

    def __init__(self):
        self.calls = []

    def sample(self, n, seed=0, prompts=None, truncation=None, class_label=None):
        self.calls.append(("sample", n, seed, tuple(prompts)))
        return torch.zeros(n, 3, 8, 8)

    def from_latents(self, z, prompts):
        self.calls.append(("from_latents", len(z), tuple(prompts)))
        return torch.zeros(len(z), 3, 8, 8)


def test_text_runs_are_asked_through_prompts():
    run = FakeTextRun()
    grid = images.prompt_grid(run, ["a red circle", "a blue square"], per_prompt=3, seed=5)
    assert grid.shape == (6, 3, 8, 8)
    assert run.calls == [
        ("sample", 3, 5, ("a red circle",) * 3),
        ("sample", 3, 5, ("a blue square",) * 3),
    ]
    strip = images.interpolation_strip(run, steps=4, prompt="a red circle")
    assert strip.shape == (4, 3, 8, 8) and run.calls[-1] == (
        "from_latents",
        4,
        ("a red circle",) * 4,
    )


def test_main_metric_of_benchmark_tasks():
    from ganfuse.report.plots import main_metric

    assert main_metric("matching", ["match_accuracy"]) == "match_accuracy"
    assert main_metric("zeroshot", ["temperature", "seen_top1", "heldout_top1"]) == "heldout_top1"
    assert main_metric("other", ["loss", "color_accuracy"]) == "color_accuracy"
    assert main_metric("other", ["loss", "bleu"]) == "loss"


def test_rgb_pixels_repeats_grey_and_checks_the_shape():
    grey = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    pixels = images.rgb_pixels(grey)
    assert pixels.shape == (1, 1, 3, 3) and pixels.dtype.name == "uint8"
    assert pixels[0, 0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    with pytest.raises(ValueError, match="expected"):
        images.rgb_pixels(torch.zeros(1, 2, 4, 4))
