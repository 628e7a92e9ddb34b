"""A run's generator outside ganfuse: ONNX and TorchScript graphs, and a Hugging Face Hub folder.

    from ganfuse.run import load_run
    from ganfuse.export import export_generator, check_export, save_pretrained, from_pretrained

    run = load_run("runs/digits")
    export_generator(run, "onnx", "g.onnx")          # or "torchscript", "g.pt"
    check_export(run, "g.onnx", "onnx")              # max |exported - PyTorch| on fresh inputs
    save_pretrained(run, "hub/digits")               # model.safetensors, config.json, README.md
    again = from_pretrained("hub/digits")            # a Run again, offline; again.sample(16)

The exported graph is the generator alone, in fp32 and eval mode, with a free batch size:

- unconditional runs: ``z (N, z_dim) float32 -> images (N, C, H, W) float32 in [-1, 1]``;
- class-conditional runs: ``z, labels (N,) int64 -> images``;
- text-to-image runs: ``z, text -> images``, where ``text`` is the condition tensor the run's
  prompt encoder makes of the prompts (``TextToImageRun.conditions``): sentence embeddings
  ``(N, E) float32`` for a pretrained encoder, word ids ``(N, T) int64`` for the small one. The
  graph takes that tensor, not strings: encoding text stays with the caller.

Latent truncation is not in the graph: scale ``z`` by psi (``ganfuse.run.truncate_psi``) before
feeding it. Every export records these inputs as JSON: ONNX in the model's metadata
(``ganfuse``), TorchScript in the archive's extra file ``ganfuse.json``.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ganfuse import __version__
from ganfuse.config import arch_family, from_dict, validate
from ganfuse.errors import ConfigError, UserError
from ganfuse.fileio import atomic_write, atomic_write_text
from ganfuse.metrics.memorization import MEMORIZATION_FILE
from ganfuse.run import LOADERS, Run, TextToImageRun
from ganfuse.run_folders import RunFolderError, read_eval
from ganfuse.run_images import DEFAULT_PROMPTS
from ganfuse.train.precision import resolve_device

FORMATS = ("onnx", "torchscript", "hf")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".torchscript")}
ONNX_OPSET = 17
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
METADATA_KEY = "ganfuse"
TORCHSCRIPT_EXTRA = "ganfuse.json"
EXPORT_BATCH = 2  # the batch the graph is traced at; the batch axis is free


def check_format(fmt: str) -> str:
    """``fmt`` lower-cased when it is one of :data:`FORMATS`, else a one-line :class:`UserError`."""
    name = str(fmt).strip().lower()
    if name not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return name


class ExportedGenerator(nn.Module):
    """The generator with fixed positional inputs, as exported: ``forward(z)`` for unconditional
    runs, ``forward(z, cond)`` for class-conditional (labels) and text-to-image (text) runs."""

    def __init__(self, generator: nn.Module, conditioned: bool):
        super().__init__()
        self.generator, self.conditioned = generator, conditioned

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, cond if self.conditioned else None).float()


def _condition_name(run: Run) -> str | None:
    if isinstance(run, TextToImageRun):
        return "text"
    return "labels" if run.num_classes else None


def example_inputs(run: Run, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of the exported graph for ``n`` images, on the CPU: ``z`` ``(n, z_dim)`` from
    ``seed``, plus ``labels`` ``(n,)`` int64 (class-conditional) or ``text`` (text-to-image: the
    condition tensor of the default prompts, cycled)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = {"z": torch.randn(n, run.z_dim, generator=gen)}
    cond = _condition_name(run)
    if cond == "labels":
        inputs["labels"] = torch.randint(0, run.num_classes, (n,), generator=gen)
    elif cond == "text":
        prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(n)]
        inputs["text"] = run.conditions(prompts).cpu()
    return inputs


def describe_inputs(run: Run) -> dict[str, Any]:
    """What the exported graph takes and gives (recorded in every export and in config.json)."""
    example = example_inputs(run, 1)
    image = _eager(run, example)
    shapes = {name: ["N", *t.shape[1:]] for name, t in example.items()}
    return {
        "inputs": {
            name: {"shape": shapes[name], "dtype": str(t.dtype).removeprefix("torch.")}
            for name, t in example.items()
        },
        "outputs": {
            "images": {"shape": ["N", *image.shape[1:]], "dtype": "float32", "range": [-1, 1]}
        },
        "text_input": "the prompt encoder's condition tensor (TextToImageRun.conditions), not strings"
        if "text" in example
        else None,
        "truncation": "scale z by psi before the graph (z' = psi * z); the mean latent is 0",
        "arch": run.config.model.arch,
        "z_dim": run.z_dim,
        "num_classes": run.num_classes,
        "class_names": run.class_names,
        "step": run.step,
        "ganfuse_version": __version__,
    }


@torch.no_grad()
def _eager(run: Run, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    device = next(run.generator.parameters()).device
    args = [t.to(device) for t in inputs.values()]
    return ExportedGenerator(run.generator, len(args) > 1).eval()(*args).cpu()


def format_shape(shape: list) -> str:
    """``["N", 1, 32, 32]`` -> ``"(N, 1, 32, 32)"``."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _check_suffix(fmt: str, out: Path) -> None:
    if out.suffix.lower() not in SUFFIXES[fmt]:
        raise UserError(
            f"--out {out} must end with {' or '.join(SUFFIXES[fmt])} for --format {fmt}"
        )


