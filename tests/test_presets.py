"""Every shipped preset and every ``ganfuse fuse`` task trains a few steps and gives a usable run.

Tiny widths, batches and step counts keep each run to a second or two; the code paths (data,
text encoders, objectives, checkpoints, sampling) are the presets' own. fp32 is pinned so the
results do not depend on whether the CPU has native bf16.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import ganfuse
from ganfuse.cli import main
from ganfuse.config import load_config, preset_names
from ganfuse.data import emoji, scenes, shapes
from ganfuse.multimodal.config import TASKS
from ganfuse.train import objectives
from ganfuse.train.checkpoint import checkpoint_dirs

STEPS = 2
TINY_GAN = [
    "train.precision=fp32",
    f"train.steps={STEPS}",
    "train.batch_size=8",
    "model.g_width=16",
    "model.d_width=8",
    "train.log_every=1",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "train.eval_every=0",
    "train.monitor_every=0",
]
TINY_TEXT = ["model.z_dim=12", "text.cond_dim=16"]  # text-to-image presets (``model.arch: t2i-*``)
CHANNELS = {"digits": 1, "shapes": 3, "scenes": 3, "emoji": 3}
PROMPTS = {"shapes": "a large red circle in the center", "scenes": "a red circle to the left of a blue star",
           "emoji": "red apple"}


class FewEmoji(emoji.EmojiDataset):
    """The first 96 emoji of a split: MiniLM encodes each training caption once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images, self.captions = self.images[:96], self.captions[:96]


def tiny_preset(name: str):
    arch = load_config(name).model.arch
    return load_config(name, [*TINY_GAN, *(TINY_TEXT if arch.startswith("t2i-") else [])])


def test_the_public_train_function_survives_importing_the_training_code():
    import ganfuse.train.loop  # noqa: F401  (as load_run, the CLI and the trainer all do)

    assert callable(ganfuse.train), f"ganfuse.train is {ganfuse.train!r}, not the train() function"


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_trains_a_few_steps_into_a_run_that_samples(name, tmp_path, monkeypatch):
    # a 96-image shapes training split: MiniLM encodes each training caption once
    monkeypatch.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)
    monkeypatch.setitem(scenes.DEFAULT_SPLIT_SIZES, "train", 96)
    monkeypatch.setattr(objectives, "EmojiDataset", FewEmoji)
    # a cache of this test's own: other tests store stand-in encoders' embeddings under "minilm"
    monkeypatch.setenv("GANFUSE_CACHE", str(tmp_path / "cache"))
    config = tiny_preset(name)
    out = ganfuse.train(config, out=tmp_path / "run", progress=False)

    assert [p.name for p in checkpoint_dirs(out)] == [f"step_{STEPS:08d}"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for record in records:
        assert math.isfinite(record["loss_d"]) and math.isfinite(record["loss_g"]), record
    assert (out / "samples" / f"step_{STEPS:08d}.png").is_file()

    run = ganfuse.load_run(out)
    assert run.step == STEPS and run.manifest["precision"] == "fp32"
    text = config.model.arch.startswith("t2i-")
    prompt = PROMPTS.get(config.data.name)
    images = run.sample(2, seed=0, prompts=[prompt]) if text else run.sample(2, seed=0)
    size = config.data.image_size
    assert images.shape == (2, CHANNELS[config.data.name], size, size)
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    again = run.sample(2, seed=0, prompts=[prompt]) if text else run.sample(2, seed=0)
    assert torch.equal(images, again)  # a seed fixes the images


# ``fuse train --task caption`` already runs through the CLI for the report and serve tests.
CLI_TRAINED_ELSEWHERE = {"caption": "tests/report/runs.py::caption_run"}
TINY_FUSE = [
    "train_size=64",
    "eval_size=16",
    "batch_size=8",
    f"steps={STEPS}",
    "warmup_steps=1",
    "threads=1",
    "precision=fp32",
    "image_widths=[8, 16]",
    "image_dim=32",
]


@pytest.mark.parametrize("task", [t for t in TASKS if t not in CLI_TRAINED_ELSEWHERE])
def test_every_fuse_task_trains_a_few_steps_through_the_cli(task, tmp_path, capsys):
    out = tmp_path / task
    argv = ["fuse", "train", "--task", task, "--out", str(out), "--quiet"]
    for item in TINY_FUSE:
        argv += ["--set", item]
    assert main(argv) == 0
    assert f"trained {task} " in capsys.readouterr().out

    result = json.loads((out / "metrics.json").read_text())
    assert result["steps"] == STEPS and result["params"] > 0
    assert math.isfinite(result["final_loss"]) and result["final_loss"] > 0
    scores = result["test"]
    assert scores and all(math.isfinite(v) for v in scores.values())
    rates = {k: v for k, v in scores.items() if re.search(r"(accuracy|top1|_r\d+)$", k)}
    assert rates and all(0.0 <= v <= 1.0 for v in rates.values()), scores  # accuracies, recalls
    # the run reloads: ``fuse evaluate`` scores the saved checkpoint as training did
    assert main(["fuse", "evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(scores)
