"""A short ``ganfuse fuse benchmark`` writes a valid results.json, results.md and chart."""

from __future__ import annotations

import json

from ganfuse.cli import main
from ganfuse.models.fusion import FUSION_LEVELS
from ganfuse.multimodal.benchmark import benchmark_plan

from .conftest import TINY


def test_short_benchmark_writes_valid_results(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["fuse", "benchmark", "--out", str(out), "--max-minutes", "0.5", "--quiet"]
    argv += ["--tasks", "matching,caption", "--fusions", "early,late-mean"]
    for item in TINY:
        argv += ["--set", item]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert isinstance(results, list) and results
    for row in results:
        assert set(row) == {"task", "fusion", "metric", "value", "params", "train_seconds"}
        assert isinstance(row["value"], float) and isinstance(row["params"], int)
        assert row["train_seconds"] >= 0
    matching = {r["fusion"]: r for r in results if r["task"] == "matching"}
    assert set(matching) == {"early", "late-mean"}
    assert all(
        0.0 <= r["value"] <= 1.0 and r["metric"] == "match_accuracy" for r in matching.values()
    )
    caption = {r["metric"] for r in results if r["task"] == "caption"}
    assert {"bleu", "exact_match"} <= caption
    table = (out / "results.md").read_text()
    assert "## matching" in table and "| late-mean | decision |" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[4/4]" in capsys.readouterr().out  # the dual encoder runs first


def test_full_plan_covers_every_fusion_on_every_fusion_task():
    plan = benchmark_plan()
    for task in ("matching", "vqa", "multitask"):
        assert [r.fusion for r in plan if r.task == task] == list(FUSION_LEVELS)
    assert {r.config_task for r in plan if r.task == "single-task"} == {
        "color",
        "shape",
        "size",
        "position",
    }
    assert {r.fusion for r in plan if r.task == "zeroshot"} == {
        "dual-encoder/small",
        "dual-encoder/minilm",
    }
    assert any(r.task == "label-efficiency" for r in plan) and any(
        r.task == "caption" for r in plan
    )


def test_bad_benchmark_arguments_exit_2(tmp_path, capsys):
    assert main(["fuse", "benchmark", "--out", str(tmp_path), "--tasks", "sorting"]) == 2
    assert "unknown benchmark task" in capsys.readouterr().err
    assert main(["fuse", "benchmark", "--out", str(tmp_path), "--max-minutes", "0"]) == 2
    assert "--max-minutes must be positive" in capsys.readouterr().err


def test_budget_gives_every_fusion_of_a_task_the_same_share(monkeypatch):
    from ganfuse.multimodal import benchmark

    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    plan = [
        benchmark.PlannedRun("zeroshot", "dual", "zeroshot", [], 2.0, False),
        *[benchmark.PlannedRun("matching", f, "matching") for f in ("a", "b", "c")],
        benchmark.PlannedRun("vqa", "a", "vqa"),
    ]
    budget = benchmark.Budget(10.0, plan, reserve_seconds=0.0)
    first = budget.share_minutes(0)  # (600 s - 5 runs x 4 s overhead) / 6 weights, x 2
    assert abs(first * 60 - 580 / 6 * 2) < 1e-6
    clock[0] += 250.0  # the dual encoder overran
    budget.done(plan[0], 250.0, 200.0)  # not a typical run: its overhead is not learnt
    shares = []
    for index in (1, 2, 3):
        shares.append(budget.share_minutes(index))
        clock[0] += 80.0  # each run overruns its share: the group's shares stay equal
        budget.done(plan[index], 80.0, 70.0)
    assert shares[0] == shares[1] == shares[2]
    assert abs(shares[0] * 60 - (600 - 250 - 4 * 4) / 4) < 1e-6
    # The next task absorbs the overrun, with the overhead measured on the fusion runs (10 s).
    assert abs(budget.share_minutes(4) * 60 - (600 - 250 - 240 - 10)) < 1e-6
