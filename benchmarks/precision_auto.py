"""What ``train.precision=auto`` chooses on this CPU for each preset, from timing its own step.

For each preset and thread count, a trainer is built with ``precision=auto`` on an empty cache, so
the run's own training step is timed in fp32 and bf16 autocast
(:func:`ganfuse.train.precision.measure_own_step`); prints the verdict, the fastest step of each
precision as img/s, and what measuring cost. On a CPU without native bf16 nothing is measured.

    python benchmarks/precision_auto.py --presets emoji,digits,scenes-t2i --threads 1,2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ganfuse.config import load_config
from ganfuse.train import precision
from ganfuse.train.loop import Trainer


def measure(preset: str, threads: int, out: Path) -> dict:
    torch.set_num_threads(threads)
    precision._PROBES.clear()  # measure, never reuse this process's verdict
    start = time.perf_counter()
    config = load_config(preset, ["train.precision=auto", "train.guard=false"])
    trainer = Trainer(config, out / f"{preset}-{threads}", progress=False)
    probe = trainer.precision_probe
    row = {"preset": preset, "threads": threads, "auto": trainer.precision.name,
           "setup_s": round(time.perf_counter() - start, 1)}
    if probe is not None:
        row.update(fp32_img_s=round(probe.images_per_second(False), 1),
                   bf16_img_s=round(probe.images_per_second(True), 1),
                   bf16_over_fp32=round(probe.speedup, 2), probe_s=round(probe.seconds, 1),
                   batch=probe.images)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="emoji,digits,scenes-t2i")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    print(f"cpu: {precision.cpu_info()[0]} ({precision.bf16_instructions()}), "
          f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                # an empty probe cache of its own (the text-embedding cache stays shared)
                cache = Path(tmp) / f"probe-{preset}-{threads}.json"
                precision.probe_cache_path = lambda cache=cache: cache
                print(measure(preset, threads, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
