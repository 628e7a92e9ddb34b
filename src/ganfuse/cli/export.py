"""``ganfuse export``: a run's generator as ONNX, TorchScript or a Hugging Face Hub folder (wiring
only; the work is :mod:`ganfuse.export`, imported when the command runs)."""

from __future__ import annotations

import argparse
import importlib.util

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import check_output_dir

FORMATS = ("onnx", "torchscript", "hf")  # as ganfuse.export.FORMATS (that module imports torch)
TOLERANCE = 1e-4  # fp32: the largest difference an export may show against PyTorch


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "export",
        "Export a run's generator: ONNX or TorchScript (checked against PyTorch), or a Hugging Face "
        "Hub folder (safetensors, config.json, model card).",
        "ganfuse export runs/digits --format onnx --out digits.onnx\n"
        "  ganfuse export runs/digits --format hf --out hub/digits",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument(
        "--format",
        required=True,
        metavar="FORMAT",
        help=f"{', '.join(FORMATS)}; text-to-image graphs take the text embedding "
        "(the prompt encoder's output), not strings",
    )
    p.add_argument(
        "--out", required=True, help="the file (.onnx; .pt for torchscript) or, for hf, a folder"
    )
    p.add_argument(
        "--which", default="latest", help="latest or best (the best Frechet distance seen)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file or folder")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the export against PyTorch on 5 fresh inputs",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fmt = str(args.format).strip().lower()
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if args.which not in ("latest", "best"):
        raise UserError(f"--which must be latest or best, got {args.which!r}")
    from pathlib import Path

    if not (Path(args.run) / "config.yaml").is_file():
        raise UserError(
            f"{args.run} is not a run folder (no config.yaml); give a folder written by ganfuse train"
        )
    out = Path(args.out)
    if fmt == "hf":
        check_output_dir(out)
    else:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name for --format {fmt}")
        if out.exists() and not args.overwrite:
            raise UserError(
                f"--out {out} exists; remove it, choose another name or add --overwrite"
            )
        check_output_dir(out.parent, name="the folder of --out")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise UserError("--format onnx needs the onnx package: pip install 'ganfuse[export]'")

    from ganfuse.export import (
        check_export,
        describe_inputs,
        export_generator,
        format_shape,
        save_pretrained,
    )
    from ganfuse.run import load_run

    gan = load_run(args.run, which=args.which)
    if fmt == "hf":
        save_pretrained(gan, out, overwrite=args.overwrite)
        print(
            f"wrote {out} (model.safetensors, config.json, README.md) from step {gan.step}; "
            "load it with ganfuse.export.from_pretrained"
        )
        return 0
    try:
        export_generator(gan, fmt, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    info = describe_inputs(gan)
    signature = ", ".join(
        f"{name} {format_shape(v['shape'])} {v['dtype']}" for name, v in info["inputs"].items()
    )
    print(
        f"wrote {out} ({fmt}, step {gan.step}): {signature} -> images "
        f"{format_shape(info['outputs']['images']['shape'])} in [-1, 1]"
    )
    if info["text_input"]:
        print(f"  text is given as {info['text_input']}")
    if args.no_check:
        return 0
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        print(
            "  not checked against PyTorch: onnxruntime is not installed (pip install 'ganfuse[export]')"
        )
        return 0
    diff = check_export(gan, out, fmt)
    verdict = "ok" if diff <= TOLERANCE else f"above the {TOLERANCE:g} tolerance"
    print(f"  max |{fmt} - PyTorch| = {diff:.3g} on 5 fresh inputs ({verdict})")
    if diff > TOLERANCE:
        raise UserError(
            f"the {fmt} export of {args.run} differs from PyTorch by {diff:.3g} (> {TOLERANCE:g})"
        )
    return 0
