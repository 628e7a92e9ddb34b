"""Training throughput of presets against the machine's measured peak; where a step's time goes; levers.

    python benchmarks/train_throughput.py [--preset digits-dcgan] [--seconds 20] [--threads 1]
    python benchmarks/train_throughput.py --table digits-dcgan,digits,digits-cond --seconds 15
    python benchmarks/train_throughput.py --precisions digits-dcgan,digits --seconds 12 --threads 1
    python benchmarks/train_throughput.py --profile [--preset digits-dcgan] [--steps 10]
    python benchmarks/train_throughput.py --variants fp32=train.precision=fp32 bf16=train.precision=bf16
    python benchmarks/train_throughput.py --profile-precisions [--preset digits-dcgan] [--steps 10]
    python benchmarks/train_throughput.py --levers [--preset digits-dcgan] [--rounds 3] [--seconds 8]

- default: one JSON line of ``ganfuse bench train`` (img/s, FLOPs per image, peak GEMM FLOP/s,
  utilisation, precision and why, threads, CPU);
- ``--table``: one markdown row per preset for benchmarks/README.md;
- ``--precisions``: each preset in bf16 and in fp32, both trainers in one process taking single
  steps in turn (so machine noise hits both alike), a markdown row each: img/s, peak GEMM FLOP/s
  and utilisation per precision, and bf16 / fp32;
- ``--variants``: img/s of one preset under several sets of overrides (e.g. bf16 with and without
  channels_last), all trainers taking steps in turn, with each one's ratio to the first;
- ``--profile``: ``torch.profiler`` over ``--steps`` training steps after a warm-up; the ops that
  take the most self CPU time, and the share of each kind of work;
- ``--profile-precisions``: the same in fp32 and in bf16 autocast, side by side: the ops whose time
  differs most, and each kind of work (where bf16 gains or loses);
- ``--levers``: img/s of the preset as it is and with each lever (channels_last, fused Adam,
  no per-step statistics), alternating in rounds so machine noise hits all; for each lever, whether
  the weights after a few steps are bit-identical to the baseline's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import ganfuse.train.loop as loop
from ganfuse.bench import bench_train, cpu_info, peak_gemm_flops, step_flops, time_steps
from ganfuse.config import load_config
from ganfuse.train.loop import Trainer

# Kinds of work, by the aten op names the profiler reports (first match wins).
KINDS = (
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv")),
    ("matmul", ("addmm", "::mm", "bmm", "matmul", "linear")),
    ("batch norm", ("batch_norm",)),
    ("activation", ("leaky_relu", "relu", "tanh", "sigmoid", "gelu", "silu")),
    ("optimiser", ("_foreach", "adam", "_fused")),
    ("loss", ("binary_cross_entropy", "softplus", "log_sigmoid", "hinge")),
    ("layout and copies", ("copy_", "contiguous", "clone", "to_dense", "reorder", "empty", "cat")),
    ("random numbers", ("normal", "randn", "uniform", "randint", "bernoulli")),
    ("reductions", ("sum", "mean", "norm", "var", "std")),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, keys in KINDS if any(k in lowered for k in keys)), "other")


def _trainer(preset: str, overrides: list[str], folder: str) -> Trainer:
    config = load_config(preset, [*overrides, "train.guard=false"])
    return Trainer(config, Path(folder) / "run", progress=False)


def profile_ops(
    preset: str, overrides: list[str], steps: int
) -> tuple[dict[str, tuple[float, float]], str]:
    """``torch.profiler`` over ``steps`` training steps after a warm-up: per aten op, its self CPU
    milliseconds and calls per step; and the precision the trainer ran in."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(preset, overrides, tmp)
        for _ in range(3):
            trainer.train_step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                trainer.train_step()
    ops = {
        e.key: (e.self_cpu_time_total / 1e3 / steps, e.count / steps)
        for e in prof.key_averages()
        if e.key.startswith("aten::")
    }
    return ops, trainer.precision.name


def by_kind(ops: dict[str, tuple[float, float]]) -> dict[str, float]:
    kinds: dict[str, float] = defaultdict(float)
    for name, (ms, _) in ops.items():
        kinds[kind_of(name)] += ms
    return kinds


