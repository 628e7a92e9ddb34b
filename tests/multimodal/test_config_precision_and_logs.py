"""The multimodal config on the shared coercer, the shared precision rule, and the loop's logs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import ganfuse.train.precision as shared_precision
from ganfuse.cli import main
from ganfuse.errors import CheckpointError, ConfigError
from ganfuse.multimodal.checkpoint import read_run, save_run
from ganfuse.multimodal.config import config_from_dict, make_config
from ganfuse.multimodal.loop import learning_rate, optimise
from ganfuse.multimodal.train import train_fusion
from ganfuse.train.checkpoint import checkpoint_dirs

from .conftest import TINY


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "image_widths=[0]",
            "image_widths must list at least one width, each in [1, 4096] (got [0])",
        ),
        ("image_dim=0", "image_dim must be in [1, 4096] (got 0)"),
        ("fused_dim=-1", "fused_dim must be in [1, 4096] (got -1)"),
        ("seed=-1", "seed must be in [0, 2**32) (got -1)"),
        ("fusion_options.rank=abc", "fusion_options.rank must be an integer, got 'abc'"),
        ("threads=100000", "threads must be in [0, 256] (0: torch's default) (got 100000)"),
        ("steps=.inf", "steps must be an integer, got inf"),
        ("lr=nan", "lr must be finite, got nan"),
        ("precision=fp16", "precision must be one of auto, fp32, bf16 (got 'fp16')"),
        ("text_encoder=", "text_encoder must be a string, got None"),
        ("fusion_options.rank=0", "fusion_options.rank must be in [1, 4096], got 0"),
    ],
)
def test_bad_overrides_are_one_line_errors_with_exit_2(tmp_path, capsys, override, message):
    argv = ["fuse", "train", "--task", "matching", "--fusion", "film", "--out", str(tmp_path / "r")]
    assert main([*argv, "--set", override, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"ganfuse: error: {message}\n"
    assert not (tmp_path / "r").exists()  # rejected before anything is written


def test_cross_attention_heads_must_divide_its_width():
    with pytest.raises(ConfigError, match=r"heads \(3\) must divide fusion_options.dim \(128\)"):
        make_config("matching", "cross-attention", ["fusion_options.heads=3"])
    config = make_config(
        "matching", "cross-attention", ["fusion_options.heads=3", "fusion_options.dim=96"]
    )
    assert config.fusion_options == {"heads": 3, "dim": 96}


def test_an_empty_optional_path_is_none_and_saved_configs_round_trip():
    config = make_config("vqa", "film", ["image_encoder_init=", "image_widths=16,32", "lr=1e-3"])
    assert config.image_encoder_init is None
    assert config.image_widths == [16, 32] and config.lr == 0.001
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # runs saved before the field became optional wrote "" for "none": still read
    assert config_from_dict({**config.to_dict(), "image_encoder_init": ""}).image_encoder_init == ""


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_resolved_once_and_recorded_in_the_run(
    tmp_path, monkeypatch, native, expected
):
    monkeypatch.setattr(shared_precision, "cpu_has_native_bf16", lambda: native)
    seen = []
    import ganfuse.multimodal.train as fusion_train

    real = fusion_train.optimise

    def spy(params, compute_loss, config, *args, **kwargs):
        def loss(step):
            seen.append((config.precision, torch.is_autocast_cpu_enabled()))
            return compute_loss(step)

        return real(params, loss, config, *args, **kwargs)

    monkeypatch.setattr(fusion_train, "optimise", spy)
    config = make_config("matching", "early", [*TINY, "precision=auto"])
    result = train_fusion(config, tmp_path / "run", progress=False)
    assert seen == [(expected, expected == "bf16")] * 3  # autocast on every step, or never
    record = read_run(result.run_dir)
    assert record.config.precision == expected
    assert json.loads((result.run_dir / "config.json").read_text())["precision"] == expected
    assert config.precision == "auto"  # the caller's config is left as it was


def test_optimise_logs_interval_means_of_loss_and_lr(tmp_path):
    config = make_config(
        "matching", "early", ["steps=25", "log_every=10", "warmup_steps=5", "lr=0.01"]
    )
    weight = nn.Parameter(torch.zeros(()))

    def compute_loss(step: int) -> torch.Tensor:
        return weight * 0 + float(step)  # the loss of step s is s

    (tmp_path / "metrics.jsonl").write_text('{"step": 999, "loss": 0}\n')  # an earlier run's
    stats = optimise([weight], compute_loss, config, progress=False, run_dir=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 25]
    assert [line["loss"] for line in lines] == pytest.approx([4.5, 14.5, 22.0])
    for line, steps in zip(lines, (range(0, 10), range(10, 20), range(20, 25)), strict=True):
        rates = [learning_rate(config, s, s / 25) for s in steps]
        assert line["lr"] == pytest.approx(sum(rates) / len(rates), rel=1e-6)
        assert line["time"] >= 0
    average = 0.0
    for step in range(1, 25):
        average = 0.95 * average + 0.05 * step
    assert stats.steps == 25 and stats.final_loss == pytest.approx(average)


def test_a_new_run_in_a_used_folder_replaces_the_earlier_checkpoint(tmp_path):
    config = make_config("matching", "early", [])
    torch.manual_seed(0)
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    save_run(tmp_path, "fusion", first, config, {}, {"steps": 40}, step=40)
    save_run(tmp_path, "fusion", second, config, {}, {"steps": 3}, step=3)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_00000003"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step_00000003",
    ]
    record = read_run(tmp_path)
    torch.testing.assert_close(record.weights["weight"], second.weight.detach())
    assert record.metrics == {"steps": 3}


def test_diverged_weights_are_never_saved(tmp_path):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    with pytest.raises(CheckpointError, match="training diverged.*lower lr"):
        save_run(tmp_path, "fusion", model, make_config("matching", "early", []), {}, {}, step=1)
    assert checkpoint_dirs(tmp_path) == [] and not (tmp_path / "run.json").exists()


# -- per-world and per-fusion defaults ---------------------------------------------------------


def test_scenes_runs_get_an_8x8_grid_and_film_its_scenes_options_unless_overridden():
    from ganfuse.multimodal.config import make_config

    film = make_config("scenes-vqa", "film")
    assert film.image_widths == [32, 64]  # 32 px / 4 = an 8x8 patch grid
    assert film.fusion_options == {"coords": 1, "pool": 2, "blocks": 3}
    # the dual encoder a scenes benchmark shares has the same grid
    assert make_config("zeroshot", None, ["world=scenes"]).image_widths == [32, 64]
    # other fusions on scenes get the grid, not FiLM's options
    assert make_config("scenes-matching", "early").fusion_options == {}
    # overrides win, key by key
    custom = make_config("scenes-vqa", "film", ["fusion_options.pool=0", "image_widths=32,64,128"])
    assert custom.image_widths == [32, 64, 128]
    assert custom.fusion_options == {"pool": 0, "coords": 1, "blocks": 3}
    # shapes runs are unchanged
    shapes = make_config("vqa", "film")
    assert shapes.image_widths == [32, 64, 128] and shapes.fusion_options == {}


def test_scenes_matching_trains_the_image_encoder_on_objects_and_edits_unless_frozen():
    from ganfuse.multimodal.config import make_config

    matching = make_config("scenes-matching", "film")
    assert (matching.object_weight, matching.counterfactuals) == (1.0, 1.0)
    assert matching.fusion_options == {"coords": 1, "pool": 2, "blocks": 3, "attend": 1}
    assert make_config("scenes-vqa", "film").object_weight == 0.0  # VQA: measured without
    # a frozen encoder has precomputed features: no probe to train, no edited images ...
    frozen = make_config("scenes-matching", "gated", ["freeze_image_encoder=true"])
    assert (frozen.object_weight, frozen.counterfactuals) == (0.0, 0.0)
    # ... and asking for them with it is an error naming the key
    with pytest.raises(ConfigError, match="counterfactuals"):
        make_config("scenes-matching", "gated", ["freeze_image_encoder=true", "counterfactuals=1"])


def test_switch_options_may_be_zero_but_sizes_may_not():
    import pytest

    from ganfuse.errors import ConfigError
    from ganfuse.multimodal.config import make_config

    assert (
        make_config("scenes-vqa", "film", ["fusion_options.coords=0"]).fusion_options["coords"] == 0
    )
    with pytest.raises(ConfigError, match=r"fusion_options.blocks must be in \[1"):
        make_config("scenes-vqa", "film", ["fusion_options.blocks=0"])
