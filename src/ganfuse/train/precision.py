"""Device and numeric precision, resolved once at the start of a run and reported.

``precision=auto`` picks the fastest setting that keeps quality on the device at hand:

- CUDA: bf16 autocast where the GPU supports bf16, else fp16 autocast with a gradient scaler;
- CPU without native bf16 instructions (no AVX-512 BF16, no AMX): fp32, without measuring.
  PyTorch emulates bf16 there and it runs many times *slower* than fp32 (an AVX2-only EPYC: a
  1024^2 matmul 38x slower);
- CPU with them: measured. Having the instructions does not make bf16 faster: an AMD EPYC with
  AVX-512 BF16 trained the DCGAN 1.86x faster in bf16, a KVM Xeon with AVX-512 BF16 and no AMX
  0.85x as fast, and on that Xeon the 64x64 ``emoji`` preset 0.25x as fast while a small proxy
  block measured bf16 1.29x faster: no proxy predicts every network. So a GAN run times *its own
  training step* (:func:`measure_own_step`, given by the trainer as an :class:`OwnStep`: the
  run's networks, batch, memory format, augmentations and losses, on the run's state, which the
  trainer restores afterwards) in fp32 and in bf16 autocast, alternating, at the run's thread
  count, and takes bf16 only when it is at least :data:`BF16_MARGIN` times as fast. The verdict
  is cached per (CPU model, flags, torch version, threads, the step's signature: a hash of the
  config sections and networks that shape the step, :func:`step_signature`) in
  ``<cache>/cpu-bf16-probe.json`` (see :mod:`ganfuse.cache`), so only the first run of a network
  on a machine pays: 4-8 training steps, on a loaded 2-core Xeon ``digits`` 2/7 s, ``emoji``
  5/14 s, ``scenes-t2i`` 5/24 s at 1/2 threads (``benchmarks/README.md``). Runs without a GAN
  step (the multimodal ones) and differentially private runs time a short proxy block instead
  (:func:`measure_bf16_probe`). ``GANFUSE_BF16_PROBE=0`` skips measuring and trusts the
  instructions (bf16 wherever they exist);
- MPS: fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ganfuse.cache import cache_dir
from ganfuse.errors import ConfigError
from ganfuse.fileio import atomic_write_text

log = logging.getLogger("ganfuse")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA GPU is available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is 'mps' but MPS is not available; use --device cpu")
    return device


# The /proc/cpuinfo flags that decide GEMM speed and whether bf16 pays: part of the probe's cache
# key and of ``ganfuse bench``'s report.
GEMM_CPU_FLAGS = (
    "fma",
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
)
# bf16 autocast must run the probe at least this many times as fast as fp32 to be chosen: below it
# the gain is within the probe's noise on a shared machine and not worth bf16's rounding.
BF16_MARGIN = 1.15
# Wall-clock seconds after which timing a run's own step stops adding rounds (the untimed first
# step of each precision and one timed round always run): enough for 3 rounds of a small preset,
# one round of a 64x64 one, whose steps take seconds.
OWN_STEP_BUDGET_SECONDS = 4.0
# config.train keys that do not change what one training step computes or how fast: a new value
# of one of these reuses the cached verdict (any other change of the step's config measures again).
NOT_IN_STEP = frozenset({
    "steps", "max_minutes", "lr_g", "lr_d", "beta1", "beta2", "precision", "seed", "device",
    "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "eval_every", "eval_num",
    "monitor_every", "guard", "profile", "loggers", "init_from", "ema_warmup_steps", "ada_interval",
    "ada_kimg", "prior_images", "dp_noise_multiplier", "dp_delta", "dp_target_epsilon", "dp_seed",
})
PROBE_ENV = "GANFUSE_BF16_PROBE"  # "0": no probe, bf16 wherever the CPU has the instructions
PROBE_CACHE_NAME = "cpu-bf16-probe.json"


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`GEMM_CPU_FLAGS` it has, from ``cpuinfo`` (Linux);
    ``(platform.processor(), [])`` where that file cannot be read."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return platform.processor(), []
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's fields
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.processor()), [f for f in GEMM_CPU_FLAGS if f in flags]


def _torch_says(check: str) -> bool:
    return bool(getattr(torch.cpu, check, lambda: False)())


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX-512 BF16 or AMX), as PyTorch detects them."""
    return _torch_says("_is_avx512_bf16_supported") or _torch_says("_is_amx_tile_supported")


