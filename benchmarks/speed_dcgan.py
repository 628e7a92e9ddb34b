"""ganfuse's training step vs a plain fp32 PyTorch loop, same networks and batch, side by side.

    python benchmarks/speed_dcgan.py [--seconds 15] [--rounds 3] [--threads 2] [--set key=value ...]

The plain loop is the textbook PyTorch DCGAN step (as in the PyTorch DCGAN tutorial): the founding
document's networks from ``ganfuse.models.dcgan``, BCE-with-logits, Adam(2e-4, 0.5/0.999),
batch 64, fp32, contiguous tensors, default optimiser implementation, the fake batch generated once
and reused for the generator step. ganfuse's side is ``ganfuse bench train digits-dcgan`` with the
preset's defaults (precision ``auto`` resolved per device) plus any ``--set`` overrides. The two
alternate for ``--rounds`` rounds so machine noise hits both; medians and their ratio are printed
as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from ganfuse.bench import bench_train
from ganfuse.data.digits import load_digits_tensors
from ganfuse.models.dcgan import DCGANDiscriminator, DCGANGenerator


def plain_fp32_loop(seconds: float, batch_size: int = 64, seed: int = 0) -> float:
    """Median img/s of the textbook loop over individual steps."""
    torch.manual_seed(seed)
    images, _ = load_digits_tensors()
    g, d = DCGANGenerator(100, 1), DCGANDiscriminator(1)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones, zeros = torch.ones(batch_size), torch.zeros(batch_size)

    def step() -> None:
        real = images[torch.randint(0, len(images), (batch_size,))]
        fake = g(torch.randn(batch_size, 100))
        opt_d.zero_grad()
        loss_d = F.binary_cross_entropy_with_logits(d(real).logits, ones) + \
            F.binary_cross_entropy_with_logits(d(fake.detach()).logits, zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = F.binary_cross_entropy_with_logits(d(fake).logits, ones)
        loss_g.backward()
        opt_g.step()

    for _ in range(3):
        step()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plain, ours, info = [], [], {}
    for _ in range(args.rounds):
        plain.append(plain_fp32_loop(args.seconds))
        info = bench_train("digits-dcgan", args.seconds, args.overrides, flops=False)
        ours.append(info["img_per_s"])
    result = {
        "plain_fp32_img_per_s": round(statistics.median(plain), 1),
        "ganfuse_img_per_s": round(statistics.median(ours), 1),
        "speedup": round(statistics.median(ours) / statistics.median(plain), 3),
        "rounds": args.rounds,
        "ganfuse_settings": {
            k: info[k]
            for k in ("device", "precision", "precision_reason", "channels_last", "compile", "threads")
        },
        "load_average": round(os.getloadavg()[0], 2),
        "overrides": args.overrides,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