def export_generator(run: Run, fmt: str, out: str | Path) -> Path:
    """Write ``run``'s generator as ``fmt`` (``onnx`` or ``torchscript``) to ``out``; returns the path.

    The run's generator is moved to the CPU in fp32 for the export (a GPU-loaded run is exported
    for the CPU). ``hf`` folders are written by :func:`save_pretrained`.
    """
    fmt = check_format(fmt)
    if fmt == "hf":
        raise UserError("--format hf writes a folder: use save_pretrained(run, folder)")
    out = Path(out)
    _check_suffix(fmt, out)
    meta = json.dumps(describe_inputs(run))
    g = run.generator
    # exported from the CPU in fp32 and the default memory format, then put back as it was (the
    # loaded generator may be channels-last or on a GPU; a deep copy fails on spectral norm's
    # computed weights)
    device, dtype = next(g.parameters()).device, next(g.parameters()).dtype
    channels_last = any(
        p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
        for p in g.parameters()
    )
    module = ExportedGenerator(
        g.cpu().float().to(memory_format=torch.contiguous_format), _condition_name(run) is not None
    ).eval()
    inputs = example_inputs(run, EXPORT_BATCH)
    names = list(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter(
                "ignore"
            )  # the legacy exporter's and tracer's deprecation notices
            if fmt == "onnx":
                _export_onnx(module, inputs, names, meta, out)
            else:
                traced = torch.jit.trace(module, tuple(inputs.values()), check_trace=False)
                atomic_write(
                    out,
                    lambda tmp: torch.jit.save(
                        traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: meta}
                    ),
                )
    finally:
        g.to(device=device, dtype=dtype)
        if channels_last:
            g.to(memory_format=torch.channels_last)
    return out


