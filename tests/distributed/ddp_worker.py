"""Run by torchrun from test_ddp.py: one training step under DDP, then save rank 0's gradients.

Usage: python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py OUT.pt RUN_DIR
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from ddp_common import NoBatchNormTrainer, make_config  # noqa: E402


def main() -> None:
    out, run_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    trainer = NoBatchNormTrainer(make_config(), run_dir, progress=False)
    trainer.train_step()
    if trainer.dist.is_main:
        grads = {f"G.{k}": p.grad for k, p in trainer.G.named_parameters()}
        grads.update({f"D.{k}": p.grad for k, p in trainer.D.named_parameters()})
        torch.save(grads, out)
    trainer.dist.close()


if __name__ == "__main__":
    main()