def bf16_instructions() -> str:
    """The CPU's bf16 instructions for a reason line, e.g. ``AVX-512 BF16, no AMX``."""
    found = {
        "AVX-512 BF16": _torch_says("_is_avx512_bf16_supported"),
        "AMX": _torch_says("_is_amx_tile_supported"),
    }
    present = [name for name, has in found.items() if has]
    return ", ".join(present + [f"no {name}" for name, has in found.items() if not has])


def probe_enabled() -> bool:
    return os.environ.get(PROBE_ENV, "1") != "0"


# ------------------------------------------------------------------ the bf16 probe


def choose_cpu_precision(
    fp32_seconds: float, bf16_seconds: float, margin: float = BF16_MARGIN
) -> str:
    """``bf16`` when the probe ran at least ``margin`` times as fast in bf16 autocast as in fp32,
    else ``fp32``."""
    return "bf16" if fp32_seconds >= margin * bf16_seconds else "fp32"


@dataclass(frozen=True)
class Bf16Probe:
    """What the probe measured on this CPU: seconds of its workload in fp32 and in bf16 autocast
    (the fastest of its rounds), at ``threads`` torch threads. For a run's own training step,
    ``images`` is the real images one step consumes (0 for the proxy block) and ``seconds`` what
    measuring cost, untimed first steps included."""

    fp32_seconds: float
    bf16_seconds: float
    threads: int
    images: int = 0
    seconds: float = 0.0

    @property
    def speedup(self) -> float:
        """bf16's speed as a multiple of fp32's (above 1: bf16 is faster)."""
        return self.fp32_seconds / self.bf16_seconds

    @property
    def chosen(self) -> str:
        return choose_cpu_precision(self.fp32_seconds, self.bf16_seconds)

    def images_per_second(self, bf16: bool) -> float:
        """The training speed the verdict rests on (own-step probes only: 0 for the proxy)."""
        return self.images / (self.bf16_seconds if bf16 else self.fp32_seconds)


