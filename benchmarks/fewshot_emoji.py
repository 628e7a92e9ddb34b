"""Few-shot transfer on emoji: fine-tune a run that never saw a group against training from scratch.

    # 1. a source run without the target group (any budget; the figures say which)
    ganfuse train emoji --out runs/emoji-noflags --set data.holdout=[Flags] --max-minutes 15
    # 2. side by side, one thread each, the same wall-clock budget
    python benchmarks/fewshot_emoji.py finetune --source runs/emoji-noflags --minutes 5 --out runs/fs
    python benchmarks/fewshot_emoji.py scratch --minutes 5 --out runs/fs
    # another group: --group "Food & Drink" (the source run must have left it out)

The 100 target images are the first 100 emoji of the group (``--group``, default Flags) by a hash
of their name (written once to ``OUT/<group>100`` as 64x64 PNGs); the group's other emoji are the
held-out reference of the memorisation audit. ``finetune`` is ``ganfuse finetune`` with its defaults (FreezeD, ADA, the
learning rates halved, EMA warm-up); ``scratch`` is the ``emoji`` preset (DiffAugment colour,
translation, cutout) on the same folder. Each run is then scored with 500 samples of its
sampling generator in the ``emoji`` extractor's features: Frechet distance to the 100 images, and
the memorisation audit against them (near-copies of the 100, and the share of held-out real
emoji of the group the audit would call near-copies: what it calls acceptable). One JSON line per run.
Kernel Inception Distance in the same features (unbiased, subsets of 100) beside the Frechet distance.

``reference`` scores real images the same way, the yardsticks for the two runs' figures: the
group's held-out emoji (real pictures of the same kind, never among the 100) and 500 emoji of other
groups, each against the 100 targets. With 100 targets in 128 features the Frechet distance carries a
large small-sample bias; the held-out row shows where a generator that drew new, real members of the
group would land.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from PIL import Image

from ganfuse.config import load_config, parse_override, set_value, validate
from ganfuse.data.emoji import EmojiDataset
from ganfuse.metrics import fid_from_features, get_extractor, kid_from_features, to_uint8
from ganfuse.metrics.memorization import audit_images
from ganfuse.run import load_run
from ganfuse.train.finetune import LR_SCALE, finetune_config
from ganfuse.train.loop import train

GROUP = "Flags"
SHOTS = 100
SAMPLES = 500


def target_split(group: str = GROUP) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images of the ``SHOTS`` target emoji of ``group``, of its others, and the targets' names."""
    data = EmojiDataset("all", image_size=64)
    rows = [i for i, g in enumerate(data.labels["group"].tolist()) if data.class_names[g] == group]
    if len(rows) <= SHOTS:
        raise SystemExit(f"group {group!r} holds {len(rows)} emoji; a target of {SHOTS} needs more")
    rows.sort(key=lambda i: hashlib.sha256(data.names[i].encode()).hexdigest())
    take, rest = rows[:SHOTS], rows[SHOTS:]
    return data.images[take], data.images[rest], [data.names[i] for i in take]


def write_folder(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


def distances(net, target: torch.Tensor, images: torch.Tensor) -> dict:
    """Frechet and kernel distances of uint8 ``images`` to the uint8 ``target`` in ``net``'s features."""
    ft, fi = net.features(target), net.features(images)
    kid, kid_std = kid_from_features(ft, fi, subsets=100, subset_size=SHOTS)
    return {"n": len(images), "fd_to_target": round(fid_from_features(ft, fi), 3),
            "kid_to_target": round(kid, 4), "kid_std": round(kid_std, 4)}


def reference(group: str, target: torch.Tensor, others: torch.Tensor) -> list[dict]:
    """The yardsticks: the group's held-out real emoji, and 500 real emoji of other groups."""
    net = get_extractor("emoji")
    data = EmojiDataset("all", image_size=64)
    rows = [i for i, g in enumerate(data.labels["group"].tolist()) if data.class_names[g] != group]
    pick = torch.tensor(rows)[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:SAMPLES]]
    return [{"reference": f"held-out real {group}", **distances(net, target, others)},
            {"reference": "real emoji of other groups", **distances(net, target, data.images[pick])}]


def measure(run_dir: Path, target: torch.Tensor, others: torch.Tensor) -> dict:
    net = get_extractor("emoji")
    run = load_run(run_dir)
    fake = to_uint8(run.sample(SAMPLES, seed=123))
    audit = audit_images(fake, target, net, heldout=others)
    return {"step": run.step, **distances(net, target, fake), "near_copy_share": round(audit.near_copy_share, 4),
            "heldout_near_copy_share": round(audit.heldout_near_copy_share, 4),
            "closer_share": round(audit.closer_share, 4), "median_ratio": round(audit.median_ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("finetune", "scratch", "measure", "reference"))
    parser.add_argument("--source", help="finetune: a run trained without the target group")
    parser.add_argument("--group", default=GROUP, help="the Unicode group of the 100 targets (default Flags)")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="folder for the target images and the runs")
    parser.add_argument("--run", help="measure: the run folder to score")
    parser.add_argument("--lr-scale", type=float, default=LR_SCALE, help="finetune: the learning rates' factor")
    parser.add_argument("--name", help="the run's folder name under --out (default: the mode)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target, others, _ = target_split(args.group)
    out = Path(args.out)
    slug = "".join(ch for ch in args.group.lower() if ch.isalnum())
    folder = out / f"{slug}{SHOTS}"
    if not folder.is_dir():
        write_folder(target, folder)
    if args.mode == "reference":
        for row in reference(args.group, target, others):
            print(json.dumps({"group": args.group, **row}), flush=True)
        return
    if args.mode == "measure":
        print(json.dumps({"dir": args.run, **measure(Path(args.run), target, others)}), flush=True)
        return
    overrides = ["data.use_labels=false", "train.steps=1000000", "train.precision=fp32"]
    if args.mode == "finetune":
        config = finetune_config(args.source, str(folder), lr_scale=args.lr_scale)
        for item in overrides:
            set_value(config, *parse_override(item))
        validate(config)
    else:
        config = load_config("emoji", ["data.name=folder", f"data.path={folder}", *overrides])
    run_dir = out / (args.name or args.mode)
    start = time.perf_counter()
    train(config, run_dir, progress=False, max_minutes=args.minutes)
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"mode": args.mode, "group": args.group, "source": args.source, "threads": args.threads, "train_seconds": seconds,
                      **measure(run_dir, target, others), "dir": str(run_dir)}), flush=True)


if __name__ == "__main__":
    main()
