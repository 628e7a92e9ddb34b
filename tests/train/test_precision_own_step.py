"""``precision=auto`` on a CPU with bf16 instructions times the run's own training step.

The steps are the run's real ones (tiny networks); only the clock is fake, so the verdict follows
injected timings on any CPU. What is checked: the verdict and the reason line, the cache (keyed by
the step's signature, reused without measuring), and that measuring leaves the run exactly as it
was: same weights, data order and random streams as a run that never measured.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ganfuse.config import load_config
from ganfuse.train import precision
from ganfuse.train.checkpoint import checkpoint_dirs
from ganfuse.train.loop import Trainer, train
from ganfuse.train.precision import OwnStep, measure_own_step
from tests.conftest import TINY

CPU = torch.device("cpu")
# R1 every 2 steps, DiffAugment and an EMA: the state the probe's steps move is all there.
STEP = [*TINY, "train.precision=auto", "train.augment=[translation,cutout]", "train.r1_gamma=1",
        "train.r1_every=2", "train.ema_decay=0.9", "train.log_every=1"]


@pytest.fixture(autouse=True)
def _bf16_cpu_with_fresh_probe_state(monkeypatch, tmp_path):
    """A CPU with native bf16, the probe on, an empty cache of this test's own, nothing remembered."""
    monkeypatch.delenv(precision.PROBE_ENV, raising=False)
    monkeypatch.setenv("GANFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_PROBES", {})
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "bf16_instructions", lambda: "AVX-512 BF16, no AMX")


def fake_clock(monkeypatch, fp32_seconds: float, bf16_seconds: float) -> list[bool]:
    """The run's steps really run, on a clock that advances by these seconds per fp32 / bf16 step.
    Returns the precisions stepped, in order (True: bf16)."""
    real = precision.measure_own_step
    stepped: list[bool] = []

    def measure(own: OwnStep, **kwargs) -> precision.Bf16Probe:
        now = [0.0]

        def run(bf16: bool) -> None:
            own.run(bf16)
            stepped.append(bf16)
            now[0] += bf16_seconds if bf16 else fp32_seconds

        return real(OwnStep(run, own.images, own.signature), clock=lambda: now[0], **kwargs)

    monkeypatch.setattr(precision, "measure_own_step", measure)
    return stepped


@pytest.mark.parametrize(
    "fp32,bf16,rounds,expected_steps",
    [(0.1, 0.2, 3, 8), (1.0, 2.0, 3, 4), (2.0, 1.0, 3, 4), (0.1, 0.05, 1, 4)],
)
def test_the_own_step_alternates_within_its_budget_and_keeps_each_minimum(
    fp32, bf16, rounds, expected_steps
):
    now, calls = [0.0], []

    def run(is_bf16: bool) -> None:
        calls.append(is_bf16)
        # the first step of each precision is slow (kernels built), then one slow round by noise
        slow = 10.0 if len(calls) <= 2 else 3.0 if len(calls) == 3 else 1.0
        now[0] += slow * (bf16 if is_bf16 else fp32)

    probe = measure_own_step(OwnStep(run, 64, "sig"), rounds=rounds, budget_seconds=4.0,
                             clock=lambda: now[0])
    # 2 untimed steps, then rounds alternating fp32/bf16 until the 4 s budget is spent
    assert len(calls) == expected_steps and calls == [False, True] * (expected_steps // 2)
    assert probe.bf16_seconds == pytest.approx(bf16)  # the fastest, never the warm-up
    assert probe.fp32_seconds == pytest.approx(fp32 * (1.0 if expected_steps > 4 else 3.0))
    assert probe.images == 64 and probe.seconds == pytest.approx(now[0])
    assert probe.images_per_second(True) == pytest.approx(64 / bf16)


@pytest.mark.parametrize("fp32,bf16,chosen", [(1.0, 2.0, "fp32"), (2.0, 1.0, "bf16"),
                                              (1.1, 1.0, "fp32")])
def test_auto_follows_the_timing_of_the_runs_own_step_and_says_so(
    monkeypatch, tmp_path, fp32, bf16, chosen
):
    stepped = fake_clock(monkeypatch, fp32, bf16)
    monkeypatch.setattr(precision, "measure_bf16_probe", lambda: pytest.fail("proxy measured"))
    trainer = Trainer(load_config("digits", STEP), tmp_path / "run", progress=False)
    assert trainer.precision.name == trainer.config.train.precision == chosen
    assert stepped == [False, True, False, True]  # fake 3 s spent after one timed round
    probe = trainer.precision_probe
    assert (probe.fp32_seconds, probe.bf16_seconds, probe.images) == (fp32, bf16, 16)
    assert trainer.precision_reason == (
        f"auto: bf16 autocast ran this run's training step at {fp32 / bf16:.2f}x of fp32 "
        f"(fp32 {16 / fp32:.1f} img/s, bf16 {16 / bf16:.1f} img/s) at "
        f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''} on this "
        f"CPU (AVX-512 BF16, no AMX), {chosen} chosen (bf16 needs 1.15x)"
    )
    assert trainer.step == 0 and trainer.images_seen == 0  # the probe's steps are not the run's
    assert f"precision: {chosen}" in (tmp_path / "run" / "config.yaml").read_text()


def _cache_entries() -> dict:
    return json.loads(precision.probe_cache_path().read_text())


