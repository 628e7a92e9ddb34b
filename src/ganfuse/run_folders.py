"""What a folder given to ``ganfuse report`` or ``ganfuse serve`` holds, read from disk only.

Three kinds of folder are recognised (:func:`detect_kind`):

``gan``
    a ``ganfuse train`` run: ``config.yaml``, ``checkpoints/``, ``metrics.jsonl`` (one JSON object
    per logged step), ``samples/step_XXXXXXXX.png`` (grids of fixed latents over training) and,
    when the run was evaluated, ``eval.json`` (:data:`EVAL_FILE`).
``multimodal``
    a ``ganfuse fuse train`` run: ``run.json`` whose ``kind`` is ``fusion``, ``zeroshot`` or
    ``caption``, its ``config.json`` and ``metrics.json``.
``benchmark``
    a ``ganfuse fuse benchmark`` folder: ``results.json`` (a list of ``{task, fusion, metric,
    value, params, train_seconds}``), and the multimodal runs it kept under ``runs/``.

Nothing here builds a model; loading is :func:`ganfuse.run.load_run`'s job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ganfuse.errors import UserError

EVAL_FILE = "eval.json"
"""``RUN/eval.json``: the result of ``ganfuse evaluate`` for the run (``EvaluationResult.to_dict()``),
or a list of them (one per reference or extractor). ``ganfuse demo`` writes it; the report shows it."""

Kind = Literal["gan", "multimodal", "benchmark"]
GenerationMode = Literal["unconditional", "class", "text"]
BENCHMARK_FIELDS = ("task", "fusion", "metric", "value")


class RunFolderError(UserError):
    """A path given to report or serve that is not a ganfuse run or benchmark folder."""


def detect_kind(path: Path) -> Kind:
    """The kind of run folder at ``path``; a :class:`RunFolderError` names what was expected."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(
            f"{path} does not exist; give a run folder written by ganfuse train, fuse train or fuse benchmark"
        )
    if not path.is_dir():
        raise RunFolderError(f"{path} is a file; give a run folder, not a file inside it")
    if (path / "config.yaml").is_file() and (
        (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file()
    ):
        return "gan"
    if (path / "results.json").is_file():
        return "benchmark"
    if (path / "run.json").is_file():
        return "multimodal"
    raise RunFolderError(
        f"{path} is not a ganfuse run: expected config.yaml (ganfuse train), run.json (ganfuse fuse train) "
        "or results.json (ganfuse fuse benchmark)"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path} is not readable JSON ({exc})") from None


def read_config(run: Path) -> dict[str, Any]:
    """The resolved config of a GAN run (``config.yaml``) as a nested dict."""
    path = Path(run) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RunFolderError(f"{path} is not readable YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} must hold a mapping of config sections")
    return data


def read_metrics(run: Path) -> list[dict[str, float]]:
    """The records of ``metrics.jsonl`` in step order; lines cut by a kill and non-numeric or
    non-finite values are dropped, so a live run can be reported while it trains."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if not isinstance(raw, dict) or "step" not in raw:
            continue
        record = {
            k: float(v)
            for k, v in raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if "step" in record:
            records.append(record)
    return sorted(records, key=lambda r: r["step"])


def sample_grids(run: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``samples/step_XXXXXXXX.png`` in step order."""
    found = []
    for path in (Path(run) / "samples").glob("step_*.png"):
        digits = path.stem.removeprefix("step_")
        if digits.isdigit():
            found.append((int(digits), path))
    return sorted(found)


def pick_evenly(items: list, k: int) -> list:
    """At most ``k`` items spread evenly over ``items``, always keeping the first and the last."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[-1]]
    indices = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in indices]


def read_eval(run: Path) -> list[dict[str, Any]]:
    """The evaluation results stored in ``RUN/eval.json`` (empty when there are none)."""
    path = Path(run) / EVAL_FILE
    if not path.is_file():
        return []
    data = _read_json(path)
    results = data if isinstance(data, list) else [data]
    good = [r for r in results if isinstance(r, dict) and isinstance(r.get("metrics"), dict)]
    if len(good) != len(results):
        raise RunFolderError(
            f"{path}: every entry needs a 'metrics' object (write it from ganfuse evaluate --json)"
        )
    return good


def write_eval(run: Path, results: list[dict[str, Any]]) -> Path:
    """Store evaluation results (``EvaluationResult.to_dict()``) as ``RUN/eval.json``."""
    path = Path(run) / EVAL_FILE
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path


def read_benchmark(folder: Path) -> list[dict[str, Any]]:
    """The rows of a fusion benchmark's ``results.json``, checked for the fields the report uses."""
    path = Path(folder) / "results.json"
    rows = _read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RunFolderError(f"{path} must hold a list of result objects")
    for row in rows:
        missing = [f for f in BENCHMARK_FIELDS if f not in row]
        if missing:
            raise RunFolderError(f"{path}: a row lacks {', '.join(missing)}: {row}")
        if not isinstance(row["value"], int | float):
            raise RunFolderError(f"{path}: value must be a number in {row}")
    return rows


def multimodal_kind(run: Path) -> str:
    """``fusion``, ``zeroshot`` or ``caption``: the ``kind`` in a multimodal run's ``run.json``."""
    meta = _read_json(Path(run) / "run.json")
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if not isinstance(kind, str):
        raise RunFolderError(f"{Path(run) / 'run.json'} names no run kind")
    return kind


def benchmark_runs(folder: Path) -> list[Path]:
    """The multimodal runs a benchmark kept (its zero-shot and caption runs), in name order."""
    runs = Path(folder) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if p.is_dir() and (p / "run.json").is_file())