def alternate_precisions(
    step: Callable[[bool], object],
    rounds: int,
    budget_seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, float]:
    """``(fp32 seconds, bf16 seconds, total seconds)`` of ``step(bf16)``: one untimed call each
    (oneDNN builds its kernels on first use), then ``rounds`` rounds alternating fp32 and bf16 so
    that other jobs' bursts fall on both, keeping each precision's fastest call: on a shared
    machine other jobs only ever add time, so the minimum is the estimate of the CPU's own speed
    that they disturb least. Rounds after the first stop once ``budget_seconds`` are spent (a
    loaded machine slows the probe as much as training). The total counts every call."""
    start = clock()
    step(False), step(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for bf16 in (False, True):
            before = clock()
            step(bf16)
            times[bf16].append(clock() - before)
        if clock() - start > budget_seconds:
            break
    return min(times[False]), min(times[True]), clock() - start


def measure_bf16_probe(
    rounds: int = 3, batch: int = 16, width: int = 64, budget_seconds: float = 1.0
) -> Bf16Probe:
    """Time one small GAN block forward and backward in fp32 and in bf16 autocast, alternating for
    ``rounds`` rounds after one untimed call each (oneDNN builds its kernels on first use), and keep
    each precision's fastest round: on a shared machine other jobs only ever add time, so the
    minimum is the estimate of the CPU's own speed that they disturb least. Rounds after the first
    stop once ``budget_seconds`` are spent (a loaded machine slows the probe as much as training).

    The block, on ``(batch, 2*width, 8, 8)`` inputs: ConvTranspose 5x5/2 to ``width`` channels
    (16x16), BatchNorm, LeakyReLU, Conv 5x5/2 back to ``2*width`` (8x8), BatchNorm, LeakyReLU,
    Linear to 256; with the defaults 0.45 G multiply-adds forward. Functional ops on tensors drawn
    from an explicit generator: the probe leaves the global random stream alone, so a run that
    probes trains exactly like one that reads a cached verdict."""
    gen = torch.Generator().manual_seed(0)

    def param(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).requires_grad_()

    x = torch.randn(batch, 2 * width, 8, 8, generator=gen)
    up, down = param(2 * width, width, 5, 5), param(2 * width, width, 5, 5)
    linear = param(256, 2 * width * 8 * 8)
    scale1, shift1 = param(width, scale=1.0), param(width, scale=0.0)
    scale2, shift2 = param(2 * width, scale=1.0), param(2 * width, scale=0.0)
    params = (up, down, linear, scale1, shift1, scale2, shift2)

    def step(bf16: bool) -> None:
        with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = F.conv_transpose2d(x, up, stride=2, padding=2, output_padding=1)
            h = F.leaky_relu(F.batch_norm(h, None, None, scale1, shift1, training=True), 0.2)
            h = F.conv2d(h, down, stride=2, padding=2)
            h = F.leaky_relu(F.batch_norm(h, None, None, scale2, shift2, training=True), 0.2)
            loss = F.linear(h.flatten(1), linear).float().square().mean()
        torch.autograd.grad(loss, params)

    fp32, bf16, total = alternate_precisions(step, rounds, budget_seconds)
    return Bf16Probe(fp32, bf16, torch.get_num_threads(), seconds=total)


@dataclass(frozen=True)
class OwnStep:
    """A run's own training step, for ``auto`` to time: ``run(bf16)`` trains one step of the run in
    bf16 autocast (True) or fp32 (False); the caller restores the run's state afterwards.
    ``images``: real images one step consumes; ``signature``: :func:`step_signature` of the run."""

    run: Callable[[bool], object]
    images: int
    signature: str


def measure_own_step(
    own: OwnStep,
    rounds: int = 3,
    budget_seconds: float = OWN_STEP_BUDGET_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> Bf16Probe:
    """Time ``own``'s training step in fp32 and bf16 autocast (:func:`alternate_precisions`): at
    least 4 steps (one untimed and one timed each), at most ``2 + 2 * rounds``."""
    fp32, bf16, total = alternate_precisions(own.run, rounds, budget_seconds, clock)
    return Bf16Probe(fp32, bf16, torch.get_num_threads(), own.images, total)


def step_signature(config: dict, *parts: str) -> str:
    """What a training step's speed depends on besides the machine, as 16 hex digits: ``config``'s
    ``data``, ``model`` and ``text`` sections, its ``train`` section less :data:`NOT_IN_STEP`, and
    ``parts`` (the trainer passes its networks' structure, batch and memory format)."""
    train = {k: v for k, v in config.get("train", {}).items() if k not in NOT_IN_STEP}
    shaped = {name: config.get(name) for name in ("data", "model", "text")}
    text = json.dumps({**shaped, "train": train, "parts": parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe_cache_key(threads: int, signature: str | None = None) -> str:
    """What the verdict depends on: CPU model and flags, torch version, threads, and for a run's
    own step its :func:`step_signature` (None: the proxy block)."""
    model, flags = cpu_info()
    key = f"{model} | {' '.join(flags)} | torch {torch.__version__} | {threads} threads"
    return key if signature is None else f"{key} | step {signature}"


def probe_cache_path() -> Path:
    return cache_dir() / PROBE_CACHE_NAME


_PROBES: dict[str, Bf16Probe] = {}  # this process's verdicts, so the reason line needs no re-read


def _read_probe_cache(path: Path) -> dict[str, dict]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again and rewrite it
    return entries if isinstance(entries, dict) else {}


def _probe_from_entry(entry: object) -> Bf16Probe | None:
    """A cache entry as a probe; None when it is not a valid one (edited, or an older layout)."""
    try:
        probe = Bf16Probe(float(entry["fp32_seconds"]), float(entry["bf16_seconds"]),
                          int(entry["threads"]), int(entry.get("images", 0)),
                          float(entry.get("seconds", 0.0)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return probe if probe.fp32_seconds > 0 and probe.bf16_seconds > 0 else None


def cached_bf16_probe(
    measure: Callable[[], Bf16Probe] | None = None, signature: str | None = None
) -> Bf16Probe:
    """This CPU's verdict at the current thread count (for the own step of ``signature``, else for
    the proxy block): from this process, else from the cache file, else measured now
    (``measure()``, default :func:`measure_bf16_probe`) and written to the cache. Delete the cache
    file to measure again."""
    key = probe_cache_key(torch.get_num_threads(), signature)
    if key in _PROBES:
        return _PROBES[key]
    path = probe_cache_path()
    entries = _read_probe_cache(path)
    probe = _probe_from_entry(entries.get(key))
    if probe is None:
        probe = (measure or measure_bf16_probe)()
        log.debug("bf16 probe: fp32 %.1f ms, bf16 %.1f ms (%s)", 1e3 * probe.fp32_seconds,
                  1e3 * probe.bf16_seconds, key)
        entries = _read_probe_cache(path)  # measuring can take seconds: keep what others wrote
        entries[key] = asdict(probe)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only cache costs the next run the probe, nothing else
            log.debug("bf16 probe: cannot write %s: %s", path, exc)
    _PROBES[key] = probe
    return probe


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _probe_of_rank_zero() -> Bf16Probe:
    """The probe of rank 0 on every rank of a distributed run, so all ranks train in one precision
    (ranks measuring side by side on shared cores could disagree)."""
    if not _distributed():
        return cached_bf16_probe()
    numbers = torch.zeros(2, dtype=torch.float64)
    if dist.get_rank() == 0:
        probe = cached_bf16_probe()
        numbers = torch.tensor([probe.fp32_seconds, probe.bf16_seconds], dtype=torch.float64)
    dist.broadcast(numbers, 0)
    probe = Bf16Probe(float(numbers[0]), float(numbers[1]), torch.get_num_threads())
    _PROBES[probe_cache_key(probe.threads)] = probe
    return probe


def _own_step_of_rank_zero(own: OwnStep) -> Bf16Probe:
    """The verdict on ``own``'s step, rank 0's on every rank of a distributed run. A distributed
    step synchronises gradients, so when rank 0 has no verdict every rank times the step together,
    for a fixed number of rounds (no wall-clock budget, which ranks could read differently)."""
    if not _distributed():
        return cached_bf16_probe(lambda: measure_own_step(own), own.signature)
    key = probe_cache_key(torch.get_num_threads(), own.signature)
    missing = torch.zeros(1, dtype=torch.float64)
    if dist.get_rank() == 0:
        cached = _PROBES.get(key) or _probe_from_entry(_read_probe_cache(probe_cache_path()).get(key))
        missing[0] = float(cached is None)
    dist.broadcast(missing, 0)
    mine = measure_own_step(own, budget_seconds=math.inf) if missing[0] else None
    numbers = torch.zeros(3, dtype=torch.float64)
    if dist.get_rank() == 0:
        probe = cached_bf16_probe(lambda: mine, own.signature)
        numbers = torch.tensor([probe.fp32_seconds, probe.bf16_seconds, probe.seconds],
                               dtype=torch.float64)
    dist.broadcast(numbers, 0)
    probe = Bf16Probe(float(numbers[0]), float(numbers[1]), torch.get_num_threads(), own.images,
                      float(numbers[2]))
    _PROBES[key] = probe
    return probe


def measures_own_step(name: str, device: torch.device) -> bool:
    """Whether resolving ``name`` on ``device`` times the run's own training step: ``auto`` on a
    CPU with native bf16, the probe on. A trainer builds its step first, then resolves."""
    return name == "auto" and device.type == "cpu" and cpu_has_native_bf16() and probe_enabled()


def cpu_auto_precision(own: OwnStep | None = None) -> str:
    """What ``auto`` means on this CPU: fp32 without bf16 instructions; with them, bf16 if timing
    ``own``'s training step (None: the proxy block) says it pays (or, with the probe off, always)."""
    if not cpu_has_native_bf16():
        return "fp32"
    if not probe_enabled():
        return "bf16"
    return (_probe_of_rank_zero() if own is None else _own_step_of_rank_zero(own)).chosen


def resolve_precision(name: str, device: torch.device, own: OwnStep | None = None) -> str:
    """The precision ``name`` means on ``device``; on a CPU with native bf16, ``auto`` times
    ``own``, the run's training step, where one is given (else the proxy block)."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ConfigError("train.precision fp16 is for GPUs; on CPU use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return cpu_auto_precision(own)
    return "fp32"


def precision_reason(
    asked: str, resolved: str, device: torch.device, signature: str | None = None
) -> str:
    """One line saying why ``resolved`` was chosen for ``asked`` on ``device``, for the log and the
    bench, e.g. ``auto: this CPU has no native bf16 (no AVX-512 BF16, no AMX)``; ``signature``:
    the run's own step was timed (:func:`step_signature`), else the proxy block."""
    if asked != "auto":
        return f"set: train.precision={asked}"
    if device.type == "cuda":
        return ("auto: this GPU supports bf16" if resolved == "bf16"
                else "auto: this GPU has no bf16; fp16 with a gradient scaler")
    if device.type != "cpu":
        return f"auto: fp32 on {device.type}"
    if not cpu_has_native_bf16():
        return ("auto: this CPU has no native bf16 (no AVX-512 BF16, no AMX), and emulated bf16 is "
                "slower than fp32")
    if not probe_enabled():
        return (f"auto: this CPU has native bf16 ({bf16_instructions()}), not measured "
                f"({PROBE_ENV}=0)")
    # the verdict resolve_precision took, remembered by the process
    probe = cached_bf16_probe(signature=signature)
    threads = f"{probe.threads} thread{'s' if probe.threads > 1 else ''}"
    if signature is not None:
        return (f"auto: bf16 autocast ran this run's training step at {probe.speedup:.2f}x of fp32 "
                f"(fp32 {probe.images_per_second(False):.1f} img/s, bf16 "
                f"{probe.images_per_second(True):.1f} img/s) at {threads} on this CPU "
                f"({bf16_instructions()}), {resolved} chosen (bf16 needs {BF16_MARGIN:g}x)")
    return (f"auto: bf16 autocast measured {probe.speedup:.2f}x of fp32 at {threads} on this CPU "
            f"({bf16_instructions()}), {resolved} chosen (bf16 needs {BF16_MARGIN:g}x)")


@dataclass
class Precision:
    """Autocast context and gradient scaling for one resolved precision."""

    name: str
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resume_precision(asked: str, recorded: str, device: torch.device) -> str:
    """The precision a resumed run continues in: the one it ``recorded`` (resolved when it started),
    so a run moved to another machine keeps its numerics. ``asked`` is the config's value: ``auto``
    or the recorded one are fine; another one is refused, as is a precision ``device`` cannot run."""
    if asked not in ("auto", recorded):
        raise ConfigError(f"--resume: this run trains in {recorded} (recorded in its config.yaml); "
                          f"resume it with train.precision={recorded} or auto, not {asked}")
    if recorded == "fp16" and device.type != "cuda":
        raise ConfigError(f"--resume: this run trains in fp16, which needs a CUDA GPU; {device.type} "
                          "cannot continue it exactly (start a new run with train.precision=fp32)")
    if recorded == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("--resume: this run trains in bf16, which this CPU emulates (many times slower "
                    "than on one with AVX-512 BF16 or AMX); continuing in bf16 to keep its numerics")
    return recorded
