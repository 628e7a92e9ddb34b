"""Training throughput (img/s) and model FLOP utilisation (MFU) on one GPU; run by benchmarks/gpu.sh.

    python benchmarks/gpu_throughput.py [--seconds 10] [--budget 420] [--batches 64 256]

Models: the founding document's DCGAN (preset ``digits-dcgan``, 32x32) and the text-to-image model
at 64x64 (preset ``shapes-t2i``; skipped with a message while that preset does not exist), each at
every batch size, eager and with ``torch.compile``, in bf16 with channels_last.

- img/s: :func:`ganfuse.bench.bench_train` (median over whole training steps, after warm-up).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` around real training steps (forward and
  backward of G and D; optimiser arithmetic is not counted), once per model, eager. The count of
  ``warmup + 3`` steps minus that of ``3`` steps isolates whole steps from the set-up work, and
  FLOPs per image (``batch * n_critic`` real images per step) scale to every batch size.
- MFU: achieved FLOP/s over the GPU's peak dense bf16 FLOP/s, looked up by device name
  (``GANFUSE_PEAK_TFLOPS`` overrides it).

The whole run stays inside ``--budget`` seconds: a configuration whose turn comes too late is
reported as skipped, never left half-measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ganfuse.bench import bench_train
from ganfuse.config import load_config, preset_names

DCGAN_PRESET = "digits-dcgan"
T2I_PRESET = "shapes-t2i"
# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's data sheets; first match wins,
# so the more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM5
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
)
COMMON = ["train.precision=bf16", "train.channels_last=true"]
MODEL_OVERRIDES = {DCGAN_PRESET: [], T2I_PRESET: ["data.image_size=64"]}
COMPILE_ESTIMATE_S = 90.0  # what a compiled configuration may take, compilation included


def peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a GPU by its ``torch.cuda.get_device_name`` (None if unknown)."""
    if os.environ.get("GANFUSE_PEAK_TFLOPS"):
        return float(os.environ["GANFUSE_PEAK_TFLOPS"])
    return next(
        (tflops for key, tflops in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()), None
    )


def flops_per_image(preset: str, overrides: list[str], batch: int, extra_steps: int = 2) -> float:
    """Model FLOPs of one training step per real image, counted over ``extra_steps`` eager steps."""
    from torch.utils.flop_counter import FlopCounterMode

    overrides = [*overrides, f"train.batch_size={batch}", "train.compile=false"]
    totals = []
    for warmup in (0, extra_steps):
        counter = FlopCounterMode(display=False)
        with counter:
            result = bench_train(preset, 0.0, overrides, warmup_steps=warmup)  # warmup + 3 steps
        totals.append(counter.get_total_flops())
    per_step = (totals[1] - totals[0]) / extra_steps
    return per_step / (result["batch_size"] * load_config(preset, overrides).train.n_critic)


def row(cells: list[str]) -> str:
    widths = (14, 6, 8, 10, 9, 10, 7)
    return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="timed seconds per configuration"
    )
    parser.add_argument(
        "--budget", type=float, default=420.0, help="wall-clock limit of the whole run"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--no-compile", action="store_true", help="eager runs only")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="smoke-test the script on a CPU (tiny numbers)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every run (e.g. model widths for a smoke test)",
    )
    args = parser.parse_args()
    start = time.monotonic()

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
        common = [*COMMON, "train.device=cuda", *args.overrides]
    elif args.allow_cpu:
        device = "cpu (smoke test)"
        common = ["train.device=cpu", "train.precision=fp32", *args.overrides]
    else:
        print(
            "gpu_throughput: no GPU found (torch.cuda.is_available() is False); nothing to measure"
        )
        return 0
    peak = peak_tflops(device)
    print(
        f"device: {device}; peak dense bf16: "
        + (f"{peak:g} TFLOP/s" if peak else "unknown (set GANFUSE_PEAK_TFLOPS to get MFU)")
    )
    print(
        f"torch {torch.__version__}; {args.seconds:g} s timed per configuration; budget {args.budget:g} s"
    )

    models = [DCGAN_PRESET]
    if T2I_PRESET in preset_names():
        models.append(T2I_PRESET)
    else:
        print(
            f"text-to-image: preset {T2I_PRESET!r} not found in this version; skipping that model"
        )
    compiles = [False] if args.no_compile else [False, True]

    print(row(["model", "batch", "compile", "img/s", "step ms", "TFLOP/s", "MFU"]))
    for preset in models:
        overrides = [*common, *MODEL_OVERRIDES[preset]]
        try:
            per_image = flops_per_image(preset, overrides, min(args.batches))
        except (
            Exception
        ) as exc:  # a model that cannot be built here must not hide the other's figures
            print(f"{preset}: cannot count FLOPs ({exc.__class__.__name__}: {exc}); skipping it")
            continue
        print(f"{preset}: {per_image / 1e9:.3f} GFLOP per real image per training step")
        for compiled in compiles:
            for batch in args.batches:
                left = args.budget - (time.monotonic() - start)
                needed = args.seconds + (COMPILE_ESTIMATE_S if compiled else 15.0)
                cells = [preset, batch, "on" if compiled else "off"]
                if left < needed:
                    print(row([*cells, "skipped", "(budget)", "", ""]))
                    continue
                run = [
                    *overrides,
                    f"train.batch_size={batch}",
                    f"train.compile={str(compiled).lower()}",
                ]
                try:
                    result = bench_train(preset, args.seconds, run)
                except Exception as exc:
                    print(
                        row([*cells, "failed", "", "", ""]) + f"  {exc.__class__.__name__}: {exc}"
                    )
                    continue
                achieved = per_image * result["img_per_s"] / 1e12
                mfu = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
                print(
                    row(
                        [
                            *cells,
                            f"{result['img_per_s']:.0f}",
                            f"{result['step_ms_median']:.2f}",
                            f"{achieved:.2f}",
                            mfu,
                        ]
                    ),
                    flush=True,
                )
    print(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
