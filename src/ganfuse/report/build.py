"""``build_report``: the HTML report of one or several run folders.

Sections, always present and in this order (a section with nothing to show says why and what to
run): ``runs`` (overview), ``config`` (resolved configs), ``curves`` (training curves on shared
axes), ``timeline`` (the sample grid at several points of training), ``interpolation`` (a latent
interpolation strip per run), ``grid`` (class grid, prompt grid, or samples), ``metrics``
(``RUN/eval.json``), ``fusion`` (benchmark tables and chart, multimodal runs' test metrics).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ganfuse import __version__, run_images
from ganfuse.errors import UserError
from ganfuse.metrics.memorization import MEMORIZATION_FILE, MEMORIZATION_PICTURE
from ganfuse.report import html, plots
from ganfuse.run import load_run
from ganfuse.run_folders import (
    EVAL_FILE,
    GanRunInfo,
    benchmark_runs,
    detect_kind,
    display_names,
    gan_run_info,
    multimodal_kind,
    pick_evenly,
    read_benchmark,
    read_eval,
    read_metrics,
    sample_grids,
)

log = logging.getLogger("ganfuse")

SECTION_IDS = ("runs", "config", "curves", "timeline", "interpolation", "grid", "metrics", "fusion")
TIMELINE_POINTS = 6
INTERPOLATION_STEPS = 10
PER_CLASS = 8


def _load(info: GanRunInfo, device: str):
    """The loaded run, or the one-line reason it cannot be sampled (shown in the report)."""
    if not info.has_checkpoint:
        return None, f"{info.name}: no checkpoint yet, so no generated images"
    try:
        return load_run(info.path, device=device), None
    except UserError as exc:
        return None, f"{info.name}: cannot load the generator ({exc})"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out


# ------------------------------------------------------------------------------------ sections


def runs_section(
    gans: Sequence[GanRunInfo],
    multimodal: Sequence[tuple[str, Path, str]],
    benchmarks: Sequence[tuple[str, Path]],
) -> html.Section:
    rows: list[list[object]] = []
    for g in gans:
        records = read_metrics(g.path)
        step = int(g.manifest.get("step", records[-1]["step"] if records else 0))
        rows.append([g.name, f"GAN ({g.mode})", g.config.get("preset", ""), step, str(g.path)])
    for name, path, kind in multimodal:
        rows.append([name, f"multimodal ({kind})", "", "", str(path)])
    for name, path in benchmarks:
        rows.append([name, "fusion benchmark", "", "", str(path)])
    return html.Section(
        "runs", "Runs", html.table(["name", "kind", "preset", "step", "folder"], rows)
    )


def config_section(
    gans: Sequence[GanRunInfo], multimodal: Sequence[tuple[str, Path, str]]
) -> html.Section:
    parts = []
    for g in gans:
        text = yaml.safe_dump(g.config, sort_keys=False)
        parts.append(
            html.collapsible(
                f"{g.name} (config.yaml)", html.preformatted(text), open_=len(gans) == 1
            )
        )
    for name, path, _ in multimodal:
        config_path = path / "config.json"
        text = config_path.read_text(encoding="utf-8") if config_path.is_file() else "{}"
        parts.append(html.collapsible(f"{name} (config.json)", html.preformatted(text)))
    if not parts:
        parts.append(html.note("no run with a config was given"))
    return html.Section("config", "Resolved config", "".join(parts))


def curves_section(gans: Sequence[GanRunInfo]) -> html.Section:
    logs = {g.name: read_metrics(g.path) for g in gans}
    logs = {name: records for name, records in logs.items() if records}
    if not logs:
        return html.Section(
            "curves",
            "Training curves",
            html.note("no metrics.jsonl with records in the GAN runs given"),
        )
    charts = "".join(html.image(png, panel.title) for panel, png in plots.curve_panels(logs))
    intro = (
        html.note(f"{len(logs)} runs on shared axes; one colour per run") if len(logs) > 1 else ""
    )
    return html.Section("curves", "Training curves", f'{intro}<div class="charts">{charts}</div>')


def _runs_or_note(parts: list[str]) -> str:
    return "".join(parts) if parts else html.note("no GAN run given")


def timeline_section(gans: Sequence[GanRunInfo], points: int = TIMELINE_POINTS) -> html.Section:
    parts = []
    for g in gans:
        grids = pick_evenly(sample_grids(g.path), points)
        parts.append(html.heading(g.name))
        if not grids:
            parts.append(html.note(f"no sample grids in {g.path / 'samples'}"))
            continue
        parts.append(
            "".join(
                html.image(path.read_bytes(), f"{g.name} step {step}", f"step {step:,}", pixel=True)
                for step, path in grids
            )
        )
    intro = html.note(
        "the same fixed latent vectors at each point, so the grids show training progress, not noise"
    )
    return html.Section("timeline", "Samples over training", intro + _runs_or_note(parts))


def _per_loaded_run(
    loaded: Sequence[tuple[GanRunInfo, Any, str | None]], render: Callable[[GanRunInfo, Any], str]
) -> str:
    """Each run's heading and ``render(info, run)``, or the reason the run cannot be sampled."""
    parts = []
    for info, run, reason in loaded:
        parts.append(html.heading(info.name))
        parts.append(render(info, run) if run is not None else html.note(reason or "not available"))
    return _runs_or_note(parts)