def read_manifest(run: Path) -> dict[str, Any]:
    """The newest checkpoint's ``manifest.json`` of a GAN run (empty when there is none)."""
    folders = sorted((Path(run) / "checkpoints").glob("step_*"), reverse=True)
    for folder in folders:
        if (folder / "manifest.json").is_file():
            data = _read_json(folder / "manifest.json")
            return data if isinstance(data, dict) else {}
    return {}


# A text-conditional run is recognised by its architecture (``model.arch: t2i-*``, the
# text-to-image generators) or by ``"kind": "t2i"`` in its checkpoint manifest. Every config has
# a ``text`` section, so its presence says nothing.
TEXT_KINDS = ("t2i", "text-to-image")
TEXT_ARCH_PREFIX = "t2i"


def generation_mode(
    config: dict[str, Any], manifest: dict[str, Any] | None = None
) -> GenerationMode:
    """How a GAN run is asked for images: ``text`` (prompts), ``class`` (a label) or ``unconditional``."""
    manifest = manifest or {}
    model = config.get("model") or {}
    if manifest.get("kind") in TEXT_KINDS or str(model.get("arch", "")).startswith(
        TEXT_ARCH_PREFIX
    ):
        return "text"
    if model.get("conditional") or int(manifest.get("num_classes") or 0) > 0:
        return "class"
    return "unconditional"


@dataclass(frozen=True)
class GanRunInfo:
    """What the report and the app show about a GAN run without building it."""

    path: Path
    name: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    mode: GenerationMode

    @property
    def has_checkpoint(self) -> bool:
        return bool(self.manifest)


def gan_run_info(path: Path, name: str | None = None) -> GanRunInfo:
    path = Path(path)
    config = read_config(path)
    manifest = read_manifest(path)
    return GanRunInfo(path, name or path.name, config, manifest, generation_mode(config, manifest))


def display_names(paths: list[Path]) -> list[str]:
    """Short unique labels for runs: the folder name, with its parent when two names clash."""
    names = [Path(p).name or str(p) for p in paths]
    out = []
    for path, name in zip(paths, names, strict=True):
        if names.count(name) > 1:
            name = f"{Path(path).parent.name}/{name}"
        out.append(name)
    seen: dict[str, int] = {}
    unique = []
    for name in out:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique
