"""Differentially private training of the discriminator (DP-SGD through Opacus), ``train.dp``.

What is protected: each real training image. Only the discriminator sees real images, so only
its updates are privatised (Abadi et al. 2016's DP-SGD): each real image's gradient of D's loss is
clipped to L2 norm ``C = train.dp_max_grad_norm``, the clipped gradients are summed, Gaussian
noise of standard deviation ``sigma * C`` (``sigma = train.dp_noise_multiplier``) is added, and the
sum is divided by the expected batch size. The generator only ever sees D (never a real image),
so G, its EMA and every sample are post-processing of D's private updates and inherit the
guarantee. Opacus does the per-example gradients (``GradSampleModule``), the clipping and noise
(``DPOptimizer.pre_step``) and the accounting (``RDPAccountant``); this module wires them into the
loop's ``Dmain`` phase.

The fake half of D's loss gets no noise: its gradient is a function of the current D and G
(already private) and of the latent noise, of no training image, so it adds nothing to any real
image's sensitivity (post-processing). Privacy does not need it clipped either, but it is, per
fake, to the same ``C``: the real gradients (norms of 20-30 on digits) are clipped to ``C`` and a
whole fake half outweighed them, so D learnt to call everything fake (after 200 steps on digits:
real accuracy 0, FD 38.8, against 24.2 with both halves clipped; ``benchmarks/privacy.md``).
(Opacus's DCGAN example lets real ``i`` and fake ``i`` share one clipped per-example gradient,
which couples the two halves through the clip.) D's update, for ``b`` Poisson-sampled reals and
``B`` fakes, is ``sum_j clip_C(f_j) / B + (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / B``.

Sampling: the accountant's amplification by subsampling assumes Poisson sampling (each image
enters each batch independently with probability ``q = B / N``), not the loop's shuffled epochs,
whose privacy the RDP accountant does not bound. So with DP on, real batches come from
:class:`PoissonBatchSampler` (sizes vary around ``B``; the fakes stay ``B``), and epsilon is the
RDP accountant's for ``sigma``, ``q`` and the number of D updates actually made. The noise and
the batch draws are pure functions of a seed and the update index (so resume is exact); the seed
is secret (drawn from the OS, kept only in checkpoints' ``state.pt``) unless ``train.dp_seed``
makes it reproducible from the config, for tests and benchmarks.

Not covered by the guarantee: the run's logs (``metrics.jsonl`` statistics such as ``d_real``,
the FD evaluations against the training images, the ``best/`` checkpoint they select) and the
checkpoints' ``state.pt`` (the seed). The weights (``weights.safetensors``) are what may be
published. Gaussian noise comes from PyTorch's generator, not a cryptographic one (Opacus's
``secure_mode`` needs ``torchcsprng``, not used here).

Refused (each a one-line :class:`~ganfuse.errors.ConfigError`): layers that mix the images of a
batch (BatchNorm: set ``model.d_norm=group``; the minibatch standard deviation feature), spectral
norm on D (Opacus computes no per-example gradients through it), R1 and WGAN-GP (a second
derivative per example), adaptive augmentation (its probability follows D's verdicts on real
images, outside the accounting), text-to-image models, streamed data, DDP, ``torch.compile`` and
fp16. Opacus is imported only when a run turns DP on.
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from ganfuse.config import Config, arch_family
from ganfuse.errors import ConfigError
from ganfuse.train.objectives import Batch, Nets, report_d_verdicts

log = logging.getLogger("ganfuse")

DEFAULT_DELTA = 1e-5
# RDP orders searched for the best conversion to (epsilon, delta): Opacus's default orders (up to
# 63) plus higher ones, which give the tightest bound at small epsilon (much noise, few updates)
RDP_ORDERS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + list(range(64, 257, 8))
SAMPLING = "poisson"
ACCOUNTANT = "rdp"
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, index) pairs over generator seeds


def _stream_seed(seed: int, index: int, stream: int) -> int:
    """A generator seed for draw ``index`` of ``stream`` (0: batches, 1: noise) of a run's DP seed."""
    return (seed * 4 + stream + (index + 1) * _MIX) % (2**63)


