"""Shared fixtures. Tests run offline, on CPU, with tiny networks so the suite stays fast.

``GANFUSE_FAKE_NATIVE_BF16=1`` runs the suite as a CPU with native bf16 (AVX-512 BF16 or AMX)
would: ``cpu_has_native_bf16`` answers True here and in every child Python process, so
``precision: auto`` resolves to bf16 (its math then runs emulated, slowly). Tests that compare
numbers must pass in both modes because they pin the precision they mean.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

import ganfuse.train.precision

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# tests decide precision=auto from the bf16 instructions alone; test_precision_probe.py covers the probe
os.environ.setdefault("GANFUSE_BF16_PROBE", "0")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

FAKE_NATIVE_BF16 = os.environ.get("GANFUSE_FAKE_NATIVE_BF16") == "1"
REAL_CPU_HAS_NATIVE_BF16 = ganfuse.train.precision.cpu_has_native_bf16  # what the CPU really says
if FAKE_NATIVE_BF16:
    ganfuse.train.precision.cpu_has_native_bf16 = lambda: True
    _children = str(Path(__file__).resolve().parent / "fake_native_bf16")  # its sitecustomize.py
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_children, os.environ.get("PYTHONPATH")) if p
    )

# bf16 numerics only where the CPU runs them natively (or the fake above says it does).
requires_native_bf16 = pytest.mark.skipif(
    not ganfuse.train.precision.cpu_has_native_bf16(),
    reason="this CPU has no native bf16 (AVX-512 BF16 or AMX): emulated bf16 is many times slower "
    "than fp32; run with GANFUSE_FAKE_NATIVE_BF16=1 to force it",
)

# Small widths keep a training step in the millisecond range; the code paths are the full ones.
# fp32 is pinned: tests compare numbers, and ``auto`` means bf16 on a CPU with native bf16.
TINY = [
    "train.precision=fp32",
    "model.g_width=32",
    "model.d_width=8",
    "train.batch_size=16",
    "train.log_every=5",
    "train.sample_every=10",
    "train.checkpoint_every=10",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(autouse=True)
def _ganfuse_log_in_caplog(caplog):
    """``ganfuse.cli.main``, run in-process by some tests, stops the ganfuse logger from
    propagating to the root logger; attach caplog to it directly so warnings can be asserted
    whatever order the tests run in."""
    logger = logging.getLogger("ganfuse")
    logger.addHandler(caplog.handler)
    yield
    logger.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GANFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
