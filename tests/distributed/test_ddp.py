"""Data-parallel training with torchrun and gloo on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ganfuse.train.checkpoint import checkpoint_dirs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ddp_common import NoBatchNormTrainer, make_config  # noqa: E402


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_two_processes_average_to_the_single_process_gradients(tmp_path):
    out = tmp_path / "ddp_grads.pt"
    proc = _torchrun([str(HERE / "ddp_worker.py"), str(out), str(tmp_path / "ddp_run")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    single = NoBatchNormTrainer(make_config(), tmp_path / "single_run", progress=False)
    single.train_step()
    ref = {f"G.{k}": p.grad for k, p in single.G.named_parameters()}
    ref.update({f"D.{k}": p.grad for k, p in single.D.named_parameters()})
    assert ddp.keys() == ref.keys()
    for key in ref:
        assert torch.allclose(ddp[key], ref[key], rtol=1e-4, atol=1e-6), key


def test_two_process_cli_run_writes_one_checkpoint_series_and_one_log(tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "ganfuse",
        "train",
        "digits-dcgan",
        "--nproc",
        "2",
        "--out",
        str(run),
        "--steps",
        "6",
        "--no-progress",
        "--set",
        "model.g_width=32",
        "--set",
        "model.d_width=8",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.log_every=2",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "train.precision=fp32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in checkpoint_dirs(run)] == ["step_00000006", "step_00000003"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # one writer: no duplicated lines
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "samples",
    ]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["images"] == 6 * 16  # the global batch stays 16 with 2 processes
