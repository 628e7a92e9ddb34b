"""``precision=auto`` on a CPU with bf16 instructions, where no GAN step can be timed (multimodal
runs, DP runs): decided by a measured proxy block, cached per CPU.

The decision and the cache are tested on injected timings (``measure_bf16_probe`` replaced), so the
tests hold on any CPU and never depend on how fast this one is; the real probe is run once, tiny,
for what it returns and for leaving the global random stream alone.
"""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.multimodal.config import FuseConfig
from ganfuse.multimodal.loop import run_precision
from ganfuse.train import precision
from ganfuse.train.precision import Bf16Probe, choose_cpu_precision, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_probe_state(monkeypatch, tmp_path):
    """The probe on, an empty cache of this test's own, no verdict remembered by the process."""
    monkeypatch.delenv(precision.PROBE_ENV, raising=False)
    monkeypatch.setenv("GANFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_PROBES", {})


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "bf16_instructions", lambda: "AVX-512 BF16, no AMX")


def measuring(monkeypatch, fp32_seconds: float, bf16_seconds: float) -> list[int]:
    """Makes the probe 'measure' these timings; returns the list that counts its calls."""
    calls: list[int] = []

    def fake() -> Bf16Probe:
        calls.append(1)
        return Bf16Probe(fp32_seconds, bf16_seconds, torch.get_num_threads())

    monkeypatch.setattr(precision, "measure_bf16_probe", fake)
    return calls


@pytest.mark.parametrize(
    "fp32,bf16,expected",
    [
        (1.0, 0.5, "bf16"),
        (1.15, 1.0, "bf16"),
        (1.14, 1.0, "fp32"),
        (1.0, 1.0, "fp32"),
        (0.6, 1.0, "fp32"),
    ],
)
def test_bf16_is_chosen_only_when_it_is_at_least_the_margin_faster(fp32, bf16, expected):
    assert precision.BF16_MARGIN == 1.15
    assert choose_cpu_precision(fp32, bf16) == expected
    probe = Bf16Probe(fp32, bf16, threads=1)
    assert probe.chosen == expected and probe.speedup == pytest.approx(fp32 / bf16)
    assert choose_cpu_precision(1.0, 0.9, margin=1.1) == "bf16"  # the margin is a parameter


