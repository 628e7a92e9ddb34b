"""Exponential moving average of the generator's weights (Karras et al. 2018; Yazici et al. 2019).

Parameters are averaged; buffers (spectral-norm vectors, BatchNorm running statistics) are copied
from the live generator at every update. Copied BatchNorm statistics belong to the live weights,
not to the averaged ones, and in eval mode they mismatch: on the digits a class-conditional EMA
generator then drew the asked class 14% of the time where the live one managed 75%. So before the
EMA generator is used (sample grids, evaluation, checkpoints) :func:`recalibrate_batchnorm`
recomputes its BatchNorm statistics from its own activations: a few batches of fresh latents in
train mode, averaged exactly (``momentum=None``). The decay ramps linearly from 0 to ``decay``
over ``warmup_steps`` so early, poor weights are forgotten quickly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup_steps: int = 0):
        self.decay, self.warmup_steps = decay, warmup_steps
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * min(1.0, step / self.warmup_steps)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        beta = self.decay_at(step)
        ema_params = list(self.model.parameters())
        live_params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, live_params, 1.0 - beta)
        for ema_buf, buf in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(buf)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, make_inputs: Callable[[int], tuple], batches: int) -> bool:
    """Recompute the running statistics of every BatchNorm layer of ``model`` from ``batches``
    forward passes of ``model(*make_inputs(i))`` in train mode, as the exact average over the
    batches. Parameters are untouched; returns False (and does nothing) when ``model`` has no
    BatchNorm layer with running statistics."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return False
    was_training, momenta = model.training, [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the plain mean over the batches
    model.train()
    for i in range(batches):
        model(*make_inputs(i))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return True
