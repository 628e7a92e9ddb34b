"""``ganfuse fuse benchmark``: every fusion method on every task that applies, within one budget.

The plan (:func:`benchmark_plan`) lists the runs; each gets a share of the wall-clock budget in
proportion to its weight, recomputed before every run from the time actually left, so slow data
preparation or evaluation early on shortens later runs instead of overrunning the budget. Every
fusion method gets the same share on a task: the comparison is at equal training time.

The first run trains the contrastive dual encoder (with the small text encoder) on image-caption
pairs. Its image encoder is then frozen and shared by the fusion runs and the captioner (the
"frozen pretrained backbone" protocol): its features are computed once, and every fusion method
sees the very same image features. Its text encoder starts each fusion run's text encoder (which
then fine-tunes with the fusion and the heads; VQA's question words are added to its
vocabulary). ``--set freeze_image_encoder=false`` trains every model end to end from scratch
instead (the budget then buys far fewer steps, and matching stays near chance in 15 minutes).

``--world scenes`` runs the same protocol on the ``scenes`` tasks (:data:`SCENES_BENCHMARK_TASKS`):
the dual encoder trains on ``scenes`` captions, then every fusion method on ``scenes-vqa`` (one
column per question family) and on ``scenes-matching`` (binding negatives), each task with its
baselines in the same table (:mod:`~ganfuse.multimodal.scene_baselines`: a question-only text
classifier given the same training time and the "most frequent training answer per question
text" prior for VQA; the bag-of-words scorer, 50% by construction, for matching), and a CoGenT
run: ``scenes-vqa`` trained on ``cogent-a``, scored on ``cogent-a-test`` (condition A) and
``cogent-b`` (condition B) in two adjacent rows, trained end to end from scratch (the shared
backbone saw condition B's pairs). Trained end to end (``freeze_image_encoder=false``)
the scenes plan has no dual encoder: nothing would use it.

``--world emoji`` and ``--world folder`` (with ``--set data=DIR``) run matching on real
image-caption pairs (:mod:`~ganfuse.multimodal.folder_matching`): the dual encoder trains on the
world's training pairs, then every fusion method on ``matching``, scored on the held-out images
against random and hard negatives, with two baselines (:mod:`~ganfuse.multimodal.pair_baselines`):
``text-only`` (the caption alone, trained as long as each fusion) and ``dual-encoder`` (the
shared dual encoder's cosine, thresholded on the training pairs).

Writes ``results.json`` (a list of ``{task, fusion, metric, value, params, train_seconds}``),
``results.md`` (one table per task) and ``results.png`` (bar chart of the main metrics), the
latter two titled by world.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ganfuse.errors import ConfigError
from ganfuse.metrics.scene_negatives import NEGATIVE_KINDS
from ganfuse.models.fusion import FUSION_LEVELS
from ganfuse.multimodal.captioning import train_captioner
from ganfuse.multimodal.checkpoint import prepare_run_folder
from ganfuse.multimodal.config import (
    IMAGE_TRAINING_KEYS,
    PAIR_WORLDS,
    TEST_SPLITS,
    FuseConfig,
    make_config,
    parse_override,
)
from ganfuse.multimodal.evaluate import score_fusion_split
from ganfuse.multimodal.label_efficiency import label_efficiency
from ganfuse.multimodal.pair_baselines import dual_encoder_scores, train_caption_only
from ganfuse.multimodal.scene_baselines import (
    answer_prior_scores,
    bag_of_words_scores,
    train_question_only,
)
from ganfuse.multimodal.scene_questions import FAMILIES
from ganfuse.multimodal.train import train_fusion
from ganfuse.multimodal.zeroshot import train_zeroshot

BENCHMARK_TASKS: tuple[str, ...] = (
    "matching",
    "vqa",
    "multitask",
    "single-task",
    "zeroshot",
    "label-efficiency",
    "caption",
)
SCENES_BENCHMARK_TASKS: tuple[str, ...] = ("scenes-vqa", "scenes-matching", "cogent")
PAIRS_BENCHMARK_TASKS: tuple[str, ...] = ("matching",)
WORLD_BENCHMARK_TASKS: dict[str, tuple[str, ...]] = {
    "shapes": BENCHMARK_TASKS,
    "scenes": SCENES_BENCHMARK_TASKS,
    **{world: PAIRS_BENCHMARK_TASKS for world in PAIR_WORLDS},
}
SINGLE_TASK_FUSION = "film"  # the fusion whose single-task and uncertainty-weighted runs are added
COGENT_FUSION = "film"  # the fusion of the CoGenT run (the first fusion given when it is left out)
COGENT_TRAIN, COGENT_TRANSFER = "cogent-a", "cogent-b"
SCENES_ENCODER_WEIGHT = 4.0  # the scenes dual encoder's share, in fusion runs
# Rows that are not fusion methods: the level column says "baseline". Those of weight 0 train
# nothing (they are computed, in seconds).
BASELINES: dict[str, str] = {
    "question-only": "a text classifier, no image, trained as long as each fusion",
    "answer-prior": "most frequent training answer of the question's text (else of its group)",
    "bag-of-words": "analytic: the caption's attribute words present in the image, any object",
    "text-only": "the caption alone, no image, trained as long as each fusion",
    "dual-encoder": "the shared dual encoder's image-caption cosine, thresholded on training pairs",
}
BASELINE_LEVEL = "baseline"
MAIN_METRICS: dict[str, str] = {
    "matching": "match_accuracy",
    "vqa": "answer_accuracy",
    "multitask": "mean_accuracy",
    "scenes-vqa": "answer_accuracy",
    "scenes-matching": "match_accuracy",
    "cogent": "answer_accuracy",
}
# A line under a task's table heading, saying what its rows are.
TASK_NOTES: dict[str, str] = {
    "scenes-vqa": (
        "Test split; overall and per question family. question-only: "
        + BASELINES["question-only"]
        + "; answer-prior: "
        + BASELINES["answer-prior"]
        + "."
    ),
    "scenes-matching": (
        "A true list or relation caption against its binding negative (same words). "
        "bag-of-words: 50% by construction."
    ),
    "cogent": (
        f"scenes-vqa trained on {COGENT_TRAIN} (CoGenT condition A), scored on "
        f"{TEST_SPLITS[COGENT_TRAIN]} (condition A) and on {COGENT_TRANSFER} (condition B: every "
        "colour-shape pair unseen in training)."
    ),
}
# On real pairs (world folder or emoji), what the matching table's rows and columns are.
PAIRS_TASK_NOTES: dict[str, str] = {
    "matching": (
        "Held-out images. match_accuracy: a caption of the image against another image's "
        "caption (random negative); hard_match_accuracy: against another image's caption that "
        "shares a content word (in the same emoji subgroup where there is one), on the images "
        "that have one (hard_coverage: their share). text-only: "
        + BASELINES["text-only"]
        + "; dual-encoder: "
        + BASELINES["dual-encoder"]
        + "."
    ),
}
# Column order of the VQA tables, and the titles of their columns (``scenes`` tables only).
VQA_COLUMNS: tuple[str, ...] = ("answer_accuracy", *(f"{f}_accuracy" for f in FAMILIES))
# scenes-matching: each caption alone, then the pairwise choice, overall and per negative kind.
MATCHING_COLUMNS: tuple[str, ...] = (
    "match_accuracy",
    "match_pairwise",
    *(f"{k}_pairwise" for k in NEGATIVE_KINDS),
    *(f"{k}_accuracy" for k in NEGATIVE_KINDS),
)
COLUMN_TITLES: dict[str, str] = {
    "answer_accuracy": "overall",
    **{f"{f}_accuracy": f for f in FAMILIES},
}
# The metric each run's progress line shows.
SUMMARY_METRICS: dict[str, str] = {
    **MAIN_METRICS,
    "multitask-uncertainty": "mean_accuracy",
    "zeroshot": "heldout_top1",
    "label-efficiency": "mean_accuracy@1%",
    "caption": "exact_match",
}
# On scenes, the dual encoder's progress line shows its binding-swap matching accuracy; on real
# pairs its held-out caption -> image recall.
SCENES_SUMMARY_METRICS: dict[str, str] = {**SUMMARY_METRICS, "zeroshot": "seen_binding"}
PAIRS_SUMMARY_METRICS: dict[str, str] = {**SUMMARY_METRICS, "zeroshot": "heldout_t2i_r1"}
PRETRAINED = "dual-encoder/small"  # the run whose image encoder the other runs share


@dataclass
class PlannedRun:
    """One benchmark run: ``task`` (a benchmark task), the row's ``fusion`` label, the config's
    task, overrides, its weight in the time budget, and whether it starts from the shared
    pretrained image encoder."""

    task: str
    fusion: str
    config_task: str
    overrides: list[str] = field(default_factory=list)
    weight: float = 1.0
    pretrained: bool = True
    overhead_hint: float = 0.0  # expected seconds outside training, when above the usual


def benchmark_plan(
    tasks: Sequence[str] | None = None,
    fusions: Sequence[str] = tuple(FUSION_LEVELS),
    world: str = "shapes",
    pretrained: bool = True,
) -> list[PlannedRun]:
    """The runs of a benchmark over ``tasks`` (None: all of the world's) and ``fusions`` on
    ``world``, in the order they run. ``pretrained`` False (every model trained end to end) drops
    the scenes plan's dual encoder, which nothing would use; the shapes plan keeps its zero-shot
    row."""
    if world not in WORLD_BENCHMARK_TASKS:
        raise ConfigError(
            f"unknown world {world!r}; choose from {', '.join(WORLD_BENCHMARK_TASKS)}"
        )
    valid = WORLD_BENCHMARK_TASKS[world]
    tasks = valid if tasks is None else tasks
    unknown = [t for t in tasks if t not in valid]
    if unknown:
        raise ConfigError(
            f"unknown benchmark task(s) {unknown} for world {world}; choose from {', '.join(valid)}"
        )
    bad = [f for f in fusions if f not in FUSION_LEVELS]
    if bad:
        raise ConfigError(f"unknown fusion(s) {bad}; choose from {', '.join(FUSION_LEVELS)}")
    if world == "scenes":
        return _scenes_plan(tasks, fusions, pretrained)
    if world in PAIR_WORLDS:
        return _pairs_plan(world, fusions, pretrained)
    # Always first: the zero-shot row, and the encoders every later run starts from, so it gets
    # a large share of the budget.
    plan = [
        PlannedRun("zeroshot", PRETRAINED, "zeroshot", ["text_encoder=small"], 6.0, False, 15.0)
    ]
    for task in ("matching", "vqa", "multitask"):
        if task in tasks:
            plan += [PlannedRun(task, fusion, task) for fusion in fusions]
    if "single-task" in tasks:
        fusion = SINGLE_TASK_FUSION if SINGLE_TASK_FUSION in fusions else fusions[0]
        plan.append(
            PlannedRun("multitask-uncertainty", fusion, "multitask", ["weighting=uncertainty"])
        )
        plan += [
            PlannedRun("single-task", fusion, attr)
            for attr in ("color", "shape", "size", "position")
        ]
    if "caption" in tasks:
        plan.append(PlannedRun("caption", "gru-decoder", "caption", [], 1.0))
    if "zeroshot" in tasks or "label-efficiency" in tasks:
        # The frozen pretrained text encoder encodes each caption once (about 14 ms a caption
        # here: its real cost), so it trains and is scored on fewer images.
        plan.append(
            PlannedRun(
                "zeroshot",
                "dual-encoder/minilm",
                "zeroshot",
                ["text_encoder=minilm", "train_size=1000", "eval_size=500"],
                1.0,
                False,
                45.0,
            )
        )
    if "label-efficiency" in tasks:
        plan.append(PlannedRun("label-efficiency", "scratch", "multitask", [], 4.0, False, 20.0))
    return plan


def _dual_encoder_run(world: str) -> PlannedRun:
    """The shared backbone of a ``world``'s table: the dual encoder (small text encoder) trained
    first on its pairs, whose frozen image encoder every fusion then shares."""
    return PlannedRun("zeroshot", PRETRAINED, "zeroshot", ["text_encoder=small", f"world={world}"],
                      SCENES_ENCODER_WEIGHT, False, 15.0)


def _scenes_plan(
    tasks: Sequence[str], fusions: Sequence[str], pretrained: bool
) -> list[PlannedRun]:
    """The ``scenes`` plan: the dual encoder (when ``pretrained``), then each task's fusions and
    baselines (the trained ones of weight 1, the same share as a fusion; the computed ones of
    weight 0), then the CoGenT run."""
    if not fusions:
        raise ConfigError("no fusion to benchmark; name at least one")
    plan = [_dual_encoder_run("scenes")] if pretrained else []
    if "scenes-vqa" in tasks:
        plan += [PlannedRun("scenes-vqa", fusion, "scenes-vqa") for fusion in fusions]
        plan.append(PlannedRun("scenes-vqa", "question-only", "scenes-vqa"))
        plan.append(PlannedRun("scenes-vqa", "answer-prior", "scenes-vqa", [], 0.0, False))
    if "scenes-matching" in tasks:
        plan += [PlannedRun("scenes-matching", fusion, "scenes-matching") for fusion in fusions]
        plan.append(
            PlannedRun("scenes-matching", "bag-of-words", "scenes-matching", [], 0.0, False)
        )
    if "cogent" in tasks:
        fusion = COGENT_FUSION if COGENT_FUSION in fusions else fusions[0]
        # End to end, never on the shared backbone: the dual encoder trained on ``train``, which
        # holds condition B's colour-shape pairs, so its features would leak them.
        plan.append(
            PlannedRun("cogent", fusion, "scenes-vqa", [f"train_split={COGENT_TRAIN}"], 1.0, False)
        )
    return plan


def _pairs_plan(world: str, fusions: Sequence[str], pretrained: bool) -> list[PlannedRun]:
    """The plan on real pairs: the dual encoder on the world's training pairs (when
    ``pretrained``), then every fusion on matching and the text-only baseline (weight 1 each), then
    the dual-encoder baseline (computed; only when there is a dual encoder)."""
    if not fusions:
        raise ConfigError("no fusion to benchmark; name at least one")
    on_world = [f"world={world}"]
    plan = [_dual_encoder_run(world)] if pretrained else []
    plan += [PlannedRun("matching", fusion, "matching", on_world) for fusion in fusions]
    plan.append(PlannedRun("matching", "text-only", "matching", on_world))
    if pretrained:
        plan.append(PlannedRun("matching", "dual-encoder", "matching", on_world, 0.0))
    return plan


class Budget:
    """Wall-clock shares of the benchmark's budget.

    When a group of runs starts (the runs of one task), the time left, less a reserve and the
    overhead expected of every run still to come, is divided among their weights; each run of the
    group then gets that same share per unit of weight, so the fusion methods of a task are
    compared at equal training time, and later groups absorb any earlier overrun. The overhead of
    a run (data, evaluation, loading) is the mean measured on the fusion runs so far, or the
    run's own hint when larger (loading and encoding with MiniLM, for instance).
    """

    def __init__(self, minutes: float, plan: Sequence[PlannedRun], reserve_seconds: float = 30.0):
        self.deadline = time.perf_counter() + minutes * 60.0
        self.plan = list(plan)
        self.reserve = reserve_seconds
        self.overheads: list[float] = []
        self.group: str | None = None
        self.unit = 0.0  # seconds per unit of weight in the current group

    @property
    def overhead(self) -> float:
        return sum(self.overheads) / len(self.overheads) if self.overheads else 4.0

    def share_minutes(self, index: int) -> float:
        """The training time of run ``index`` of the plan, in minutes."""
        run = self.plan[index]
        if run.task != self.group:
            self.group = run.task
            rest = self.plan[index:]
            left = self.deadline - time.perf_counter() - self.reserve
            left -= sum(max(self.overhead, r.overhead_hint) for r in rest)
            self.unit = max(left, 1.0) / (sum(r.weight for r in rest) or 1.0)
        return self.unit * run.weight / 60.0

    def done(self, run: PlannedRun, wall_seconds: float, train_seconds: float) -> None:
        if run.pretrained and run.weight > 0:  # the typical run: frozen features, small evaluation
            self.overheads.append(max(0.0, wall_seconds - train_seconds))


def _rows(task: str, fusion: str, metrics: dict, params: int, seconds: float) -> list[dict]:
    columns = {"scenes-vqa": VQA_COLUMNS, "cogent": VQA_COLUMNS, "scenes-matching": MATCHING_COLUMNS}
    if task in columns:  # overall first, then the families or negative kinds in their usual order
        order = {name: k for k, name in enumerate(columns[task])}
        metrics = dict(sorted(metrics.items(), key=lambda kv: order.get(kv[0], len(order))))
    return [
        {
            "task": task,
            "fusion": fusion,
            "metric": k,
            "value": float(v),
            "params": int(params),
            "train_seconds": round(float(seconds), 2),
        }
        for k, v in metrics.items()
    ]


def _run_one(
    run: PlannedRun, config: FuseConfig, out: Path, progress: bool, encoders: dict
) -> tuple[list[dict], float]:
    """Train and score one planned run; returns its result rows and its training seconds."""
    if run.task == "zeroshot":
        result = train_zeroshot(config, out / "runs" / run.fusion.replace("/", "-"), progress)
        encoders[f"contrastive-{config.text_encoder}"] = result.model.image_encoder
        rows = _rows(run.task, run.fusion, result.metrics, result.params, result.train_seconds)
        return rows, result.train_seconds
    if run.task == "label-efficiency":
        inits = {"scratch": None, **encoders}
        rows, seconds = [], 0.0
        for row in label_efficiency(config, inits, progress=progress):
            metrics = {
                f"{k}@{row['fraction']:.0%}": v for k, v in row.items() if k.endswith("_accuracy")
            }
            name = row["init"] if row["init"] == "scratch" else f"probe/{row['init']}"
            rows += _rows(run.task, name, metrics, 0, row["train_seconds"])
            seconds += row["train_seconds"]
        return rows, seconds
    if run.task == "caption":
        result = train_captioner(config, out / "runs" / "caption", progress)
        rows = _rows(run.task, run.fusion, result.metrics, result.params, result.train_seconds)
        return rows, result.train_seconds
    if run.fusion == "answer-prior":
        return _rows(run.task, run.fusion, answer_prior_scores(config), 0, 0.0), 0.0
    if run.fusion == "bag-of-words":
        return _rows(run.task, run.fusion, bag_of_words_scores(config), 0, 0.0), 0.0
    if run.fusion == "dual-encoder":
        scores = dual_encoder_scores(config, config.image_encoder_init or "")
        return _rows(run.task, run.fusion, scores, 0, 0.0), 0.0
    if run.fusion == "text-only":
        result = train_caption_only(config, progress)
    elif run.fusion == "question-only":
        result = train_question_only(config, progress)
    else:
        result = train_fusion(config, None, progress, validate=False)
    seconds = result.train_seconds
    if run.task != "cogent":
        return _rows(run.task, run.fusion, result.test_metrics, result.params, seconds), seconds
    # The same model on both conditions, side by side.
    transfer = score_fusion_split(result.model, config, COGENT_TRANSFER)
    rows = _rows(
        run.task,
        cogent_label(run.fusion, TEST_SPLITS[COGENT_TRAIN]),
        result.test_metrics,
        result.params,
        seconds,
    )
    rows += _rows(
        run.task, cogent_label(run.fusion, COGENT_TRANSFER), transfer, result.params, seconds
    )
    return rows, seconds


def cogent_label(fusion: str, split: str) -> str:
    """The ``fusion`` field of a CoGenT row: ``"film@cogent-b"`` (the fusion, then the split)."""
    return f"{fusion}@{split}"


def row_level(fusion: str) -> str:
    """The level column of a row: the fusion's level, ``baseline``, or empty."""
    if fusion in BASELINES:
        return BASELINE_LEVEL
    return FUSION_LEVELS.get(fusion.split("@")[0], "")


