"""Training and loading of fusion models (tasks ``matching``, ``vqa``, ``multitask``, and the
single-attribute tasks): build the task and the model from the config, fit, score, save.

    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.train import train_fusion
    result = train_fusion(make_config("matching", "film", ["steps=500"]), out="runs/match-film")
    result.test_metrics["match_accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganfuse.data.base import uint8_to_float
from ganfuse.data.sampler import EpochBatchSampler
from ganfuse.errors import CheckpointError, ConfigError
from ganfuse.models.fusion import ModalityFeatures
from ganfuse.multimodal.checkpoint import (
    RunRecord,
    count_parameters,
    load_weights,
    prepare_run_folder,
    read_run,
    save_run,
    saved_text_encoder,
)
from ganfuse.multimodal.config import (
    FUSION_TASKS,
    PAIR_WORLDS,
    TEST_SPLITS,
    VAL_SPLITS,
    FuseConfig,
)
from ganfuse.multimodal.folder_matching import (
    PairMatchingTask,
    pairs_vocabulary,
    score_pair_matching,
)
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import FusionModel, build_fusion_model
from ganfuse.multimodal.object_targets import ObjectProbe, cell_targets
from ganfuse.multimodal.scene_tasks import (
    SceneMatchingTask,
    SceneTask,
    SceneVQATask,
    accuracy_by_kind,
    build_scene_task,
    scene_vocabulary,
)
from ganfuse.multimodal.splits import config_split, labelled_indices, scenes_split, shapes_split
from ganfuse.multimodal.tasks import (
    PairTask,
    VQATask,
    batch_inputs,
    build_task,
    eval_batches,
    evaluate_task,
)
from ganfuse.multimodal.vqa import question_words
from ganfuse.multimodal.weighting import LossWeighting
from ganfuse.multimodal.zeroshot import load_dual_encoder
from ganfuse.text.encoders import SmallTextEncoder, shapes_vocabulary

# Evaluation draws its negatives and questions from these seeds, so every model of a benchmark is
# scored on the very same pairs.
VAL_SEED, TEST_SEED = 1001, 1002


@dataclass
class FusionResult:
    model: FusionModel
    task: PairTask | VQATask | SceneTask | PairMatchingTask
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    train_seconds: float
    steps: int
    params: int
    run_dir: Path | None


def fusion_task(config: FuseConfig) -> PairTask | VQATask | SceneTask | PairMatchingTask:
    """The task object of a fusion run's ``task`` on its world."""
    if config.world in PAIR_WORLDS:  # matching is the one fusion task on real pairs
        return PairMatchingTask(config.hard_negative_fraction)
    if config.world == "scenes":
        return build_scene_task(
            config.task,
            config.questions_per_image,
            config.replacement_negatives,
            config.question_sampling,
            config.counterfactuals,
            config.reversal_steps,
            config.reversal_loss,
        )
    return build_task(config.task, config.questions_per_image)


def task_eval_batches(
    task: PairTask | VQATask | SceneTask | PairMatchingTask, data, seed: int
) -> list:
    """The fixed scoring batches of ``task`` on ``data`` for ``seed``."""
    if isinstance(task, PairMatchingTask):
        return task.eval_batches(data, seed)
    return eval_batches(task, data, seed)


def score_task(model: torch.nn.Module, task: PairTask | VQATask | SceneTask | PairMatchingTask,
               batches: list, image_features: ModalityFeatures | None = None) -> dict[str, float]:
    """Test scores of a fusion model: head accuracies (per question family on ``scenes``; random
    and hard negatives on real pairs)."""
    if isinstance(task, PairMatchingTask):
        return score_pair_matching(model, batches, image_features)
    if isinstance(task, SceneVQATask | SceneMatchingTask):
        head = next(iter(task.task_sizes))
        pairwise = isinstance(task, SceneMatchingTask)
        return accuracy_by_kind(model, head, batches, image_features, pairwise=pairwise)
    return evaluate_task(model, task, batches, image_features)


def task_vocabulary(task: str) -> list[str]:
    """Words of the small text encoder: the caption words, plus the question words for VQA."""
    words = shapes_vocabulary()
    if task == "vqa":
        words = sorted(set(words) | set(question_words()))
    return words


