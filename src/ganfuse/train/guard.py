"""NaN/Inf guard: a non-finite loss never reaches the weights for more than one log interval.

The loop records, on the device and without synchronising, whether any loss of the interval was
non-finite. At each log step the guard looks once: if all was finite it snapshots the training
state in memory (the "last good state"); if not, it restores that snapshot, which undoes the bad
steps and skips the batches that caused them, and halves both learning rates (quarters them on
a second failure in a row, and so on). After ``max_retries`` consecutive failures it stops the
run with a clear message; the last good checkpoint on disk is kept. The loop also runs this check
at every checkpoint step, so a checkpoint never holds a bad interval.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch

from ganfuse.errors import UserError

log = logging.getLogger("ganfuse")


class TrainingDiverged(UserError):
    """Training kept producing non-finite values after the guard lowered the learning rate."""


class NaNGuard:
    def __init__(
        self,
        get_state: Callable[[], dict[str, Any]],
        set_state: Callable[[dict[str, Any]], None],
        optimizers: list[torch.optim.Optimizer],
        max_retries: int = 5,
        lr_factor: float = 0.5,
    ):
        self.get_state, self.set_state = get_state, set_state
        self.optimizers, self.max_retries, self.lr_factor = optimizers, max_retries, lr_factor
        self.snapshot: dict[str, Any] | None = None
        self.retries = 0
        self.recoveries = 0
        self.finite_checks = 0  # log intervals that were all finite, since this process started

    def _learning_rates(self) -> list[float]:
        return [group["lr"] for opt in self.optimizers for group in opt.param_groups]

    def _diverged_message(self, step: int) -> str:
        """Why the run stops, blaming the learning rate only when it can be the cause: when no
        interval was ever finite, even a 2**max_retries times smaller rate did not help, so the
        cause lies elsewhere (the data, the config), and there may be no checkpoint at all."""
        lrs = ", ".join(f"{lr:.2e}" for lr in self._learning_rates())
        if self.snapshot is None:
            return (
                f"losses were NaN/Inf at step {step} before any good state was recorded, so there "
                "is nothing to roll back to; check the data and the config"
            )
        if self.finite_checks == 0:
            return (
                f"training never reached a good state: every interval since it started (or "
                f"resumed) up to step {step} had NaN/Inf losses, even after {self.retries - 1} "
                f"learning-rate reductions (to {lrs}), so the learning rate is unlikely to be the "
                "cause; check the data (enough distinct, readable images) and the model config; "
                "nothing from these intervals was saved"
            )
        return (
            f"training diverged at step {step}: losses stayed NaN/Inf after {self.retries - 1} "
            f"learning-rate reductions (to {lrs}); the last good checkpoint is kept; lower "
            f"train.lr_g/train.lr_d"
        )

    def take_snapshot(self) -> None:
        self.snapshot = copy.deepcopy(self.get_state())

    def check(self, finite: bool, step: int) -> bool:
        """Called at a log step with whether the interval was finite; returns False if it rolled back."""
        if finite:
            self.retries = 0
            self.finite_checks += 1
            self.take_snapshot()
            return True
        self.retries += 1
        self.recoveries += 1
        if self.snapshot is None or self.retries > self.max_retries:
            raise TrainingDiverged(self._diverged_message(step))
        # The snapshot holds the rates of the last good state: the k-th failure in a row retries
        # with lr * factor**k, so reductions compound instead of retrying lr/2 forever.
        self.set_state(copy.deepcopy(self.snapshot))
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] *= self.lr_factor**self.retries
        lrs = [f"{lr:.2e}" for lr in self._learning_rates()]
        log.warning(
            "non-finite loss before step %d: restored the last good state and lowered the "
            "learning rates to %s",
            step,
            ", ".join(lrs),
        )
        return False