def check_dp_config(config: Config, distributed: bool = False) -> None:
    """Refuse, with one line naming what to change, what DP training of D cannot honour."""
    m, t, d = config.model, config.train, config.data
    if arch_family(m.arch) != "gan":
        raise ConfigError(f"train.dp supports the unconditional and class-conditional GANs (model.arch=dcgan "
                          f"or resnet), not {m.arch}")
    if t.loss == "wgan-gp":
        raise ConfigError("train.dp: the WGAN-GP penalty differentiates D twice per example, which Opacus "
                          "cannot clip; choose train.loss=nonsaturating, hinge or lsgan")
    if t.r1_gamma > 0:
        raise ConfigError("train.dp: R1 differentiates D twice per example, which Opacus cannot clip; "
                          "set train.r1_gamma=0")
    if m.spectral_norm_d:
        raise ConfigError("train.dp: Opacus computes no per-example gradients through spectral norm; set "
                          "model.spectral_norm_d=false" + (" and model.d_norm=group" if m.arch == "dcgan" else ""))
    if m.arch == "dcgan" and m.d_norm == "batch":
        raise ConfigError("train.dp: the discriminator uses BatchNorm, which mixes the images of a batch so no "
                          "image's gradient can be clipped alone; set model.d_norm=group")
    if m.minibatch_std:
        raise ConfigError("train.dp: the minibatch standard deviation feature mixes the images of a batch; "
                          "set model.minibatch_std=false")
    if t.ada_target is not None:
        raise ConfigError("train.dp: adaptive augmentation follows D's verdicts on real images outside the "
                          "privacy accounting; unset train.ada_target (a fixed train.augment_p is fine)")
    if d.name == "shards":
        raise ConfigError("train.dp needs Poisson sampling over a dataset of known size; data.name=shards "
                          "streams; use a folder or a built-in dataset")
    if distributed:
        raise ConfigError("train.dp runs on one process; drop --nproc (DDP is not supported with DP)")
    if t.compile:
        raise ConfigError("train.dp: Opacus's per-example gradient hooks do not run under torch.compile; set "
                          "train.compile=false")
    if t.precision == "fp16":
        raise ConfigError("train.dp: fp16's loss scaling would scale the clipping norm; use "
                          "train.precision=fp32 or bf16")


def check_private_discriminator(d: nn.Module) -> None:
    """Refuse a discriminator with layers Opacus cannot give per-example gradients for."""
    for name, module in d.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(f"train.dp: the discriminator uses BatchNorm ({name}), which mixes the images of a "
                              "batch; set model.d_norm=group")
        if any(True for _ in module.buffers(recurse=False)) and any(
                p.requires_grad for p in module.parameters(recurse=False)):
            raise ConfigError(f"train.dp: the discriminator layer {name} ({type(module).__name__}) keeps "
                              "buffers, which Opacus cannot give per-example gradients for")


def default_delta(num_items: int) -> float:
    """``min(1e-5, 1 / (10 N))``: delta well below 1/N, the chance of leaking one image whole."""
    return min(DEFAULT_DELTA, 1.0 / (10 * num_items))


def epsilon_spent(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of the RDP accountant for ``history`` (``(sigma, q, updates)`` runs); inf without noise."""
    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, updates in history if updates > 0):
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [tuple(h) for h in history]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound holds, looser
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(accountant.get_epsilon(delta, alphas=RDP_ORDERS))


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, updates: int) -> float:
    """The smallest noise multiplier (to 0.01 in epsilon) that spends at most ``target_epsilon``
    in ``updates`` Poisson-sampled D updates at rate ``sample_rate`` (RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():  # the search tries noise levels whose best order is the largest
            warnings.filterwarnings("ignore", message="Optimal order is the")
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=updates, accountant=ACCOUNTANT,
                                              alphas=RDP_ORDERS))
    except ValueError:
        raise ConfigError(f"train.dp_target_epsilon={target_epsilon:g} cannot be met in {updates} D updates "
                          f"(delta {delta:g}); raise it or train fewer steps") from None


