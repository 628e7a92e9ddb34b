"""Class-balanced batch order (``data.class_balance``) and AC-GAN's auxiliary classifier
(``train.aux_class_weight``) for class-conditional GANs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganfuse.config import load_config
from ganfuse.data import InMemoryImageDataset
from ganfuse.data.sampler import ClassBalancedBatchSampler, class_balance_weights
from ganfuse.errors import ConfigError
from ganfuse.train.loop import Trainer, batch_sampler
from ganfuse.train.objectives import Batch
from tests.conftest import TINY

COND = TINY + ["train.augment=[]"]


def test_balance_weights_move_class_shares_from_the_data_to_uniform():
    labels = torch.tensor([0] * 1 + [1] * 4 + [2] * 16)
    for balance, expected in [(0.0, [1, 4, 16]), (0.5, [1, 2, 4]), (1.0, [1, 1, 1])]:
        w = class_balance_weights(labels, balance)
        per_class = torch.zeros(3, dtype=torch.float64).index_add_(0, labels, w)
        shares = per_class / per_class.sum()
        torch.testing.assert_close(shares, torch.tensor(expected, dtype=torch.float64) / sum(expected))
    with pytest.raises(ValueError, match="class label for every item"):
        class_balance_weights(torch.tensor([0, -1]), 1.0)


def test_balanced_sampler_draws_the_asked_shares_and_resumes_exactly():
    labels = torch.tensor([0] * 10 + [1] * 90)
    sampler = ClassBalancedBatchSampler(class_balance_weights(labels, 1.0), batch_size=20, seed=3)
    drawn = torch.cat([sampler.next_indices() for _ in range(250)])  # 50 epochs of 100 draws
    share = float((labels[drawn] == 0).float().mean())
    assert share == pytest.approx(0.5, abs=0.03)  # 0.10 without balancing
    state = sampler.state_dict()
    ahead = [sampler.next_indices() for _ in range(7)]  # crosses an epoch boundary
    resumed = ClassBalancedBatchSampler(class_balance_weights(labels, 1.0), batch_size=20, seed=0)
    resumed.load_state_dict(state)
    for a in ahead:
        assert torch.equal(resumed.next_indices(), a)


def test_balance_needs_labels(tmp_path):
    unlabelled = InMemoryImageDataset(torch.zeros(8, 1, 8, 8))
    with pytest.raises(ConfigError, match="data.class_balance needs a labelled dataset"):
        batch_sampler(unlabelled, 4, 0, 0.5)
    assert type(batch_sampler(unlabelled, 4, 0, 0.0)).__name__ == "EpochBatchSampler"
    with pytest.raises(ConfigError, match="train.aux_class_weight"):
        load_config("digits", ["train.aux_class_weight=1"])  # not class-conditional
    with pytest.raises(ConfigError, match="data.class_balance"):
        load_config("digits-cond", ["data.class_balance=2"])


def test_balanced_run_trains_on_balanced_batches(tmp_path):
    trainer = Trainer(load_config("digits-cond", COND + ["data.class_balance=1"]), tmp_path / "run", progress=False)
    assert isinstance(trainer.sampler, ClassBalancedBatchSampler)
    trainer.train_step()
    assert trainer.step == 1


def _one_batch(trainer: Trainer) -> Batch:
    real, cond, _ = trainer._next_batch()
    z = torch.randn(real.shape[0], trainer.config.model.z_dim, generator=torch.Generator().manual_seed(1))
    fake_cond = cond.roll(1)
    return Batch(real, cond, trainer.G(z, fake_cond), fake_cond)


def test_aux_classifier_terms_are_cross_entropies_with_the_asked_labels(tmp_path):
    trainer = Trainer(load_config("digits-cond", COND + ["train.aux_class_weight=0.5"]), tmp_path / "run",
                      progress=False)
    batch = _one_batch(trainer)
    trainer.D.eval()  # spectral norm's power iteration and BatchNorm's batch statistics held still
    out_real = trainer.D(batch.real, batch.cond)
    out_fake = trainer.D(batch.fake, batch.fake_cond)
    assert out_real.class_logits.shape == (batch.real.shape[0], 10)
    ce_real = F.cross_entropy(out_real.class_logits, batch.cond)
    ce_fake = F.cross_entropy(out_fake.class_logits, batch.fake_cond)

    d_with = trainer.objective.loss("Dmain", batch, trainer.nets)
    g_with = trainer.objective.loss("Gmain", batch, trainer.nets)
    trainer.config.train.aux_class_weight = 0.0  # the same D still has its head: only the weight changes
    d_without = trainer.objective.loss("Dmain", batch, trainer.nets)
    g_without = trainer.objective.loss("Gmain", batch, trainer.nets)
    # D learns the real labels only (fakes' labels would teach it G's mistakes); G the asked ones
    assert float((d_with - d_without).detach()) == pytest.approx(0.5 * float(ce_real.detach()), rel=1e-5)
    assert float((g_with - g_without).detach()) == pytest.approx(0.5 * float(ce_fake.detach()), rel=1e-5)
    stats = trainer.stats.flush()
    assert {"aux_d", "aux_g", "aux_acc_real", "aux_acc_fake"} <= set(stats)



def test_r1_phase_keeps_the_classifier_in_the_graph(tmp_path):
    """DDP needs every parameter in each backward: the lazy R1 phase reaches the class head too."""
    trainer = Trainer(load_config("digits-cond", COND + ["train.aux_class_weight=1", "train.r1_gamma=1"]),
                      tmp_path / "run", progress=False)
    batch = _one_batch(trainer)
    trainer.D.zero_grad(set_to_none=True)
    trainer.objective.loss("Dreg", batch, trainer.nets).backward()
    head = trainer.D.head.classifier
    assert all(p.grad is not None for p in head.parameters())
    assert all(float(p.grad.abs().sum()) == 0.0 for p in head.parameters())  # in the graph, unmoved
