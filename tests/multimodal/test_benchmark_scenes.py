"""``ganfuse fuse benchmark --world scenes``: the plan, its baselines, a tiny end-to-end run, and
CoGenT (train on ``cogent-a``, score on ``cogent-a-test`` and ``cogent-b``)."""

from __future__ import annotations

import json

import pytest

from ganfuse.cli import main
from ganfuse.data.scenes import COGENT_COLORS
from ganfuse.errors import ConfigError
from ganfuse.metrics.scene_negatives import NEGATIVE_KINDS
from ganfuse.models.fusion import FUSION_LEVELS
from ganfuse.multimodal import benchmark, evaluate, train
from ganfuse.multimodal.benchmark import Budget, PlannedRun, benchmark_plan
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.evaluate import evaluate_run
from ganfuse.multimodal.scene_baselines import AnswerPrior, answer_prior_scores
from ganfuse.multimodal.scene_questions import ANSWERS, FAMILIES, SceneQuestion
from ganfuse.multimodal.scene_tasks import SceneVQATask
from ganfuse.multimodal.splits import scenes_split
from ganfuse.multimodal.tasks import eval_batches
from ganfuse.multimodal.train import TEST_SEED

from .conftest import TINY

FAMILY_COLUMNS = ["overall", *FAMILIES]
SMALL = [*TINY, "train_size=40", "eval_size=16"]  # question banks take ~4 ms an image


def test_scenes_plan_runs_the_dual_encoder_then_every_fusion_and_baseline_per_task():
    plan = benchmark_plan(world="scenes")
    first = plan[0]
    assert (first.task, first.config_task, first.pretrained) == ("zeroshot", "zeroshot", False)
    assert "world=scenes" in first.overrides and "text_encoder=small" in first.overrides
    rows = [(r.task, r.fusion) for r in plan[1:]]
    fusions = list(FUSION_LEVELS)
    assert rows == [
        *[("scenes-vqa", f) for f in fusions],
        ("scenes-vqa", "question-only"),
        ("scenes-vqa", "answer-prior"),
        *[("scenes-matching", f) for f in fusions],
        ("scenes-matching", "bag-of-words"),
        ("cogent", "film"),
    ]
    assert all(r.config_task == r.task for r in plan[1:-1])
    cogent = plan[-1]
    assert (cogent.config_task, cogent.overrides) == ("scenes-vqa", ["train_split=cogent-a"])
    assert not cogent.pretrained  # the shared backbone saw condition B: never used for CoGenT
    # Every trained run of a task has one share; the computed baselines train for none.
    weights = {(r.task, r.fusion): r.weight for r in plan[1:]}
    assert weights.pop(("scenes-vqa", "answer-prior")) == 0.0
    assert weights.pop(("scenes-matching", "bag-of-words")) == 0.0
    assert set(weights.values()) == {1.0}
    # End to end, nothing would use the dual encoder; a subset of tasks and fusions.
    small = benchmark_plan(["cogent", "scenes-matching"], ["early", "gated"], "scenes", False)
    assert [(r.task, r.fusion) for r in small] == [
        ("scenes-matching", "early"),
        ("scenes-matching", "gated"),
        ("scenes-matching", "bag-of-words"),
        ("cogent", "early"),  # film is not among the fusions: the first one given
    ]


