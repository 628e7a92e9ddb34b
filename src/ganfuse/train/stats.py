"""Named training statistics, accumulated on the device and reduced across ranks.

An objective reports whatever it measures by name (``reporter.report("loss/d", loss)``); the loop
flushes once per log interval and gets the interval mean of every name, averaged over the
processes of a distributed run. Values stay on the device between flushes, so a training step
never waits for the host (in the manner of stylegan2-ada-pytorch's ``training_stats``).

Every rank must report the same names during an interval (objectives are deterministic in what
they report, so they do); the flush reduces one tensor of sums and one of counts.
"""

from __future__ import annotations

import torch

from ganfuse.train.distributed import DistributedContext


class StatsReporter:
    """Sums and counts of named scalars since the last :meth:`flush`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def report(self, name: str, value: torch.Tensor | float) -> None:
        """Add one observation of ``name`` (a 0-dim tensor or a number; tensors are detached)."""
        if isinstance(value, torch.Tensor):
            value = value.detach().float().reshape(())
            if value.device != self.device:
                value = value.to(self.device)
        else:
            value = torch.tensor(float(value), device=self.device)
        if name in self._sums:
            self._sums[name] += value
            self._counts[name] += 1
        else:
            self._sums[name] = value.clone()
            self._counts[name] = 1

    def state_dict(self, dist: DistributedContext | None = None) -> dict[str, dict]:
        """The interval in flight, ``{"sums": {name: 0-dim CPU tensor}, "counts": {name: number}}``:
        a checkpoint holds it so that a resumed run's first flush averages the same steps, in the
        same order, as an uninterrupted run's. With an enabled ``dist`` it is the mean over ranks
        (a collective: every rank must call it), which every rank can restore: the next flush's
        mean over ranks then equals the uninterrupted run's."""
        names = self.names()
        sums = {n: self._sums[n].detach().clone() for n in names}
        counts: dict[str, float] = {n: self._counts[n] for n in names}
        if dist is not None and dist.enabled and names:
            stacked = torch.stack([sums[n] for n in names])
            totals = torch.tensor([float(counts[n]) for n in names], device=self.device)
            dist.mean(stacked)
            dist.mean(totals)
            sums = dict(zip(names, stacked.unbind(), strict=True))
            counts = dict(zip(names, totals.tolist(), strict=True))
        return {"sums": {n: v.cpu() for n, v in sums.items()}, "counts": counts}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Replace the interval in flight with ``state`` (from :meth:`state_dict`; ``{}``: empty)."""
        sums, counts = state.get("sums", {}), state.get("counts", {})
        if set(sums) != set(counts):
            raise ValueError(f"statistics state: sums of {sorted(sums)} but counts of {sorted(counts)}")
        self._sums = {n: v.to(self.device, torch.float32).reshape(()).clone() for n, v in sums.items()}
        self._counts = {n: float(c) for n, c in counts.items()}

    def names(self) -> list[str]:
        return sorted(self._sums)

    def all_finite(self, flag: str | None = None, dist: DistributedContext | None = None) -> bool:
        """Whether every value reported since the last flush was finite and, when ``flag`` names a
        statistic, that one stayed 0 (one host sync). With an enabled ``dist``, on every rank (a
        collective: all ranks must call it, and all get the same answer)."""
        ok = torch.ones((), device=self.device)
        if self._sums:
            ok = torch.isfinite(torch.stack(list(self._sums.values()))).all().float()
            if flag is not None and flag in self._sums:
                ok = ok * (self._sums[flag] == 0).float()
        if dist is not None and dist.enabled:
            ok = dist.mean(ok.reshape(1))
        return bool(ok.min() == 1)

    def flush(self, dist: DistributedContext | None = None) -> dict[str, float]:
        """Interval means ``{name: mean}`` (averaged over ranks when ``dist`` is enabled); resets."""
        names = self.names()
        if not names:
            return {}
        sums = torch.stack([self._sums[n] for n in names])
        counts = torch.tensor([float(self._counts[n]) for n in names], device=self.device)
        if dist is not None and dist.enabled:
            dist.mean(sums)
            dist.mean(counts)
        means = (sums / counts.clamp(min=1)).tolist()
        self._sums.clear()
        self._counts.clear()
        return dict(zip(names, means, strict=True))