def test_the_verdict_is_cached_per_step_signature_and_reused_without_measuring(
    monkeypatch, tmp_path
):
    stepped = fake_clock(monkeypatch, 1.0, 2.0)
    Trainer(load_config("digits", STEP), tmp_path / "a", progress=False)
    assert len(stepped) == 4
    (key,) = _cache_entries()
    assert key.startswith(precision.probe_cache_key(torch.get_num_threads()) + " | step ")
    assert _cache_entries()[key]["images"] == 16

    # a new process, settings that do not touch the step: the cached verdict, nothing measured
    monkeypatch.setattr(precision, "_PROBES", {})
    unrelated = [*STEP, "train.sample_every=3", "train.seed=5", "train.lr_g=1e-3", "train.steps=7"]
    trainer = Trainer(load_config("digits", unrelated), tmp_path / "b", progress=False)
    assert len(stepped) == 4 and trainer.precision.name == "fp32"
    assert "at 0.50x of fp32 (fp32 16.0 img/s, bf16 8.0 img/s)" in trainer.precision_reason

    # another network, batch or memory format: measured again, both verdicts kept
    for n, changed in enumerate(["model.d_width=16", "train.batch_size=8",
                                 "train.channels_last=true"], start=2):
        Trainer(load_config("digits", [*STEP, changed]), tmp_path / f"c{n}", progress=False)
        assert len(stepped) == 4 * n and len(_cache_entries()) == n, changed


def test_the_signature_follows_the_step_not_the_bookkeeping():
    config = load_config("digits", STEP).to_dict()
    same = load_config("digits", [*STEP, "train.sample_every=3", "train.log_every=9"]).to_dict()
    other = load_config("digits", [*STEP, "train.r1_gamma=0"]).to_dict()
    sig = precision.step_signature(config, "G", "D")
    assert sig == precision.step_signature(same, "G", "D") and len(sig) == 16
    assert sig != precision.step_signature(other, "G", "D")
    assert sig != precision.step_signature(config, "G", "D'")  # another network's structure


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dirs(run_dir)[-1] / "weights.safetensors"))


def test_measuring_leaves_the_run_exactly_as_a_run_that_never_measured(monkeypatch, tmp_path):
    """Same seed: a run whose auto timed 4 real steps (fp32 chosen) and a run with fp32 forced
    and the probe off train the same first steps, bit for bit."""
    stepped = fake_clock(monkeypatch, 1.0, 2.0)
    config = load_config("digits", [*STEP, "train.steps=3"])
    probed = train(config, out=tmp_path / "probed", progress=False)
    assert stepped == [False, True, False, True]
    monkeypatch.setenv(precision.PROBE_ENV, "0")
    forced = load_config("digits", [*STEP, "train.steps=3", "train.precision=fp32"])
    plain = train(forced, out=tmp_path / "plain", progress=False)
    assert len(stepped) == 4

    ours, ref = _weights(probed), _weights(plain)
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        assert torch.equal(ours[key], value), key
    lines = [
        [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        for out in (probed, plain)
    ]
    drop = ("time", "img_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in lines[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in lines[1]
    ]
    assert [r["step"] for r in lines[0]] == [1, 2, 3]


def test_a_resumed_run_keeps_its_recorded_precision_without_measuring(monkeypatch, tmp_path):
    stepped = fake_clock(monkeypatch, 2.0, 1.0)
    config = load_config("digits", [*STEP, "train.steps=2"])
    out = train(config, out=tmp_path / "run", progress=False)
    assert len(stepped) == 4 and "precision: bf16" in (out / "config.yaml").read_text()
    monkeypatch.setattr(precision, "_PROBES", {})
    precision.probe_cache_path().unlink()  # nothing cached: resuming still measures nothing
    trainer = Trainer(config, out, resume=True, progress=False)
    assert trainer.precision.name == "bf16" and trainer.step == 2 and len(stepped) == 4
    assert trainer.precision_reason == "resumed: the run recorded bf16"


def test_other_ranks_take_rank_zeros_cached_verdict_without_measuring(monkeypatch):
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    sent = {1: torch.tensor([0.0], dtype=torch.float64),  # rank 0 has a verdict
            3: torch.tensor([2.0, 1.0, 9.0], dtype=torch.float64)}  # and it is this
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src: tensor.copy_(sent[tensor.numel()]))
    own = OwnStep(lambda bf16: pytest.fail("measured"), 32, "sig")
    assert precision.resolve_precision("auto", CPU, own) == "bf16"
    assert "at 2.00x of fp32 (fp32 16.0 img/s, bf16 32.0 img/s)" in precision.precision_reason(
        "auto", "bf16", CPU, "sig")
    assert not precision.probe_cache_path().exists()


def test_every_rank_times_the_step_together_when_rank_zero_has_no_verdict(monkeypatch):
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    sent = {1: torch.tensor([1.0], dtype=torch.float64),  # rank 0 measures
            3: torch.tensor([1.0, 2.0, 9.0], dtype=torch.float64)}
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src: tensor.copy_(sent[tensor.numel()]))
    calls: list[bool] = []
    # no budget across ranks: all 2 + 2 * 3 steps, whatever each rank's clock says
    assert precision.resolve_precision("auto", CPU, OwnStep(calls.append, 8, "sig")) == "fp32"
    assert calls == [False, True] * 4


def test_the_bench_reports_what_auto_measured_on_the_presets_step(monkeypatch):
    from ganfuse import bench

    fake_clock(monkeypatch, 0.5, 2.0)
    result = bench.bench_train("digits-dcgan", seconds=0.05, flops=False,
                               overrides=[*TINY, "train.precision=auto"])
    assert result["precision"] == "fp32" and "0.25x of fp32" in result["precision_reason"]
    assert (result["auto_fp32_img_per_s"], result["auto_bf16_img_per_s"]) == (32.0, 8.0)
    assert result["auto_probe_seconds"] == 5.0  # fake: 2 untimed + 1 timed step of each
    fixed = bench.bench_train("digits-dcgan", seconds=0.05, flops=False, overrides=TINY)
    assert "auto_fp32_img_per_s" not in fixed  # fp32 set: nothing measured, nothing reported
