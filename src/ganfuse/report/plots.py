"""Matplotlib figures for the report, returned as PNG bytes.

Every training-curve panel draws all runs given on the same axes (one colour per run, one line
style per quantity) with the x axis in training steps, so runs compare at a glance.

Figures are plain :class:`matplotlib.figure.Figure` objects, never pyplot's: no global state,
no GUI backend switched under a notebook user, and safe in the web app's worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ganfuse.multimodal.benchmark import MAIN_METRICS

STEP_LABEL = "training step (generator updates)"
LINE_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Panel:
    """One chart of training curves: ``keys`` are ``(metrics.jsonl field, legend label)``."""

    title: str
    keys: tuple[tuple[str, str], ...]
    ylabel: str
    log_y: bool = False


PANELS: tuple[Panel, ...] = (
    Panel(
        "Losses", (("loss_d", "D loss"), ("loss_g", "G loss")), "loss (mean over the log interval)"
    ),
    Panel("Discriminator outputs", (("d_real", "D(real)"), ("d_fake", "D(fake)")), "mean D logit"),
    Panel(
        "Discriminator accuracy",
        (("acc_real", "real judged real"), ("acc_fake", "fake judged fake")),
        "fraction of the batch",
    ),
    Panel(
        "Gradient norms",
        (("grad_norm_d", "D"), ("grad_norm_g", "G")),
        "global L2 norm of the gradients",
        log_y=True,
    ),
    Panel("Throughput", (("img_per_s", "training"),), "real images per second"),
    Panel("Frechet distance", (("fd", "FD"),), "Frechet distance to the data (lower is better)"),
    Panel("Regularisers", (("r1", "R1"), ("gp", "gradient penalty")), "penalty value", log_y=True),
    Panel(
        "Augmentation",
        (("augment_p", "augment probability p"), ("ada_rt", "ADA r_t")),
        "probability / overfitting signal",
    ),
    Panel(
        "Mode-collapse monitor",
        (("mc_diversity", "diversity vs real"), ("mc_max_share", "largest class share")),
        "ratio / fraction",
    ),
)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _colours() -> list[str]:
    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _column(records: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if key in r and "step" in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def panel_figure(
    panel: Panel, logs: Mapping[str, Sequence[Mapping[str, float]]], max_step: float
) -> Figure | None:
    """One panel with every run that logged one of its keys; ``None`` when none did."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    colours = _colours()
    drawn = 0
    for run_index, (run, records) in enumerate(logs.items()):
        for key_index, (key, label) in enumerate(panel.keys):
            steps, values = _column(records, key)
            if not values:
                continue
            if panel.log_y and any(v <= 0 for v in values):
                values = [max(v, 1e-12) for v in values]
            legend = label if len(logs) == 1 else f"{run}: {label}"
            ax.plot(
                steps,
                values,
                LINE_STYLES[key_index % len(LINE_STYLES)],
                color=colours[run_index % len(colours)],
                marker="o" if len(values) < 30 else None,
                markersize=3,
                linewidth=1.4,
                label=legend,
            )
            drawn += 1
    if not drawn:
        return None
    ax.set_title(panel.title)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(panel.ylabel)
    ax.set_xlim(0, max(max_step, 1))
    if panel.log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    # fixed margins: tight_layout measures every text box and costs more than the drawing here
    fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.15)
    return fig


def curve_panels(logs: Mapping[str, Sequence[Mapping[str, float]]]) -> list[tuple[Panel, bytes]]:
    """PNG charts of every :data:`PANELS` entry that some run logged, sharing the step axis."""
    max_step = max((r["step"] for records in logs.values() for r in records), default=1)
    out = []
    for panel in PANELS:
        fig = panel_figure(panel, logs, max_step)
        if fig is not None:
            out.append((panel, figure_png(fig)))
    return out


# Tasks whose benchmark has no main metric of its own: the figure their issue sets a target on.
REPORT_MAIN_METRICS: dict[str, str] = {"zeroshot": "heldout_top1", "caption": "exact_match"}


def main_metric(task: str, metrics: Sequence[str]) -> str:
    """The metric a benchmark task is compared by: the benchmark's own choice, else the report's
    (:data:`REPORT_MAIN_METRICS`), else the first accuracy, else the first metric."""
    for choice in (MAIN_METRICS.get(task), REPORT_MAIN_METRICS.get(task)):
        if choice in metrics:
            return choice
    return next((m for m in metrics if m.endswith("accuracy")), metrics[0])


def benchmark_chart(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes | None:
    """Horizontal bars of each task's main metric per fusion method; one subplot per task and
    one colour per benchmark folder, so several benchmarks compare on shared axes."""
    tasks: dict[str, str] = {}
    for rows in results.values():
        for task in dict.fromkeys(r["task"] for r in rows):
            if task not in tasks:
                tasks[task] = main_metric(
                    task, list(dict.fromkeys(r["metric"] for r in rows if r["task"] == task))
                )
    if not tasks:
        return None
    bars = {
        task: list(
            dict.fromkeys(
                r["fusion"] for rows in results.values() for r in rows if r["task"] == task
            )
        )
        for task in tasks
    }
    heights = [max(1, len(b)) * max(1, len(results)) * 0.28 + 0.9 for b in bars.values()]
    fig = Figure(figsize=(7.0, sum(heights)))
    axes = fig.subplots(len(tasks), 1, gridspec_kw={"height_ratios": heights})
    axes = [axes] if len(tasks) == 1 else list(axes)
    colours = _colours()
    width = 0.8 / max(1, len(results))
    for ax, (task, metric) in zip(axes, tasks.items(), strict=True):
        fusions = bars[task]
        for k, (source, rows) in enumerate(results.items()):
            values = {
                r["fusion"]: float(r["value"])
                for r in rows
                if r["task"] == task and r["metric"] == metric
            }
            ys = [i + (k - (len(results) - 1) / 2) * width for i in range(len(fusions))]
            ax.barh(
                ys,
                [values.get(f, 0.0) for f in fusions],
                width,
                color=colours[k % len(colours)],
                label=source,
            )
        shown = [
            float(r["value"])
            for rows in results.values()
            for r in rows
            if r["task"] == task and r["metric"] == metric
        ]
        if all(0.0 <= v <= 1.0 for v in shown):  # accuracies and rates: the full scale, not a zoom
            ax.set_xlim(0.0, 1.0)
        ax.set_yticks(range(len(fusions)), fusions, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{task}", fontsize=10, loc="left")
        ax.set_xlabel(metric.replace("_", " "), fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        if len(results) > 1:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_png(fig)
