"""Class-conditional training and sampling; the FAQ diagnostics written to metrics.jsonl."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.config import load_config
from ganfuse.run import load_run
from ganfuse.train.diagnostics import attach_default_callbacks, mean_pairwise_distance
from ganfuse.train.loop import Trainer


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "run"
    cfg = load_config("digits-cond", ["model.g_width=32", "model.d_width=8", "train.batch_size=16",
                                      "train.steps=10", "train.log_every=5", "train.monitor_every=5",
                                      "train.eval_every=5", "train.eval_num=200", "train.precision=fp32"])
    trainer = Trainer(cfg, run, progress=False)
    attach_default_callbacks(trainer)
    trainer.fit()
    return run


def test_conditional_sampling_passes_the_class_to_the_generator(conditional_run):
    run = load_run(conditional_run)
    assert run.num_classes == 10 and run.class_names[3] == "3"
    images = run.sample(6, seed=5, class_label=3)
    z = torch.randn(6, run.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = run.generator(z, torch.full((6,), 3))
        other = run.generator(z, torch.full((6,), 4))
    assert torch.allclose(images, expected, atol=1e-6)
    assert not torch.allclose(images, other, atol=1e-4)
    with pytest.raises(Exception, match="--class must be in 0..9"):
        run.sample(2, class_label=10)


def test_diagnostics_are_logged_and_best_checkpoint_kept(conditional_run):
    records = [json.loads(x) for x in (conditional_run / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    for key in ("mc_diversity", "mc_classes", "mc_max_share", "fd", "acc_real", "acc_fake", "grad_norm_g"):
        assert key in last, key
    assert 1 <= last["mc_classes"] <= 10 and 0.1 <= last["mc_max_share"] <= 1.0  # the largest share is >= 1/k
    assert last["fd"] > 0
    best = load_run(conditional_run, which="best")
    assert best.manifest["best_fd"] == pytest.approx(min(r["fd"] for r in records if "fd" in r), rel=1e-3)


def test_mean_pairwise_distance_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    # pairs: 5, 4, 3 -> mean 4
    assert mean_pairwise_distance(x) == pytest.approx(4.0)
    assert mean_pairwise_distance(torch.ones(5, 3)) == pytest.approx(0.0)


def test_class_conditional_fakes_take_the_real_batch_labels():
    # fakes follow the data's class shares (emoji groups hold 9 to 2,148 images): uniform labels
    # would give fakes another label marginal than reals
    from ganfuse.train.objectives import make_objective

    objective = make_objective(load_config("digits-cond", ["train.precision=fp32"]), torch.device("cpu"), False)
    gen = torch.Generator().manual_seed(0)
    real = torch.tensor([0, 0, 3, 9])
    assert torch.equal(objective.fake_conditions(4, real, 1, gen), real)
    assert torch.equal(objective.fake_conditions(8, real, 2, gen), real.repeat(2))  # each rank its own
    drawn = objective.fake_conditions(500, None, 1, gen)  # no real batch (sampling, DP): uniform
    assert drawn.shape == (500,) and set(drawn.tolist()) == set(range(10))
