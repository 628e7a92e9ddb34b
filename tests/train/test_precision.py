"""Precision: what ``auto`` resolves to on each kind of device, and bf16 training that follows fp32.

The resolution tests monkeypatch the CPU's capabilities, so they check both kinds of CPU on any
machine; here the bf16 probe is off (``GANFUSE_BF16_PROBE=0``: the instructions alone decide), the
probe itself is tested in ``test_precision_probe.py``. The bf16 numerical tests run bf16 math and
skip where the CPU only emulates it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from ganfuse.config import load_config
from ganfuse.errors import ConfigError
from ganfuse.run import load_run
from ganfuse.train import precision
from ganfuse.train.loop import Trainer, train
from ganfuse.train.precision import Precision, resolve_precision
from tests.conftest import REAL_CPU_HAS_NATIVE_BF16, TINY, requires_native_bf16

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_bf16_probe(monkeypatch):
    monkeypatch.setenv(precision.PROBE_ENV, "0")


@pytest.fixture(params=[True, False], ids=["native-bf16", "emulated-bf16"])
def native_bf16(request, monkeypatch) -> bool:
    """Runs a test as on a CPU with native bf16 and as on one without."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_on_a_cpu_is_bf16_only_where_bf16_is_native(native_bf16):
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16 else "fp32")


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_an_explicit_cpu_precision_is_kept_whatever_the_cpu(native_bf16, name):
    assert resolve_precision(name, CPU) == name


def test_fp16_on_a_cpu_is_refused_naming_the_key(native_bf16):
    with pytest.raises(ConfigError, match=r"train\.precision") as caught:
        resolve_precision("fp16", CPU)
    assert "bf16 or fp32" in str(caught.value)  # says what to use instead


