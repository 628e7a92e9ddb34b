"""What differentially private training of the discriminator costs on digits, side by side.

    python benchmarks/privacy.py --steps 200 --sigmas 0 0.5 1 2

    python benchmarks/privacy.py --speed 8

Trains the same recipe for the same number of steps without DP and with DP (``train.dp=true``)
at each noise multiplier of ``--sigmas`` (0: clipping only, no privacy), then measures every run
as ``benchmarks/quality_digits.py`` does: 1000 samples of the sampling generator (EMA) against
all 1797 real digits in the features of the shipped digits classifier (the Frechet distance that
``ganfuse evaluate`` reports). One JSON line per run: FD, smallest class share, epsilon spent (RDP
accountant, the run's delta), training seconds, steps/s and real images/s.

The default recipe is ``digits`` with its discriminator made DP-ready: spectral norm off (Opacus
gives no per-example gradients through it) and GroupNorm in place of BatchNorm
(``model.d_norm=group``); ``--base`` replaces those overrides. ``train.dp_seed`` is fixed so the
runs are reproducible (a real private run leaves it unset). Pin threads with ``--threads``.

``--speed ROUNDS`` measures only the cost in time: a trainer without DP and one with DP (noise
multiplier 1) take turns, 5 steps each per round in one process, so a shared machine's load
drifts over both alike; it prints the median milliseconds per step of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from quality_digits import measure

from ganfuse.config import load_config
from ganfuse.train.checkpoint import latest_good_checkpoint
from ganfuse.train.loop import Trainer, train

DP_READY = "model.spectral_norm_d=false,model.d_norm=group"


def preset_line(preset: str, overrides: list[str]) -> str:
    return ":".join([preset, ",".join(overrides)]) if overrides else preset


def run_one(name: str, preset: str, overrides: list[str], steps: int, root: Path) -> dict:
    """Train one run for ``steps`` steps and measure it."""
    config = load_config(preset, overrides + [f"train.steps={steps}", f"train.checkpoint_every={steps}",
                                              f"train.sample_every={steps}"])
    out = root / name
    start = time.perf_counter()
    train(config, out, progress=False)
    seconds = time.perf_counter() - start
    _, manifest, _, _ = latest_good_checkpoint(out)
    privacy = manifest.get("privacy") or {}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    images = lines[-1]["images"] if lines else 0
    return {"run": name, "overrides": overrides, "steps": steps, "train_seconds": round(seconds, 1),
            "steps_per_s": round(steps / seconds, 2), "real_img_per_s": round(images / seconds, 1),
            "epsilon": privacy.get("epsilon"), "delta": privacy.get("delta"),
            "noise_multiplier": privacy.get("noise_multiplier"), **measure(out), "dir": str(out)}


def speed(preset: str, base: list[str], rounds: int, root: Path, block: int = 5) -> dict:
    """Median ms per training step without and with DP, the two trainers taking turns."""
    trainers = {}
    for name, extra in (("no-dp", []), ("dp", ["train.dp=true", "train.dp_seed=1"])):
        config = load_config(preset, base + extra + ["train.steps=1000000", "train.checkpoint_every=1000000",
                                                      "train.sample_every=1000000"])
        trainers[name] = Trainer(config, root / f"speed-{name}", progress=False)
        for _ in range(3):  # warm-up
            trainers[name].train_step()
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(block):
                trainer.train_step()
            times[name].append(1000 * (time.perf_counter() - start) / block)
    ms = {name: statistics.median(values) for name, values in times.items()}
    batch = trainers["no-dp"].batch_size
    return {"speed_ms_per_step": {k: round(v, 1) for k, v in ms.items()},
            "img_per_s": {k: round(1000 * batch / v, 1) for k, v in ms.items()},
            "dp_over_no_dp": round(ms["dp"] / ms["no-dp"], 2), "rounds": rounds, "steps_per_block": block}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--base", default=DP_READY, help="overrides of every run, comma-separated")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sigmas", type=float, nargs="*", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--clip", type=float, default=1.0, help="train.dp_max_grad_norm")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without DP")
    parser.add_argument("--extra", default="", help="overrides of the DP runs only, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", help="folder to keep the runs in (default: a temporary folder)")
    parser.add_argument("--speed", type=int, metavar="ROUNDS", help="measure only the time per step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.keep or tempfile.mkdtemp(prefix="ganfuse-privacy-"))
    base = [x for x in args.base.split(",") if x] + ["train.precision=fp32"]
    extra = [x for x in args.extra.split(",") if x]
    if args.speed:
        print(json.dumps({"preset": preset_line(args.preset, base), **speed(args.preset, base, args.speed, root)}))
        return
    plans = [] if args.no_baseline else [("no-dp", base)]
    for sigma in args.sigmas:
        plans.append((f"dp-sigma{sigma:g}", base + ["train.dp=true", "train.dp_seed=1",
                                                    f"train.dp_noise_multiplier={sigma}",
                                                    f"train.dp_max_grad_norm={args.clip}", *extra]))
    for name, overrides in plans:
        print(json.dumps(run_one(name, args.preset, overrides, args.steps, root)), flush=True)


if __name__ == "__main__":
    main()
