"""Where the training loop's per-step records go: ``RUN/metrics.jsonl`` always, TensorBoard on request.

Every backend has ``log(record)`` and ``close()``. A record is the loop's flat dict for one log
step: ``{"step": 120, "time": 3.1, "loss_d": 0.7, ...}``; ``step`` is required.

    loggers = make_loggers(run_dir, ["tensorboard"])   # jsonl is always included
    loggers.log({"step": 10, "loss_d": 0.69, "loss_g": 0.71})
    loggers.close()

TensorBoard needs the optional extra (``pip install -e ".[tensorboard]"``); asking for it without
the package is a :class:`LoggerError` that says so, before any training starts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ganfuse.errors import UserError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
LOGGERS = ("jsonl", "tensorboard")

# metrics.jsonl field -> TensorBoard tag; related curves share a section so they chart together
TENSORBOARD_TAGS: dict[str, str] = {
    "loss_d": "loss/D",
    "loss_g": "loss/G",
    "d_real": "D_logit/real",
    "d_fake": "D_logit/fake",
    "acc_real": "D_accuracy/real",
    "acc_fake": "D_accuracy/fake",
    "grad_norm_d": "grad_norm/D",
    "grad_norm_g": "grad_norm/G",
    "img_per_s": "speed/img_per_s",
    "images": "speed/images_seen",
    "time": "speed/seconds",
    "fd": "quality/frechet_distance",
    "r1": "regulariser/R1",
    "gp": "regulariser/gradient_penalty",
    "augment_p": "augment/p",
    "ada_rt": "augment/r_t",
    "mc_diversity": "mode_collapse/diversity",
    "mc_classes": "mode_collapse/classes",
    "mc_max_share": "mode_collapse/max_share",
}


class LoggerError(UserError):
    """A logger that cannot be used: unknown name, missing optional package, unwritable folder."""


class Logger(Protocol):
    def log(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def _step(record: Mapping[str, Any]) -> int:
    if "step" not in record:
        raise ValueError(f"a log record needs a 'step', got keys {sorted(record)}")
    return int(record["step"])


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``null`` so every line stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    """Appends one JSON object per record to ``RUN/metrics.jsonl`` and flushes it, so a reader
    (``ganfuse report``, ``ganfuse info``) sees every completed line while the run trains and a
    kill leaves at most one cut line (which readers skip)."""

    def __init__(self, run_dir: str | Path, filename: str = METRICS_FILE):
        self.path = Path(run_dir) / filename
        try:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise LoggerError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def log(self, record: Mapping[str, Any]) -> None:
        _step(record)
        self._file.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _summary_writer(log_dir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LoggerError(
            '--logger tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"'
        ) from None
    return SummaryWriter(log_dir=log_dir)


class TensorBoardLogger:
    """Writes each numeric field of a record as a scalar at the record's step, under
    ``RUN/tensorboard/`` (``tensorboard --logdir RUN/tensorboard``). Booleans and text are skipped;
    fields without a tag in :data:`TENSORBOARD_TAGS` are written under ``other/``."""

    def __init__(self, run_dir: str | Path, writer_factory: Callable[[str], Any] = _summary_writer):
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = writer_factory(str(self.log_dir))

    def log(self, record: Mapping[str, Any]) -> None:
        step = _step(record)
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            self._writer.add_scalar(TENSORBOARD_TAGS.get(key, f"other/{key}"), value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiLogger:
    """Sends every record to each of ``loggers``; ``close()`` closes them all."""

    def __init__(self, loggers: Sequence[Logger]):
        self.loggers = list(loggers)

    def log(self, record: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

    def __enter__(self) -> MultiLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_loggers(run_dir: str | Path, names: Sequence[str] = ()) -> MultiLogger:
    """The jsonl logger plus the ones named (``"tensorboard"``); an unknown name is a :class:`LoggerError`."""
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise LoggerError(
            f"unknown logger(s) {', '.join(unknown)}; choose from {', '.join(LOGGERS)}"
        )
    # the optional backend first: if its package is missing nothing has been opened yet
    extra: list[Logger] = [TensorBoardLogger(run_dir)] if "tensorboard" in names else []
    return MultiLogger([JsonlLogger(run_dir), *extra])