@pytest.mark.parametrize("bf16_supported,expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_is_bf16_where_supported_else_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == expected
    assert resolve_precision("fp16", cuda) == "fp16"  # fp16 is refused on CPUs only
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


@pytest.mark.parametrize(
    "avx512_bf16,amx,expected", [(True, False, True), (False, True, True), (False, False, False)]
)
def test_native_bf16_means_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert REAL_CPU_HAS_NATIVE_BF16() is expected  # the function itself, never the test run's fake


def test_precision_sets_the_autocast_dtype_and_scales_gradients_for_fp16_only():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with Precision("bf16", CPU).autocast():
        assert (a @ b).dtype == torch.bfloat16
    with Precision("fp32", CPU).autocast():
        assert torch.equal(a @ b, torch.mm(a, b))  # no autocast: exactly the fp32 product
    assert Precision("fp32", CPU).dtype is None and Precision("bf16", CPU).dtype is torch.bfloat16
    assert (
        Precision("bf16", CPU).grad_scaler() is None
        and Precision("fp32", CPU).grad_scaler() is None
    )
    assert Precision("fp16", torch.device("cuda")).dtype is torch.float16


def test_a_run_records_what_auto_resolved_to(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    config = load_config("digits", [*TINY, "train.precision=auto", "train.steps=1"])
    out = train(config, out=tmp_path / "run", progress=False)
    assert load_run(out).manifest["precision"] == "fp32"


# ------------------------------------------------------------------ bf16 numerics

# R1 and augmentation off, no EMA: one step's gradients then depend only on the precision.
STEP = [*TINY, "train.augment=[]", "train.r1_gamma=0", "train.ema_decay=0"]


def _one_step_gradients(tmp_path, name: str) -> dict[str, torch.Tensor]:
    trainer = Trainer(
        load_config("digits", [*STEP, f"train.precision={name}"]), tmp_path / name, progress=False
    )
    assert trainer.precision.name == name
    trainer.train_step()
    grads = {f"G.{k}": p.grad for k, p in trainer.G.named_parameters()}
    grads.update({f"D.{k}": p.grad for k, p in trainer.D.named_parameters()})
    return grads


@requires_native_bf16
def test_a_bf16_training_step_gives_the_fp32_gradients_to_bf16_accuracy(tmp_path):
    fp32, bf16 = _one_step_gradients(tmp_path, "fp32"), _one_step_gradients(tmp_path, "bf16")
    assert fp32.keys() == bf16.keys()
    for key, got in bf16.items():
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), key  # fp32 master weights
    for net in ("G", "D"):
        # Whole networks, not tensors: a bias before BatchNorm has a zero gradient in exact
        # arithmetic, so its own relative error is rounding noise over rounding noise.
        ref = torch.cat([g.flatten() for k, g in fp32.items() if k.startswith(net)])
        got = torch.cat([g.flatten() for k, g in bf16.items() if k.startswith(net)])
        relative = float((got - ref).norm() / ref.norm())
        cosine = float(torch.nn.functional.cosine_similarity(got, ref, dim=0))
        # bf16 keeps 8 bits of mantissa; through G and D forward and backward that is a few
        # percent of the gradient (measured: G 7%, D 3%). Above 1e-4: autocast really ran in bf16.
        assert 1e-4 < relative < 0.2 and cosine > 0.98, (net, relative, cosine)


@requires_native_bf16
def test_a_bf16_run_trains_records_bf16_and_follows_the_fp32_run(tmp_path):
    runs = {}
    for name in ("fp32", "bf16"):
        config = load_config(
            "digits", [*TINY, f"train.precision={name}", "train.steps=4", "train.log_every=2"]
        )
        runs[name] = train(config, out=tmp_path / name, progress=False)
    run = load_run(runs["bf16"])
    assert run.manifest["precision"] == "bf16"
    records = {
        name: [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        for name, out in runs.items()
    }
    assert [r["step"] for r in records["bf16"]] == [2, 4]
    for ours, ref in zip(records["bf16"], records["fp32"], strict=True):
        for key in ("loss_d", "loss_g"):
            assert math.isfinite(ours[key])
            assert ours[key] == pytest.approx(ref[key], rel=0.05, abs=0.02), key
    images = run.sample(2, seed=0)
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()
    reference = load_run(runs["fp32"]).sample(2, seed=0)
    assert (images - reference).abs().mean() < 0.05  # the same generator, to bf16 training accuracy


# ------------------------------------------------------------------ why a precision was chosen


def test_the_reason_says_whether_the_cpu_has_native_bf16(native_bf16):
    reason = precision.precision_reason("auto", resolve_precision("auto", CPU), CPU)
    if native_bf16:
        assert reason.startswith("auto: this CPU has native bf16 (")
        assert reason.endswith(", not measured (GANFUSE_BF16_PROBE=0)")
    else:
        assert reason == (
            "auto: this CPU has no native bf16 (no AVX-512 BF16, no AMX), and "
            "emulated bf16 is slower than fp32"
        )
    assert precision.precision_reason("fp32", "fp32", CPU) == "set: train.precision=fp32"


@pytest.mark.parametrize(
    "avx512_bf16,amx,named",
    [
        (True, False, "AVX-512 BF16, no AMX"),
        (False, True, "AMX, no AVX-512 BF16"),
        (True, True, "AVX-512 BF16, AMX"),
    ],
)
def test_a_native_bf16_reason_names_the_instructions_found(monkeypatch, avx512_bf16, amx, named):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", REAL_CPU_HAS_NATIVE_BF16)
    chosen = resolve_precision("auto", CPU)
    assert chosen == "bf16"
    assert (
        precision.precision_reason("auto", chosen, CPU)
        == f"auto: this CPU has native bf16 ({named}), not measured (GANFUSE_BF16_PROBE=0)"
    )


def test_gpu_reasons():
    cuda = torch.device("cuda")
    assert precision.precision_reason("auto", "bf16", cuda) == "auto: this GPU supports bf16"
    assert "fp16 with a gradient scaler" in precision.precision_reason("auto", "fp16", cuda)
    assert precision.precision_reason("auto", "fp32", torch.device("mps")) == "auto: fp32 on mps"


def test_a_run_logs_its_precision_and_why_at_start(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    config = load_config("digits", [*TINY, "train.precision=auto", "train.steps=1"])
    with caplog.at_level("INFO", logger="ganfuse"):
        out = train(config, out=tmp_path / "run", progress=False)
    assert "precision=fp32 (auto: this CPU has no native bf16" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="ganfuse"):
        Trainer(config, out, resume=True, progress=False).fit(steps=2)
    assert "precision=fp32 (resumed: the run recorded fp32)" in caplog.text
