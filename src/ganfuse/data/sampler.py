"""Deterministic, resumable batch order.

Epoch ``e`` visits the data in ``randperm(N)`` drawn from a generator seeded with ``(seed, e)``, so
the order is a pure function of ``(seed, epoch, position)``: a checkpoint stores those two
counters and a resumed run sees exactly the batches an uninterrupted run would have seen.
:class:`ClassBalancedBatchSampler` keeps that contract with ``N`` draws per epoch weighted by
class (``data.class_balance``).
"""

from __future__ import annotations

import torch


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


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
            self._perm = torch.randperm(self.num_items, generator=_epoch_generator(self.seed, self.epoch))
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


def class_balance_weights(labels: torch.Tensor, balance: float) -> torch.Tensor:
    """Per-item draw weights ``(N,)`` float64 for labels ``(N,)`` int64: ``n_c ** -balance`` for an
    item of a class with ``n_c`` items, so class ``c`` is drawn in proportion to ``n_c ** (1 -
    balance)`` (0: the data's shares, 1: every class equally often, 0.5: between the two)."""
    if labels.numel() == 0 or int(labels.min()) < 0:
        raise ValueError("class balancing needs a class label for every item")
    counts = torch.bincount(labels).double()
    return counts[labels] ** -balance


class ClassBalancedBatchSampler(EpochBatchSampler):
    """:class:`EpochBatchSampler` whose epoch is ``N`` draws with replacement, item ``i`` with
    probability ``weights[i] / sum(weights)`` (from :func:`class_balance_weights`), from the same
    ``(seed, epoch)`` generator: resumable exactly like the plain sampler."""

    def __init__(self, weights: torch.Tensor, batch_size: int, seed: int = 0):
        super().__init__(weights.numel(), batch_size, seed)
        self.weights = weights.double()

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            self._perm = torch.multinomial(self.weights, self.num_items, replacement=True,
                                           generator=_epoch_generator(self.seed, self.epoch))
        return self._perm
