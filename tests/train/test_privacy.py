"""Differentially private discriminator training (``train.dp``, ganfuse.train.privacy)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import ganfuse
from ganfuse.config import load_config
from ganfuse.errors import ConfigError
from ganfuse.models.dcgan import DCGANDiscriminator
from ganfuse.train.checkpoint import checkpoint_dirs
from ganfuse.train.loop import Trainer
from ganfuse.train.losses import hinge_d_loss, nonsaturating_d_loss
from ganfuse.train.privacy import (
    PoissonBatchSampler,
    PrivateDiscriminator,
    epsilon_spent,
    noise_multiplier_for,
)

DP = ["model.d_norm=group", "train.dp=true", "train.dp_seed=7"]


@pytest.fixture
def fp32_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _private(d: torch.nn.Module, clip: float, batch: int, noise: float = 0.0) -> PrivateDiscriminator:
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=1e-3)
    return PrivateDiscriminator(d, opt, noise_multiplier=noise, max_grad_norm=clip, expected_batch_size=batch,
                                sample_rate=0.1, delta=1e-5, seed=0)


def _example_grads(d: torch.nn.Module, images: torch.Tensor, loss_of_logits) -> list[list[torch.Tensor]]:
    """The gradient of each image's own loss term, one autograd call per image."""
    params = [p for p in d.parameters() if p.requires_grad]
    return [list(torch.autograd.grad(loss_of_logits(d(x[None]).logits), params)) for x in images]


def _norm(grads: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g * g).sum() for g in grads)))


@pytest.mark.parametrize("d_loss", [hinge_d_loss, nonsaturating_d_loss])
def test_noiseless_private_gradient_is_the_sum_of_clipped_per_example_gradients_over_the_batch_size(
        d_loss, fp32_one_thread):
    torch.manual_seed(0)
    d = DCGANDiscriminator(channels=1, width=8, norm="group")
    real, fake = torch.randn(6, 1, 32, 32), torch.randn(5, 1, 32, 32)
    per_real = _example_grads(d, real, lambda logits: d_loss(logits, torch.zeros(1)))
    norms = sorted(_norm(g) for g in per_real)
    clip = (norms[2] + norms[3]) / 2  # half the examples are clipped, half are not
    per_fake = _example_grads(d, fake, lambda logits: d_loss(torch.zeros(1), logits))
    expected_batch = 8  # Poisson sampling: the sum is divided by the expected size, not by b = 6
    expected = [torch.zeros_like(p) for p in d.parameters()]
    for grads, n in [(g, expected_batch) for g in per_real] + [(g, len(fake)) for g in per_fake]:
        scale = min(1.0, clip / (_norm(grads) + 1e-6))
        for e, g in zip(expected, grads, strict=True):
            e += scale * g / n

    private = _private(d, clip, expected_batch)
    private.gradients(real, None, fake, None, d_loss)
    for p, e in zip(private.params, expected, strict=True):
        # atol: conv biases before GroupNorm get gradients of float noise (~1e-6); the rest are ~1
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=2e-6)


def test_one_real_image_moves_the_private_gradient_by_at_most_2c_over_b(fp32_one_thread):
    torch.manual_seed(1)
    d = DCGANDiscriminator(channels=1, width=8, norm="group")
    real, fake = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    private = _private(d, clip=0.05, batch=4)
    private.gradients(real, None, fake, None, hinge_d_loss)
    before = [p.grad.clone() for p in private.params]
    changed = real.clone()
    changed[0] = 40 * torch.randn(1, 32, 32)  # an outlier whose own gradient is huge
    private.gradients(changed, None, fake, None, hinge_d_loss)
    moved = _norm([p.grad - b for p, b in zip(private.params, before, strict=True)])
    assert 0 < moved <= 2 * 0.05 / 4 + 1e-6


def test_epsilon_grows_with_updates_and_shrinks_with_noise():
    q = 64 / 1797
    assert epsilon_spent([], 1e-5) == 0.0
    short, long_ = epsilon_spent([(1.0, q, 100)], 1e-5), epsilon_spent([(1.0, q, 400)], 1e-5)
    noisier = epsilon_spent([(2.0, q, 400)], 1e-5)
    assert 0 < short < long_ and noisier < long_
    assert epsilon_spent([(1.0, q, 100), (1.0, q, 300)], 1e-5) == pytest.approx(long_)
    assert epsilon_spent([(0.0, q, 1)], 1e-5) == float("inf")
    sigma = noise_multiplier_for(3.0, 1e-5, q, 400)
    assert 2.95 <= epsilon_spent([(sigma, q, 400)], 1e-5) <= 3.0


