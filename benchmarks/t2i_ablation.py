"""Which part of the conditioning path pays? Text-to-image variants on a fixed budget of steps,
compared per step (not per second, so a loaded machine does not bias the comparison).

    python benchmarks/t2i_ablation.py --steps 600 --eval-every 100 --out runs/ablation [--jobs 2]
    python benchmarks/t2i_ablation.py --only full no-projection --steps 300 --out runs/ab2

Each variant is ``shapes-t2i`` (or the concat baseline) with a few overrides, trained in its own
process with one thread (OpenMP threads spin badly on an oversubscribed CPU), with the attribute
monitor every ``--eval-every`` steps (``--eval-num`` seen and held-out prompts). Prints a table of
the accuracies at each evaluation step and writes ``OUT/ablation.json`` with the curves and each
variant's seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "concat-baseline": ("shapes-t2i-concat", []),
    "dfgan-paper": ("shapes-t2i", ["text.d_condition=concat", "model.spectral_norm_d=false", "text.magp_weight=2", "train.r1_every=4",
                                   "text.contrastive_weight=0", "text.feature_matching_weight=0"]),
    "full": ("shapes-t2i", []),
    "no-projection": ("shapes-t2i", ["text.d_condition=concat"]),
    "no-mismatch": ("shapes-t2i", ["text.mismatch_weight=0"]),
    "no-contrastive": ("shapes-t2i", ["text.contrastive_weight=0"]),
    "no-feature-matching": ("shapes-t2i", ["text.feature_matching_weight=0"]),
    "input-fusion": ("shapes-t2i", ["text.fusion=input"]),
    "magp-not-sn": ("shapes-t2i", ["model.spectral_norm_d=false", "text.magp_weight=2", "train.r1_every=4"]),
    "small-encoder": ("shapes-t2i", ["text.encoder=small"]),
}
KEYS = ("color", "shape", "size", "position", "all")


def run_variant(name: str, out: Path, steps: int, eval_every: int, eval_num: int, seed: int,
                extra: list[str]) -> subprocess.Popen:
    preset, overrides = VARIANTS[name]
    overrides = overrides + extra + [f"train.eval_every={eval_every}", f"train.eval_num={eval_num}",
                                     f"train.log_every={eval_every}", f"train.sample_every={eval_every}",
                                     f"train.checkpoint_every={steps}", f"train.seed={seed}"]
    cmd = [sys.executable, "-m", "ganfuse", "train", preset, "--out", str(out / name), "--steps", str(steps),
           "--no-progress"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(out / f"{name}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def read_curve(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "seen_all" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="variants to run (default all)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-num", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="override for every variant")
    parser.add_argument("--report-only", action="store_true", help="only read existing runs in --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(VARIANTS)
    seconds: dict[str, float] = {}
    if not args.report_only:
        pending, running = list(names), {}
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                running[name] = (run_variant(name, out, args.steps, args.eval_every, args.eval_num, args.seed,
                                             args.extra), time.monotonic())
            time.sleep(5)
            for name, (proc, start) in list(running.items()):
                if proc.poll() is not None:
                    seconds[name] = time.monotonic() - start
                    status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode}), see {name}.log"
                    print(f"{name}: {status} in {seconds[name]:.0f} s", flush=True)
                    del running[name]
    summary = {}
    print(f"\n{'variant':<18} {'step':>5} | seen " + " ".join(f"{k:>5}" for k in KEYS)
          + " | held-out " + " ".join(f"{k:>5}" for k in KEYS) + " | seen fd")
    for name in names:
        curve = read_curve(out / name)
        summary[name] = {"curve": [{k: v for k, v in r.items() if k == "step" or k.startswith(("seen_", "heldout_"))}
                                   for r in curve]}
        metrics = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()] \
            if (out / name / "metrics.jsonl").exists() else []
        if metrics:
            last = metrics[-1]
            summary[name]["seconds_per_step"] = round(last["time"] / max(last["step"], 1), 3)
        for r in curve:
            print(f"{name:<18} {r['step']:>5} | seen " + " ".join(f"{100 * r['seen_' + k]:5.1f}" for k in KEYS)
                  + " | held-out " + " ".join(f"{100 * r['heldout_' + k]:5.1f}" for k in KEYS)
                  + f" | {r['seen_fd']:.2f}")
    (out / "ablation.json").write_text(json.dumps({"steps": args.steps, "variants": summary}, indent=2))


if __name__ == "__main__":
    main()
