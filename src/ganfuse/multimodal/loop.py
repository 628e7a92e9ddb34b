"""The one training loop of the multimodal runs.

A run supplies ``compute_loss(step) -> scalar``, which draws its own batch; the loop owns the
optimiser (AdamW), the learning-rate schedule, gradient clipping, the precision, the wall-clock
limit, the progress bar and the statistics: ``loss`` and ``lr`` are reported to a
:class:`~ganfuse.train.stats.StatsReporter` every step (no host sync) and flushed every
``log_every`` steps into ``RUN/metrics.jsonl``, the same log the GAN runs write. The schedule is a linear warm-up then a cosine decay over *progress*, the larger of
``step / steps`` and ``elapsed / max_minutes``: a run cut short by its time limit still ends at a
small learning rate instead of stopping in the middle of its schedule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ganfuse.logging_backends import METRICS_FILE, MultiLogger, make_loggers
from ganfuse.multimodal.config import FuseConfig
from ganfuse.train.precision import Precision, resolve_precision
from ganfuse.train.stats import StatsReporter

CPU = torch.device("cpu")


@dataclass
class LoopStats:
    steps: int
    seconds: float
    final_loss: float  # moving average of the last steps

    def record(self, params: int, **metrics: object) -> dict[str, object]:
        """A run's ``metrics.json``: ``metrics`` (e.g. ``test=...``) and how the training went."""
        return {
            **metrics,
            "train_seconds": self.seconds,
            "steps": self.steps,
            "params": params,
            "final_loss": self.final_loss,
        }


def learning_rate(config: FuseConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``lr / 100``."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * warm * cosine


def run_precision(config: FuseConfig) -> Precision:
    """The run's precision on the CPU: ``auto`` becomes bf16 only where the CPU has native bf16
    and a cached probe at the current thread count measured it faster than fp32."""
    return Precision(resolve_precision(config.precision, CPU), CPU)


def uses_config_threads(fn: Callable) -> Callable:
    """Run ``fn(config, ...)`` with ``config.precision`` resolved once (so the config a run saves
    records what it ran with) and ``config.threads`` torch threads (when set), restoring the
    caller's thread count afterwards: a benchmark's one-thread runs must not slow down whatever
    the same process does next (the demo's evaluation, the user's own code)."""

    @functools.wraps(fn)
    def wrapper(config: FuseConfig, *args, **kwargs):
        before = torch.get_num_threads()
        if config.threads:  # first, so that the precision probe measures at the run's thread count
            torch.set_num_threads(config.threads)
        try:
            config = dataclasses.replace(config, precision=run_precision(config).name)
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
    run_dir: Path | None = None,
) -> LoopStats:
    """Run up to ``config.steps`` steps of ``compute_loss``, stopping at ``config.max_minutes``.

    With ``run_dir``, every ``config.log_every`` steps (and after the last) one line
    ``{"step", "time", "loss", "lr"}`` of interval means goes to ``run_dir/metrics.jsonl``,
    which a new run in the folder starts afresh."""
    params = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    precision = run_precision(config)
    budget = config.max_minutes * 60.0 if config.max_minutes > 0 else math.inf
    stats = StatsReporter(CPU)
    loggers: MultiLogger | None = None
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / METRICS_FILE).unlink(missing_ok=True)
        loggers = make_loggers(run_dir)
    start = time.perf_counter()
    average, steps = None, 0  # a moving average of the loss, kept as a tensor: no sync per step
    bar = tqdm(total=config.steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for step in range(config.steps):
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                break
            lr = learning_rate(config, step, max(step / config.steps, elapsed / budget))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with precision.autocast():
                loss = compute_loss(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            value = loss.detach().double()
            average = value if average is None else 0.95 * average + 0.05 * value
            stats.report("loss", value)
            stats.report("lr", lr)
            steps = step + 1
            bar.update(1)
            if steps % config.log_every == 0:
                _flush(stats, loggers, bar, steps, time.perf_counter() - start)
        if stats.names():  # the last, partial interval
            _flush(stats, loggers, bar, steps, time.perf_counter() - start)
    finally:
        bar.close()
        if loggers is not None:
            loggers.close()
    final = math.nan if average is None else float(average)
    return LoopStats(steps=steps, seconds=time.perf_counter() - start, final_loss=final)


def _flush(
    stats: StatsReporter, loggers: MultiLogger | None, bar: tqdm, step: int, seconds: float
) -> None:
    means = stats.flush()
    bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{means['lr']:.1e}")
    if loggers is not None:
        loggers.log({"step": step, "time": seconds, **means})
