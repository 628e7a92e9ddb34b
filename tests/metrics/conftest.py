"""Every metrics test gets an empty cache directory and no Inception weights from the environment."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    import ganfuse.metrics.evaluate as evaluate
    import ganfuse.metrics.reference as reference

    cache = tmp_path / "cache"
    monkeypatch.setenv("GANFUSE_CACHE", str(cache))
    monkeypatch.delenv("GANFUSE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(reference, "_MEMORY", {})
    monkeypatch.setattr(evaluate, "_EXTRACTORS", {})
    return cache


@pytest.fixture(autouse=True)
def single_thread():
    # These tests use small matrices; on a shared 2-core machine OpenMP's second thread costs far
    # more in synchronisation than it saves (100x slower measured under load).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
