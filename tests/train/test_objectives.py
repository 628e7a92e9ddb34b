"""The training core: objectives declare phases, the loop derives the lazy-regularisation
correction from them, statistics travel one channel, the run records what it resolved."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

import ganfuse.train.precision as precision_module
from ganfuse.config import load_config
from ganfuse.data import shapes
from ganfuse.errors import ConfigError
from ganfuse.train.loop import Trainer
from ganfuse.train.objectives import GANObjective, Phase, TextToImageObjective
from ganfuse.train.stats import StatsReporter
from tests.conftest import TINY

T2I_SMALL = ["model.z_dim=8", "model.g_width=16", "model.d_width=8", "text.cond_dim=16", "text.encoder=small",
             "text.contrastive_weight=0.5", "train.batch_size=8", "train.precision=fp32", "train.log_every=1"]


@pytest.fixture
def small_shapes(monkeypatch):
    monkeypatch.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 64)


def test_gan_phases_follow_the_config_and_set_the_adam_correction(tmp_path):
    plain = Trainer(load_config("digits", TINY), tmp_path / "plain", progress=False)
    assert isinstance(plain.objective, GANObjective)
    assert [p.name for p in plain.phases] == ["Dmain", "Gmain"]
    t = plain.config.train
    assert plain.opt_d.param_groups[0]["lr"] == t.lr_d and plain.opt_d.param_groups[0]["betas"] == (t.beta1, t.beta2)

    lazy = Trainer(load_config("digits", TINY + ["train.r1_gamma=1", "train.r1_every=4"]), tmp_path / "lazy",
                   progress=False)
    assert lazy.phases == [Phase("Dmain", "D"), Phase("Dreg", "D", 4), Phase("Gmain", "G")]
    c = 4 / 5  # D takes 5 optimiser steps per 4 batches
    group = lazy.opt_d.param_groups[0]
    assert group["lr"] == pytest.approx(t.lr_d * c)
    assert group["betas"] == pytest.approx((t.beta1**c, t.beta2**c))
    assert lazy.opt_g.param_groups[0]["lr"] == t.lr_g  # G has no regularisation phase


def test_regularisation_runs_on_its_interval_only(tmp_path):
    trainer = Trainer(load_config("digits", TINY + ["train.r1_gamma=1", "train.r1_every=3"]), tmp_path / "run",
                      progress=False)
    seen = []
    for _ in range(6):
        trainer.train_step()
        seen.append("r1" in trainer.stats.flush())
    assert seen == [True, False, False, True, False, False]  # steps 0 and 3


def test_text_to_image_regulariser_gets_the_same_correction(tmp_path, small_shapes):
    """MA-GP is text-to-image's Dreg phase: the Adam correction follows from it, not from R1."""
    config = load_config("shapes-t2i", T2I_SMALL + ["text.magp_weight=2", "train.r1_gamma=0", "train.r1_every=2"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert isinstance(trainer.objective, TextToImageObjective)
    assert [p.name for p in trainer.phases] == ["Dmain", "Dreg", "Gmain"]
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(config.train.lr_d * 2 / 3)
    trainer.train_step()
    stats = trainer.stats.flush()
    # every statistic of the family comes through the one reporter the loop flushes
    assert {"magp", "con_d", "con_g", "d_mismatch", "loss_d", "loss_g", "grad_norm_d"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values())


def test_the_nan_guard_sees_text_to_image_statistics(tmp_path, small_shapes, monkeypatch):
    """A non-finite contrastive term alone (the adversarial losses finite) rolls the interval back."""
    import ganfuse.train.objectives as objectives

    config = load_config("shapes-t2i", T2I_SMALL + ["train.log_every=2", "train.checkpoint_every=100"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    real_info_nce = objectives.info_nce
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        value = real_info_nce(*args, **kwargs)
        return value * float("nan") if calls["n"] == 5 else value  # in the second interval

    monkeypatch.setattr(objectives, "info_nce", poisoned)
    trainer.fit(steps=6)
    assert trainer.guard.recoveries == 1
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


def test_training_never_mutates_the_callers_config(tmp_path, small_shapes):
    config = load_config("shapes-t2i", T2I_SMALL)
    before = config.to_dict()
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert config.to_dict() == before
    assert trainer.config.text.vocab and not config.text.vocab  # the run's copy records the words
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["text"]["vocab"] == trainer.config.text.vocab


def test_the_run_records_the_precision_it_resolved_and_resume_keeps_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    auto = [o for o in TINY if not o.startswith("train.precision")] + ["train.precision=auto"]
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    Trainer(load_config("digits", auto), run, progress=False).fit(steps=2)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"] == "fp32"
    # the same run on a CPU whose auto would be bf16 continues in fp32
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    resumed = Trainer(load_config("digits", auto), run, resume=True, progress=False)
    assert resumed.precision.name == "fp32" and resumed.step == 2
    # asking for another precision on resume is refused, naming the recorded one
    with pytest.raises(ConfigError, match="trains in fp32.*train.precision=fp32 or auto"):
        Trainer(load_config("digits", auto[:-1] + ["train.precision=bf16"]), run, resume=True, progress=False)


class TwoRanks:
    """A stand-in for a two-process group: ``mean`` averages with the other rank's tensor."""

    enabled = True

    def __init__(self, other: torch.Tensor):
        self.other = other

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor.add_(self.other.pop(0)).div_(2)
        return tensor


def test_statistics_are_interval_means_reduced_over_ranks():
    reporter = StatsReporter()
    for v in (1.0, 2.0, 3.0):
        reporter.report("loss", torch.tensor(v))
    reporter.report("r1", 10.0)
    assert reporter.all_finite()
    # this rank: loss sum 6 over 3, r1 10 over 1; the other: loss sum 2 over 1, r1 30 over 1
    other = [torch.tensor([2.0, 30.0]), torch.tensor([1.0, 1.0])]  # sums, then counts, names sorted
    flushed = reporter.flush(TwoRanks(other))
    assert flushed == pytest.approx({"loss": 8 / 4, "r1": 40 / 2})
    assert reporter.flush() == {}  # reset
    reporter.report("nonfinite", 1.0)
    assert reporter.all_finite() and not reporter.all_finite(flag="nonfinite")
    reporter.report("loss", float("inf"))
    assert not reporter.all_finite()
