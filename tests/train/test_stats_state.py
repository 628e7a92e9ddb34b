"""The statistics of a log interval in flight survive a checkpoint: ``StatsReporter.state_dict``."""

from __future__ import annotations

import pytest
import torch

from ganfuse.train.stats import StatsReporter


def test_a_restored_reporter_flushes_the_same_means_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(10, 2, generator=gen) * 1e3
    straight, first = StatsReporter(), StatsReporter()
    for row in values:
        straight.report("loss", row[0])
        straight.report("grad", float(row[1]))
    for row in values[:4]:
        first.report("loss", row[0])
        first.report("grad", float(row[1]))
    state = first.state_dict()
    assert state["counts"] == {"loss": 4, "grad": 4}
    assert state["sums"]["loss"].device.type == "cpu" and state["sums"]["loss"].dim() == 0
    resumed = StatsReporter()
    resumed.load_state_dict(state)
    first.report("loss", 1e9)  # the state is a copy: later reports do not leak into it
    assert state["sums"]["loss"].item() == values[:4, 0].sum(dtype=torch.float32).item()
    for row in values[4:]:
        resumed.report("loss", row[0])
        resumed.report("grad", float(row[1]))
    assert resumed.flush() == straight.flush()  # == on floats


def test_an_empty_or_mismatched_state():
    reporter = StatsReporter()
    reporter.report("x", 1.0)
    reporter.load_state_dict({})
    assert reporter.names() == [] and reporter.flush() == {}
    with pytest.raises(ValueError, match="sums of \\['a'\\] but counts of \\[\\]"):
        reporter.load_state_dict({"sums": {"a": torch.tensor(1.0)}, "counts": {}})
