"""Exported DCGAN generator (ONNX Runtime, TorchScript) vs eager PyTorch, on the CPU, same weights.

    python benchmarks/export_speed.py [--run RUN] [--threads 2] [--batch 64] [--repeats 30] [--rounds 5]

The generator is the founding document's DCGAN (``digits-dcgan``: z 100, width 256, 1x32x32), from
``--run`` when given, else freshly initialised (speed does not depend on the weights). It is
exported with ``ganfuse.export.export_generator`` and checked against PyTorch first (max abs
difference printed). Then the three engines alternate for ``--rounds`` rounds so machine noise hits
all of them; each round times ``--repeats`` forward passes of one batch, after warm-up. Eager runs
under ``torch.inference_mode`` with ``torch.set_num_threads(threads)``; ONNX Runtime with
``intra_op_num_threads=threads`` and ``inter_op_num_threads=1``; TorchScript under the same torch
thread count. Printed: one JSON line with the median milliseconds per batch of each engine, images
per second and the speed-up over eager (median over all timed passes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ganfuse.config import load_config
from ganfuse.export import check_export, example_inputs, export_generator
from ganfuse.models.build import build_gan
from ganfuse.run import Run, load_run


def dcgan_run(path: str | None) -> Run:
    if path:
        return load_run(path)
    config = load_config("digits-dcgan", ["train.precision=fp32"])
    torch.manual_seed(0)
    g, _ = build_gan(config, 1, 0)
    manifest = {"step": 0, "channels": 1, "num_classes": 0, "config": config.to_dict()}
    return Run(Path("."), config, 0, g.eval(), 0, [], manifest, torch.device("cpu"))


def timings(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", help="a DCGAN run folder; default: a freshly initialised digits-dcgan G"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30, help="timed passes per engine per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime

    torch.set_num_threads(args.threads)
    run = dcgan_run(args.run)
    if run.config.model.arch != "dcgan":
        raise SystemExit(
            f"{args.run} is a {run.config.model.arch} run; this benchmark is for dcgan"
        )
    inputs = example_inputs(run, args.batch, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_generator(run, "onnx", Path(tmp) / "g.onnx")
        ts_path = export_generator(run, "torchscript", Path(tmp) / "g.pt")
        diffs = {
            "onnx": check_export(run, onnx_path, "onnx"),
            "torchscript": check_export(run, ts_path, "torchscript"),
        }
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = onnxruntime.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        feed = {name: t.numpy() for name, t in inputs.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(ts_path))
        g, args_in = run.generator, tuple(inputs.values())

        def eager() -> None:
            with torch.inference_mode():
                g(*args_in)

        def torchscript() -> None:
            with torch.inference_mode():
                scripted(*args_in)

        engines = {
            "eager": eager,
            "onnxruntime": lambda: session.run(["images"], feed),
            "torchscript": torchscript,
        }
        for fn in engines.values():  # warm-up: allocation, TorchScript profiling runs
            timings(fn, 5)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, fn in engines.items():
                times[name] += timings(fn, args.repeats)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "export_speed",
                "model": "digits-dcgan G (z 100, width 256, 1x32x32)",
                "threads": args.threads,
                "batch": args.batch,
                "passes_per_engine": args.repeats * args.rounds,
                "max_abs_diff": {k: float(f"{v:.3g}") for k, v in diffs.items()},
                "median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
                "images_per_s": {k: round(args.batch / v, 1) for k, v in med.items()},
                "speedup_vs_eager": {
                    k: round(med["eager"] / v, 3) for k, v in med.items() if k != "eager"
                },
                "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
