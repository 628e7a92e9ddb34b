"""Throughput of a training preset, and how close it runs to the machine's peak.

``bench_train`` warms a preset's trainer up, times whole training steps for a wall-clock budget and
reports the median img/s. Next to it, on the same machine, threads and precision:

- **model FLOPs per image**: one training step (G and D, forward and backward) counted with
  :class:`torch.utils.flop_counter.FlopCounterMode` and divided by the real images it consumes.
  A multiply-add is 2 FLOPs; matmuls, convolutions and attention are counted, element-wise work
  (BatchNorm, activations, losses) and the optimiser are not. A transposed convolution is counted
  by the multiply-adds it really does, one per (input pixel, kernel tap, input channel, output
  channel), never over a zero-inserted input (checked in ``tests/train/test_bench_flops.py``);
- **peak FLOP/s**: the median speed of a square GEMM in the run's precision (fp32, bf16 or fp16
  operands), measured by the bench itself after a warm-up;
- **achieved FLOP/s** = FLOPs per image x img/s, and **utilisation** = achieved / peak.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ganfuse.config import load_config
from ganfuse.errors import UserError
from ganfuse.train.loop import Trainer
from ganfuse.train.precision import GEMM_CPU_FLAGS as GEMM_CPU_FLAGS  # re-exported: the CPU
from ganfuse.train.precision import cpu_info  # description lives with the precision rule

# Square GEMM size of the peak measurement per device type: large enough for the BLAS to reach its
# plateau (fp32 on a 2-core Xeon: 1024 -> 42, 2048 -> 56 GFLOP/s), small enough to take seconds.
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}
GEMM_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _NoModuleTracking:
    """Stands in for :class:`FlopCounterMode`'s module tracker, so every count goes to the total
    ("Global") only. The tracker's backward hooks make ``torch.autograd.grad`` fail on leaf
    inputs ("A leaf node was passed to _will_engine_execute_node"), which R1 and gradient
    penalties use; the bench needs the total, not a per-module table."""

    parents = ("Global",)

    def __enter__(self) -> _NoModuleTracking:
        return self

    def __exit__(self, *exc) -> None:
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``fn()`` runs, forward and backward
    (2 per multiply-add), as :class:`FlopCounterMode` counts them."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        fn()
    return int(counter.get_total_flops())


def steps_per_cycle(trainer: Trainer) -> int:
    """Steps after which every phase has run its share: the least common multiple of the phase
    intervals (1 without lazy regularisers; 16 with R1 every 16 steps)."""
    return math.lcm(*(phase.interval for phase in trainer.phases))


def step_flops(trainer: Trainer) -> float:
    """Mean FLOPs of one training step of ``trainer``, over a whole cycle of its phases (so a lazy
    regulariser of interval k counts 1/k of its cost per step). Trains those steps."""
    steps = steps_per_cycle(trainer)

    def cycle() -> None:
        for _ in range(steps):
            trainer.train_step()

    return count_flops(cycle) / steps


def peak_gemm_flops(
    precision: str, device: torch.device, size: int | None = None, repeats: int = 5, warmup: int = 2
) -> float:
    """Peak FLOP/s of this machine at the current thread count: the median over ``repeats`` timed
    products of two ``size x size`` matrices in ``precision``'s operand type (fp32, bf16 or fp16),
    after ``warmup`` untimed ones; ``2 size^3`` FLOPs each."""
    if precision not in GEMM_DTYPE:
        raise UserError(
            f"peak GEMM: unknown precision {precision!r}; one of {', '.join(GEMM_DTYPE)}"
        )
    size = size or GEMM_SIZE.get(device.type, 2048)
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (
        torch.randn(size, size, device=device, generator=gen).to(GEMM_DTYPE[precision])
        for _ in range(2)
    )
    out = torch.empty_like(a)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return 2 * size**3 / statistics.median(times)


def time_steps(trainer: Trainer, seconds: float, min_steps: int = 3) -> list[float]:
    """Seconds of each training step of ``trainer``, for about ``seconds`` of wall clock and at
    least ``min_steps`` steps (CUDA work is waited for inside each step's time)."""
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_steps:
        t0 = time.perf_counter()
        trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def bench_train(
    preset: str,
    seconds: float = 20.0,
    overrides: list[str] | None = None,
    warmup_steps: int = 3,
    threads: int = 0,
    flops: bool = True,
) -> dict:
    """Train ``preset`` for about ``seconds`` and report median img/s over individual steps.

    img/s counts real images consumed by the discriminator (``batch_size * n_critic`` per step).
    Text-to-image presets encode their captions' text embeddings through the cache once, outside
    the timed steps. ``threads`` > 0 sets torch's CPU threads for the bench (restored after);
    0 keeps the current setting. With ``flops``, the result also holds ``flops_per_image``
    (FLOP per real image), ``peak_flops`` and ``achieved_flops`` (FLOP/s) and ``utilisation``
    (achieved / peak, a fraction): see the module docstring. The FLOPs are counted on steps
    after the warm-up, outside the timed ones; the peak GEMM is measured after the timed steps.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(preset, seconds, list(overrides or []), warmup_steps, flops)
    finally:
        torch.set_num_threads(before)


def _bench(
    preset: str, seconds: float, overrides: list[str], warmup_steps: int, flops: bool
) -> dict:
    config = load_config(preset, overrides + ["train.guard=false"])
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp) / "run", progress=False)
        for _ in range(warmup_steps):
            trainer.train_step()
        per_step_flops = None
        if flops:
            if config.train.compile:  # count the same networks eagerly: FLOPs do not depend on it
                eager = load_config(
                    preset, overrides + ["train.guard=false", "train.compile=false"]
                )
                per_step_flops = step_flops(Trainer(eager, Path(tmp) / "eager", progress=False))
            else:
                per_step_flops = step_flops(trainer)
        times = time_steps(trainer, seconds)
    per_step = trainer.batch_size * config.train.n_critic
    median = statistics.median(times)
    cpu, flags = cpu_info()
    result = {
        "preset": preset,
        "objective": type(trainer.objective).__name__,
        "img_per_s": round(per_step / median, 1),
        "step_ms_median": round(1000 * median, 2),
        "steps": len(times),
        "batch_size": trainer.batch_size,
        "device": str(trainer.device),
        "precision": trainer.precision.name,
        "precision_reason": trainer.precision_reason,
        **auto_measurement(trainer),
        "channels_last": config.train.channels_last,
        "compile": config.train.compile,
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_flags": flags,
        "torch": torch.__version__,
        "load_average": None if load_before is None else round(load_before, 2),
    }
    if flops:
        flops_per_image = per_step_flops / per_step
        peak = peak_gemm_flops(trainer.precision.name, trainer.device)
        achieved = flops_per_image * per_step / median
        result.update(
            {
                "flops_per_image": round(flops_per_image),
                "peak_flops": round(peak),
                "gemm_size": GEMM_SIZE.get(trainer.device.type, 2048),
                "achieved_flops": round(achieved),
                "utilisation": round(achieved / peak, 4),
            }
        )
    return result


def auto_measurement(trainer: Trainer) -> dict:
    """What ``precision=auto`` timed on the trainer's own step, if it did (a CPU with native bf16):
    ``auto_fp32_img_per_s`` and ``auto_bf16_img_per_s`` (each precision's fastest step) and
    ``auto_probe_seconds`` (what measuring cost when it was measured; a cached verdict costs 0)."""
    probe = trainer.precision_probe
    if probe is None:
        return {}
    return {
        "auto_fp32_img_per_s": round(probe.images_per_second(False), 1),
        "auto_bf16_img_per_s": round(probe.images_per_second(True), 1),
        "auto_probe_seconds": round(probe.seconds, 2),
    }


def format_result(result: dict) -> list[str]:
    """``result`` as aligned ``key: value`` lines, FLOPs in GFLOP, utilisation in percent."""
    units = {"flops_per_image": "GFLOP", "peak_flops": "GFLOP/s", "achieved_flops": "GFLOP/s"}
    lines = []
    for key, value in result.items():
        if key in units:
            value = f"{value / 1e9:.4g} {units[key]}"
        elif key == "utilisation":
            value = f"{100 * value:.1f}%"
        elif isinstance(value, list):
            value = " ".join(value) or "-"
        lines.append(f"{key:>16}: {value}")
    return lines
