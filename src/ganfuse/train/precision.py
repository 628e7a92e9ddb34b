"""Device and numeric precision, resolved once at the start of a run and reported.

``precision=auto`` picks the fastest setting that keeps quality on the device at hand:

- CUDA: bf16 autocast where the GPU supports bf16, else fp16 autocast with a gradient scaler;
- CPU: bf16 autocast only where the processor has native bf16 instructions (AVX-512 BF16 or AMX);
  without them PyTorch emulates bf16 and it runs many times *slower* than fp32 (measured on an
  AVX2-only EPYC: a 1024^2 matmul 38x slower), so auto keeps fp32;
- MPS: fp32.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from ganfuse.errors import ConfigError

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


def cpu_has_native_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ConfigError("train.precision fp16 is for GPUs; on CPU use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def precision_reason(asked: str, resolved: str, device: torch.device) -> str:
    """One line saying why ``resolved`` was chosen for ``asked`` on ``device``, for the log and the
    bench, e.g. ``auto: this CPU has no native bf16 (no AVX-512 BF16, no AMX)``."""
    if asked != "auto":
        return f"set: train.precision={asked}"
    if device.type == "cuda":
        return ("auto: this GPU supports bf16" if resolved == "bf16"
                else "auto: this GPU has no bf16; fp16 with a gradient scaler")
    if device.type != "cpu":
        return f"auto: fp32 on {device.type}"
    if resolved == "bf16":
        found = [name for check, name in (("_is_avx512_bf16_supported", "AVX-512 BF16"),
                                          ("_is_amx_tile_supported", "AMX"))
                 if getattr(torch.cpu, check, lambda: False)()]
        return f"auto: this CPU has native bf16 ({' and '.join(found) or 'AVX-512 BF16 or AMX'})"
    return ("auto: this CPU has no native bf16 (no AVX-512 BF16, no AMX), and emulated bf16 is "
            "slower than fp32")


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
