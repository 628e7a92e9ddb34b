"""Shared fixtures. Tests run offline, on CPU, with tiny networks so the suite stays fast."""

from __future__ import annotations

import logging
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# Small widths keep a training step in the millisecond range; the code paths are the full ones.
TINY = [
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