def test_poisson_batches_are_independent_draws_of_rate_b_over_n_and_resume():
    sampler = PoissonBatchSampler(1000, 50, seed=3)
    sizes = [len(sampler.next_indices()) for _ in range(200)]
    assert len(set(sizes)) > 5 and 45 < sum(sizes) / len(sizes) < 55
    state = sampler.state_dict()
    following = [sampler.next_indices() for _ in range(3)]
    again = PoissonBatchSampler(1000, 50, seed=0)
    again.load_state_dict(state)
    assert all(torch.equal(a, again.next_indices()) for a in following)


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.dp=true"], "uses BatchNorm, which mixes the images of a batch.*set model.d_norm=group"),
    (["train.dp=true", "model.spectral_norm_d=true"], "spectral norm.*model.spectral_norm_d=false"),
    (DP + ["train.r1_gamma=1"], "set train.r1_gamma=0"),
    (DP + ["train.loss=wgan-gp"], "train.loss=nonsaturating, hinge or lsgan"),
    (DP + ["model.minibatch_std=true"], "model.minibatch_std=false"),
    (DP + ["train.augment=translation", "train.ada_target=0.6"], "unset train.ada_target"),
    (DP + ["train.compile=true"], "train.compile=false"),
])
def test_what_dp_cannot_honour_is_refused_in_one_line(tmp_path, tiny_overrides, overrides, message):
    config = load_config("digits-dcgan", tiny_overrides + overrides)
    with pytest.raises(ConfigError, match=message) as info:
        Trainer(config, tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_d_norm_group_puts_groupnorm_in_place_of_batchnorm():
    d = DCGANDiscriminator(channels=1, width=24, norm="group")
    assert isinstance(d.norm2, torch.nn.GroupNorm) and d.norm2.num_groups == 24  # 48 channels: largest divisor <= 32
    assert isinstance(d.norm3, torch.nn.GroupNorm) and d.norm3.num_groups == 32
    assert isinstance(DCGANDiscriminator(channels=1, width=8).norm2, torch.nn.BatchNorm2d)
    # one image's verdict does not depend on the rest of its batch
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(d(x).logits[:1], d(x[:1]).logits)
    with pytest.raises(ConfigError, match="model.d_norm"):
        load_config("digits", ["model.arch=resnet", "model.d_norm=group"])


def _weights(run):
    return load_file(str(checkpoint_dirs(run)[0] / "weights.safetensors"))


def _manifest(run):
    return json.loads((checkpoint_dirs(run)[0] / "manifest.json").read_text())


def test_a_dp_run_resumes_exactly_and_records_the_epsilon_it_spent(tmp_path, tiny_overrides):
    base = tiny_overrides + DP + ["train.checkpoint_every=1000", "train.ema_decay=0.9", "train.log_every=3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(load_config("digits-dcgan", base + ["train.steps=12"]), straight, progress=False).fit()
    Trainer(load_config("digits-dcgan", base + ["train.steps=6"]), split, progress=False).fit()
    Trainer(load_config("digits-dcgan", base + ["train.steps=12"]), split, resume=True, progress=False).fit()
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    records = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
               for run in (straight, split)]
    assert [r["step"] for r in records[1]] == [3, 6, 9, 12]
    eps = [r["epsilon"] for r in records[1]]
    assert eps == [r["epsilon"] for r in records[0]] and eps == sorted(eps) and eps[0] > 0
    privacy = _manifest(split)["privacy"]
    assert privacy["epsilon"] == eps[-1] and privacy["d_updates"] == 12
    assert privacy["sampling"] == "poisson" and privacy["accountant"] == "rdp"
    assert privacy["delta"] == 1e-5 and privacy["sample_rate"] == pytest.approx(16 / 1797)


def test_target_epsilon_sets_the_noise_and_the_run_records_it(tmp_path, tiny_overrides):
    config = load_config("digits-dcgan", tiny_overrides + DP + ["train.steps=10", "train.dp_target_epsilon=0.5"])
    Trainer(config, tmp_path / "run", progress=False).fit()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert saved["dp_noise_multiplier"] > 1.0  # 1.0 would spend more than 0.5 in 10 updates
    assert 0.45 <= _manifest(tmp_path / "run")["privacy"]["epsilon"] <= 0.5


def test_without_dp_seed_the_noise_seed_is_secret_and_differs_per_run(tmp_path, tiny_overrides):
    overrides = tiny_overrides + ["model.d_norm=group", "train.dp=true"]
    seeds = [Trainer(load_config("digits-dcgan", overrides), tmp_path / name, progress=False).sampler.seed
             for name in ("a", "b")]
    assert seeds[0] != seeds[1]
    assert str(seeds[0]) not in (tmp_path / "a" / "config.yaml").read_text()


def test_opacus_is_imported_only_inside_the_functions_that_turn_dp_on():
    """Runs without DP (and ``ganfuse --help``) never pay for importing Opacus."""
    package = Path(ganfuse.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "opacus" not in text:
            continue
        for node in ast.parse(text).body:  # module-level statements only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "opacus" for n in names), path


def test_a_nan_guard_rollback_keeps_the_privacy_spent(tmp_path, tiny_overrides):
    config = load_config("digits-dcgan", tiny_overrides + DP + ["train.steps=4"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    snapshot = trainer._memory_state()
    for _ in range(4):
        trainer.train_step()
    spent = trainer.private_d.epsilon()
    trainer._load_memory_state(snapshot)  # what the guard does after a non-finite interval
    assert trainer.step == 0
    assert trainer.private_d.updates == 4 and trainer.private_d.epsilon() == spent > 0


def test_a_run_cannot_switch_dp_on_or_off_when_resumed(tmp_path, tiny_overrides):
    plain = tiny_overrides + ["model.d_norm=group", "train.steps=2"]
    Trainer(load_config("digits-dcgan", plain), tmp_path / "plain", progress=False).fit()
    with pytest.raises(ConfigError, match="trained without train.dp"):
        Trainer(load_config("digits-dcgan", plain + DP[1:]), tmp_path / "plain", resume=True, progress=False)
    Trainer(load_config("digits-dcgan", plain + DP[1:]), tmp_path / "private", progress=False).fit()
    with pytest.raises(ConfigError, match="trained with train.dp=true"):
        Trainer(load_config("digits-dcgan", plain), tmp_path / "private", resume=True, progress=False)