def interpolation_section(
    loaded: Sequence[tuple[GanRunInfo, Any, str | None]], steps: int, seed: int
) -> html.Section:
    def render(info: GanRunInfo, run: Any) -> str:
        prompt = run_images.DEFAULT_PROMPTS[0] if info.mode == "text" else None
        try:
            strip = run_images.interpolation_strip(
                run, steps, seed, class_label=0 if info.mode == "class" else None, prompt=prompt
            )
        except UserError as exc:
            return html.note(str(exc))
        what = (
            f"prompt '{prompt}'"
            if prompt
            else ("class 0" if info.mode == "class" else "unconditional")
        )
        png = run_images.png_bytes(run_images.grid_image(strip, ncol=steps, scale=3))
        return html.image(
            png,
            f"{info.name} interpolation",
            f"{steps} steps on the arc between two latents (seed {seed}, {what})",
            pixel=True,
        )

    return html.Section("interpolation", "Latent interpolation", _per_loaded_run(loaded, render))


def grid_section(loaded: Sequence[tuple[GanRunInfo, Any, str | None]], seed: int) -> html.Section:
    def render(info: GanRunInfo, run: Any) -> str:
        if info.mode == "class":
            grid = run_images.class_grid(run, PER_CLASS, seed)
            names = run.class_names or [str(k) for k in range(run.num_classes)]
            caption = (
                f"one row per class ({', '.join(map(str, names))}); the same latents in every row"
            )
        elif info.mode == "text":
            grid = run_images.prompt_grid(run, run_images.DEFAULT_PROMPTS, PER_CLASS, seed)
            caption = "one row per prompt: " + " | ".join(run_images.DEFAULT_PROMPTS)
        else:
            grid = run.sample(64, seed=seed)
            caption = "64 samples (unconditional run: no classes or prompts)"
        png = run_images.png_bytes(
            run_images.grid_image(
                grid, ncol=PER_CLASS if info.mode != "unconditional" else 8, scale=2
            )
        )
        return html.image(
            png, f"{info.name} grid", caption + f"; seed {seed}, step {run.step:,}", pixel=True
        )

    return html.Section("grid", "Class and prompt grid", _per_loaded_run(loaded, render))


def _metric_rows(result: dict[str, Any]) -> list[tuple[str, float, str]]:
    """``(name, value, spread)`` rows of one evaluation result, named as ganfuse evaluate prints them."""
    m = result["metrics"]
    extractor = result.get("extractor", "?")
    rows = []
    for key, value in m.items():
        if key.endswith("_std") or not isinstance(value, int | float):
            continue
        name = {
            "fid": "FID" if extractor == "inception" else f"FD ({extractor})",
            "kid": "KID",
            "is": "IS",
        }.get(key, key)
        std = m.get(f"{key}_std")
        rows.append(
            (name, float(value), "" if std is None else f"± {html.format_number(float(std))}")
        )
    return rows


def metrics_section(gans: Sequence[GanRunInfo]) -> html.Section:
    rows = []
    for g in gans:
        try:
            results = read_eval(g.path)
        except UserError as exc:
            rows.append([g.name, str(exc), "", "", "", "", "", ""])
            continue
        for r in results:
            for name, value, spread in _metric_rows(r):
                rows.append(
                    [
                        g.name,
                        r.get("reference", ""),
                        name,
                        value,
                        spread,
                        f"{r.get('n_fake', '?')} / {r.get('n_real', '?')}",
                        r.get("extractor", ""),
                        r.get("resize", ""),
                    ]
                )
    if not rows:
        body = html.note(
            f"no {EVAL_FILE} in the runs given; write one with: ganfuse evaluate RUN --ref digits --json > RUN/{EVAL_FILE}"
        )
    else:
        body = html.table(
            [
                "run",
                "reference",
                "metric",
                "value",
                "spread",
                "n fake / real",
                "extractor",
                "resize",
            ],
            rows,
        )
    return html.Section("metrics", "Metrics", body + memorization_part(gans))


