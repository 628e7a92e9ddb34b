"""How the losses of several tasks become one: fixed weights or learned uncertainty weighting.

Uncertainty weighting follows Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to
Weigh Losses" (2018): each task ``t`` has a learned log-variance ``s_t`` and the total is
``sum_t exp(-s_t) * L_t + s_t``. A task whose loss stays high (noisy, hard) gets a larger
``s_t`` and so a smaller weight; the ``+ s_t`` term keeps the weights from collapsing to zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

MODES: tuple[str, ...] = ("fixed", "uncertainty")


class LossWeighting(nn.Module):
    """``{task: scalar loss} -> scalar``. ``fixed`` uses ``weights`` (default all 1)."""

    def __init__(
        self,
        tasks: Sequence[str],
        mode: str = "fixed",
        weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown loss weighting {mode!r}; choose one of {MODES}")
        self.tasks = tuple(tasks)
        self.mode = mode
        fixed = [float((weights or {}).get(t, 1.0)) for t in self.tasks]
        self.register_buffer("fixed", torch.tensor(fixed))
        self.log_variance = (
            nn.Parameter(torch.zeros(len(self.tasks))) if mode == "uncertainty" else None
        )

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([losses[t] for t in self.tasks])
        if self.log_variance is None:
            return (self.fixed * stacked).sum()
        return (torch.exp(-self.log_variance) * stacked + self.log_variance).sum()

    def weights(self) -> dict[str, float]:
        """The current weight of each task's loss."""
        values = self.fixed if self.log_variance is None else torch.exp(-self.log_variance.detach())
        return {t: float(v) for t, v in zip(self.tasks, values, strict=True)}
