"""Learning the dual encoder's common space from partly paired data, and adversarial alignment:
zero-shot retrieval R@1 for paired fractions and unpaired terms, all at the same number of steps.

    python benchmarks/alignment.py --world shapes --steps 400 --variants 100 1 1+pseudo 1+all
    python benchmarks/alignment.py --world scenes --steps 300 --variants 100 100+grl 100+alt
    python benchmarks/alignment.py --table                 # print the table of what was measured

A variant is a paired percentage and the terms added to it, joined by ``+``: ``1`` is 1% of the
training images paired and the rest unused; ``1+grl+cycle`` adds the adversarial term (gradient
reversal) and the cycle term on the unpaired rest. Terms: ``grl``, ``alt`` and ``conf`` (the
adversarial modality term by gradient reversal, by alternating updates against flipped labels, or
alternating towards the discriminator's indecision), ``cycle``, ``pseudo`` (pseudo-pairs of
unpaired images and caption descriptions), ``align`` (the alignment term of Wang and Isola on the
paired batch), ``ssl`` (SimCLR's loss between each image, unpaired ones included, and a shifted
copy of it) and ``all`` (``grl``, ``cycle`` and ``pseudo``). Their
weights are :data:`TERMS`. Each run is the world's ``zeroshot`` defaults (batch 128, 10,000
training images, 1,000 test and held-out images) with ``--steps`` steps and one thread, trained in
this process one after another; every result is appended to ``--results`` (JSON, one record per
world, variant, steps and seed; a rerun replaces its record) and printed as a row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.zeroshot import train_zeroshot

RESULTS = Path(__file__).parent / "results" / "alignment.json"
# Each term's overrides (weights chosen on short shapes runs; see benchmarks/alignment.md).
TERMS: dict[str, list[str]] = {
    "grl": ["adversarial_weight=0.1", "adversarial_mode=grl"],
    "alt": ["adversarial_weight=0.1", "adversarial_mode=alternating"],
    "conf": ["adversarial_weight=0.1", "adversarial_mode=confusion"],
    "cycle": ["cycle_weight=1"],
    "pseudo": ["pseudo_weight=1"],
    "align": ["align_weight=1"],
    "ssl": ["ssl_weight=1"],
}
TERMS["all"] = TERMS["grl"] + TERMS["cycle"] + TERMS["pseudo"]
# Retrieval R@1 both ways on the two evaluation splits, as the run's evaluation names them.
R1_KEYS = ("seen_i2t_r1", "seen_t2i_r1", "heldout_i2t_r1", "heldout_t2i_r1")


def variant_overrides(variant: str) -> list[str]:
    """``"1+grl+cycle"`` -> ``["paired_fraction=0.01", "adversarial_weight=...", ...]``."""
    percent, *terms = variant.split("+")
    overrides = [f"paired_fraction={float(percent) / 100}"]
    for term in terms:
        if term not in TERMS:
            choices = ", ".join(TERMS)
            raise SystemExit(f"unknown term {term!r} in {variant!r}; choose from {choices}")
        overrides += TERMS[term]
    return overrides


def run_variant(world: str, variant: str, steps: int, seed: int, extra: list[str]) -> dict:
    """Train one variant; its record: the variant, the metrics and ``alignment`` block of its
    ``metrics.json``, steps and seconds."""
    overrides = [f"world={world}", f"steps={steps}", f"seed={seed}", "threads=1", "precision=fp32"]
    overrides += variant_overrides(variant) + extra
    config = make_config("zeroshot", None, overrides)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train_zeroshot(config, Path(folder) / "run", progress=False)
        seconds = time.perf_counter() - start
        record = json.loads((Path(folder) / "run" / "metrics.json").read_text())
    return {
        "world": world,
        "variant": variant,
        "steps": result.steps,
        "seed": seed,
        "extra": extra,
        "train_seconds": result.train_seconds,
        "seconds": seconds,
        "test": record["test"],
        "alignment": record["alignment"],
    }


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_result(path: Path, record: dict) -> None:
    """Append ``record``, replacing an earlier one of the same world, variant, steps, seed."""
    key = ("world", "variant", "steps", "seed", "extra")
    rows = [r for r in load_results(path) if any(r[k] != record[k] for k in key)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows + [record], indent=1) + "\n")


def row(record: dict) -> str:
    """One markdown row: variant, R@1 both ways on both splits, modality accuracies, pseudo-pairs,
    seconds."""
    test, align = record["test"], record["alignment"]
    cells = [record["world"], record["variant"], str(record["steps"])]
    cells += [f"{test[k]:.3f}" for k in R1_KEYS]
    cells.append(f"{test['modality_probe_accuracy']:.2f}")
    cells.append(f"{align['modality_d_accuracy']:.2f}" if "modality_d_accuracy" in align else "")
    if "pseudo_pairs" in align:
        cells.append(f"{align['pseudo_pairs']} ({align['pseudo_pair_precision']:.2f})")
    else:
        cells.append("")
    cells.append(f"{record['train_seconds']:.0f}")
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| world | variant (% paired + terms) | steps | seen i2t R@1 | seen t2i R@1 | held-out i2t R@1 "
    "| held-out t2i R@1 | modality probe acc. | run's D acc. | pseudo-pairs (precision) | s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="shapes", choices=("shapes", "scenes"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (kept in the record)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print every stored record")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(HEADER)
    for variant in args.variants:
        record = run_variant(args.world, variant, args.steps, args.seed, args.extra)
        save_result(args.results, record)
        print(row(record), flush=True)
    if args.table:
        for record in load_results(args.results):
            print(row(record))


if __name__ == "__main__":
    main()