class PoissonBatchSampler:
    """Real batches for DP training: each of ``num_items`` examples enters a batch independently
    with probability ``q = expected_batch_size / num_items`` (what the accountant assumes). Draw
    ``k`` is a pure function of ``(seed, k)``, so the state is two numbers. The interface of
    :class:`~ganfuse.data.sampler.EpochBatchSampler` (``next_indices``, ``state_dict``)."""

    kind = SAMPLING

    def __init__(self, num_items: int, expected_batch_size: int, seed: int):
        if num_items < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.num_items = num_items
        self.batch_size = min(expected_batch_size, num_items)
        self.sample_rate = self.batch_size / num_items
        self.seed, self.draws = seed, 0

    def next_indices(self) -> torch.Tensor:
        """The next batch's indices ``(b,)`` int64, ``b ~ Binomial(N, q)`` (may be 0)."""
        gen = torch.Generator().manual_seed(_stream_seed(self.seed, self.draws, 0))
        self.draws += 1
        return (torch.rand(self.num_items, generator=gen) < self.sample_rate).nonzero().squeeze(1)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "draws": self.draws, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError("the checkpoint's batches were not Poisson-sampled")
        self.draws, self.seed = int(state["draws"]), int(state["seed"])


def run_seed(config: Config) -> int:
    """The DP seed of a new run: ``train.dp_seed``, else a secret from the OS."""
    seed = config.train.dp_seed
    if seed is None:
        return secrets.randbits(63)
    log.warning("train.dp_seed is set: the DP noise and batches can be reproduced from the config, so the "
                "guarantee does not hold against anyone who knows it (use it for tests and benchmarks)")
    return seed


