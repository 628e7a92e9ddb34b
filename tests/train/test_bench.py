"""``ganfuse bench train``: the JSON fields, the peak GEMM measurement, the CPU description."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from ganfuse import bench
from ganfuse.cli import main
from ganfuse.errors import UserError
from tests.conftest import TINY

# digits-dcgan at TINY widths: 5,072,896 multiply-adds per image (tests/train/test_bench_flops.py)
TINY_DCGAN_FLOPS_PER_IMAGE = 10_145_792


def _bench_json(capsys, *extra: str) -> dict:
    argv = ["bench", "train", "digits-dcgan", "--seconds", "0.05", "--json"]
    for item in TINY:
        argv += ["--set", item]
    assert main([*argv, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_json_reports_flops_peak_utilisation_precision_and_threads(capsys, monkeypatch):
    monkeypatch.setitem(bench.GEMM_SIZE, "cpu", 256)  # a quick peak measurement
    threads_before = torch.get_num_threads()
    result = _bench_json(capsys, "--threads", "1")
    assert torch.get_num_threads() == threads_before  # the bench restores torch's threads
    assert result["threads"] == 1 and result["batch_size"] == 16 and result["steps"] >= 3
    assert (
        result["precision"] == "fp32" and result["precision_reason"] == "set: train.precision=fp32"
    )
    assert result["flops_per_image"] == TINY_DCGAN_FLOPS_PER_IMAGE
    assert result["gemm_size"] == 256 and result["peak_flops"] > 1e8
    # achieved = FLOPs per image x img/s (img/s is rounded to 0.1 in the JSON)
    expected = result["flops_per_image"] * result["img_per_s"]
    assert result["achieved_flops"] == pytest.approx(
        expected, rel=0.01, abs=result["flops_per_image"] * 0.06
    )
    assert result["utilisation"] == pytest.approx(
        result["achieved_flops"] / result["peak_flops"], abs=1e-4
    )
    assert isinstance(result["cpu"], str) and isinstance(result["cpu_flags"], list)
    assert set(result["cpu_flags"]) <= set(bench.GEMM_CPU_FLAGS)
    assert result["torch"] == torch.__version__


def test_auto_precision_says_why_in_the_json(capsys, monkeypatch):
    from ganfuse.train import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    result = _bench_json(capsys, "--set", "train.precision=auto", "--no-flops")
    assert result["precision"] == "fp32"
    assert result["precision_reason"].startswith("auto: this CPU has no native bf16")
    assert "flops_per_image" not in result and "utilisation" not in result


def test_the_text_output_gives_units(capsys, monkeypatch):
    monkeypatch.setitem(bench.GEMM_SIZE, "cpu", 128)
    argv = ["bench", "train", "digits-dcgan", "--seconds", "0.05", "--threads", "1"]
    for item in TINY:
        argv += ["--set", item]
    assert main(argv) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    lines = {key.strip(): value for key, value in lines.items()}
    assert lines["flops_per_image"] == "0.01015 GFLOP"
    assert lines["peak_flops"].endswith(" GFLOP/s") and lines["utilisation"].endswith("%")
    assert lines["threads"] == "1"


@pytest.mark.parametrize("threads", ["-1", "1025"])
def test_bad_threads_are_refused_in_one_line(capsys, threads):
    assert main(["bench", "train", "digits-dcgan", "--threads", threads]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ganfuse: error: --threads must be a whole number from 0 to 1024, got {threads}"


def test_the_peak_is_two_n_cubed_over_the_median_timed_product(monkeypatch):
    # Fake clock: each product "takes" the next duration; the 2 warm-up ones are not counted.
    durations = iter([50.0, 50.0, 1.0, 4.0, 2.0, 8.0, 3.0])
    clock = {"now": 0.0, "start": True}

    def perf_counter() -> float:
        if not clock["start"]:
            clock["now"] += next(durations)
        clock["start"] = not clock["start"]
        return clock["now"]

    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=perf_counter))
    peak = bench.peak_gemm_flops("fp32", torch.device("cpu"), size=64, repeats=5, warmup=2)
    assert peak == 2 * 64**3 / 3.0  # median of 1, 4, 2, 8, 3


def test_the_peak_runs_in_the_precision_it_is_asked_for(monkeypatch):
    seen = []
    real_mm = torch.mm
    monkeypatch.setattr(
        bench.torch, "mm", lambda a, b, out: seen.append(a.dtype) or real_mm(a, b, out=out)
    )
    bench.peak_gemm_flops("bf16", torch.device("cpu"), size=16, repeats=1, warmup=0)
    bench.peak_gemm_flops("fp32", torch.device("cpu"), size=16, repeats=1, warmup=0)
    assert seen == [torch.bfloat16, torch.float32]
    with pytest.raises(UserError, match="unknown precision 'int8'"):
        bench.peak_gemm_flops("int8", torch.device("cpu"))


def test_cpu_info_reads_the_first_processor_and_keeps_the_gemm_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some Xeon @ 2.50GHz\n"
        "flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 ht\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    assert bench.cpu_info(cpuinfo) == (
        "Some Xeon @ 2.50GHz",
        ["fma", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"],
    )
    name, flags = bench.cpu_info(tmp_path / "missing")
    assert flags == [] and isinstance(name, str)
