"""Training throughput of presets against the machine's measured peak; where a step's time goes; levers.

    python benchmarks/train_throughput.py [--preset digits-dcgan] [--seconds 20] [--threads 1]
    python benchmarks/train_throughput.py --table digits-dcgan,digits,digits-cond --seconds 15
    python benchmarks/train_throughput.py --profile [--preset digits-dcgan] [--steps 10]
    python benchmarks/train_throughput.py --levers [--preset digits-dcgan] [--rounds 3] [--seconds 8]

- default: one JSON line of ``ganfuse bench train`` (img/s, FLOPs per image, peak GEMM FLOP/s,
  utilisation, precision and why, threads, CPU);
- ``--table``: one markdown row per preset for benchmarks/README.md;
- ``--profile``: ``torch.profiler`` over ``--steps`` training steps after a warm-up; the ops that
  take the most self CPU time, and the share of each kind of work;
- ``--levers``: img/s of the preset as it is and with each lever (channels_last, fused Adam,
  no per-step statistics), alternating in rounds so machine noise hits all; for each lever, whether
  the weights after a few steps are bit-identical to the baseline's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

import ganfuse.train.loop as loop
from ganfuse.bench import bench_train, time_steps
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


def profile(preset: str, overrides: list[str], steps: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(preset, overrides, tmp)
        for _ in range(3):
            trainer.train_step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                trainer.train_step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or "Optimizer" in e.key]
    ops = [e for e in events if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in ops)
    print(
        f"{preset}: {steps} steps, {total / 1e3 / steps:.1f} ms of aten self CPU time per step, "
        f"precision {trainer.precision.name}, {torch.get_num_threads()} thread(s)"
    )
    print(f"{'op':<44} {'share':>6} {'ms/step':>8} {'calls/step':>10}")
    for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:top]:
        print(
            f"{e.key:<44} {100 * e.self_cpu_time_total / total:5.1f}% "
            f"{e.self_cpu_time_total / 1e3 / steps:8.2f} {e.count / steps:10.1f}"
        )
    kinds: dict[str, float] = defaultdict(float)
    for e in ops:
        kinds[kind_of(e.key)] += e.self_cpu_time_total
    print(
        "by kind: "
        + ", ".join(
            f"{k} {100 * v / total:.1f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
        )
    )


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
    mode.add_argument("--profile", action="store_true", help="where a training step's time goes")
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
    elif args.profile:
        profile(args.preset, args.overrides, args.steps, args.top)
    elif args.levers:
        levers(args.preset, args.overrides, args.rounds, args.seconds, args.check_steps)
    else:
        print(json.dumps(bench_train(args.preset, args.seconds, args.overrides)))


if __name__ == "__main__":
    main()
