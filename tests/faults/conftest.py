"""Shared pieces of the fault-injection suite: tiny runs, warm child processes, checkpoint checks.

Child processes are forked from a forkserver that has already imported torch and ganfuse (see
``_workers.py``), so killing and restarting a training run costs well under a second.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ganfuse.config import load_config
from ganfuse.train.checkpoint import checkpoint_dirs, safe_torch_load, verify_checkpoint
from ganfuse.train.loop import Trainer

# Steps of a few milliseconds; a checkpoint every 5 steps, two kept, so a 20-step run writes four
# checkpoints and prunes two: every stage of the checkpoint life cycle happens in a short run.
TINY = [
    "train.precision=fp32",
    "model.g_width=32",
    "model.d_width=8",
    "train.batch_size=16",
    "train.log_every=5",
    "train.checkpoint_every=5",
    "train.keep_checkpoints=2",
    "train.sample_every=1000",
]
STEPS = 20
WORKERS = "tests.faults._workers"
# Forked children may take this long to finish a 20-step run on a loaded 2-core machine.
CHILD_TIMEOUT_S = 120


def tiny_config(*extra: str, steps: int = STEPS):
    return load_config("digits-dcgan", [*TINY, f"train.steps={steps}", *extra])


def train_in_process(
    run_dir: Path, *extra: str, steps: int = STEPS, resume: bool = False
) -> Trainer:
    trainer = Trainer(tiny_config(*extra, steps=steps), run_dir, resume=resume, progress=False)
    trainer.fit()
    return trainer


def cli_args(run_dir: Path, *extra: str, steps: int = STEPS, resume: bool = False) -> list[str]:
    args = ["train", "digits-dcgan", "--out", str(run_dir), "--steps", str(steps), "--no-progress"]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


def report(record: dict) -> None:
    """Append a measurement to ``$GANFUSE_FAULT_REPORT`` (the figures of docs/reliability.md)."""
    path = os.environ.get("GANFUSE_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------ checkpoints


def final_checkpoint(run_dir: Path) -> Path:
    return checkpoint_dirs(run_dir)[0]


def assert_same_training_result(run_dir: Path, reference: Path) -> None:
    """Bit-identical weights, optimiser moments, counters and logged losses."""
    mine, theirs = final_checkpoint(run_dir), final_checkpoint(reference)
    assert mine.name == theirs.name
    a, b = (
        load_file(str(mine / "weights.safetensors")),
        load_file(str(theirs / "weights.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (
            f"{run_dir}: weight {key} differs from the uninterrupted run"
        )
    sa, sb = safe_torch_load(mine / "state.pt"), safe_torch_load(theirs / "state.pt")
    for key in ("step", "images_seen", "sampler"):
        assert sa[key] == sb[key], key
    for opt in ("opt_g", "opt_d"):
        for pid, moments in sb[opt]["state"].items():
            for name, value in moments.items():
                assert torch.equal(sa[opt]["state"][pid][name], value), f"{opt} {pid} {name}"
    assert logged_losses(run_dir) == logged_losses(reference)


def logged_losses(run_dir: Path) -> list[tuple]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [(r["step"], r["loss_d"], r["loss_g"], r["d_real"], r["d_fake"]) for r in records]


def leftovers(run_dir: Path) -> list[str]:
    """Temporaries and half-written files anywhere in a run folder."""
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.name.startswith((".tmp", ".trash", ".write_test")) or ".tmp" in p.name
    )


def assert_every_checkpoint_verifies(run_dir: Path) -> None:
    for path in checkpoint_dirs(run_dir):
        verify_checkpoint(path)
        weights = load_file(str(path / "weights.safetensors"))
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def flip_bit(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def rewrite_manifest(checkpoint: Path, edit) -> None:
    """Apply ``edit(manifest)`` and re-sign it, as someone crafting a checkpoint would."""
    from ganfuse.cache import sha256_of_file
    from ganfuse.train.checkpoint import _manifest_digest

    manifest = json.loads((checkpoint / "manifest.json").read_text())
    edit(manifest)
    if isinstance(manifest.get("sha256"), dict):
        for name in list(manifest["sha256"]):
            if (checkpoint / name).is_file():
                manifest["sha256"][name] = sha256_of_file(checkpoint / name)
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as in the children: bit-identical sums across processes, and no
    OpenMP spinning on a loaded 2-core machine (which makes tiny steps 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted 20-step tiny run, trained in this process."""
    run = tmp_path_factory.mktemp("reference") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train_in_process(run)
    torch.set_num_threads(before)
    return run


@pytest.fixture
def run_copy(reference_run, tmp_path) -> Path:
    """A private copy of the reference run, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(reference_run, copy)
    return copy


# ------------------------------------------------------------------ child processes


@pytest.fixture(scope="session")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([WORKERS])
    return ctx


@dataclass
class Child:
    """A ``ganfuse`` command running in a forked child."""

    process: multiprocessing.Process
    log: Path
    progress: object = None
    start_step: object = None
    in_checkpoint: object = None
    started: float = field(default_factory=time.monotonic)

    def wait(self, timeout: float = CHILD_TIMEOUT_S) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            pytest.fail(f"child did not finish within {timeout}s; log:\n{self.output()}")
        return self.process.exitcode

    def kill(self) -> bool:
        """SIGKILL; False if it had already exited."""
        if self.process.exitcode is not None:
            return False
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()
        return self.process.exitcode == -signal.SIGKILL

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_cli(
    ctx, argv: list[str], log: Path, env: dict[str, str] | None = None, instrument: bool = True
) -> Child:
    from tests.faults import _workers

    values = (
        [ctx.RawValue("i", -1), ctx.RawValue("i", -1), ctx.RawValue("i", 0)]
        if instrument
        else [None] * 3
    )
    process = ctx.Process(
        target=_workers.run_cli, args=(argv, str(log), env or {}, *values), daemon=True
    )
    process.start()
    return Child(process, log, *values)


def start_cli_with_mounts(
    ctx, argv: list[str], log: Path, mounts: list[list[str]], **kwargs
) -> Child:
    from tests.faults import _workers

    process = ctx.Process(
        target=_workers.run_cli_with_mounts,
        args=(argv, str(log), mounts),
        kwargs=kwargs,
        daemon=True,
    )
    process.start()
    return Child(process, log)