def test_budget_gives_the_fusions_and_the_question_only_model_equal_shares(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    plan = benchmark_plan(None, ["early", "film"], "scenes")
    budget = Budget(30.0, plan, reserve_seconds=0.0)
    shares: dict[str, list[float]] = {}
    for index, run in enumerate(plan):
        minutes = budget.share_minutes(index)
        shares.setdefault(run.task, []).append(minutes)
        spent = minutes * 60 + 5.0  # every run trains its share and spends 5 s more
        clock[0] += spent
        budget.done(run, spent, minutes * 60)
    vqa, matching = shares["scenes-vqa"], shares["scenes-matching"]
    assert vqa[0] == vqa[1] == vqa[2] > 0 and vqa[3] == 0.0  # early, film, question-only; prior
    assert matching[0] == matching[1] > 0 and matching[2] == 0.0
    # The dual encoder's hint (15 s) and 8 x 4 s of assumed overhead are set aside; weights
    # 4 (dual encoder) + 3 (VQA) + 2 (matching) + 1 (CoGenT) share the rest.
    assert shares["zeroshot"][0] * 60 == pytest.approx((1800 - 15 - 8 * 4) / 10 * 4)
    # The last run absorbs what is left, less the overhead measured (5 s): the budget is spent.
    assert clock[0] == pytest.approx(1800.0)


def test_a_trailing_baseline_of_weight_zero_does_not_divide_by_zero():
    plan = [PlannedRun("scenes-matching", "bag-of-words", "scenes-matching", [], 0.0, False)]
    assert Budget(1.0, plan).share_minutes(0) == 0.0


def test_answer_prior_answers_by_text_then_by_group_then_overall():
    def q(text: str, answer: str, family: str = "exist", attribute: str | None = None):
        return SceneQuestion(text, answer, family, attribute)

    prior = AnswerPrior(
        [
            q("is there a red circle?", "yes"),
            q("is there a red circle?", "no"),
            q("is there a red circle?", "yes"),
            q("is there a cube?", "no"),
            q("is there a star?", "no"),
            q("what colour is the star?", "red", "query_attribute", "color"),
            q("what shape is the red thing?", "star", "query_attribute", "shape"),
            q("what shape is the blue thing?", "star", "query_attribute", "shape"),
        ]
    )
    assert prior.predict(q("is there a red circle?", "no")) == "yes"  # 2 of 3 for this text
    assert prior.predict(q("is there a blue star?", "yes")) == "no"  # unseen text: exist's prior
    unseen_colour = q("what colour is the circle?", "blue", "query_attribute", "color")
    assert prior.predict(unseen_colour) == "red"  # the colour group's, not the family's "star"
    # A group never seen: the most frequent answer of all ("no", 3 of 8).
    assert prior.predict(q("how many things are there?", "2", "count")) == "no"
    with pytest.raises(ValueError, match="at least one"):
        AnswerPrior([])


def test_answer_prior_fits_the_training_bank_and_scores_the_fusion_test_batches():
    config = make_config("scenes-vqa", None, ["train_size=64", "eval_size=24"])
    scores = answer_prior_scores(config)
    # Independently: fit on the train split's bank, score every question of the batches every
    # fusion model is scored on (the test split, the test seed).
    task = SceneVQATask(config.questions_per_image)
    train_split, test_split = scenes_split("train", 64, 0, 32), scenes_split("test", 24, 0, 32)
    prior = AnswerPrior(q for _, q in task.bank(train_split).flat())
    hits: dict[str, list[bool]] = {}
    for batch in eval_batches(task, test_split, TEST_SEED):
        for text, kind, target, row in zip(
            batch.texts,
            batch.kinds,
            batch.targets["answer"].tolist(),
            batch.pairs.tolist(),
            strict=True,
        ):
            image = int(batch.image_index[row])
            question = next(q for q in task.bank(test_split).questions[image] if q.text == text)
            assert (question.family, question.answer) == (kind, ANSWERS[target])
            for key in (kind, "answer"):
                hits.setdefault(key, []).append(prior.predict(question) == question.answer)
    assert len(hits["answer"]) == 2 * 24  # two questions per test image
    assert scores == pytest.approx({f"{k}_accuracy": sum(v) / len(v) for k, v in hits.items()})
    assert list(scores) == [f"{k}_accuracy" for k in sorted(["answer", *FAMILIES])]


def _table(markdown: str, task: str) -> list[list[str]]:
    """The rows of the table under ``## task``, as lists of cells (header first)."""
    section = markdown.split(f"## {task}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if "---" not in line]


def test_tiny_scenes_benchmark_writes_family_tables_with_baselines(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["fuse", "benchmark", "--world", "scenes", "--out", str(out), "--max-minutes", "1"]
    argv += ["--fusions", "film", "--quiet", "--set", "freeze_image_encoder=false"]
    for item in SMALL:
        argv += ["--set", item]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "[6/6] cogent film: film@cogent-a-test answer_accuracy=" in log
    results = json.loads((out / "results.json").read_text())
    by = {(r["task"], r["fusion"], r["metric"]): r for r in results}
    assert {(t, f) for t, f, _ in by} == {
        ("scenes-vqa", "film"),
        ("scenes-vqa", "question-only"),
        ("scenes-vqa", "answer-prior"),
        ("scenes-matching", "film"),
        ("scenes-matching", "bag-of-words"),
        ("cogent", "film@cogent-a-test"),
        ("cogent", "film@cogent-b"),
    }
    assert by["scenes-matching", "bag-of-words", "match_accuracy"]["value"] == 0.5
    prior = answer_prior_scores(make_config("scenes-vqa", None, SMALL))
    for metric, value in prior.items():
        assert by["scenes-vqa", "answer-prior", metric]["value"] == pytest.approx(value)
    trained = by["scenes-vqa", "question-only", "answer_accuracy"]
    assert (
        trained["params"] > 0 and by["scenes-vqa", "answer-prior", "answer_accuracy"]["params"] == 0
    )

    markdown = (out / "results.md").read_text()
    assert markdown.startswith("# ganfuse fuse benchmark: scenes")
    vqa = _table(markdown, "scenes-vqa")
    assert vqa[0] == ["fusion", "level", *FAMILY_COLUMNS, "params", "train s"]
    assert [row[:2] for row in vqa[1:]] == [
        ["film", "structure"],
        ["question-only", "baseline"],
        ["answer-prior", "baseline"],
    ]
    assert all(cell for row in vqa[1:] for cell in row)  # every family scored on every row
    matching = _table(markdown, "scenes-matching")
    assert matching[0][2:4] == ["match_accuracy", "match_pairwise"]
    assert matching[0][4:8] == [f"{k}_pairwise" for k in NEGATIVE_KINDS]
    assert all(matching[1][2:8])  # FiLM: each caption, each pair, every kind of negative
    assert matching[2][:3] == ["bag-of-words", "baseline", "0.500"]
    cogent = _table(markdown, "cogent")
    assert [row[0] for row in cogent[1:]] == ["film@cogent-a-test", "film@cogent-b"]
    assert cogent[0][2:7] == FAMILY_COLUMNS
    assert cogent[1][-2:] == cogent[2][-2:]  # one model: same parameters, same training time
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cogent_run(tmp_path_factory):
    """A tiny ``scenes-vqa`` run trained on ``cogent-a``, and the splits its training read."""
    read: list[str] = []
    real = train.config_split

    def spy(config, split):
        read.append(split)
        return real(config, split)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "config_split", spy)
        config = make_config("scenes-vqa", "early", [*TINY, "train_split=cogent-a"])
        result = train.train_fusion(config, tmp_path_factory.mktemp("runs") / "cogent", False)
    return result, read


def test_cogent_run_trains_on_condition_a_and_evaluates_on_either_condition(
    cogent_run, monkeypatch, capsys
):
    result, read = cogent_run
    assert read == ["cogent-a", "cogent-a-test"]  # no val split in CoGenT
    assert result.val_metrics == {}
    scored: list[tuple[str, set]] = []
    real = evaluate.config_split

    def spy(config, split):
        data = real(config, split)
        scored.append((split, {(o.color, o.shape) for g in data.graphs for o in g.objects}))
        return data

    monkeypatch.setattr(evaluate, "config_split", spy)
    # By default the split it was tested on: the numbers its training reported.
    assert evaluate_run(result.run_dir) == pytest.approx(result.test_metrics)
    both = evaluate_run(result.run_dir, ["cogent-a-test", "cogent-b"])
    assert both["cogent-a-test"] == pytest.approx(result.test_metrics)
    assert set(both["cogent-b"]) == set(result.test_metrics)
    assert [split for split, _ in scored] == ["cogent-a-test", "cogent-a-test", "cogent-b"]
    condition_b = {(c, s) for s, colors in COGENT_COLORS["b"].items() for c in colors}
    assert scored[2][1] and scored[2][1] <= condition_b  # the images really are condition B
    assert not scored[1][1] & condition_b

    assert main(["fuse", "evaluate", str(result.run_dir), "--split", "cogent-a-test,cogent-b"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["cogent-a-test", "cogent-b"]
    overall = next(line for line in lines if line.split()[0] == "answer_accuracy").split()
    assert float(overall[1]) == pytest.approx(both["cogent-a-test"]["answer_accuracy"], abs=1e-4)
    assert float(overall[2]) == pytest.approx(both["cogent-b"]["answer_accuracy"], abs=1e-4)
    assert main(["fuse", "evaluate", str(result.run_dir), "--split", "cogent-b", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["cogent-b"] and printed["cogent-b"] == pytest.approx(both["cogent-b"])


def test_default_evaluation_of_a_shapes_run_is_its_test_split(matching_run):
    assert evaluate_run(matching_run.run_dir, ["test"]) == {
        "test": pytest.approx(evaluate_run(matching_run.run_dir))
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fuse", "benchmark", "--world", "mars"], "unknown world 'mars'; choose from shapes"),
        (
            ["fuse", "benchmark", "--world", "scenes", "--tasks", "vqa"],
            "unknown benchmark task(s) ['vqa'] for world scenes; choose from scenes-vqa",
        ),
        (["fuse", "benchmark", "--tasks", "cogent"], "unknown benchmark task(s) ['cogent']"),
        (
            ["fuse", "train", "--task", "scenes-vqa", "--set", "train_split=cogent-b"],
            "train_split must be one of train, cogent-a (got 'cogent-b')",
        ),
        (
            ["fuse", "train", "--task", "vqa", "--set", "train_split=cogent-a"],
            "train_split other than train applies to the scenes fusion tasks only",
        ),
    ],
)
def test_bad_world_task_or_split_is_a_one_line_error(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # refused before anything was written


def test_evaluate_refuses_an_unknown_split_before_loading(cogent_run, matching_run, capsys):
    run = str(cogent_run[0].run_dir)
    assert main(["fuse", "evaluate", run, "--split", "cogent-c"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenes split(s) ['cogent-c']; choose from train, val, test" in err
    assert main(["fuse", "evaluate", str(matching_run.run_dir), "--split", "cogent-b"]) == 2
    assert "unknown shapes split(s) ['cogent-b']" in capsys.readouterr().err
    assert main(["fuse", "evaluate", run, "--split", ","]) == 2
    assert "--split names nothing" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no split given"):
        evaluate_run(run, [])
