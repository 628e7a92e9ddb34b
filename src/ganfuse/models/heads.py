"""Task heads: the fused representation in, one logit vector per task out.

:class:`TaskHeads` holds a small MLP per task, ``fused (B, D) -> {task: (B, K_task)}``. With a
decision-level (late) fusion the fused tensor already *is* the concatenated task logits, and
:class:`DecisionSplit` only cuts it into the tasks' slices, so no layer sees both modalities.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class ClassificationHead(nn.Sequential):
    """``(B, in_dim) -> (B, num_classes)``: one hidden ReLU layer, or linear when ``hidden=0``."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128):
        if hidden:
            super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            super().__init__(nn.Linear(in_dim, num_classes))


class TaskHeads(nn.Module):
    """One :class:`ClassificationHead` per task: ``(B, in_dim) -> {task: (B, K_task)}``."""

    def __init__(self, in_dim: int, task_sizes: Mapping[str, int], hidden: int = 128):
        super().__init__()
        self.task_sizes = dict(task_sizes)
        self.heads = nn.ModuleDict(
            {task: ClassificationHead(in_dim, size, hidden) for task, size in task_sizes.items()}
        )

    def forward(self, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: head(fused) for task, head in self.heads.items()}


class DecisionSplit(nn.Module):
    """``(B, sum K_task) -> {task: (B, K_task)}`` in ``task_sizes``'s order; no parameters."""

    def __init__(self, task_sizes: Mapping[str, int]):
        super().__init__()
        self.task_sizes = dict(task_sizes)

    @property
    def in_dim(self) -> int:
        return sum(self.task_sizes.values())

    def forward(self, decisions: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(decisions, list(self.task_sizes.values()), dim=-1)
        return dict(zip(self.task_sizes, parts, strict=True))
