"""Data-parallel training on PyTorch's distributed engine (DDP, launched by ``torchrun``).

``torchrun --nproc_per_node N -m ganfuse train ...`` (or ``ganfuse train ... --nproc N``) starts N
processes; each reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment, joins the
process group (gloo on CPU, NCCL on GPUs) and wraps G and D in ``DistributedDataParallel``.

What stays the same whatever N is: the *global* batch (``train.batch_size``; each rank takes a
contiguous slice of it), the data order and the latent vectors (every rank draws the global batch
from the same seeded generators and keeps its slice), so N processes see exactly the data and
noise one process would. Only rank 0 logs, samples, evaluates and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ganfuse.errors import ConfigError


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def device_for(self, device: torch.device) -> torch.device:
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> None:
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ConfigError(f"train.batch_size ({global_batch}) must be divisible by the number of "
                              f"processes ({self.world_size}): it is the global batch, split across them")
        return global_batch // self.world_size

    def local_slice(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (dim 0)."""
        if not self.enabled:
            return batch
        n = batch.shape[0] // self.world_size
        return batch[self.rank * n : (self.rank + 1) * n]

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average ``tensor`` over ranks (in place when distributed)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.world_size
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def wrap(module: torch.nn.Module, ctx: DistributedContext, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DDP when distributed, else unchanged."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=True)