class PrivateDiscriminator:
    """D's DP-SGD step: Opacus per-example gradients of the real half of D's loss, clipped and
    noised by Opacus's ``DPOptimizer``, plus the mean of the fakes' clipped per-example gradients
    (no noise), then the wrapped optimiser's step; the RDP accountant counts every update.

    ``d`` is D (its parameters are trained in place; ``module`` is the Opacus wrapper to call for
    training), ``optimizer`` D's optimiser (kept as the loop's, so checkpoints and the NaN guard's
    learning-rate changes see the same object)."""

    def __init__(self, d: nn.Module, optimizer: torch.optim.Optimizer, *, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: int, sample_rate: float, delta: float, seed: int):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        check_private_discriminator(d)
        self.d, self.optimizer = d, optimizer
        self.module = GradSampleModule(d, batch_first=True, loss_reduction="mean", strict=True)
        # Opacus's hooks run only inside a private update: any other pass through D (the
        # generator's step, diagnostics) must not reach them
        self.module.disable_hooks()
        device = next(d.parameters()).device
        self.noise_gen = torch.Generator(device)
        self.dp_optimizer = DPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                        expected_batch_size=expected_batch_size, loss_reduction="mean",
                                        generator=self.noise_gen)
        self.accountant = RDPAccountant()
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.expected_batch_size, self.sample_rate, self.delta = expected_batch_size, sample_rate, delta
        self.seed, self.updates = seed, 0

    @property
    def params(self) -> list[nn.Parameter]:
        return self.dp_optimizer.params

    # ------------------------------------------------------------------ the update

    def gradients(self, real: torch.Tensor, real_cond: torch.Tensor | None, fake: torch.Tensor,
                  fake_cond: torch.Tensor | None, d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  autocast: Callable[[], AbstractContextManager] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Fill each trained parameter's ``.grad`` with D's private gradient on real images
        ``(b, C, H, W)`` (``b`` may be 0) and fakes ``(B, C, H, W)`` (both already augmented) under
        ``d_loss(real_logits, fake_logits)``, which must be a sum of a mean over reals and a mean
        over fakes; ``B`` is also the expected real batch size the noisy sum is divided by.
        Returns the real and fake logits ``(b,)``, ``(B,)`` float32 and statistics of the real
        examples' gradients (mean norm, share clipped). Uses this update's noise."""
        autocast = autocast or nullcontext
        self.noise_gen.manual_seed(_stream_seed(self.seed, self.updates, 1))
        self.dp_optimizer.zero_grad(set_to_none=True)
        b = real.shape[0]
        # Each half is its own forward and backward with Opacus's hooks on (they pair each layer's
        # stored input with the next backward through it), the fakes first.
        try:
            self.module.enable_hooks()
            with warnings.catch_warnings():  # the images need no gradient, so torch warns at each hook
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                with autocast():
                    fake_logits = self.module(fake, fake_cond).logits.float()
                # the losses are a mean over reals plus a mean over fakes: the fake half's gradient
                # does not depend on the real logits, which a constant stands in for
                d_loss(torch.zeros_like(fake_logits), fake_logits).backward()
                fake_grads = self._clipped_mean([p.grad_sample for p in self.params], fake.shape[0])
                for p in self.params:
                    p.grad, p.grad_sample = None, None
                if b:
                    with autocast():
                        real_logits = self.module(real, real_cond).logits.float()
                    d_loss(real_logits, fake_logits.detach()).backward()  # per-example gradients: p.grad_sample
                else:  # an empty Poisson batch: no example, but the noise is still added
                    real_logits = fake_logits.new_zeros(0)
                    for p in self.params:
                        p.grad_sample = p.new_zeros((0, *p.shape))
        finally:
            self.module.disable_hooks()
        stats = self._per_example_statistics()
        self.dp_optimizer.pre_step()  # clip each example to C, sum, add N(0, sigma^2 C^2), divide by B
        for p, fake_grad in zip(self.params, fake_grads, strict=True):
            p.grad.add_(fake_grad)
        return real_logits.detach(), fake_logits.detach(), stats

    def _clipped_mean(self, samples: list[torch.Tensor], n: int) -> list[torch.Tensor]:
        """``mean_i clip_C(g_i)`` of per-example gradients ``(n, *shape)``, one tensor per parameter."""
        norms = torch.stack([g.reshape(n, -1).norm(dim=1) for g in samples], dim=1).norm(dim=1)
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        return [torch.einsum("i,i...->...", factor, g) / n for g in samples]

    def _per_example_statistics(self) -> dict[str, torch.Tensor]:
        """Mean L2 norm of the real examples' gradients and the share of them clipped."""
        samples = [p.grad_sample for p in self.params]
        if samples[0].shape[0] == 0:
            return {}
        norms = torch.stack([g.reshape(g.shape[0], -1).norm(dim=1) for g in samples], dim=1).norm(dim=1)
        # Opacus's loss_reduction="mean" hooks give the gradients of each example's own loss term
        return {"dp_example_grad_norm": norms.mean(), "dp_clipped": (norms > self.max_grad_norm).float().mean()}

    def step(self, objective: Any, batch: Batch, nets: Nets) -> torch.Tensor:
        """One private ``Dmain`` update of a GAN objective (the loop calls it in place of its own
        phase step); returns the gradient's L2 norm for the statistics."""
        real_in, fake_in = nets.aug(batch.real).detach(), nets.aug(batch.fake.detach())
        real_logits, fake_logits, stats = self.gradients(real_in, batch.cond, fake_in, batch.fake_cond,
                                                         objective.d_loss_fn, nets.autocast)
        grads = [p.grad for p in self.params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        self.optimizer.step()
        self.dp_optimizer.zero_grad(set_to_none=True)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.updates += 1
        finite = torch.isfinite(norm)
        if real_logits.shape[0]:
            loss = objective.d_loss_fn(real_logits, fake_logits)
            report_d_verdicts(nets, loss, real_logits, fake_logits)
            finite = finite & torch.isfinite(loss)
        nets.report("nonfinite", (~finite).float())
        for name, value in stats.items():
            nets.report(name, value)
        nets.report("dp_batch", norm.new_tensor(float(real_logits.shape[0])))
        return norm

    # ------------------------------------------------------------------ accounting and state

    def epsilon(self) -> float:
        """Epsilon spent so far at this run's delta (inf when there is no noise)."""
        return epsilon_spent(self.accountant.history, self.delta)

    def summary(self) -> dict[str, Any]:
        """What a checkpoint's manifest records about the privacy of the weights."""
        eps = self.epsilon()
        return {"epsilon": None if math.isinf(eps) else round(eps, 6), "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                "sample_rate": self.sample_rate, "expected_batch_size": self.expected_batch_size,
                "d_updates": self.updates, "accountant": ACCOUNTANT, "sampling": SAMPLING,
                "protects": "each real training image (the discriminator's updates are DP-SGD; G is post-processing)"}

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and lists only (checkpoints are read with ``weights_only``)."""
        return {"history": [list(h) for h in self.accountant.history], "updates": self.updates, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
        self.updates, self.seed = int(state["updates"]), int(state["seed"])


def setup_private_discriminator(trainer: Any) -> PrivateDiscriminator | None:
    """Turn a trainer's D updates private when ``train.dp`` is on (else None): Poisson sampling
    of real batches, the noise multiplier (derived from ``train.dp_target_epsilon`` for
    ``train.steps`` x ``n_critic`` D updates, and recorded in the run's config), and the Opacus
    wrapper of D. On resume, the recorded noise multiplier and the DP seed of the run are kept,
    and a run cannot switch DP on or off."""
    t = trainer.config.train
    recorded = trainer.saved[1].get("config", {}).get("train", {}) if trainer.saved else {}
    if not t.dp:
        if recorded.get("dp", False):
            raise ConfigError("--resume: the run was trained with train.dp=true; continue it with the same "
                              "setting (its privacy accounting goes on)")
        return None
    if trainer.sampler is None:
        raise ConfigError("train.dp needs Poisson sampling over a dataset of known size; this one streams")
    if trainer.precision.name not in ("fp32", "bf16"):
        raise ConfigError("train.dp: fp16's loss scaling would scale the clipping norm; use train.precision=fp32")
    n = len(trainer.dataset)
    if trainer.saved and not recorded.get("dp", False):
        raise ConfigError("--resume: the run was trained without train.dp; DP cannot start half way (its "
                          "epsilon would not count the earlier steps)")
    delta = t.dp_delta if t.dp_delta is not None else default_delta(n)
    sampler = PoissonBatchSampler(n, trainer.batch_size, run_seed(trainer.config) if not trainer.saved else 0)
    if t.dp_target_epsilon is not None:
        if recorded.get("dp_target_epsilon") == t.dp_target_epsilon and recorded.get("dp_noise_multiplier"):
            t.dp_noise_multiplier = float(recorded["dp_noise_multiplier"])
        else:
            t.dp_noise_multiplier = noise_multiplier_for(t.dp_target_epsilon, delta, sampler.sample_rate,
                                                         t.steps * t.n_critic)
    private = PrivateDiscriminator(trainer.D, trainer.opt_d, noise_multiplier=t.dp_noise_multiplier,
                                   max_grad_norm=t.dp_max_grad_norm, expected_batch_size=sampler.batch_size,
                                   sample_rate=sampler.sample_rate, delta=delta, seed=sampler.seed)
    trainer.sampler = sampler
    planned = epsilon_spent([(t.dp_noise_multiplier, sampler.sample_rate, t.steps * t.n_critic)], delta)
    log.info("differential privacy of D: noise multiplier %.4g, clip norm %g, Poisson sampling q=%.4g "
             "(expected batch %d of %d), delta %.3g; epsilon after %d steps: %.3g", t.dp_noise_multiplier,
             t.dp_max_grad_norm, sampler.sample_rate, sampler.batch_size, n, delta, t.steps, planned)
    if t.dp_noise_multiplier == 0:
        log.warning("train.dp_noise_multiplier=0: gradients are clipped but not noised; no privacy guarantee")
    return private
