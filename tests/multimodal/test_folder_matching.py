"""Image-caption matching on real pairs (``--task matching`` with ``world=folder``/``emoji``):
negatives from other images' captions, hard negatives, the image-disjoint held-out split, a tiny
model on a separable folder, evaluate and predict, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.errors import ConfigError
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.folder_matching import (
    HARD,
    POSITIVE,
    POSITIVE_HARD,
    RANDOM,
    PairMatchingTask,
    build_negative_bank,
    content_words,
    normalise,
)
from ganfuse.multimodal.folder_world import PairsData, is_heldout_file, pairs_split

pytestmark = pytest.mark.filterwarnings("ignore:captioned folder:UserWarning")

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}
# A small model at 32 px (the smallest size the multimodal runs take): about 100 steps a second
# on one thread.
TINY = [
    "image_widths=[8,16]", "image_dim=32", "text_embed_dim=16", "text_hidden_dim=16",
    "text_dim=32", "fused_dim=32", "head_hidden=32", "batch_size=16", "warmup_steps=5",
    "threads=1", "precision=fp32", "log_every=20", "holdout_fraction=0.25", "lr=3e-3",
]  # fmt: skip


def make_colour_folder(root: Path, num: int = 80) -> Path:
    """``num`` images, a red or a blue square (alternating) at a random place on white, captioned
    "a red square" / "a blue square": separable by colour alone."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for n in range(num):
        colour = "red" if n % 2 == 0 else "blue"
        image = np.full((32, 32, 3), 255, dtype=np.uint8)
        corner = int(rng.integers(0, 12))
        image[corner : corner + 16, corner : corner + 16] = COLOURS[colour]
        Image.fromarray(image).save(root / f"img_{n:03d}.png")
        lines.append(json.dumps({"file_name": f"img_{n:03d}.png", "text": f"a {colour} square"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    return make_colour_folder(tmp_path_factory.mktemp("pairs") / "colours")


def pairs(captions: list[list[str]], kinds: list[int] | None = None) -> PairsData:
    n = len(captions)
    return PairsData(
        torch.zeros(n, 3, 4, 4, dtype=torch.uint8),
        captions,
        [str(i) for i in range(n)],
        torch.full((n,), -1),
        [],
        None if kinds is None else torch.tensor(kinds),
    )


# Captions that repeat across images, in other case and spacing, and images with several.
CAPTIONS = [
    ["a red apple", "an apple, red"],
    ["A  Red apple"],  # the same caption as image 0's, written otherwise
    ["a green apple"],
    ["a grey cat", "a cat"],
    ["a CAT"],
    ["a red car"],
    ["a yellow banana"],
]


def test_a_negative_is_never_one_of_the_images_own_captions():
    data = pairs(CAPTIONS)
    for fraction in (0.0, 0.5, 1.0):
        task = PairMatchingTask(fraction)
        rng = np.random.default_rng(0)
        for _ in range(200):
            batch = task.make_batch(data, torch.arange(len(data)), rng)
            # half positives, half negatives, alternating
            assert batch.targets["match"].tolist() == [1, 0] * len(data)
            for row, text in enumerate(batch.texts):
                own = {normalise(c) for c in data.captions[int(batch.pairs[row])]}
                assert (normalise(text) in own) == (row % 2 == 0)
    for batch in PairMatchingTask().eval_batches(data, seed=3):
        for row, text in enumerate(batch.texts):
            own = {normalise(c) for c in data.captions[int(batch.image_index[batch.pairs[row]])]}
            assert (normalise(text) in own) == bool(batch.targets["match"][row])


def test_hard_negatives_share_a_content_word_and_prefer_the_same_group():
    data = pairs(CAPTIONS)
    bank = build_negative_bank(data)
    hard = {i: {bank.texts[t] for t in bank.hard[i]} for i in range(len(data))}
    apple = {"a red apple", "an apple, red"}
    assert hard == {
        0: {"a green apple", "a red car"},
        1: {"an apple, red", "a green apple", "a red car"},  # image 0's other caption is not 1's
        2: apple,
        3: set(),  # "a CAT" is its own caption "a cat"; "a" is no content word
        4: {"a grey cat"},
        5: apple,  # shares "red"
        6: set(),
    }
    # every hard negative shares a content word with one of the image's captions
    for i, texts in hard.items():
        words = set().union(*(content_words(c) for c in data.captions[i]))
        assert all(content_words(t) & words for t in texts)
    # with groups (the emoji's subgroups): the same group's sharing captions where there are any,
    # else any group's
    grouped = build_negative_bank(pairs(CAPTIONS, kinds=[0, 0, 1, 1, 1, 1, 0]))
    assert {grouped.texts[t] for t in grouped.hard[1]} == {"an apple, red"}
    assert {grouped.texts[t] for t in grouped.hard[2]} == apple

    # all-hard training batches use a hard negative wherever the image has one
    task = PairMatchingTask(1.0)
    batch = task.make_batch(data, torch.arange(len(data)), np.random.default_rng(1))
    kinds = batch.kinds[1::2]
    assert kinds == [HARD if len(bank.hard[i]) else RANDOM for i in range(len(data))]
    # the evaluation set: a positive and a random negative per image, a hard one where it exists
    (evaluation,) = task.eval_batches(data, seed=0)
    assert evaluation.kinds.count(RANDOM) == 7
    assert evaluation.kinds.count(HARD) == 5  # images 0, 1, 2, 4 and 5
    assert evaluation.kinds.count(POSITIVE_HARD) == 5 and evaluation.kinds.count(POSITIVE) == 2
    again = task.eval_batches(data, seed=0)[0]
    assert again.texts == evaluation.texts  # fixed by the seed
    assert task.eval_batches(data, seed=1)[0].texts != evaluation.texts


def test_the_held_out_split_is_image_disjoint_and_its_words_are_unknown(colour_folder):
    from ganfuse.multimodal.folder_matching import pairs_vocabulary

    config = make_config("matching", "film", [*TINY, "world=folder", f"data={colour_folder}"])
    train, heldout = pairs_split(config, "train"), pairs_split(config, "heldout")
    assert set(train.names).isdisjoint(heldout.names)
    assert len(train) + len(heldout) == 80
    assert heldout.names == [f"img_{n:03d}.png" for n in range(80)
                             if is_heldout_file(f"img_{n:03d}.png", 0.25)]  # fmt: skip
    # scored texts of the held-out split come from held-out images only
    (batch,) = PairMatchingTask().eval_batches(heldout, seed=0)
    heldout_texts = {c for captions in heldout.captions for c in captions}
    assert set(batch.texts) <= heldout_texts
    assert set(pairs_vocabulary(train)) == {"a", "square", "blue", "red"}
    words = pairs_vocabulary(pairs([["a zebra"], ["a cat"]]).subset([1]))
    assert words == ["a", "cat"]


def test_a_tiny_model_separates_red_from_blue_and_evaluate_and_predict_agree(
    colour_folder, tmp_path
):
    from ganfuse.multimodal.evaluate import evaluate_run
    from ganfuse.multimodal.predict import predict
    from ganfuse.multimodal.train import train_fusion

    torch.set_num_threads(1)
    config = make_config(
        "match", "film", [*TINY, "world=folder", f"data={colour_folder}", "steps=80"]
    )
    out = tmp_path / "run"
    result = train_fusion(config, out, progress=False)
    metrics = result.test_metrics
    assert metrics["match_accuracy"] > 0.9
    assert metrics["hard_coverage"] == 1.0  # "square" is shared: every negative is hard
    assert metrics["hard_match_accuracy"] > 0.9
    assert result.val_metrics == {}  # real pairs have no validation split
    assert evaluate_run(out)["match_accuracy"] == pytest.approx(metrics["match_accuracy"])
    both = evaluate_run(out, ["train", "heldout"])
    assert both["heldout"] == pytest.approx(metrics)
    assert both["train"]["match_accuracy"] > 0.9
    red = colour_folder / "img_000.png"
    assert predict(out, red, "a red square")["answers"]["match"]["answer"] == "yes"
    assert predict(out, red, "a blue square")["answers"]["match"]["answer"] == "no"


def test_matching_config_on_pairs(colour_folder):
    config = make_config("match", None, ["world=emoji"])
    assert config.task == "matching" and config.hard_negative_fraction == 0.5
    with pytest.raises(ConfigError, match="hard_negative_fraction"):
        make_config("matching", None, ["world=emoji", "hard_negative_fraction=1.5"])
    with pytest.raises(ConfigError) as info:
        make_config("vqa", None, ["world=folder", f"data={colour_folder}"])
    assert "matching, zeroshot or caption" in str(info.value)


def test_the_command_line_trains_evaluates_and_predicts_on_a_folder(colour_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["fuse", "train", "--task", "match", "--fusion", "early", "--out", str(out), "--quiet",
            "--set", "world=folder", "--set", f"data={colour_folder}", "--set", "steps=6"]  # fmt: skip
    assert main(argv + [f"--set={item}" for item in TINY]) == 0
    assert "hard_match_accuracy" in capsys.readouterr().out
    assert main(["fuse", "evaluate", str(out), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {
        "match_accuracy", "hard_match_accuracy", "hard_coverage"
    }  # fmt: skip
    assert main(["fuse", "evaluate", str(out), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "train, heldout" in err and len(err.strip().splitlines()) == 1
    image = str(colour_folder / "img_001.png")
    assert main(["fuse", "predict", str(out), "--image", image, "--text", "a blue square"]) == 0
    assert capsys.readouterr().out.startswith("match: ")


def test_the_threshold_is_the_most_accurate_cut():
    from ganfuse.multimodal.pair_baselines import best_threshold

    cosines = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7])
    labels = torch.tensor([1, 0, 1, 0, 0])
    # above 0.6 -> 4 of 5 right (0.5 missed); above 0.4 -> 4 of 5 (0.7 wrong); the first found
    assert best_threshold(cosines, labels) == pytest.approx(0.4)
    assert best_threshold(torch.tensor([0.2, 0.4]), torch.tensor([1, 1])) < 0.2
    assert best_threshold(torch.tensor([0.2, 0.4]), torch.tensor([0, 0])) > 0.4


def test_the_pairs_benchmark_plan_has_the_fusions_and_both_baselines():
    from ganfuse.multimodal.benchmark import benchmark_plan

    plan = benchmark_plan(None, ("film", "late-mean"), world="emoji")
    assert [(r.task, r.fusion) for r in plan] == [
        ("zeroshot", "dual-encoder/small"),
        ("matching", "film"),
        ("matching", "late-mean"),
        ("matching", "text-only"),
        ("matching", "dual-encoder"),
    ]
    assert all("world=emoji" in r.overrides for r in plan)
    end_to_end = benchmark_plan(None, ("film",), world="folder", pretrained=False)
    assert [r.fusion for r in end_to_end] == ["film", "text-only"]
    with pytest.raises(ConfigError, match="matching"):
        benchmark_plan(["vqa"], ("film",), world="emoji")


def test_a_short_pairs_benchmark_fills_the_matching_table(colour_folder, tmp_path):
    from ganfuse.multimodal.benchmark import run_benchmark

    overrides = [*TINY, f"data={colour_folder}", "steps=40", "embed_dim=32"]
    results = run_benchmark(
        tmp_path / "bench", 2.0, None, ("early",), overrides, progress=False,
        log=lambda line: None, world="folder",
    )  # fmt: skip
    rows = {(r["fusion"], r["metric"]): r["value"] for r in results if r["task"] == "matching"}
    assert {f for f, _ in rows} == {"early", "text-only", "dual-encoder"}
    assert rows[("early", "match_accuracy")] > 0.9
    assert rows[("dual-encoder", "match_accuracy")] > 0.9
    # the caption alone cannot tell: each caption is as often a positive as a negative
    assert rows[("text-only", "match_accuracy")] < 0.7
    table = (tmp_path / "bench" / "results.md").read_text()
    assert "# ganfuse fuse benchmark: folder" in table and "| text-only | baseline |" in table