def init_image_encoder(image_encoder: torch.nn.Module, run_dir: str) -> None:
    """Copy the image encoder of a ``zeroshot`` run into ``image_encoder``."""
    dual = load_dual_encoder(Path(run_dir))
    try:
        image_encoder.load_state_dict(dual.image_encoder.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(
            f"the image encoder of {run_dir} does not fit this config ({exc}); "
            "use the same image_dim, image_widths and image_size"
        ) from None


@torch.no_grad()
def init_text_encoder(text_encoder: torch.nn.Module, run_dir: str) -> None:
    """Copy the small text encoder of a ``zeroshot`` run into ``text_encoder``, word by word:
    words of both vocabularies keep their trained embedding, new words (a VQA question's "what",
    "row") start from their fresh one; the GRU and the output projection are copied whole."""
    source = load_dual_encoder(Path(run_dir)).text_encoder
    if not isinstance(source, SmallTextEncoder) or not isinstance(text_encoder, SmallTextEncoder):
        raise CheckpointError("text_encoder_init needs the small text encoder on both sides")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("embedding.")}
    try:
        text_encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the text encoder of {run_dir} does not fit this config ({exc}); use the same "
            "text_embed_dim, text_hidden_dim and text_dim"
        ) from None
    for word, row in text_encoder.tokenizer.index.items():
        if word in source.tokenizer.index:
            text_encoder.embedding.weight[row] = source.embedding.weight[
                source.tokenizer.index[word]
            ]


@torch.no_grad()
def image_features(encoder: torch.nn.Module, data, batch_size: int = 500) -> ModalityFeatures:
    """A frozen image encoder's features of every image of ``data``, computed once."""
    encoder.eval()
    parts = [
        encoder(uint8_to_float(data.images[i : i + batch_size]))
        for i in range(0, len(data), batch_size)
    ]
    return ModalityFeatures(
        pooled=torch.cat([p.pooled for p in parts]),
        tokens=torch.cat([p.tokens for p in parts]),
        grid=parts[0].grid,
    )


@lru_cache(maxsize=8)
def _pretrained_features(
    run_dir: str, world: str, split: str, num: int, seed: int, size: int
) -> ModalityFeatures:
    # A benchmark trains many fusion models on one frozen encoder: its features are computed once.
    encoder = load_dual_encoder(Path(run_dir)).image_encoder
    make = scenes_split if world == "scenes" else shapes_split
    return image_features(encoder, make(split, num, seed, size))


def frozen_image_features(
    config: FuseConfig, split: str, encoder: torch.nn.Module
) -> ModalityFeatures:
    """Features of a split under the frozen ``encoder`` (from ``config.image_encoder_init``, whose
    features are cached across runs, or as built)."""
    data = config_split(config, split)
    if config.image_encoder_init and config.world not in PAIR_WORLDS:
        return _pretrained_features(
            str(Path(config.image_encoder_init).resolve()),
            config.world,
            split,
            len(data),
            config.data_seed,
            config.image_size,
        )
    return image_features(encoder, data)


