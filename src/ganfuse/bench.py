"""Throughput measurement of a training preset: warm up, then time whole steps for a fixed wall-clock budget."""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from ganfuse.config import load_config
from ganfuse.train.loop import Trainer


def bench_train(preset: str, seconds: float = 20.0, overrides: list[str] | None = None,
                warmup_steps: int = 3) -> dict:
    """Train ``preset`` for about ``seconds`` and report median img/s over individual steps.

    img/s counts real images consumed by the discriminator (``batch_size * n_critic`` per step).
    Text-to-image presets encode their captions' text embeddings through the cache once, outside
    the timed steps.
    """
    config = load_config(preset, list(overrides or []) + ["train.guard=false"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        for _ in range(warmup_steps):
            trainer.train_step()
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 3:
            t0 = time.perf_counter()
            trainer.train_step()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    per_step = trainer.batch_size * config.train.n_critic
    median = statistics.median(times)
    return {
        "preset": preset,
        "objective": type(trainer.objective).__name__,
        "img_per_s": round(per_step / median, 1),
        "step_ms_median": round(1000 * median, 2),
        "steps": len(times),
        "batch_size": trainer.batch_size,
        "device": str(trainer.device),
        "precision": trainer.precision.name,
        "channels_last": config.train.channels_last,
        "compile": config.train.compile,
        "threads": torch.get_num_threads(),
    }
