"""Time ``fid_from_features`` against the classic scipy ``sqrtm`` formula on the same features.

Both start from two float32 feature sets ``(N, D)`` (10,000 x 2,048 by default, the size of an
FID-10k evaluation) and compute float64 statistics; the scipy path is the one most FID code uses
(``np.cov`` + ``scipy.linalg.sqrtm(s1 @ s2)``). Prints one JSON object with the median seconds of
each, their ratio and the relative difference of the two FID values.

    nice python benchmarks/fid_speed.py [--n 10000] [--d 2048] [--repeats 5] [--scipy-repeats 1] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch

from ganfuse.metrics import fid_from_features


def scipy_sqrtm_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The reference formula: float64 ``np.cov`` statistics and ``scipy.linalg.sqrtm``."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a64.mean(axis=0), b64.mean(axis=0)
    s1, s2 = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def feature_sets(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated, non-isotropic float32 sets ``(n, d)`` that look like pooled CNN features."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=gen) / d**0.5
    a = torch.relu(torch.randn(n, d, generator=gen) @ mixing + 0.5)
    b = torch.relu(torch.randn(n, d, generator=gen) @ mixing * 1.1 + 0.45)
    return a.numpy(), b.numpy()


def median_seconds(fn: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    """Run ``fn`` ``repeats`` times; return (median wall seconds, median CPU seconds of this
    process, last value). CPU time is what a busy shared machine distorts least."""
    walls, cpus, value = [], [], float("nan")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scipy-repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    a, b = feature_sets(args.n, args.d, args.seed)
    load_before = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    ours_s, ours_cpu, ours = median_seconds(lambda: fid_from_features(a, b), args.repeats)
    scipy_s, scipy_cpu, reference = median_seconds(
        lambda: scipy_sqrtm_fid(a, b), args.scipy_repeats
    )
    print(
        json.dumps(
            {
                "n": args.n,
                "d": args.d,
                "ours_median_s": round(ours_s, 3),
                "scipy_sqrtm_median_s": round(scipy_s, 3),
                "speedup": round(scipy_s / ours_s, 1),
                "ours_cpu_median_s": round(ours_cpu, 3),
                "scipy_sqrtm_cpu_median_s": round(scipy_cpu, 3),
                "fid_ours": ours,
                "fid_scipy": reference,
                "relative_difference": abs(ours - reference) / abs(reference),
                "repeats": {"ours": args.repeats, "scipy": args.scipy_repeats},
                "torch_threads": torch.get_num_threads(),
                # Other work on the machine slows both sides; the 1-minute load average says how much.
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