@uses_config_threads
def train_fusion(
    config: FuseConfig,
    out: Path | str | None = None,
    progress: bool = True,
    validate: bool = True,
) -> FusionResult:
    """Train ``config.fusion`` on ``config.task``, score it on val (unless ``validate`` is off)
    and test, save it to ``out``.

    ``out`` is checked before any work: a folder that already holds a run (of any kind) or is not
    writable is a :class:`~ganfuse.errors.UserError`.

    With ``freeze_image_encoder`` the image features of every split are computed once and the
    steps train only the text encoder, the fusion and the heads.
    """
    if config.task not in FUSION_TASKS:
        raise ValueError(f"{config.task!r} is not a fusion task")
    if config.freeze_image_encoder and (config.object_weight or config.counterfactuals):
        raise ConfigError(  # a config changed after make_config: its check did not run
            "object_weight and counterfactuals need a trained image encoder; set them to 0 "
            "with freeze_image_encoder"
        )
    if out is not None:
        prepare_run_folder(Path(out), "fusion")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    task = fusion_task(config)
    # The splits by role: ``config.train_split`` and the splits it is validated and tested on.
    # Real pairs have no validation split: only train and held out.
    names = {
        "train": config.train_split,
        "val": None if not validate or config.world in PAIR_WORLDS else VAL_SPLITS[config.train_split],
        "test": TEST_SPLITS[config.train_split],
    }
    train, test = config_split(config, names["train"]), config_split(config, names["test"])
    if config.world in PAIR_WORLDS:
        vocab = pairs_vocabulary(train)
    elif config.world == "scenes":
        vocab = scene_vocabulary(task, train)
    else:
        vocab = task_vocabulary(config.task)
    model = build_fusion_model(config, task.task_sizes, vocab=vocab)
    image_encoder = model.encoders["image"]
    if config.image_encoder_init:
        init_image_encoder(image_encoder, config.image_encoder_init)
    if config.text_encoder_init:
        init_text_encoder(model.encoders["text"], config.text_encoder_init)
    features: dict[str, ModalityFeatures | None] = {"train": None, "val": None, "test": None}
    if config.freeze_image_encoder:
        image_encoder.requires_grad_(False)
        for role, split in names.items():
            if split is not None:
                features[role] = frozen_image_features(config, split, image_encoder)
    weighting = LossWeighting(list(task.task_sizes), config.weighting)
    labelled = labelled_indices(len(train), config.label_fraction, config.data_seed)
    sampler = EpochBatchSampler(len(labelled), config.batch_size, seed=config.seed)

    # dense object supervision of the image encoder (training only), from the batch's graphs
    probe = ObjectProbe(image_encoder.token_dim) if config.object_weight else None

    def compute_loss(step: int) -> torch.Tensor:
        # a task may train on batches other than those it is scored on (train_batch)
        indices = labelled[sampler.next_indices()]
        if hasattr(task, "train_batch"):
            batch = task.train_batch(train, indices, rng, step)
        else:
            batch = task.make_batch(train, indices, rng)
        encoded = model.encode(batch_inputs(batch, features["train"]))
        logits = model.fuse(encoded, batch.pairs)
        losses = {
            h: F.cross_entropy(logits[h], batch.targets[h], reduction="none")
            for h in task.task_sizes
        }
        if hasattr(task, "observe"):  # a task that adapts its draws to the per-example losses
            task.observe(batch, losses)
        loss = weighting({h: loss.mean() for h, loss in losses.items()})
        if probe is not None:
            targets = cell_targets(batch.graphs, image_encoder.grid)
            loss = loss + config.object_weight * probe.loss(encoded["image"].tokens, targets)
        return loss

    model.train()
    if config.freeze_image_encoder:
        image_encoder.eval()  # frozen statistics too
    params = list(model.parameters()) + list(weighting.parameters())
    if probe is not None:
        params += list(probe.parameters())
    stats = optimise(params, compute_loss, config, f"{config.task}/{config.fusion}", progress, out)
    val_metrics: dict[str, float] = {}
    if names["val"] is not None:
        val = config_split(config, names["val"])
        val_batches = task_eval_batches(task, val, VAL_SEED)
        val_metrics = score_task(model, task, val_batches, features["val"])
    test_batches = task_eval_batches(task, test, TEST_SEED)
    test_metrics = score_task(model, task, test_batches, features["test"])
    result = FusionResult(
        model=model,
        task=task,
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        train_seconds=stats.seconds,
        steps=stats.steps,
        params=count_parameters(model),
        run_dir=None,
    )
    if out is not None:
        metrics = {
            **stats.record(result.params, val=val_metrics, test=test_metrics),
            "loss_weights": weighting.weights(),
        }
        if getattr(task, "reversal_steps", 0):  # scenes-matching's curriculum: when it ended
            metrics["reversal_phase_steps"] = (
                task.reversal_ended if task.reversal_ended is not None else stats.steps
            )
        meta = {
            "task_sizes": task.task_sizes,
            "text_encoder": model.encoders["text"].config(),
        }
        result.run_dir = save_run(
            Path(out), "fusion", model, config, meta, metrics, step=stats.steps
        )
    return result


def load_fusion_run(run_dir: Path | str) -> tuple[FusionModel, FuseConfig, dict]:
    """The trained model of a fusion run (in eval mode), its config and its manifest."""
    record = read_run(Path(run_dir), kind="fusion")
    return fusion_model_of(record), record.config, record.meta


def fusion_model_of(record: RunRecord) -> FusionModel:
    """The trained model of an already read fusion run's checkpoint, in eval mode."""
    model = build_fusion_model(
        record.config, record.meta["task_sizes"], text_encoder=saved_text_encoder(record)
    )
    load_weights(model, record)
    return model.eval()
