"""The config of a multimodal run: one flat dataclass, per-task defaults, ``key=value`` overrides.

A run is ``task`` x ``fusion`` plus sizes and training settings. Fields that do not apply to a
task are ignored by it (the dual encoder of ``zeroshot`` has no fusion, for instance). The values
here are the single source of the defaults; :data:`TASK_DEFAULTS` adjusts a few per task, and
the CLI's ``--set key=value`` goes last. ``fusion_options.NAME=VALUE`` passes an option to the
fusion class (``fusion_options.rank=4``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganfuse.config import PRECISIONS as SHARED_PRECISIONS
from ganfuse.config import coerce_value
from ganfuse.config import parse_override as config_parse_override
from ganfuse.data.images import parse_colour
from ganfuse.data.scenes import CAPTION_KINDS
from ganfuse.errors import ConfigError
from ganfuse.fileio import atomic_write_text
from ganfuse.models.fusion import FUSION_LEVELS, CrossAttentionFusion
from ganfuse.text.encoders import SMALL_POOLINGS

FUSION_TASKS: tuple[str, ...] = (
    "matching",
    "vqa",
    "multitask",
    "color",
    "shape",
    "size",
    "position",
    "scenes-vqa",
    "scenes-matching",
)
# Tasks on the ``scenes`` world (several objects: relational questions, binding-aware matching);
# every other task is on ``shapes``.
SCENE_TASKS: tuple[str, ...] = ("scenes-vqa", "scenes-matching")
WORLDS: tuple[str, ...] = ("shapes", "scenes", "folder", "emoji")
# Worlds of real image-caption pairs (multimodal.folder_world): the user's folder (``data=PATH``)
# and the shipped emoji. No generator and no judge, so only the tasks that learn from pairs alone
# (matching with negatives from other images' captions: multimodal.folder_matching).
PAIR_WORLDS: tuple[str, ...] = ("folder", "emoji")
PAIR_WORLD_TASKS: tuple[str, ...] = ("matching", "zeroshot", "caption")
# Other names a user may give a task.
TASK_ALIASES: dict[str, str] = {"match": "matching"}
# The splits a fusion run may train on, each with the split it is tested on (and validated on:
# ``None`` where there is none). ``cogent-a`` is CLEVR-CoGenT's condition A (``scenes`` only); its
# transfer test, condition B, is ``ganfuse fuse evaluate RUN --split cogent-b``.
TEST_SPLITS: dict[str, str] = {"train": "test", "cogent-a": "cogent-a-test"}
VAL_SPLITS: dict[str, str | None] = {"train": "val", "cogent-a": None}
# Tasks that run on either world (``world=...``).
WORLD_TASKS: tuple[str, ...] = ("caption", "zeroshot")
CAPTION_ORDERS: tuple[str, ...] = ("reading", "random")
OTHER_TASKS: tuple[str, ...] = ("zeroshot", "caption")
TASKS: tuple[str, ...] = FUSION_TASKS + OTHER_TASKS
TEXT_ENCODERS: tuple[str, ...] = ("small", "minilm")
# How scenes-vqa draws an image's training questions among its families (multimodal.scene_tasks).
QUESTION_SAMPLINGS: tuple[str, ...] = ("uniform", "loss")
WEIGHTINGS: tuple[str, ...] = ("fixed", "uncertainty")
# How the dual encoder's encoders fool the modality discriminator (multimodal.alignment).
ADVERSARIAL_MODES: tuple[str, ...] = ("grl", "alternating", "confusion")
# The multimodal runs train on the CPU, where fp16 autocast does not pay.
PRECISIONS: tuple[str, ...] = tuple(p for p in SHARED_PRECISIONS if p != "fp16")
MAX_THREADS = 256  # far above any CPU's cores; torch crashes on absurd counts (100000)
MAX_WIDTH = (
    4096  # of any layer: far above these models' needs; a typo of 10**9 would exhaust memory
)


@dataclass
class FuseConfig:
    """Everything that defines a multimodal run. Sizes are in samples, times in minutes."""

    task: str = "matching"
    fusion: str = "cross-attention"
    text_encoder: str = "small"  # "small" (trained from scratch) or "minilm" (pretrained, frozen)
    # small text encoder sizes
    text_embed_dim: int = 64
    text_hidden_dim: int = 64
    text_dim: int = 128
    # the small encoder's sentence vector: "mean" of the GRU's outputs, or "mean+final" (with its
    # two final states: word order, for relation captions)
    text_pooling: str = "mean"
    # image encoder, fusion and heads
    image_dim: int = 128
    image_widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    image_factorized: bool = True  # brightness channel + global stem pooling (see ImageEncoder)
    fused_dim: int = 256
    head_hidden: int = 128
    fusion_options: dict[str, Any] = field(default_factory=dict)
    # multi-task loss weighting: "fixed" (all 1) or "uncertainty" (learned, Kendall et al. 2018)
    weighting: str = "fixed"
    # zero-shot dual encoder
    embed_dim: int = 128
    init_temperature: float = 0.07
    # scenes only: each caption's binding negative (same words, other binding) joins the batch
    hard_negatives: bool = True
    # folder/emoji matching: share of training negatives that are hard (another image's caption
    # sharing a content word with the image's own, in its emoji subgroup where there is one)
    # where the image has one; the rest are any other image's caption. Half: random negatives
    # alone teach little about fine differences ("red apple" / "green apple"), hard ones alone
    # never show the easy contrast the random test asks about.
    hard_negative_fraction: float = 0.5
    # scenes only: weight of a two-way loss, true caption against its binding negative, added to
    # InfoNCE (0: the negatives only join its denominators; 1 lifted binding-swap matching from
    # 53% to 68% in 750 steps, measured)
    binding_weight: float = 1.0
    # scenes-matching, and zeroshot on scenes with hard_negatives: the share of training images
    # (captions) whose negative is a one-word replacement (another colour, shape or size for one
    # object, false for the image) instead of a binding swap: a curriculum out of the binding
    # plateau (measured in benchmarks/scenes.md); scoring is on binding swaps alone
    replacement_negatives: float = 0.0
    # scenes fusion tasks: weight of a dense auxiliary loss that reads, from each cell of the image
    # encoder's grid, the colour, shape and size of the object centred there (scene graphs; see
    # multimodal.object_targets); 0: off
    object_weight: float = 0.0
    # scenes-matching: the share of training pairs that also bring their counterfactual image
    # (edited so that the negative is true and the caption false, data.scene_edits), labels
    # swapped: no wording is then true more often than its partner, so the text alone cannot
    # fit the labels; 0: off
    counterfactuals: float = 0.0
    # scenes-matching: a curriculum before the full task, relation-reversal pairs alone (with
    # their counterfactual images) for at most reversal_steps steps, ended as soon as their
    # running training loss (about the last 50 steps) falls below reversal_loss (0: never early);
    # reversal_steps 0: off
    reversal_steps: int = 0
    reversal_loss: float = 0.0
    # learning the common space from partly paired data (multimodal.alignment,
    # benchmarks/alignment.md): the share of training images that keep their captions as pairs;
    # of the others, half are used as images without captions, half as captions without images
    paired_fraction: float = 1.0
    # adversarial alignment (ACMR): the encoders fool a modality discriminator on the shared
    # space; the weight is the gradient reversal's lambda (grl: one optimiser) or the weight of
    # the encoders' loss against flipped labels (alternating) or towards the discriminator's
    # indecision (confusion), whose discriminator steps with its own Adam at adversarial_lr; 0: off
    adversarial_weight: float = 0.0
    adversarial_mode: str = "grl"
    adversarial_lr: float = 1e-3
    adversarial_d_steps: int = 1  # the discriminator's steps per step (alternating, confusion)
    # weight of the alignment term of Wang and Isola (2020) on the paired batch: the mean squared
    # distance between an image's embedding and its caption's, which InfoNCE at a low temperature
    # leaves open (the modality gap a probe reads); 0: off
    align_weight: float = 0.0
    # cycle consistency across modalities in the shared space (image -> nearest text -> image,
    # text -> image -> text); 0: off
    cycle_weight: float = 0.0
    # InfoNCE on pseudo-pairs: an unpaired image and the description (captions that parse alike)
    # it is nearest to, if it is among that description's pseudo_neighbours nearest images and
    # their cosine is at least pseudo_threshold; mined again every pseudo_every steps; 0: off
    pseudo_weight: float = 0.0
    pseudo_threshold: float = 0.5
    pseudo_neighbours: int = 5
    pseudo_every: int = 50
    # self-supervised views (SimCLR's NT-Xent, Chen et al. 2020) on every image of the step,
    # unpaired ones included: each image's embedding against that of a copy moved by up to
    # ssl_shift pixels, at temperature ssl_temperature; needs no caption; 0: off
    ssl_weight: float = 0.0
    ssl_shift: int = 4
    ssl_temperature: float = 0.1
    # task=caption with paired_fraction < 1 (multimodal.semi_captioning): the decoder learns
    # unpaired captions with a learned "no image" input (lm_weight); cycle_weight and
    # pseudo_weight there are caption -> image -> caption and cycle-filtered pseudo-captions
    # through the frozen text-to-image run cycle_run (trained on the paired share only); 0: off
    lm_weight: float = 0.0
    cycle_run: str = ""
    # caption decoder
    decoder_hidden: int = 256
    decoder_embed: int = 64
    # the decoder attends over the image's patch tokens; None: on for scenes, off for shapes
    caption_attention: bool | None = None
    # scenes captions: the kinds trained (each with its own start token; the run is scored on
    # each, headline on "list"; list alone learns the full description fastest, measured in
    # ganfuse.multimodal.scene_captioning) and the order a list caption names its objects in
    caption_kinds: list[str] = field(default_factory=lambda: ["list"])
    caption_order: str = "reading"  # "reading" (top to bottom, left to right) or "random"
    # label efficiency: share of training labels used, and an image encoder to start from
    label_fraction: float = 1.0
    image_encoder_init: str | None = None  # a zeroshot run folder; None: from scratch
    text_encoder_init: str | None = (
        None  # a zeroshot run whose small text encoder starts this one's
    )
    freeze_image_encoder: bool = False
    # data
    world: str = "shapes"  # one of WORLDS; the scenes tasks set it to scenes
    # world=folder: the captioned folder (Hugging Face imagefolder metadata.jsonl/.csv, or
    # captions.jsonl/.csv; ``data=PATH`` sets it) and how it is read, as data.* of a GAN run
    data_path: str = ""
    caption_column: str = "text"
    label_column: str = ""
    background: str = "white"
    fit: str = "crop"
    # world=folder: share of images held out (by a hash of the file name) for scoring
    holdout_fraction: float = 0.1
    data_seed: int = 0  # the splits' seed (``seed`` drives the model and the batches)
    train_split: str = "train"  # a key of TEST_SPLITS; "cogent-a" for the scenes tasks only
    image_size: int = 32
    train_size: int = 10000
    eval_size: int = 1000  # images in each of val and test (and heldout for zeroshot)
    questions_per_image: int = 2
    # scenes-vqa: how an image's training questions are drawn among its families: "uniform", or
    # "loss" (half uniform, half in proportion to each family's running training loss, so solved
    # families give their steps to unsolved ones; measured in benchmarks/scenes.md)
    question_sampling: str = "uniform"
    # optimisation
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    max_minutes: float = 0.0  # wall-clock limit of the training loop; 0: none
    seed: int = 0
    # torch CPU threads; 0: torch's default. One thread by default: on a CPU shared with other
    # jobs, two OpenMP threads ran these small models 3x slower than one (measured).
    threads: int = 1
    # fp32 | bf16 | auto (bf16 where the CPU has native bf16, else fp32), resolved once when a run
    # starts; a saved run records the resolved one. bf16 is many times slower without AVX-512
    # BF16/AMX, so the default stays fp32.
    precision: str = "fp32"
    log_every: int = 10  # steps between the lines of RUN/metrics.jsonl

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fusion options that are switches or modes, where 0 means off (FiLM's coordinate maps, read-out
# and context); every other option is a size, at least 1.
SWITCH_OPTIONS: frozenset[str] = frozenset({"coords", "pool", "context", "keypoints", "attend"})
# Widths of layers: each in [1, MAX_WIDTH].
SIZE_KEYS: tuple[str, ...] = tuple(
    "text_embed_dim text_hidden_dim text_dim image_dim fused_dim head_hidden embed_dim "
    "decoder_hidden decoder_embed".split()
)

# Applied before the user's overrides when a run of that task is created.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "zeroshot": {"fusion": "none", "batch_size": 128, "lr": 1e-3, "steps": 2000},
    "caption": {"fusion": "none", "steps": 1500, "lr": 2e-3},
    # loss-driven question families: compare 89.4% -> 91.0% in 20 minutes (benchmarks/scenes.md)
    "scenes-vqa": {"world": "scenes", "question_sampling": "loss"},
    # replacement negatives: 60.0% -> 67.4% at 2,500 equal steps; object supervision and
    # counterfactual images (with FiLM's word attention): 65.9% -> 77.4%; relation reversals
    # alone until they are learned (999 and 1,507 steps at seeds 0 and 1): reversals 50% -> 97%,
    # all pairs 84.1% -> 96.1-96.2% in 20 minutes (benchmarks/scenes.md)
    "scenes-matching": {
        "world": "scenes",
        "replacement_negatives": 0.5,
        "object_weight": 1.0,
        "counterfactuals": 1.0,
        "reversal_steps": 3000,
        "reversal_loss": 0.2,
    },
}
# What a frozen image encoder cannot use: the keys set to 0 when freeze_image_encoder is on and
# the overrides did not set them (the object probe trains the image encoder; a counterfactual
# image has no precomputed features).
IMAGE_TRAINING_KEYS: tuple[str, ...] = ("object_weight", "counterfactuals")
# Per world and task, applied after the task's defaults and the overrides to every key the
# overrides did not set. ``scenes`` has up to four objects of 6-9 pixels in a 32-pixel image: an
# 8x8 patch grid (two halvings instead of three) keeps them apart, for the fusion tasks and for
# the dual encoder whose image encoder a scenes benchmark shares. (The captioner keeps the deeper
# encoder's 4x4 grid: it scored higher with it, benchmarks/scenes.md.)
# The dual encoder on scenes also trains on counterfactual images: binding 83.1% -> 93.0% (relation
# reversals 55.9% -> 86.9%) in 20 minutes (benchmarks/scenes.md). Off without hard negatives or
# binding loss, which it turns around, unless the overrides ask for it.
WORLD_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("scenes", "scenes-vqa"): {"image_widths": [32, 64]},
    ("scenes", "scenes-matching"): {"image_widths": [32, 64]},
    ("scenes", "zeroshot"): {"image_widths": [32, 64], "counterfactuals": 1.0},
}
# Per world and fusion, ``fusion_options`` the overrides did not set. FiLM on ``scenes``:
# coordinate maps (relations), a max + mean read-out (existence and counts), three blocks
# (measured in benchmarks/scenes.md).
FUSION_DEFAULTS: dict[tuple[str, str], dict[str, int]] = {
    ("scenes", "film"): {"coords": 1, "pool": 2, "blocks": 3},
}
# Per task and fusion, the same, after FUSION_DEFAULTS: FiLM's blocks attend over the caption's
# words on scenes-matching (+3.5 points alone, +8 with object supervision, benchmarks/scenes.md).
TASK_FUSION_DEFAULTS: dict[tuple[str, str], dict[str, int]] = {
    ("scenes-matching", "film"): {"attend": 1},
}


# Short names a user may write: ``data=PATH`` is ``data_path`` (a checkpoint's manifest keeps
# ``data`` for the GAN runs' section of that name).
KEY_ALIASES: dict[str, str] = {"data": "data_path"}


def set_value(config: FuseConfig, key: str, value: Any) -> None:
    """Set ``key`` (a field name, or ``fusion_options.NAME``) to ``value``, type-checked by the
    coercer every config shares."""
    key = KEY_ALIASES.get(key, key)
    if key.startswith("fusion_options."):
        config.fusion_options[key.split(".", 1)[1]] = coerce_value(key, value, int)
        return
    hints = typing.get_type_hints(FuseConfig)
    if key not in hints:
        raise ConfigError(
            f"unknown multimodal config key {key!r}; valid keys: {', '.join(hints)} "
            "and fusion_options.NAME"
        )
    if key == "fusion_options":
        if not isinstance(value, dict):
            raise ConfigError(
                f"fusion_options must be a mapping of option names to integers, got {value!r}"
            )
        config.fusion_options = {}
        for name, option in value.items():
            set_value(config, f"fusion_options.{name}", option)
        return
    setattr(config, key, coerce_value(key, value, hints[key]))


def parse_override(item: str) -> tuple[str, Any]:
    """``"lr=1e-3"`` -> ``("lr", 0.001)``: :func:`ganfuse.config.parse_override`, with a
    multimodal example in its error."""
    return config_parse_override(item, example="steps=500")


def validate(config: FuseConfig) -> FuseConfig:
    """Raise :class:`ConfigError` naming the first bad field."""

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key} {message} (got {getattr(config, key)!r})")

    check(config.task in TASKS, "task", f"must be one of {', '.join(TASKS)}")
    check(config.world in WORLDS, "world", f"must be one of {', '.join(WORLDS)}")
    if config.world in PAIR_WORLDS:
        check(
            config.task in PAIR_WORLD_TASKS,
            "task",
            f"does not run on world={config.world}; on image-caption pairs use task "
            f"{', '.join(PAIR_WORLD_TASKS[:-1])} or {PAIR_WORLD_TASKS[-1]}",
        )
        for key in ("adversarial_weight", "cycle_weight", "pseudo_weight", "ssl_weight"):
            check(getattr(config, key) == 0, key, f"must be 0 on world={config.world}")
        check(
            config.paired_fraction == 1.0,
            "paired_fraction",
            f"must be 1 on world={config.world} (every image keeps its captions)",
        )
    check(
        bool(config.data_path.strip()) == (config.world == "folder"),
        "data_path",
        "must name the captioned folder with world=folder (data=PATH), and only then",
    )
    check(config.fit in ("crop", "pad"), "fit", "must be crop or pad")
    try:
        parse_colour(config.background)
    except ValueError:
        check(False, "background", "must be a colour name, 'rgb(r,g,b)' or '#rrggbb'")
    check(0.0 < config.holdout_fraction < 1.0, "holdout_fraction", "must be in (0, 1)")
    if config.task not in WORLD_TASKS and config.world not in PAIR_WORLDS:
        world = "scenes" if config.task in SCENE_TASKS else "shapes"
        check(config.world == world, "world", f"must be {world} for task {config.task}")
    kinds = config.caption_kinds
    check(
        bool(kinds) and set(kinds) <= set(CAPTION_KINDS) and len(set(kinds)) == len(kinds),
        "caption_kinds",
        f"must list distinct kinds among {', '.join(CAPTION_KINDS)}",
    )
    check(config.caption_order in CAPTION_ORDERS, "caption_order", "must be reading or random")
    check(
        config.train_split in TEST_SPLITS,
        "train_split",
        f"must be one of {', '.join(TEST_SPLITS)}",
    )
    if config.train_split != "train":
        check(
            config.task in SCENE_TASKS,
            "train_split",
            f"other than train applies to the scenes fusion tasks only ({', '.join(SCENE_TASKS)})",
        )
    if config.task in FUSION_TASKS:
        check(
            config.fusion in FUSION_LEVELS, "fusion", f"must be one of {', '.join(FUSION_LEVELS)}"
        )
    check(
        config.text_encoder in TEXT_ENCODERS,
        "text_encoder",
        f"must be one of {', '.join(TEXT_ENCODERS)}",
    )
    check(
        config.text_pooling in SMALL_POOLINGS,
        "text_pooling",
        f"must be one of {', '.join(SMALL_POOLINGS)} (the small text encoder's)",
    )
    check(config.weighting in WEIGHTINGS, "weighting", f"must be one of {', '.join(WEIGHTINGS)}")
    check(config.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
    check(config.image_size in (32, 64), "image_size", "must be 32 or 64")
    check(0.0 < config.label_fraction <= 1.0, "label_fraction", "must be in (0, 1]")
    check(config.init_temperature > 0, "init_temperature", "must be positive")
    check(
        0.0 <= config.hard_negative_fraction <= 1.0, "hard_negative_fraction", "must be in [0, 1]"
    )
    check(config.binding_weight >= 0, "binding_weight", "must not be negative")
    check(config.object_weight >= 0, "object_weight", "must not be negative")
    check(0.0 <= config.counterfactuals <= 1.0, "counterfactuals", "must be in [0, 1]")
    if config.counterfactuals:
        check(
            (config.task == "scenes-matching" and not config.freeze_image_encoder)
            or (
                config.task == "zeroshot"
                and config.world == "scenes"
                and config.hard_negatives
                and config.binding_weight > 0
            ),
            "counterfactuals",
            "applies to task scenes-matching with a trained image encoder, and to zeroshot "
            "with world=scenes, hard_negatives and a binding_weight",
        )
    if config.object_weight:
        check(
            (config.task in SCENE_TASKS and not config.freeze_image_encoder)
            or (config.task == "zeroshot" and config.world == "scenes"),
            "object_weight",
            "applies to the scenes tasks (scenes-vqa, scenes-matching, zeroshot with "
            "world=scenes) with a trained image encoder only",
        )
    check(0.0 <= config.replacement_negatives < 1.0, "replacement_negatives", "must be in [0, 1)")
    check(
        config.question_sampling in QUESTION_SAMPLINGS,
        "question_sampling",
        f"must be one of {', '.join(QUESTION_SAMPLINGS)}",
    )
    check(
        config.question_sampling == "uniform" or config.task == "scenes-vqa",
        "question_sampling",
        "applies to task scenes-vqa only (leave it at uniform)",
    )
    check(
        config.replacement_negatives == 0.0
        or config.task == "scenes-matching"
        or (config.task == "zeroshot" and config.world == "scenes" and config.hard_negatives),
        "replacement_negatives",
        "applies to scenes-matching and to zeroshot on scenes with hard_negatives only "
        "(leave it at 0)",
    )
    check(config.reversal_steps >= 0, "reversal_steps", "must not be negative")
    check(0 <= config.reversal_loss < math.log(2.0), "reversal_loss", "must be in [0, ln 2)")
    check(
        config.reversal_steps == 0 or config.task == "scenes-matching",
        "reversal_steps",
        "applies to scenes-matching only (leave it at 0)",
    )
    check(0.0 < config.paired_fraction <= 1.0, "paired_fraction", "must be in (0, 1]")
    check(
        config.paired_fraction == 1.0 or config.task in ("zeroshot", "caption"),
        "paired_fraction",
        "applies to tasks zeroshot and caption only (leave it at 1)",
    )
    if config.task == "caption":
        check(
            config.paired_fraction == 1.0 or config.world == "shapes",
            "paired_fraction",
            "below 1 for task caption runs on world=shapes only (leave it at 1)",
        )
        check(
            bool(config.cycle_run.strip()) or not (config.cycle_weight or config.pseudo_weight),
            "cycle_run",
            "must name a text-to-image run (trained on the paired share) when cycle_weight or "
            "pseudo_weight is set for task caption",
        )
    check(config.lm_weight >= 0, "lm_weight", "must not be negative")
    check(
        config.task == "caption" or not (config.lm_weight or config.cycle_run.strip()),
        "lm_weight" if config.lm_weight else "cycle_run",
        "applies to task caption only",
    )
    for key in ("adversarial_weight", "cycle_weight", "pseudo_weight", "align_weight"):
        check(getattr(config, key) >= 0, key, "must not be negative")
    check(config.ssl_weight >= 0, "ssl_weight", "must not be negative")
    check(
        config.ssl_weight == 0 or config.task == "zeroshot",
        "ssl_weight",
        "applies to task zeroshot only (leave it at 0)",
    )
    check(config.ssl_shift >= 1, "ssl_shift", "must be at least 1 pixel")
    check(config.ssl_temperature > 0, "ssl_temperature", "must be positive")
    check(
        config.adversarial_mode in ADVERSARIAL_MODES,
        "adversarial_mode",
        f"must be one of {', '.join(ADVERSARIAL_MODES)}",
    )
    check(0 < config.adversarial_lr <= 1, "adversarial_lr", "must be in (0, 1]")
    check(-1.0 <= config.pseudo_threshold <= 1.0, "pseudo_threshold", "must be a cosine in [-1, 1]")
    check(config.pseudo_every >= 1, "pseudo_every", "must be at least 1")
    check(config.adversarial_d_steps >= 1, "adversarial_d_steps", "must be at least 1")
    check(config.pseudo_neighbours >= 1, "pseudo_neighbours", "must be at least 1")
    counts = ("steps", "batch_size", "train_size", "eval_size", "questions_per_image", "log_every")
    for key in counts:
        check(getattr(config, key) >= 1, key, "must be at least 1")
    for key in SIZE_KEYS:
        check(1 <= getattr(config, key) <= MAX_WIDTH, key, f"must be in [1, {MAX_WIDTH}]")
    for key in ("max_minutes", "weight_decay", "warmup_steps"):
        check(getattr(config, key) >= 0, key, "must not be negative")
    # AdamW moves each weight by about lr per step: above 1 is a typo
    check(0 < config.lr <= 1, "lr", "must be in (0, 1]")
    check(
        0 <= config.threads <= MAX_THREADS,
        "threads",
        f"must be in [0, {MAX_THREADS}] (0: torch's default)",
    )
    for key in ("seed", "data_seed"):
        check(0 <= getattr(config, key) < 2**32, key, "must be in [0, 2**32)")
    widths = config.image_widths
    check(
        len(widths) >= 1 and 1 <= min(widths) and max(widths) <= MAX_WIDTH,
        "image_widths",
        f"must list at least one width, each in [1, {MAX_WIDTH}]",
    )
    check(
        config.image_size % 2 ** len(widths) == 0,
        "image_widths",
        f"must have at most {config.image_size.bit_length() - 1} widths: each halves the {config.image_size}-pixel image",
    )
    for name, value in config.fusion_options.items():
        low = 0 if name in SWITCH_OPTIONS else 1
        if not low <= value <= MAX_WIDTH:
            raise ConfigError(f"fusion_options.{name} must be in [{low}, {MAX_WIDTH}], got {value}")
    if config.fusion == "cross-attention":
        defaults = inspect.signature(CrossAttentionFusion).parameters
        dim = config.fusion_options.get("dim", defaults["dim"].default)
        heads = config.fusion_options.get("heads", defaults["heads"].default)
        if dim % heads:
            raise ConfigError(
                f"fusion_options.heads ({heads}) must divide fusion_options.dim ({dim})"
            )
    return config


def make_config(
    task: str, fusion: str | None = None, overrides: list[str] | None = None
) -> FuseConfig:
    """The config of a ``task`` run: dataclass defaults, then :data:`TASK_DEFAULTS`, ``fusion``,
    then ``overrides`` (``["steps=300", "fusion_options.rank=4"]``), then the
    :data:`WORLD_DEFAULTS` and :data:`FUSION_DEFAULTS` of the result's world and fusion for what
    the overrides left unset; validated. ``task`` may be an alias (:data:`TASK_ALIASES`)."""
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    config = FuseConfig(task=task)
    for key, value in TASK_DEFAULTS.get(task, {}).items():
        set_value(config, key, value)
    if fusion is not None:
        config.fusion = fusion
    overridden = set()
    for item in overrides or []:
        key, value = parse_override(item)
        set_value(config, key, value)
        overridden.add(key)
    for key, value in WORLD_DEFAULTS.get((config.world, config.task), {}).items():
        if key not in overridden:
            set_value(config, key, value)
    for defaults in (
        FUSION_DEFAULTS.get((config.world, config.fusion), {}),
        TASK_FUSION_DEFAULTS.get((config.task, config.fusion), {}),
    ):
        for name, value in defaults.items():
            if name not in config.fusion_options:
                config.fusion_options[name] = value
    if config.freeze_image_encoder:
        for key in IMAGE_TRAINING_KEYS:
            if key not in overridden:
                setattr(config, key, 0.0)
    # reversals alone without counterfactual images teach which wordings are usually true, not
    # the image (benchmarks/scenes.md): the reversal phase goes with the counterfactuals
    if not config.counterfactuals and "reversal_steps" not in overridden:
        config.reversal_steps = 0
    no_binding = not config.hard_negatives or config.binding_weight == 0
    if config.task == "zeroshot" and no_binding and "counterfactuals" not in overridden:
        config.counterfactuals = 0.0
    # absolute, so that evaluating or resuming the saved run from another folder still finds them
    for key in ("data_path", "cycle_run"):
        if getattr(config, key).strip():
            setattr(config, key, str(Path(getattr(config, key)).expanduser().resolve()))
    return validate(config)


def config_from_dict(data: dict[str, Any]) -> FuseConfig:
    """Rebuild a saved config; unknown keys are an error so that a typo never passes silently."""
    config = FuseConfig()
    for key, value in data.items():
        set_value(config, key, value)
    return validate(config)


def save_config(config: FuseConfig, path: Path) -> None:
    """Write ``config`` as JSON, atomically (a crash leaves the old file or the new one)."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")
