"""Exponential moving average of the generator's weights (Karras et al. 2018; Yazici et al. 2019).

Parameters are averaged; buffers (BatchNorm running statistics, spectral-norm vectors) are copied
from the live generator at every update, because averaging running statistics of different
weights gives statistics that match neither. The decay ramps linearly from 0 to ``decay`` over
``warmup_steps`` so early, poor weights are forgotten quickly.
"""

from __future__ import annotations

import copy

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