def memorization_part(gans: Sequence[GanRunInfo]) -> str:
    """The memorisation audit of each run that has one (``ganfuse evaluate RUN --metrics
    memorization`` writes ``RUN/memorization.json`` and the closest pairs as ``memorization.png``)."""
    parts = []
    for g in gans:
        file = g.path / MEMORIZATION_FILE
        if not file.is_file():
            continue
        try:
            audit = json.loads(file.read_text(encoding="utf-8"))
            rows = [
                [key, float(audit[key])]
                for key in (
                    "median_ratio",
                    "closer_share",
                    "near_copy_share",
                    "heldout_near_copy_share",
                )
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parts.append(html.note(f"{g.name}: {file} is unreadable ({exc})"))
            continue
        parts.append(html.heading(f"Memorisation audit: {g.name}"))
        parts.append(
            html.note(
                f"{audit.get('n_samples', '?')} samples against {audit.get('n_train', '?')} training images in "
                f"{audit.get('extractor', '?')} features; reference: {audit.get('reference', '?')} real images. "
                f"Ratio = distance to the nearest training image / the median such distance of a real reference "
                f"image; near copy: ratio < {audit.get('near_copy', '?')}."
            )
        )
        parts.append(html.table(["figure", "value"], rows))
        picture = g.path / MEMORIZATION_PICTURE
        if picture.is_file():
            parts.append(
                html.image(
                    picture.read_bytes(),
                    f"closest pairs of {g.name}",
                    "closest samples (top) above their nearest training images (bottom)",
                    pixel=True,
                )
            )
    return "".join(parts)


def _benchmark_tables(name: str, rows: Sequence[dict[str, Any]]) -> str:
    parts = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in mine))
        table_rows = []
        for fusion in dict.fromkeys(r["fusion"] for r in mine):
            cells = {r["metric"]: r for r in mine if r["fusion"] == fusion}
            first = next(iter(cells.values()))
            table_rows.append(
                [
                    fusion,
                    *[cells[m]["value"] if m in cells else "" for m in metrics],
                    first.get("params", ""),
                    first.get("train_seconds", ""),
                ]
            )
        parts += [
            html.heading(f"{name}: {task}", 4),
            html.table(["fusion", *metrics, "params", "train s"], table_rows),
        ]
    return "".join(parts)


def fusion_section(
    benchmarks: Sequence[tuple[str, Path]], multimodal: Sequence[tuple[str, Path, str]]
) -> html.Section:
    parts = []
    results = {name: read_benchmark(path) for name, path in benchmarks}
    if results:
        chart = plots.benchmark_chart(results)
        if chart is not None:
            parts.append(
                html.image(
                    chart, "fusion benchmark chart", "main test metric per task and fusion method"
                )
            )
        for name, rows in results.items():
            parts.append(_benchmark_tables(name, rows))
    if multimodal:
        table_rows = []
        for name, path, kind in multimodal:
            metrics_path = path / "metrics.json"
            data = (
                json.loads(metrics_path.read_text(encoding="utf-8"))
                if metrics_path.is_file()
                else {}
            )
            for key, value in _flatten(data).items():
                table_rows.append([name, kind, key, value])
        parts.append(
            html.collapsible(
                f"test metrics of the {len(multimodal)} multimodal run(s)",
                html.table(["run", "kind", "metric", "value"], table_rows),
            )
        )
    if not parts:
        parts.append(
            html.note(
                "no fusion benchmark (results.json) or multimodal run given; make one with: ganfuse fuse benchmark --out DIR"
            )
        )
    return html.Section("fusion", "Fusion benchmark", "".join(parts))


# ------------------------------------------------------------------------------------ assembly


def default_output(paths: Sequence[Path]) -> Path:
    """``RUN/report.html`` for one run, ``report.html`` in the working folder for several."""
    return Path(paths[0]) / "report.html" if len(paths) == 1 else Path("report.html")


def build_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of ``paths`` (GAN runs, multimodal runs, benchmark folders) to ``out``."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("give at least one run folder to report on")
    say = progress or (lambda _msg: None)
    names = display_names(paths)
    gans: list[GanRunInfo] = []
    multimodal: list[tuple[str, Path, str]] = []
    benchmarks: list[tuple[str, Path]] = []
    for name, path in zip(names, paths, strict=True):
        kind = detect_kind(path)
        if kind == "gan":
            gans.append(gan_run_info(path, name))
        elif kind == "benchmark":
            benchmarks.append((name, path))
            multimodal += [
                (f"{name}/{p.name}", p, multimodal_kind(p)) for p in benchmark_runs(path)
            ]
        else:
            multimodal.append((name, path, multimodal_kind(path)))
    say("loading generators")
    loaded = [(info, *_load(info, device)) for info in gans]
    say("drawing curves and images")
    sections = [
        runs_section(gans, multimodal, benchmarks),
        config_section(gans, multimodal),
        curves_section(gans),
        timeline_section(gans),
        interpolation_section(loaded, INTERPOLATION_STEPS, seed),
        grid_section(loaded, seed),
        metrics_section(gans),
        fusion_section(benchmarks, multimodal),
    ]
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    document = html.page(
        f"ganfuse report: {', '.join(names)}", f"written {stamp} by ganfuse {__version__}", sections
    )
    out = Path(out) if out is not None else default_output(paths)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return out
