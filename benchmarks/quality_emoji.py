"""Sample quality of the emoji recipes (64x64 RGB) under one wall-clock budget.

    python benchmarks/quality_emoji.py --minutes 30 --threads 1 --keep runs/q emoji
    python benchmarks/quality_emoji.py --minutes 30 --threads 1 --keep runs/q \
        digits-dcgan:data.name=emoji,data.image_size=64,train.precision=fp32
    python benchmarks/quality_emoji.py --measure runs/q/0-emoji      # score a run again
    python benchmarks/quality_emoji.py --measure runs/q/0-emoji --psi 1 0.9 0.8   # truncation

Each entry is ``PRESET[:key=value,...]``; each trains for ``--minutes`` of wall clock with
``--threads`` threads, then is scored in the features of the shipped ``emoji`` extractor against
all 3,664 real emoji at 64x64 (``--ref emoji``), the protocol of ``quality_digits.py``:

- unconditional and class-conditional runs: 2,000 samples of the sampling generator (EMA where
  the recipe keeps one; a class-conditional run's asked for each group in the data's group
  shares): Frechet distance, improved precision and recall (k=3), density and coverage (k=5); for
  class-conditional runs, the share of 200 samples of each group that the extractor classifies
  as that group (mean and minimum over the 10 groups);
- text-to-image runs: one sample for each name of the 500 first training emoji (by a hash of the
  name) and for every held-out emoji: FD of the seen samples, and R-precision (1 true name
  against 99 other names) with the extractor as the judge of likeness: a name's "text embedding"
  is the extractor's feature of that emoji's real image, so a sample counts when it looks more
  like its own emoji than like 99 others. ``--rprec-model RUN`` adds R-precision with a zero-shot
  dual encoder (``ganfuse fuse train --task zeroshot --set world=emoji``), for the samples and for
  the real emoji of the same names (the judge's own ceiling).

``--psi`` scores unconditional and class-conditional runs again with their latents pulled
towards the mean latent by each factor (the truncation trick: precision up, recall down,
Kynkaenniemi et al. 2019); 1 is no truncation. One JSON line per run (and factor).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from quality_digits import class_accuracy, train_spec

from ganfuse.data.base import uint8_to_float
from ganfuse.data.emoji import EmojiDataset, heldout_names
from ganfuse.metrics import fid_from_features, get_extractor, to_uint8
from ganfuse.metrics.prdc import density_coverage_from_features, precision_recall_from_features
from ganfuse.metrics.rprec import r_precision
from ganfuse.run import TextToImageRun, load_run

SAMPLES = 2000
PER_GROUP = 200
SEEN_NAMES = 500


class ExemplarJudge:
    """R-precision's image-text model built from the emoji extractor: an image's embedding is its
    normalised extractor feature, a name's is the feature of that emoji's real image."""

    def __init__(self, names: list[str], images: torch.Tensor):
        self.net = get_extractor("emoji")
        feats = F.normalize(self.net.features(images).float(), dim=1)
        self.by_name = {name: feats[i] for i, name in enumerate(names)}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net.features(to_uint8(images)).float(), dim=1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([self.by_name[t] for t in texts])


def _by_hash(names: list[str]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda t: hashlib.sha256(t.encode()).hexdigest())


def measure_t2i(run: TextToImageRun, every: EmojiDataset, real_feats: torch.Tensor, rprec_model: str | None) -> dict:
    judge = ExemplarJudge(list(every.names), every.images)
    held_out = set(heldout_names())
    seen = _by_hash([n for n in every.names if n not in held_out])[:SEEN_NAMES]
    held = _by_hash([n for n in every.names if n in held_out])
    result: dict = {}
    dual = None
    if rprec_model:
        from ganfuse.multimodal.zeroshot import load_dual_encoder

        dual = load_dual_encoder(rprec_model)
    for split, names in (("seen", seen), ("heldout", held)):
        fake = run.sample(1, seed=123, prompts=names)
        feats = judge.net.features(to_uint8(fake))
        if split == "seen":
            result["fd_seen"] = round(fid_from_features(real_feats, feats), 3)
        result[f"rprec_extractor_{split}"] = round(r_precision(fake, names, judge, distractor_pool=list(every.names)), 4)
        if dual is not None:  # and the real emoji of the same names: what the judge itself reaches
            real = uint8_to_float(every.images[[every.names.index(n) for n in names]])
            result[f"rprec_zeroshot_{split}"] = round(r_precision(fake, names, dual), 4)
            result[f"rprec_zeroshot_real_{split}"] = round(r_precision(real, names, dual), 4)
    return result


def measure(run_dir: Path, rprec_model: str | None = None, psi: float | None = None) -> dict:
    net = get_extractor("emoji")
    every = EmojiDataset("all", image_size=64)
    real_feats = net.features(every.images)
    run = load_run(run_dir)
    result: dict = {"step": run.step}
    if isinstance(run, TextToImageRun):
        return {**result, **measure_t2i(run, every, real_feats, rprec_model)}
    if run.num_classes:  # samples in the data's group shares (uniform labels would not be the data)
        counts = torch.bincount(every.labels["group"], minlength=run.num_classes)
        shares = (counts.double() / counts.sum() * SAMPLES).round().long().tolist()
        fake = torch.cat(
            [run.sample(n, seed=1000 + k, class_label=k, psi=psi) for k, n in enumerate(shares) if n]
        )
    else:
        fake = run.sample(SAMPLES, seed=123, psi=psi)
    feats = net.features(to_uint8(fake))
    precision, recall = precision_recall_from_features(real_feats, feats, k=3)
    density, coverage = density_coverage_from_features(real_feats, feats, k=5)
    result.update(fd=round(fid_from_features(real_feats, feats), 3), precision=round(precision, 4),
                  recall=round(recall, 4), density=round(density, 4), coverage=round(coverage, 4))
    if run.num_classes:
        result["group_accuracy"], result["group_accuracy_min"] = class_accuracy(run, net, PER_GROUP)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="PRESET[:key=value,...]")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", help="folder to keep the runs in (default: a temporary folder)")
    parser.add_argument("--measure", nargs="*", default=[], help="score these run folders, train nothing")
    parser.add_argument("--rprec-model", help="a zero-shot run on world=emoji for text-to-image R-precision")
    parser.add_argument("--psi", type=float, nargs="*", default=[None],
                        help="truncation factors to score --measure runs at (1: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run_dir in args.measure:
        for psi in args.psi:
            psi = None if psi == 1 else psi
            print(json.dumps({"dir": run_dir, "psi": psi or 1.0,
                              **measure(Path(run_dir), args.rprec_model, psi)}), flush=True)
    root = Path(args.keep or tempfile.mkdtemp(prefix="ganfuse-quality-emoji-"))
    for i, spec in enumerate(args.runs):
        out, seconds = train_spec(spec, root / str(i), args.minutes)
        print(json.dumps({"run": spec, "threads": args.threads, "train_seconds": seconds,
                          **measure(out, args.rprec_model), "dir": str(out)}), flush=True)


if __name__ == "__main__":
    main()
