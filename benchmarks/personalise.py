"""Personalising a text-to-image run: fine-tune on 10 images captioned "my logo", with and without
prior preservation, and print what was learnt and what was kept (benchmarks/personalise.md).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 ganfuse train shapes-t2i --out /tmp/p/src --max-minutes 2.8 \\
        --set train.precision=fp32 --set train.eval_every=0 --set train.checkpoint_every=100
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/personalise.py --source /tmp/p/src \\
        --out /tmp/p --steps 300

The folder: the first 10 emoji of the ``face-smiling`` subgroup at 32 px, captioned "my logo"
(Hugging Face imagefolder ``metadata.jsonl``). Both fine-tunes run the same steps from the same
source with the ``ganfuse finetune`` defaults, one with ``train.prior_fraction=0``.

Figures, each for the source ("before"), the fine-tune without and with prior preservation:

- ``logo_nn``: mean over 64 "my logo" samples of the distance to the nearest of the 10 folder
  images in the ``emoji`` extractor's features (lower = closer to the user's images), and
  ``logo_nn_px`` the same in pixels ([-1, 1], L2);
- the source prompts' attribute accuracy (colour, shape, size, position, all four) on 200 seen
  and 200 held-out ``shapes`` prompts (``ganfuse evaluate``'s text-to-image metric).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ganfuse.config import parse_override, set_value, validate
from ganfuse.data.base import to_uint8, uint8_to_float
from ganfuse.data.emoji import EmojiDataset
from ganfuse.metrics.extractors import get_extractor
from ganfuse.metrics.t2i import evaluate_t2i_run
from ganfuse.run import load_run
from ganfuse.train.finetune import finetune_config
from ganfuse.train.loop import Trainer

LOGO = "my logo"
OLD_PROMPT = "a large red circle in the center"
SUBGROUP = "face-smiling"


def write_logo_folder(out: Path, n: int = 10) -> torch.Tensor:
    """``n`` emoji of :data:`SUBGROUP` as PNGs captioned "my logo"; returns them uint8 (n, 3, 32, 32)."""
    out.mkdir(parents=True, exist_ok=True)
    data = EmojiDataset("all", 32)
    rows = (data.labels["subgroup"] == data.subgroup_names.index(SUBGROUP)).nonzero().flatten()[:n]
    lines = []
    for k, i in enumerate(rows.tolist()):
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(out / f"{k:02d}.png")
        lines.append(json.dumps({"file_name": f"{k:02d}.png", "text": LOGO}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return data.images[rows]


def finetune(source: Path, folder: Path, out: Path, steps: int, prior: float) -> float:
    """Fine-tune ``source`` on ``folder`` into ``out``; returns the training seconds."""
    config = finetune_config(source, str(folder), prior_fraction=prior)
    for item in (f"train.steps={steps}", "train.precision=fp32", "train.checkpoint_every=100000",
                 "train.sample_every=100000", "train.log_every=50"):
        set_value(config, *parse_override(item))
    start = time.perf_counter()
    Trainer(validate(config), out, progress=False).fit()
    return time.perf_counter() - start


def logo_distances(run, targets: torch.Tensor, extractor) -> dict[str, float]:
    """Mean nearest distance of 64 "my logo" samples to the folder images (features and pixels)."""
    samples = run.sample(64, seed=1, prompts=[LOGO])
    fake = extractor.features(to_uint8(samples)).float()
    real = extractor.features(targets).float()
    pixels = torch.cdist(samples.flatten(1), uint8_to_float(targets).flatten(1)).min(1).values
    return {"logo_nn": torch.cdist(fake, real).min(1).values.mean().item(),
            "logo_nn_px": pixels.mean().item()}


def save_grid(runs: dict[str, object], path: Path) -> None:
    """Rows: "my logo" for each run, then the old prompt for each run; 8 samples (same latents)."""
    rows, labels = [], []
    for prompt in (LOGO, OLD_PROMPT):
        for name, run in runs.items():
            rows.append(to_uint8(run.sample(8, seed=5, prompts=[prompt])))
            labels.append(f"{name}: {prompt}")
    cell, label_w, pad = 32 * 2, 250, 2
    grid = Image.new("RGB", (label_w + 8 * (cell + pad), len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (images, label) in enumerate(zip(rows, labels, strict=True)):
        y = r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            tile = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((cell, cell), Image.NEAREST)
            grid.paste(tile, (label_w + c * (cell + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a shapes-t2i run")
    parser.add_argument("--out", type=Path, required=True, help="folder for the data and fine-tunes")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--num", type=int, default=200, help="shapes prompts per set")
    parser.add_argument("--priors", type=float, nargs="+", default=[0.5],
                        help="train.prior_fraction of the fine-tunes with prior preservation")
    parser.add_argument("--grid", type=Path, default=Path("docs/images/personalise-t2i.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    targets = write_logo_folder(args.out / "logo")
    seconds = {}
    runs = {"before": load_run(args.source, device="cpu")}
    for prior in [0.0, *args.priors]:
        out = args.out / f"ft-prior-{prior:g}"
        if not (out / "checkpoints").is_dir():  # a fine-tune already made is reused
            seconds[f"prior {prior:g}"] = finetune(args.source, args.out / "logo", out, args.steps, prior)
        runs["after" if prior == 0 else f"after+prior {prior:g}"] = load_run(out, device="cpu")
    extractor = get_extractor("emoji")
    results = {}
    for name, run in runs.items():
        row = logo_distances(run, targets, extractor)
        for split, scores in evaluate_t2i_run(run, num=args.num, seed=0).items():
            row.update({f"{split}_{k}": v for k, v in scores.items() if k != "fd"})
        results[name] = row
    save_grid(runs, args.grid)
    print(f"steps {args.steps}; fine-tune seconds (1 thread): "
          + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    keys = ["logo_nn", "logo_nn_px", "seen_all", "seen_color", "seen_shape", "seen_size",
            "seen_position", "heldout_all"]
    print(f"{'run':<18}" + "".join(f"{k:>14}" for k in keys))
    for name, row in results.items():
        print(f"{name:<18}" + "".join(f"{row[k]:14.3f}" for k in keys))
    (args.out / "personalise.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