def run_benchmark(
    out: Path | str,
    max_minutes: float = 15.0,
    tasks: Sequence[str] | None = None,
    fusions: Sequence[str] = tuple(FUSION_LEVELS),
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
    world: str = "shapes",
) -> list[dict]:
    """Run :func:`benchmark_plan` on ``world`` within ``max_minutes`` and write the reports into
    ``out``. ``tasks`` None: every benchmark task of the world.

    ``overrides`` (``key=value``) apply to every run, after the plan's own. ``out`` must not hold
    an earlier benchmark's results or a run (a one-line :class:`~ganfuse.errors.UserError`, before
    any training): a benchmark never replaces figures it did not measure itself.
    """
    if max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be positive, got {max_minutes}")
    out = Path(out)
    end_to_end = dict(parse_override(o) for o in overrides).get("freeze_image_encoder") is False
    plan = benchmark_plan(tasks, fusions, world, pretrained=not end_to_end)
    # Fail on a bad override before any training.
    configs = [
        make_config(
            r.config_task,
            r.fusion if r.fusion in FUSION_LEVELS else None,
            [*r.overrides, *overrides],
        )
        for r in plan
    ]
    prepare_run_folder(out, "benchmark")
    pretrained_dir = out / "runs" / PRETRAINED.replace("/", "-")
    budget = Budget(max_minutes, plan)
    results: list[dict] = []
    encoders: dict = {}
    for number, (run, config) in enumerate(zip(plan, configs, strict=True)):
        minutes = budget.share_minutes(number)
        changes: dict = {"max_minutes": minutes}
        if run.pretrained and not end_to_end:
            changes.update(image_encoder_init=str(pretrained_dir), freeze_image_encoder=True)
            # a frozen encoder's precomputed features: no probe to train, no edited images
            changes.update({key: 0.0 for key in IMAGE_TRAINING_KEYS})
            if config.task != "caption" and config.text_encoder == "small":
                changes.update(text_encoder_init=str(pretrained_dir))
        config = replace(config, **changes)
        start = time.perf_counter()
        rows, train_seconds = _run_one(run, config, out, progress, encoders)
        wall = time.perf_counter() - start
        budget.done(run, wall, train_seconds)
        results += rows
        summary = _summary(run, rows, world)
        log(
            f"[{number + 1}/{len(plan)}] {run.task} {run.fusion}: {summary} "
            f"(train {train_seconds:.0f}s, wall {wall:.0f}s)"
        )
        # After every run, so that an interrupted benchmark keeps what it measured.
        write_reports(results, out, world)
    return results