def _export_onnx(
    module: nn.Module, inputs: dict[str, torch.Tensor], names: list[str], meta: str, out: Path
) -> None:
    if importlib.util.find_spec("onnx") is None:
        raise UserError("ONNX export needs the onnx package: pip install 'ganfuse[export]'")
    import onnx

    axes = {name: {0: "batch"} for name in [*names, "images"]}

    def write(tmp: Path) -> None:
        # the TorchScript-based exporter (dynamo=False): it needs neither onnxscript nor a network
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(tmp),
            input_names=names,
            output_names=["images"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, meta
        onnx.save(model, str(tmp))

    atomic_write(out, write)


def run_exported(path: str | Path, fmt: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run an exported generator on ``inputs`` (names as :func:`example_inputs`): ONNX through
    onnxruntime on the CPU, TorchScript through ``torch.jit.load``; images ``(N, C, H, W)``."""
    fmt = check_format(fmt)
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError(
                "running an ONNX export needs onnxruntime: pip install 'ganfuse[export]'"
            )
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {name: t.numpy() for name, t in inputs.items()}
        return torch.from_numpy(session.run(["images"], feed)[0])
    if fmt == "torchscript":
        with torch.no_grad():
            return _load_torchscript(path)(*inputs.values()).float()
    raise UserError("an hf folder is loaded with from_pretrained(folder)")


def check_export(run: Run, path: str | Path, fmt: str, n: int = 5, seed: int = 1) -> float:
    """The largest absolute difference between the export at ``path`` and the run's PyTorch
    generator on ``n`` fresh inputs (a batch other than the traced one, so the free batch axis is
    checked too)."""
    inputs = example_inputs(run, n, seed)
    return float((run_exported(path, fmt, inputs) - _eager(run, inputs)).abs().max())


def read_export_metadata(path: str | Path, fmt: str) -> dict[str, Any]:
    """The JSON :func:`describe_inputs` recorded in an export."""
    fmt = check_format(fmt)
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props[METADATA_KEY])
    extra = {TORCHSCRIPT_EXTRA: ""}
    _load_torchscript(path, extra)
    return json.loads(extra[TORCHSCRIPT_EXTRA])


def _load_torchscript(
    path: str | Path, extra: dict[str, str] | None = None
) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra or {})


# ----------------------------------------------------------------------- Hugging Face Hub folder


def _run_metrics(run: Run) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The run folder's evaluation results (``eval.json``) and memorisation audit, if written."""
    try:
        evals = read_eval(run.path)
    except RunFolderError:
        evals = []
    audit = None
    file = Path(run.path) / MEMORIZATION_FILE
    if file.is_file():
        try:
            audit = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            audit = None
    return evals, audit


def _dataset_line(run: Run) -> str:
    d = run.config.data
    where = f" (folder {d.path})" if d.path else ""
    return f"`{d.name}`{where}, {d.image_size}x{d.image_size}"


def model_card(
    run: Run, info: dict[str, Any], evals: list[dict[str, Any]], audit: dict[str, Any] | None
) -> str:
    """The README.md of a saved folder: Hub front matter, what the model is, its dataset, its
    metrics (``eval.json`` results and the memorisation audit) and how to load it."""
    family = arch_family(run.config.model.arch)
    pipeline = "text-to-image" if family == "t2i" else "unconditional-image-generation"
    kind = {
        "t2i": "text-to-image",
        "gan": "class-conditional" if run.num_classes else "unconditional",
    }["t2i" if family == "t2i" else "gan"]
    lines = [
        "---",
        "library_name: ganfuse",
        f"pipeline_tag: {pipeline}",
        "tags:",
        "- ganfuse",
        "- gan",
        f"- {run.config.model.arch}",
        f"- dataset-{run.config.data.name}",
        "---",
        "",
        f"# ganfuse {run.config.model.arch} generator ({kind})",
        "",
        f"A {kind} GAN generator trained with ganfuse {__version__} for {run.step} steps "
        f"(latent size {run.z_dim}).",
        "",
        "## Dataset",
        "",
        f"Trained on {_dataset_line(run)}"
        + (f"; classes: {', '.join(run.class_names)}." if run.class_names else "."),
        "",
        "## Metrics",
        "",
    ]
    rows = []
    for result in evals:
        n = f"{result.get('n_fake', '?')} / {result.get('n_real', '?')}"
        for key, value in result.get("metrics", {}).items():
            if isinstance(value, int | float) and not key.endswith("_std"):
                std = result["metrics"].get(f"{key}_std")
                shown = f"{value:.4g}" + (f" ± {std:.2g}" if isinstance(std, int | float) else "")
                rows.append(
                    f"| {key} | {shown} | {result.get('reference', '?')} | "
                    f"{result.get('extractor', '?')} | {n} |"
                )
    if audit is not None:
        n = f"{audit.get('n_samples', '?')} / {audit.get('n_train', '?')}"
        for key in ("median_ratio", "closer_share", "near_copy_share"):
            if isinstance(audit.get(key), int | float):
                rows.append(
                    f"| memorization {key} | {audit[key]:.4g} | training set | "
                    f"{audit.get('extractor', '?')} | {n} |"
                )
    if rows:
        lines += [
            "| metric | value | reference | extractor | n fake / real |",
            "|---|---|---|---|---|",
            *rows,
        ]
    else:
        lines.append(
            "No evaluation was stored with the run (`ganfuse evaluate RUN --json > RUN/eval.json`)."
        )
    inputs = ", ".join(
        f"`{name}` {format_shape(v['shape'])} {v['dtype']}" for name, v in info["inputs"].items()
    )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from ganfuse.export import from_pretrained",
        "",
        'run = from_pretrained("path/to/this/folder")  # offline: no download',
        "images = run.sample(16, seed=0"
        + (', prompts=["a large red circle in the center"])' if family == "t2i" else ")")
        + "  # (N, C, H, W) in [-1, 1]",
        "```",
        "",
        f"The generator takes {inputs} and gives images {format_shape(info['outputs']['images']['shape'])} "
        "in [-1, 1]."
        + (
            " Its text input is the prompt encoder's condition tensor, not strings."
            if family == "t2i"
            else ""
        ),
        "",
        f"Files: `{WEIGHTS_FILE}` (generator weights, EMA when the run kept them), `{CONFIG_FILE}` "
        "(the run's configuration and the generator's inputs).",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(run: Run, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``run``'s generator as a Hugging Face Hub folder: ``model.safetensors`` (the
    generator's state dict), ``config.json`` (the ganfuse config and the inputs) and a generated
    ``README.md`` model card with the run's metrics and dataset. Returns the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; give a folder for --format hf")
    if (folder / "config.yaml").is_file() or (folder / "checkpoints").is_dir():
        raise UserError(f"--out {folder} is a training run; give a new folder for --format hf")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"--out {folder} is not empty; choose another folder or add --overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    info = describe_inputs(run)
    config = {
        "library_name": "ganfuse",
        "family": arch_family(run.config.model.arch),
        "channels": int(run.manifest.get("channels", 3)),
        **info,
        "config": run.config.to_dict(),
    }
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in run.generator.state_dict().items()
    }
    atomic_write(
        folder / WEIGHTS_FILE,
        lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "step": str(run.step)}),
    )
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    evals, audit = _run_metrics(run)
    atomic_write_text(folder / CARD_FILE, model_card(run, info, evals, audit))
    return folder


def from_pretrained(folder: str | Path, device: str = "cpu") -> Run:
    """Load a folder written by :func:`save_pretrained` as a :class:`~ganfuse.run.Run` (or
    ``TextToImageRun``), offline. Its ``path`` is the folder."""
    folder = Path(folder)
    config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise UserError(
            f"{folder} is not a saved generator (it needs {CONFIG_FILE} and {WEIGHTS_FILE}; "
            "write one with ganfuse export RUN --format hf --out FOLDER)"
        )
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
        config = validate(from_dict(data["config"]))
        manifest = {
            "step": int(data["step"]),
            "channels": int(data["channels"]),
            "num_classes": int(data["num_classes"]),
            "class_names": list(data["class_names"]),
            "config": data["config"],
        }
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise UserError(f"{config_file} is not a ganfuse generator config ({exc})") from None
    try:
        weights = {f"G.{k}": v for k, v in load_file(str(weights_file)).items()}
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise UserError(f"{weights_file} cannot be read ({str(exc).splitlines()[0]})") from None
    return LOADERS[arch_family(config.model.arch)](
        folder, weights_file, config, manifest, weights, resolve_device(device), False
    )