def profile(preset: str, overrides: list[str], steps: int, top: int) -> None:
    ops, precision = profile_ops(preset, overrides, steps)
    total = sum(ms for ms, _ in ops.values())
    print(
        f"{preset}: {steps} steps, {total:.1f} ms of aten self CPU time per step, "
        f"precision {precision}, {torch.get_num_threads()} thread(s)"
    )
    print(f"{'op':<44} {'share':>6} {'ms/step':>8} {'calls/step':>10}")
    for name, (ms, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{name:<44} {100 * ms / total:5.1f}% {ms:8.2f} {calls:10.1f}")
    kinds = sorted(by_kind(ops).items(), key=lambda kv: -kv[1])
    print("by kind: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in kinds))


def profile_precisions(preset: str, overrides: list[str], steps: int, top: int) -> None:
    """Where bf16 autocast gains or loses against fp32: both profiled, the ops side by side (the
    ones whose time differs most first), then the kinds of work. Markdown tables."""
    runs = {
        name: profile_ops(preset, [*overrides, f"train.precision={name}"], steps)[0]
        for name in ("fp32", "bf16")
    }
    fp32, bf16 = runs["fp32"], runs["bf16"]
    print(
        f"{preset}, {steps} profiled steps each, {torch.get_num_threads()} thread(s): aten self CPU "
        f"ms per step, fp32 {sum(ms for ms, _ in fp32.values()):.1f}, "
        f"bf16 {sum(ms for ms, _ in bf16.values()):.1f}\n"
    )
    print("| op | fp32 ms/step | bf16 ms/step | bf16 - fp32 | calls/step fp32 / bf16 |")
    print("|---|---|---|---|---|")
    names = sorted(
        set(fp32) | set(bf16),
        key=lambda n: -abs(bf16.get(n, (0, 0))[0] - fp32.get(n, (0, 0))[0]),
    )
    for name in names[:top]:
        (f_ms, f_calls), (b_ms, b_calls) = fp32.get(name, (0, 0)), bf16.get(name, (0, 0))
        print(
            f"| `{name}` | {f_ms:.2f} | {b_ms:.2f} | {b_ms - f_ms:+.2f} | "
            f"{f_calls:.0f} / {b_calls:.0f} |"
        )
    kinds_fp32, kinds_bf16 = by_kind(fp32), by_kind(bf16)
    print("\n| kind | fp32 ms/step | bf16 ms/step | bf16 - fp32 |")
    print("|---|---|---|---|")
    for kind in sorted(set(kinds_fp32) | set(kinds_bf16), key=lambda k: -kinds_bf16.get(k, 0)):
        f_ms, b_ms = kinds_fp32.get(kind, 0.0), kinds_bf16.get(kind, 0.0)
        print(f"| {kind} | {f_ms:.1f} | {b_ms:.1f} | {b_ms - f_ms:+.1f} |")


# ------------------------------------------------------------------ levers


def _fused_adam(trainer: Trainer) -> None:
    """Adam with ``fused=True`` (one kernel per parameter group) instead of ``foreach``."""
    for name in ("G", "D"):
        old = trainer.optimizers[name]
        group = old.param_groups[0]
        new = torch.optim.Adam(group["params"], lr=group["lr"], betas=group["betas"], fused=True)
        trainer.optimizers[name] = new
    trainer.opt_g, trainer.opt_d = trainer.optimizers["G"], trainer.optimizers["D"]


def _no_step_statistics(trainer: Trainer) -> None:
    """No statistic is reported and no gradient norm computed: what per-step statistics cost."""
    trainer.stats.report = lambda name, value: None
    trainer.nets.report = trainer.stats.report


LEVERS = {
    "baseline": ([], None),
    "channels_last": (["train.channels_last=true"], None),
    "fused_adam": ([], _fused_adam),
    "no_step_stats": ([], _no_step_statistics),
}


def _weights_hash(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for name, net in (("G", trainer.G), ("D", trainer.D)):
        for key, value in sorted(net.state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(value.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def levers(
    preset: str, overrides: list[str], rounds: int, seconds: float, check_steps: int
) -> None:
    rates: dict[str, list[float]] = defaultdict(list)
    hashes = {}
    original_grad_norm = loop.grad_norm
    for round_ in range(rounds):
        for name, (extra, patch) in LEVERS.items():
            with tempfile.TemporaryDirectory() as tmp:
                trainer = _trainer(preset, [*overrides, *extra], tmp)
                if patch is not None:
                    patch(trainer)
                if name == "no_step_stats":
                    loop.grad_norm = lambda params: torch.zeros(())
                try:
                    if round_ == 0:  # same seed, same data: bit-identical weights or not
                        for _ in range(check_steps):
                            trainer.train_step()
                        hashes[name] = _weights_hash(trainer)
                    for _ in range(3):
                        trainer.train_step()
                    times = time_steps(trainer, seconds)
                finally:
                    loop.grad_norm = original_grad_norm
            per_step = trainer.batch_size * trainer.config.train.n_critic
            rates[name].append(per_step / statistics.median(times))
    base = statistics.median(rates["baseline"])
    print(
        f"{preset}, {rounds} rounds of {seconds:g} s each, precision {trainer.precision.name}, "
        f"{torch.get_num_threads()} thread(s); weights compared after {check_steps} steps"
    )
    print(f"{'lever':<16} {'img/s':>8} {'vs baseline':>12}  bit-identical")
    for name in LEVERS:
        median = statistics.median(rates[name])
        same = "yes" if hashes[name] == hashes["baseline"] else "no"
        print(
            f"{name:<16} {median:8.1f} {median / base:11.3f}x  {same}"
            f"   (rounds: {', '.join(f'{r:.1f}' for r in rates[name])})"
        )


def table(presets: list[str], seconds: float, overrides: list[str]) -> None:
    """The README's table: one row per preset (the CPU is printed once, above it)."""
    print(
        "| preset | img/s | GFLOP/img | peak GFLOP/s | achieved GFLOP/s | utilisation | precision | "
        "threads | batch | channels_last | timed steps | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    cpu = ""
    for preset in presets:
        r = bench_train(preset, seconds, overrides)
        cpu = f"{r['cpu']} ({' '.join(r['cpu_flags'])}), torch {r['torch']}"
        print(
            f"| `{preset}` | {r['img_per_s']:.1f} | {r['flops_per_image'] / 1e9:.3f} | "
            f"{r['peak_flops'] / 1e9:.1f} | {r['achieved_flops'] / 1e9:.1f} | "
            f"{100 * r['utilisation']:.0f}% | {r['precision']} | {r['threads']} | "
            f"{r['batch_size']} | {'yes' if r['channels_last'] else 'no'} | {r['steps']} | "
            f"{r['load_average']} |",
            flush=True,
        )
    print(f"\nCPU: {cpu}")


def interleaved_step_times(trainers: dict[str, Trainer], seconds: float) -> dict[str, list[float]]:
    """Seconds of single training steps of each trainer, taken in turn (one step of each, again
    and again) for about ``seconds`` in all: on a shared machine every burst of other jobs then
    falls on all of them alike, which back-to-back benches of several seconds each cannot give."""
    times: dict[str, list[float]] = {name: [] for name in trainers}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or min(map(len, times.values())) < 3:
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_step()
            times[name].append(time.perf_counter() - t0)
    return times


def interleaved_peaks(names: list[str], rounds: int = 7) -> dict[str, float]:
    """Median GEMM FLOP/s per precision, one 2048^2 product of each in turn (after a warm-up)."""
    gemm = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            gemm[name].append(peak_gemm_flops(name, torch.device("cpu"), repeats=1, warmup=1))
    return {name: statistics.median(values) for name, values in gemm.items()}


def compare_precisions(presets: list[str], seconds: float, overrides: list[str]) -> None:
    """bf16 against fp32 per preset: both trainers built in one process, their steps interleaved
    (see :func:`interleaved_step_times`), the GEMM peaks likewise. One markdown row per preset:
    median img/s, peak and utilisation per precision, and bf16 / fp32 (ratio of median steps)."""
    print(
        "| preset | GFLOP/img | bf16 img/s | fp32 img/s | bf16 / fp32 | bf16 peak GFLOP/s | "
        "fp32 peak GFLOP/s | bf16 util. | fp32 util. | steps each | threads | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    names = ["bf16", "fp32"]
    for preset in presets:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {
                name: _trainer(preset, [*overrides, f"train.precision={name}"], f"{tmp}/{name}")
                for name in names
            }
            for trainer in trainers.values():
                for _ in range(3):
                    trainer.train_step()
            flops = step_flops(trainers["fp32"])  # the same model FLOPs in either precision
            times = interleaved_step_times(trainers, seconds)
        peaks = interleaved_peaks(names)
        per_step = trainers["fp32"].batch_size * trainers["fp32"].config.train.n_critic
        rate = {name: per_step / statistics.median(times[name]) for name in names}
        util = {name: flops / per_step * rate[name] / peaks[name] for name in names}
        print(
            f"| `{preset}` | {flops / per_step / 1e9:.3f} | {rate['bf16']:.1f} | {rate['fp32']:.1f} | "
            f"**{rate['bf16'] / rate['fp32']:.2f}x** | {peaks['bf16'] / 1e9:.1f} | "
            f"{peaks['fp32'] / 1e9:.1f} | {100 * util['bf16']:.0f}% | {100 * util['fp32']:.0f}% | "
            f"{len(times['fp32'])} | {torch.get_num_threads()} | "
            f"{load:.2f}-{os.getloadavg()[0]:.2f} |",
            flush=True,
        )
    model, flags = cpu_info()
    print(f"\nCPU: {model} ({' '.join(flags)}), torch {torch.__version__}")


def compare_variants(
    preset: str, variants: list[str], seconds: float, overrides: list[str]
) -> None:
    """img/s of ``preset`` under each variant (``NAME=key=value,key=value``, or just ``NAME`` for
    the preset as it is), all trainers in one process taking steps in turn; the first variant is
    the reference of the ratio column."""
    parsed = {}
    for variant in variants:
        name, _, sets = variant.partition("=")
        parsed[name] = [item for item in sets.split(",") if item] if sets else []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: _trainer(preset, [*overrides, *extra], f"{tmp}/{i}")
            for i, (name, extra) in enumerate(parsed.items())
        }
        for trainer in trainers.values():
            for _ in range(3):
                trainer.train_step()
        times = interleaved_step_times(trainers, seconds)
    reference = statistics.median(times[next(iter(times))])
    print(
        f"{preset}, {torch.get_num_threads()} thread(s), steps in turn for {seconds:g} s, "
        f"load {load:.2f}-{os.getloadavg()[0]:.2f}\n"
    )
    print("| variant | overrides | img/s | vs first | steps |")
    print("|---|---|---|---|---|")
    for name, trainer in trainers.items():
        per_step = trainer.batch_size * trainer.config.train.n_critic
        median = statistics.median(times[name])
        print(
            f"| {name} | {' '.join(parsed[name]) or '-'} | {per_step / median:.1f} | "
            f"{reference / median:.2f}x | {len(times[name])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="digits-dcgan")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads; 0: torch's default"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--table", metavar="PRESET,...", help="one README row per preset")
    mode.add_argument(
        "--precisions", metavar="PRESET,...", help="bf16 vs fp32 per preset, back to back"
    )
    mode.add_argument("--profile", action="store_true", help="where a training step's time goes")
    mode.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME=KEY=VALUE,...",
        help="img/s of --preset under each set of overrides, steps in turn",
    )
    mode.add_argument(
        "--profile-precisions", action="store_true", help="--profile in fp32 and bf16, side by side"
    )
    mode.add_argument("--levers", action="store_true", help="img/s with each lever, side by side")
    parser.add_argument("--steps", type=int, default=10, help="--profile: profiled steps")
    parser.add_argument("--top", type=int, default=15, help="--profile: ops listed")
    parser.add_argument("--rounds", type=int, default=3, help="--levers: alternating rounds")
    parser.add_argument(
        "--check-steps", type=int, default=5, help="--levers: steps before comparing weights"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table:
        table(args.table.split(","), args.seconds, args.overrides)
    elif args.precisions:
        compare_precisions(args.precisions.split(","), args.seconds, args.overrides)
    elif args.profile:
        profile(args.preset, args.overrides, args.steps, args.top)
    elif args.variants:
        compare_variants(args.preset, args.variants, args.seconds, args.overrides)
    elif args.profile_precisions:
        profile_precisions(args.preset, args.overrides, args.steps, args.top)
    elif args.levers:
        levers(args.preset, args.overrides, args.rounds, args.seconds, args.check_steps)
    else:
        print(json.dumps(bench_train(args.preset, args.seconds, args.overrides)))


if __name__ == "__main__":
    main()
