"""Sample quality of digits recipes under the same wall-clock budget, measured side by side.

    python benchmarks/quality_digits.py --minutes 3 \
        digits-dcgan:train.precision=fp32 digits digits-cond

Each entry is ``PRESET[:key=value,...]``. Every run trains for ``--minutes`` of wall clock, then
1000 samples from its sampling generator (EMA when the recipe keeps one) are compared with all
1797 real digits in the features of the shipped digits classifier (``ganfuse.metrics``'s
``digits`` extractor): Frechet distance, the share of samples per predicted class, and for
class-conditional runs the share of ``--class K`` samples classified as K. One JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ganfuse.config import load_config
from ganfuse.data.digits import load_digits_tensors
from ganfuse.metrics import fid_from_features, get_extractor, to_uint8
from ganfuse.run import load_run
from ganfuse.train.loop import train


def measure(run_dir: Path, num: int = 1000) -> dict:
    net = get_extractor("digits")
    real, _ = load_digits_tensors()
    real_feats = net.features(to_uint8(real))
    run = load_run(run_dir)
    fake = run.sample(num, seed=123)
    feats, probs = net.features_and_probs(to_uint8(fake))
    share = torch.bincount(probs.argmax(1), minlength=10).double() / num
    result = {"step": run.step, "fd": round(fid_from_features(real_feats, feats), 3),
              "min_class_share": round(float(share.min()), 4),
              "class_shares": [round(float(s), 3) for s in share]}
    if run.num_classes:
        result["class_accuracy"], result["class_accuracy_min"] = class_accuracy(run, net, 100)
    return result


def class_accuracy(run, net, per_class: int) -> tuple[float, float]:
    """Mean and minimum over the classes of the share of ``per_class`` samples asked for class k
    (seed k) that the extractor ``net`` classifies as k."""
    correct = []
    for k in range(run.num_classes):
        p = net.probs(to_uint8(run.sample(per_class, seed=k, class_label=k)))
        correct.append(float((p.argmax(1) == k).float().mean()))
    return round(sum(correct) / len(correct), 4), round(min(correct), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="PRESET[:key=value,...]")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--steps", type=int, help="train this many steps instead (no wall-clock budget): "
                        "compares precisions or machines at equal work")
    parser.add_argument("--keep", help="folder to keep the runs in (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="ganfuse-quality-"))
    for i, spec in enumerate(args.runs):
        out, seconds = train_spec(spec, root / str(i), args.minutes, args.steps)
        print(json.dumps({"run": spec, "train_seconds": seconds, **measure(out), "dir": str(out)}), flush=True)


def train_spec(spec: str, prefix: Path, minutes: float, steps: int | None = None) -> tuple[Path, float]:
    """Train ``PRESET[:key=value,...]`` for ``minutes`` of wall clock (or exactly ``steps`` steps)
    into ``PREFIX-PRESET``; returns the run folder and the seconds it took."""
    preset, _, extra = spec.partition(":")
    config = load_config(preset, [x for x in extra.split(",") if x] + [f"train.steps={steps or 1000000}"])
    out = prefix.parent / f"{prefix.name}-{preset}"
    start = time.perf_counter()
    train(config, out, progress=False, max_minutes=None if steps else minutes)
    return out, round(time.perf_counter() - start, 1)


if __name__ == "__main__":
    main()
