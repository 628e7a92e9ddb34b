"""Deterministic, resumable batch order.

Epoch ``e`` visits the data in ``randperm(N)`` drawn from a generator seeded with ``(seed, e)``, so
the order is a pure function of ``(seed, epoch, position)``: a checkpoint stores those two
counters and a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import torch


class EpochBatchSampler:
    def __init__(self, num_items: int, batch_size: int, seed: int = 0, drop_last: bool = True):
        if num_items < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.num_items, self.seed, self.drop_last = num_items, seed, drop_last
        self.batch_size = min(batch_size, num_items)
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.num_items, generator=gen)
        return self._perm

    def next_indices(self) -> torch.Tensor:
        """The next batch's indices ``(batch_size,)`` int64."""
        if self.position + self.batch_size > self.num_items:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        indices = self._permutation()[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return indices

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self._perm = None
