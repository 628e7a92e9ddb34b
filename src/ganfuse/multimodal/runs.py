"""The multimodal half of the registry: each task name -> the kind of run that learns it, and how
that kind is trained and loaded. The command line and the benchmark dispatch through this table;
adding a task of an existing kind is one entry in ``ganfuse.multimodal.config.TASKS`` (and its
data in ``tasks.py``), adding a kind one :class:`RunKind` here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ganfuse.multimodal.captioning import load_captioner, train_captioner
from ganfuse.multimodal.config import FUSION_TASKS, FuseConfig
from ganfuse.multimodal.train import load_fusion_run, train_fusion
from ganfuse.multimodal.zeroshot import load_dual_encoder, train_zeroshot


@dataclass(frozen=True)
class RunKind:
    """``train(config, out, progress)`` returns a result with ``train_seconds`` and ``steps``;
    ``metrics(result)`` its test scores; ``load(run_dir)`` the trained model."""

    name: str
    train: Callable
    metrics: Callable[[object], dict[str, float]]
    load: Callable[[Path | str], object]


KINDS: dict[str, RunKind] = {
    "fusion": RunKind("fusion", train_fusion, lambda r: r.test_metrics, lambda p: load_fusion_run(p)[0]),
    "zeroshot": RunKind("zeroshot", train_zeroshot, lambda r: r.metrics, load_dual_encoder),
    "caption": RunKind("caption", train_captioner, lambda r: r.metrics, load_captioner),
}


def run_kind(task: str) -> RunKind:
    """The kind of run of a task (every fusion task is a ``fusion`` run)."""
    return KINDS["fusion" if task in FUSION_TASKS else task]


def train_task(config: FuseConfig, out: str | Path | None, progress: bool = True) -> tuple[dict[str, float], float, int]:
    """Train the run ``config`` asks for into ``out``: ``(test metrics, training seconds, steps)``."""
    kind = run_kind(config.task)
    result = kind.train(config, out, progress)
    return kind.metrics(result), result.train_seconds, result.steps
