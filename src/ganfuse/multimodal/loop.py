"""The one training loop of the multimodal runs.

A run supplies ``compute_loss(step) -> scalar``, which draws its own batch; the loop owns the
optimiser (AdamW), the learning-rate schedule, gradient clipping, the wall-clock limit and the
progress bar. The schedule is a linear warm-up then a cosine decay over *progress*, the larger of
``step / steps`` and ``elapsed / max_minutes``: a run cut short by its time limit still ends at a
small learning rate instead of stopping in the middle of its schedule.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ganfuse.multimodal.config import FuseConfig


@dataclass
class LoopStats:
    steps: int
    seconds: float
    final_loss: float  # moving average of the last steps

    def record(self, params: int, **metrics: object) -> dict[str, object]:
        """A run's ``metrics.json``: ``metrics`` (e.g. ``test=...``) and how the training went."""
        return {**metrics, "train_seconds": self.seconds, "steps": self.steps, "params": params,
                "final_loss": self.final_loss}


def learning_rate(config: FuseConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``lr / 100``."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * warm * cosine


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """bf16 CPU autocast for ``"bf16"``; nothing for ``"fp32"``. bf16 pays only on CPUs with
    AVX-512 BF16 or AMX; elsewhere it is many times slower than fp32."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_config_threads(fn: Callable) -> Callable:
    """Run ``fn(config, ...)`` with ``config.threads`` torch threads (when set), restoring the
    caller's thread count afterwards: a benchmark's one-thread runs must not slow down whatever
    the same process does next (the demo's evaluation, the user's own code)."""

    @functools.wraps(fn)
    def wrapper(config: FuseConfig, *args, **kwargs):
        if not config.threads:
            return fn(config, *args, **kwargs)
        before = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            return fn(config, *args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


def optimise(
    parameters: Iterable[torch.nn.Parameter],
    compute_loss: Callable[[int], torch.Tensor],
    config: FuseConfig,
    desc: str = "train",
    progress: bool = True,
) -> LoopStats:
    """Run up to ``config.steps`` steps of ``compute_loss``, stopping at ``config.max_minutes``."""
    params = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    budget = config.max_minutes * 60.0 if config.max_minutes > 0 else math.inf
    start = time.perf_counter()
    average, steps = math.nan, 0
    bar = tqdm(total=config.steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in range(config.steps):
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            break
        lr = learning_rate(config, step, max(step / config.steps, elapsed / budget))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with precision_context(config.precision):
            loss = compute_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        value = float(loss.detach())
        average = value if math.isnan(average) else 0.95 * average + 0.05 * value
        steps = step + 1
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{average:.3f}", lr=f"{lr:.1e}")
    bar.close()
    return LoopStats(steps=steps, seconds=time.perf_counter() - start, final_loss=average)
