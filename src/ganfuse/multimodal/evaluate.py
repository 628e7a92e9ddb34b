"""Scoring a saved multimodal run again on its test split: ``ganfuse fuse evaluate RUN``."""

from __future__ import annotations

from pathlib import Path

from ganfuse.multimodal.captioning import evaluate_captioner, load_captioner
from ganfuse.multimodal.checkpoint import read_run
from ganfuse.multimodal.splits import config_split
from ganfuse.multimodal.tasks import eval_batches
from ganfuse.multimodal.train import TEST_SEED, fusion_task, load_fusion_run, score_task
from ganfuse.multimodal.zeroshot import evaluate_zeroshot, load_dual_encoder


def evaluate_run(run_dir: Path | str) -> dict[str, float]:
    """Test metrics of a fusion, zeroshot or caption run, recomputed from its weights; the same
    numbers its training reported (same splits, same evaluation seeds)."""
    record = read_run(Path(run_dir))
    config = record.config
    if record.kind == "fusion":
        model, _, _ = load_fusion_run(record.path)
        task = fusion_task(config)
        return score_task(model, task, eval_batches(task, config_split(config, "test"), TEST_SEED))
    if record.kind == "zeroshot":
        model = load_dual_encoder(record.path)
        return evaluate_zeroshot(
            model, config_split(config, "test"), config_split(config, "heldout")
        )
    return evaluate_captioner(load_captioner(record.path), config_split(config, "test"))
