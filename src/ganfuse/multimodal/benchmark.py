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

Writes ``results.json`` (a list of ``{task, fusion, metric, value, params, train_seconds}``),
``results.md`` (one table per task) and ``results.png`` (bar chart of the main metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ganfuse.errors import ConfigError
from ganfuse.models.fusion import FUSION_LEVELS
from ganfuse.multimodal.captioning import train_captioner
from ganfuse.multimodal.checkpoint import prepare_run_folder
from ganfuse.multimodal.config import FuseConfig, make_config, parse_override
from ganfuse.multimodal.label_efficiency import label_efficiency
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
SINGLE_TASK_FUSION = "film"  # the fusion whose single-task and uncertainty-weighted runs are added
MAIN_METRICS: dict[str, str] = {
    "matching": "match_accuracy",
    "vqa": "answer_accuracy",
    "multitask": "mean_accuracy",
}
# The metric each run's progress line shows.
SUMMARY_METRICS: dict[str, str] = {
    **MAIN_METRICS,
    "multitask-uncertainty": "mean_accuracy",
    "zeroshot": "heldout_top1",
    "label-efficiency": "mean_accuracy@1%",
    "caption": "exact_match",
}
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
    tasks: Sequence[str] = BENCHMARK_TASKS, fusions: Sequence[str] = tuple(FUSION_LEVELS)
) -> list[PlannedRun]:
    """The runs of a benchmark over ``tasks`` and ``fusions``, in the order they run."""
    unknown = [t for t in tasks if t not in BENCHMARK_TASKS]
    if unknown:
        raise ConfigError(
            f"unknown benchmark task(s) {unknown}; choose from {', '.join(BENCHMARK_TASKS)}"
        )
    bad = [f for f in fusions if f not in FUSION_LEVELS]
    if bad:
        raise ConfigError(f"unknown fusion(s) {bad}; choose from {', '.join(FUSION_LEVELS)}")
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
            self.unit = max(left, 1.0) / sum(r.weight for r in rest)
        return self.unit * run.weight / 60.0

    def done(self, run: PlannedRun, wall_seconds: float, train_seconds: float) -> None:
        if run.pretrained:  # the typical run: frozen features, small evaluation
            self.overheads.append(max(0.0, wall_seconds - train_seconds))


def _rows(task: str, fusion: str, metrics: dict, params: int, seconds: float) -> list[dict]:
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
) -> list[dict]:
    """Train and score one planned run; returns its result rows."""
    if run.task == "zeroshot":
        result = train_zeroshot(config, out / "runs" / run.fusion.replace("/", "-"), progress)
        encoders[f"contrastive-{config.text_encoder}"] = result.model.image_encoder
        return _rows(run.task, run.fusion, result.metrics, result.params, result.train_seconds)
    if run.task == "label-efficiency":
        inits = {"scratch": None, **encoders}
        rows = []
        for row in label_efficiency(config, inits, progress=progress):
            metrics = {
                f"{k}@{row['fraction']:.0%}": v for k, v in row.items() if k.endswith("_accuracy")
            }
            name = row["init"] if row["init"] == "scratch" else f"probe/{row['init']}"
            rows += _rows(run.task, name, metrics, 0, row["train_seconds"])
        return rows
    if run.task == "caption":
        result = train_captioner(config, out / "runs" / "caption", progress)
        return _rows(run.task, run.fusion, result.metrics, result.params, result.train_seconds)
    result = train_fusion(config, None, progress, validate=False)
    return _rows(run.task, run.fusion, result.test_metrics, result.params, result.train_seconds)


def run_benchmark(
    out: Path | str,
    max_minutes: float = 15.0,
    tasks: Sequence[str] = BENCHMARK_TASKS,
    fusions: Sequence[str] = tuple(FUSION_LEVELS),
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run :func:`benchmark_plan` within ``max_minutes`` and write the reports into ``out``.

    ``overrides`` (``key=value``) apply to every run, after the plan's own. ``out`` must not hold
    an earlier benchmark's results or a run (a one-line :class:`~ganfuse.errors.UserError`, before
    any training): a benchmark never replaces figures it did not measure itself.
    """
    if max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be positive, got {max_minutes}")
    out = Path(out)
    plan = benchmark_plan(tasks, fusions)
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
    end_to_end = dict(parse_override(o) for o in overrides).get("freeze_image_encoder") is False
    budget = Budget(max_minutes, plan)
    results: list[dict] = []
    encoders: dict = {}
    for number, (run, config) in enumerate(zip(plan, configs, strict=True)):
        minutes = budget.share_minutes(number)
        changes: dict = {"max_minutes": minutes}
        if run.pretrained and not end_to_end:
            changes.update(image_encoder_init=str(pretrained_dir), freeze_image_encoder=True)
            if config.task != "caption" and config.text_encoder == "small":
                changes.update(text_encoder_init=str(pretrained_dir))
        config = replace(config, **changes)
        start = time.perf_counter()
        rows = _run_one(run, config, out, progress, encoders)
        wall = time.perf_counter() - start
        train_seconds = sum({r["fusion"]: r["train_seconds"] for r in rows}.values())
        budget.done(run, wall, train_seconds)
        results += rows
        main = next(
            (r for r in rows if r["metric"] == SUMMARY_METRICS.get(run.task, r["metric"])), None
        )
        summary = f"{main['metric']}={main['value']:.3f}" if main else ""
        log(
            f"[{number + 1}/{len(plan)}] {run.task} {run.fusion}: {summary} "
            f"(train {train_seconds:.0f}s, wall {wall:.0f}s)"
        )
        # After every run, so that an interrupted benchmark keeps what it measured.
        write_reports(results, out)
    return results


def results_markdown(results: Sequence[dict]) -> str:
    """One table per task: a row per fusion, a column per metric, plus parameters and seconds."""
    lines = ["# ganfuse fuse benchmark", ""]
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in rows))
        lines += [
            f"## {task}",
            "",
            "| fusion | level | " + " | ".join(metrics) + " | params | train s |",
        ]
        lines.append("|" + " --- |" * (len(metrics) + 4))
        for fusion in dict.fromkeys(r["fusion"] for r in rows):
            mine = {r["metric"]: r for r in rows if r["fusion"] == fusion}
            first = next(iter(mine.values()))
            cells = [f"{mine[m]['value']:.3f}" if m in mine else "" for m in metrics]
            level = FUSION_LEVELS.get(fusion, "")
            lines.append(
                f"| {fusion} | {level} | "
                + " | ".join(cells)
                + f" | {first['params']:,} | {first['train_seconds']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def results_chart(results: Sequence[dict], path: Path) -> None:
    """Grouped bars: the main test metric of each fusion on matching, VQA and multi-task."""
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
    ax.set_title("ganfuse fusion benchmark (shapes)")
    if tasks:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(results: Sequence[dict], out: Path) -> None:
    """``results.json``, ``results.md`` and ``results.png`` in ``out`` (created if missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(list(results), indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(results_markdown(results), encoding="utf-8")
    results_chart(results, out / "results.png")