@pytest.mark.parametrize(
    "fp32,bf16,chosen,shown", [(1.0, 1.6, "fp32", "0.62x"), (2.0, 1.0, "bf16", "2.00x")]
)
def test_auto_follows_the_probe_and_says_what_it_measured(
    monkeypatch, bf16_cpu, fp32, bf16, chosen, shown
):
    calls = measuring(monkeypatch, fp32, bf16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert resolve_precision("auto", CPU) == chosen
    assert precision.precision_reason("auto", chosen, CPU) == (
        f"auto: bf16 autocast measured {shown} of fp32 at 1 thread on this CPU "
        f"(AVX-512 BF16, no AMX), {chosen} chosen (bf16 needs 1.15x)"
    )
    assert len(calls) == 1  # the reason reuses the verdict, it does not measure again
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"
    assert len(calls) == 1  # an explicit precision never probes


def test_without_bf16_instructions_nothing_is_measured_and_fp32_is_chosen(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    calls = measuring(monkeypatch, 1.0, 0.1)
    assert resolve_precision("auto", CPU) == "fp32"
    assert precision.precision_reason("auto", "fp32", CPU).startswith(
        "auto: this CPU has no native bf16"
    )
    assert not calls and not precision.probe_cache_path().exists()


def test_the_probe_can_be_switched_off_and_then_the_instructions_decide(monkeypatch, bf16_cpu):
    monkeypatch.setenv(precision.PROBE_ENV, "0")
    calls = measuring(monkeypatch, 1.0, 2.0)  # would say fp32
    assert resolve_precision("auto", CPU) == "bf16"
    assert "not measured (GANFUSE_BF16_PROBE=0)" in precision.precision_reason("auto", "bf16", CPU)
    assert not calls


def test_the_verdict_is_cached_per_cpu_torch_and_threads(monkeypatch, bf16_cpu):
    calls = measuring(monkeypatch, 1.0, 0.5)
    threads = torch.get_num_threads()
    first = precision.cached_bf16_probe()
    path = precision.probe_cache_path()
    entries = json.loads(path.read_text())
    key = precision.probe_cache_key(threads)
    model, flags = precision.cpu_info()
    assert key.startswith(model) and torch.__version__ in key and f"{threads} threads" in key
    assert all(flag in key for flag in flags)
    assert entries == {
        key: {"fp32_seconds": 1.0, "bf16_seconds": 0.5, "threads": threads, "images": 0,
              "seconds": 0.0}
    }

    monkeypatch.setattr(precision, "_PROBES", {})  # a new process: reads the file
    assert precision.cached_bf16_probe() == first and len(calls) == 1
    assert resolve_precision("auto", CPU) == "bf16" and len(calls) == 1

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)  # other threads: measured
    assert precision.cached_bf16_probe().threads == threads + 1 and len(calls) == 2
    assert len(json.loads(path.read_text())) == 2  # both verdicts kept


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", "KEY_ENTRY_ZERO", "KEY_ENTRY_TEXT"],
    ids=["not-json", "not-a-mapping", "zero-seconds", "text-seconds"],
)
def test_an_unreadable_cache_entry_is_measured_again_and_rewritten(monkeypatch, bf16_cpu, content):
    path = precision.probe_cache_path()
    path.parent.mkdir(parents=True)
    key = precision.probe_cache_key(torch.get_num_threads())
    bad = {
        "KEY_ENTRY_ZERO": {"fp32_seconds": 1.0, "bf16_seconds": 0.0, "threads": 1},
        "KEY_ENTRY_TEXT": {"fp32_seconds": "fast", "bf16_seconds": 1.0, "threads": 1},
    }
    path.write_text(json.dumps({key: bad[content]}) if content in bad else content)
    calls = measuring(monkeypatch, 1.0, 0.5)
    assert precision.cached_bf16_probe().chosen == "bf16" and len(calls) == 1
    assert json.loads(path.read_text())[key]["bf16_seconds"] == 0.5


def test_other_ranks_take_rank_zeros_verdict_without_measuring(monkeypatch, bf16_cpu):
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    sent = torch.tensor([2.0, 1.0], dtype=torch.float64)  # what rank 0 measured
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src: tensor.copy_(sent))
    calls = measuring(monkeypatch, 1.0, 5.0)
    assert resolve_precision("auto", CPU) == "bf16"
    assert "measured 2.00x of fp32" in precision.precision_reason("auto", "bf16", CPU)
    assert not calls and not precision.probe_cache_path().exists()


def test_the_real_probe_times_both_precisions_and_leaves_the_random_stream_alone():
    state = torch.random.get_rng_state()
    probe = precision.measure_bf16_probe(rounds=1, batch=2, width=4)
    assert torch.equal(
        torch.random.get_rng_state(), state
    )  # a probing run trains like a cached one
    assert probe.fp32_seconds > 0 and probe.bf16_seconds > 0
    assert probe.threads == torch.get_num_threads()


def test_a_multimodal_run_takes_the_proxy_verdict(monkeypatch, bf16_cpu):
    """Fusion, zero-shot and captioning runs have no GAN step to time: they keep the proxy block
    (GAN runs time their own step: ``test_precision_own_step.py``)."""
    calls = measuring(monkeypatch, 1.0, 2.0)
    config = FuseConfig(precision="auto")
    assert run_precision(config).name == "fp32" and len(calls) == 1
    assert precision.precision_reason("auto", "fp32", CPU).startswith(
        "auto: bf16 autocast measured 0.50x of fp32 at "
    )