def _summary(run: PlannedRun, rows: Sequence[dict], world: str) -> str:
    """The main metric of a run's rows for its progress line (each row's, when a run has rows of
    several labels, as CoGenT's two conditions)."""
    table = {"scenes": SCENES_SUMMARY_METRICS, **dict.fromkeys(PAIR_WORLDS, PAIRS_SUMMARY_METRICS)}
    wanted = table.get(world, SUMMARY_METRICS).get(run.task)
    mine = [r for r in rows if r["metric"] == (wanted or r["metric"])]
    if not mine:
        return ""
    if len({r["fusion"] for r in rows}) == 1:
        return f"{mine[0]['metric']}={mine[0]['value']:.3f}"
    return ", ".join(f"{r['fusion']} {r['metric']}={r['value']:.3f}" for r in mine)


def results_markdown(results: Sequence[dict], world: str = "shapes") -> str:
    """One table per task: a row per fusion (or baseline), a column per metric, plus parameters
    and seconds. On ``scenes`` the VQA columns are titled ``overall`` and by question family, and
    each table has a line saying what its rows are."""
    lines = [f"# ganfuse fuse benchmark: {world}", ""]
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in rows))
        titles = [COLUMN_TITLES.get(m, m) if world == "scenes" else m for m in metrics]
        lines += [f"## {task}", ""]
        notes = {**TASK_NOTES, **PAIRS_TASK_NOTES} if world in PAIR_WORLDS else TASK_NOTES
        if task in notes:
            lines += [notes[task], ""]
        lines.append("| fusion | level | " + " | ".join(titles) + " | params | train s |")
        lines.append("|" + " --- |" * (len(metrics) + 4))
        for fusion in dict.fromkeys(r["fusion"] for r in rows):
            mine = {r["metric"]: r for r in rows if r["fusion"] == fusion}
            first = next(iter(mine.values()))
            cells = [f"{mine[m]['value']:.3f}" if m in mine else "" for m in metrics]
            level = row_level(fusion)
            lines.append(
                f"| {fusion} | {level} | "
                + " | ".join(cells)
                + f" | {first['params']:,} | {first['train_seconds']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def results_chart(results: Sequence[dict], path: Path, world: str = "shapes") -> None:
    """Grouped bars: the main test metric of each fusion (and baseline) on each task of
    :data:`MAIN_METRICS` present (matching, VQA and multi-task on shapes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in MAIN_METRICS if any(r["task"] == t for r in results)]
    fusions = list(dict.fromkeys(r["fusion"] for r in results if r["task"] in tasks))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(fusions) + 2) + 3.0, 4.0))
    width = 0.8 / max(1, len(tasks))
    for k, task in enumerate(tasks):
        values = {
            r["fusion"]: r["value"]
            for r in results
            if r["task"] == task and r["metric"] == MAIN_METRICS[task]
        }
        xs = [i + (k - (len(tasks) - 1) / 2) * width for i in range(len(fusions))]
        ax.bar(
            xs, [values.get(f, 0.0) for f in fusions], width, label=f"{task} ({MAIN_METRICS[task]})"
        )
    ax.set_xticks(range(len(fusions)), fusions, rotation=30, ha="right")
    ax.set_ylim(0.0, 1.0)
    ax.axhline(0.5, color="grey", linewidth=0.5, linestyle="--")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"ganfuse fusion benchmark ({world})")
    if tasks:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(results: Sequence[dict], out: Path, world: str = "shapes") -> None:
    """``results.json``, ``results.md`` and ``results.png`` in ``out`` (created if missing); the
    latter two titled by ``world``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(list(results), indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(results_markdown(results, world), encoding="utf-8")
    results_chart(results, out / "results.png", world)
