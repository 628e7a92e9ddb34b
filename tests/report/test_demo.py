"""``ganfuse demo``: the budget plan, the pieces it wires, and (slow) the whole demo."""

from __future__ import annotations

import inspect

import pytest

from ganfuse.cli import demo, main
from ganfuse.errors import UserError


def test_budget_is_split_in_proportion_to_the_minutes():
    stages = ["digits", "shapes-t2i", "fusion", "finish"]
    plan = demo.plan_budget(15, stages)
    assert plan == pytest.approx({"digits": 6.0, "shapes-t2i": 3.75, "fusion": 3.75, "finish": 1.5})
    half = demo.plan_budget(7.5, stages)
    assert all(half[s] == pytest.approx(plan[s] / 2) for s in stages)
    # a missing stage's share goes to the others, in proportion
    assert demo.plan_budget(15, ["digits", "fusion", "finish"]) == pytest.approx(
        {"digits": 8.0, "fusion": 5.0, "finish": 2.0}
    )
    with pytest.raises(UserError, match="minutes > 0"):
        demo.plan_budget(0, stages)


def test_clock_resplits_the_time_left():
    clock = demo.Clock(minutes=10, start=0.0)
    clock.start = __import__("time").monotonic() - 240  # 4 minutes already spent
    assert clock.share("fusion", ["fusion", "finish"]) == pytest.approx(6 * 2.5 / 3.5, rel=1e-3)


def test_stages_follow_what_is_installed():
    stages = demo.available_stages()
    assert stages[0] == "digits" and stages[-1] == "finish"
    from ganfuse.config import preset_names

    assert ("shapes-t2i" in stages) == ("shapes-t2i" in preset_names())
    assert demo.fusion_tasks(1.0) == ("matching", "caption")
    assert demo.fusion_tasks(5.0) == demo.DEMO_TASKS


def test_the_apis_the_demo_wires_exist():
    # the demo calls these in-process; a rename elsewhere must fail here, not after 10 minutes
    from ganfuse.metrics.evaluate import evaluate_source
    from ganfuse.models.fusion import FUSION_LEVELS
    from ganfuse.multimodal.benchmark import BENCHMARK_TASKS, run_benchmark

    assert {"extractor", "num", "seed", "progress"} <= set(
        inspect.signature(evaluate_source).parameters
    )
    assert {"max_minutes", "tasks", "fusions", "overrides", "progress", "log"} <= set(
        inspect.signature(run_benchmark).parameters
    )
    assert set(demo.DEMO_TASKS) <= set(BENCHMARK_TASKS) and set(demo.DEMO_FUSIONS) <= set(
        FUSION_LEVELS
    )


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--minutes", "1"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "new"), "--minutes", "0"]) == 2


@pytest.mark.slow
def test_whole_demo_in_two_minutes(tmp_path):
    from tests.report.test_report import parse

    assert main(["demo", "--out", str(tmp_path / "demo"), "--minutes", "2"]) == 0
    report = parse(tmp_path / "demo" / "report.html")
    assert "FD (digits)" in report.text["metrics"]
    assert report.images["fusion"]
    assert (tmp_path / "demo" / "digits-samples.png").stat().st_size > 1000
