"""The ``scenes`` fusion tasks build batches a fusion model trains on, and report per family."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganfuse.data.scenes import ScenesDataset
from ganfuse.metrics.scene_negatives import caption_words
from ganfuse.metrics.scenes import score_caption
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.model import build_fusion_model
from ganfuse.multimodal.scene_questions import ANSWERS, FAMILIES, question_words
from ganfuse.multimodal.scene_tasks import SceneMatchingTask, SceneVQATask, accuracy_by_kind
from ganfuse.multimodal.tasks import Batch, batch_inputs
from ganfuse.text.encoders import split_words


@pytest.fixture(scope="module")
def train_split():
    return ScenesDataset("train", num=48, seed=0, image_size=32)


def test_vqa_batches_carry_bank_questions_and_their_answers(train_split):
    task = SceneVQATask(questions_per_image=3)
    indices = torch.arange(10)
    batch = task.make_batch(train_split, indices, np.random.default_rng(0))
    bank = task.bank(train_split)
    assert batch.images.shape == (10, 3, 32, 32)
    assert (
        len(batch.texts)
        == len(batch.kinds)
        == batch.pairs.numel()
        == batch.targets["answer"].numel()
    )
    for text, answer, owner in zip(
        batch.texts, batch.targets["answer"].tolist(), batch.pairs.tolist(), strict=True
    ):
        match = [q for q in bank.questions[owner] if q.text == text]
        assert match and ANSWERS[answer] == match[0].answer
    again = task.make_batch(train_split, indices, np.random.default_rng(0))
    assert again.texts == batch.texts


def test_matching_batches_pair_each_true_caption_with_its_binding_negative(train_split):
    task = SceneMatchingTask()
    batch = task.make_batch(train_split, torch.arange(20), np.random.default_rng(0))
    assert batch.targets["match"].tolist() == [1, 0] * (len(batch.texts) // 2)
    assert len(batch.texts) >= 20
    for k in range(0, len(batch.texts), 2):
        graph = train_split.graphs[int(batch.pairs[k])]
        positive, negative = batch.texts[k], batch.texts[k + 1]
        assert caption_words(positive) == caption_words(negative)
        assert score_caption(positive, graph).correct and not score_caption(negative, graph).correct
    # each pair is labelled with its negative's kind, both rows alike
    assert batch.kinds[0::2] == batch.kinds[1::2]
    assert set(batch.kinds) <= {"color-swap", "shape-swap", "size-swap", "reversal"}
    assert len(set(batch.kinds)) >= 2


class _FixedMargins(torch.nn.Module):
    """A stand-in model whose match logits are ``[0, margin]`` for given margins, row by row."""

    def __init__(self, margins: list[float]):
        super().__init__()
        self.margins = torch.tensor(margins)

    def forward(self, inputs, pairs):
        return {"match": torch.stack([torch.zeros_like(self.margins), self.margins], dim=1)}


def test_matching_scores_each_text_and_each_pair_per_negative_kind():
    """Per-text accuracy asks "is this caption true?" of each text alone; the pairwise score asks
    which of the two is the true one (ARO's two-alternative choice); a tie counts one half."""
    margins = [2.0, 1.0, -1.0, -3.0, 0.5, 0.5, -2.0, 1.0]  # four (true, negative) pairs
    kinds = ["color-swap"] * 4 + ["reversal"] * 4
    batch = Batch(
        torch.zeros(4, 3, 8, 8),
        torch.arange(4),
        ["t"] * 8,
        torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
        {"match": torch.tensor([1, 0] * 4)},
        kinds,
    )
    scores = accuracy_by_kind(_FixedMargins(margins), "match", [batch], pairwise=True)
    # per text: true rows right where margin > 0 (2.0, 0.5), negatives where margin <= 0 (-3.0)
    assert scores["color-swap_accuracy"] == pytest.approx(2 / 4)  # 2.0 yes, 1.0 no, -1 no, -3 yes
    assert scores["reversal_accuracy"] == pytest.approx(1 / 4)  # 0.5 yes, 0.5 no, -2 no, 1 no
    assert scores["match_accuracy"] == pytest.approx(3 / 8)
    # pairwise: 2 > 1 and -1 > -3 win; 0.5 = 0.5 ties; -2 < 1 loses
    assert scores["color-swap_pairwise"] == pytest.approx(1.0)
    assert scores["reversal_pairwise"] == pytest.approx(0.25)
    assert scores["match_pairwise"] == pytest.approx(0.625)


def test_matching_trains_on_replacement_negatives_but_is_scored_on_binding_swaps(train_split):
    task = SceneMatchingTask(replacement_fraction=0.9)
    indices = torch.arange(40)
    scored = task.make_batch(train_split, indices, np.random.default_rng(0))
    assert (
        scored.texts
        == SceneMatchingTask().make_batch(train_split, indices, np.random.default_rng(0)).texts
    )
    trained = task.train_batch(train_split, indices, np.random.default_rng(0))
    assert trained.targets["match"].tolist() == [1, 0] * (len(trained.texts) // 2)
    replaced = 0
    for k in range(0, len(trained.texts), 2):
        graph = train_split.graphs[int(trained.pairs[k])]
        positive, negative = trained.texts[k], trained.texts[k + 1]
        assert score_caption(positive, graph).correct and not score_caption(negative, graph).correct
        replaced += caption_words(positive) != caption_words(negative)
    assert replaced >= 30  # about 0.9 of the 40 images


def test_counterfactual_images_join_training_batches_with_the_labels_swapped(train_split):
    """Each pair is followed, where an edit is found, by the same two texts on the edited image
    with labels 0 and 1: every wording of the batch is then true exactly as often as its partner.
    The batch's graphs describe its images, edited ones included; scored batches have none."""
    task = SceneMatchingTask(replacement_fraction=0.5, counterfactual_fraction=1.0)
    indices = torch.arange(40)
    batch = task.train_batch(train_split, indices, np.random.default_rng(0))
    extra = len(batch.images) - len(indices)
    assert extra >= 25  # most of the 40 pairs find their edit
    assert batch.image_index[len(indices) :].tolist() == [-1] * extra
    assert len(batch.graphs) == len(batch.images)
    truth: dict[str, list[int]] = {}
    for k in range(0, len(batch.texts), 2):
        owner = int(batch.pairs[k])
        graph = batch.graphs[owner]
        labels = batch.targets["match"][k : k + 2].tolist()
        for text, label in zip(batch.texts[k : k + 2], labels, strict=True):
            assert score_caption(text, graph).correct == bool(label)
            truth.setdefault(text, []).append(label)
        assert batch.targets["match"][k : k + 2].tolist() == ([1, 0] if owner < 40 else [0, 1])
    balanced = [labels for labels in truth.values() if len(labels) == 2]
    assert len(balanced) >= 2 * extra - 2 and all(sorted(x) == [0, 1] for x in balanced)
    scored = task.make_batch(train_split, indices, np.random.default_rng(0))
    assert len(scored.images) == len(indices)


def test_the_reversal_phase_trains_relation_reversals_alone_then_the_full_task(train_split):
    """Before ``reversal_steps`` every pair of a training batch is a relation reversal, one per
    image (an image without one is replaced by one that has one), and no replacement negatives
    are drawn; from that step on the batch is the full task's again."""
    task = SceneMatchingTask(replacement_fraction=0.5, reversal_steps=3)
    indices = torch.arange(40)
    pairs, rows = task.bank(train_split)
    with_reversal = {
        i for i, r in rows.items() if any(pairs.negative_kinds[k] == "reversal" for k in r)
    }
    assert 0 < len(with_reversal) < 40  # the split has images of both kinds
    early = task.train_batch(train_split, indices, np.random.default_rng(0), step=2)
    assert early.kinds == ["reversal"] * 80
    assert set(early.image_index.tolist()) <= with_reversal
    kept = [i for i in range(40) if i in with_reversal]
    assert early.image_index[kept].tolist() == kept  # images with a reversal stay in place
    for k in range(0, 80, 2):
        graph = train_split.graphs[int(early.image_index[int(early.pairs[k])])]
        assert score_caption(early.texts[k], graph).correct
        assert not score_caption(early.texts[k + 1], graph).correct
    late = task.train_batch(train_split, indices, np.random.default_rng(0), step=3)
    assert late.image_index.tolist() == indices.tolist()
    assert {"replacement", "color-swap"} <= set(late.kinds)
    from ganfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="reversal_steps"):
        make_config("scenes-vqa", "film", ["reversal_steps=10"])
    assert task.reversal_ended == 3


def test_the_reversal_phase_ends_early_once_the_reversal_pairs_are_learned(train_split):
    """The phase's running loss starts at ln 2 (chance) and follows the reversal batches' mean
    match loss; it ends the phase at the first step it is below ``reversal_loss``, and batches of
    the full task never move it."""
    task = SceneMatchingTask(reversal_steps=1000, reversal_loss=0.2)
    rng = np.random.default_rng(0)
    batch = task.train_batch(train_split, torch.arange(40), rng, step=0)
    assert set(batch.kinds) == {"reversal"}
    losses = {"match": torch.full((len(batch.texts),), 0.05)}
    steps = 0
    while task.in_reversal_phase(steps):
        task.observe(batch, losses)
        steps += 1
    # ln 2 * 0.98^n + 0.05 * (1 - 0.98^n) < 0.2 first at n = 73
    expected = math.ceil(math.log((0.2 - 0.05) / (math.log(2.0) - 0.05)) / math.log(0.98))
    assert steps == expected == task.reversal_ended
    after = task.train_batch(train_split, torch.arange(40), rng, step=steps)
    assert after.image_index.tolist() == list(range(40))
    before = task.running_reversal_loss
    task.observe(batch, {"match": torch.full((len(batch.texts),), 5.0)})
    assert task.running_reversal_loss == before
    assert make_config("scenes-matching", "film", []).reversal_loss == 0.2


def test_loss_sampling_draws_more_questions_of_the_families_with_high_training_loss(
    train_split,
):
    task = SceneVQATask(questions_per_image=1, sampling="loss")
    indices = torch.arange(48)
    assert task.family_weights() == pytest.approx(dict.fromkeys(FAMILIES, 0.25))
    # a batch where compare questions cost 3 nats and the others nothing, seen many times
    batch = task.make_batch(train_split, indices, np.random.default_rng(0))
    per_question = torch.tensor([3.0 if k == "compare" else 0.0 for k in batch.kinds])
    for _ in range(400):
        task.observe(batch, {"answer": per_question})
    weights = task.family_weights()
    assert weights["compare"] == pytest.approx(0.125 + 0.5, abs=1e-3)
    assert weights["exist"] == pytest.approx(0.125, abs=1e-3)
    drawn = [
        kind
        for seed in range(10)
        for kind in task.train_batch(train_split, indices, np.random.default_rng(seed)).kinds
    ]
    uniform = [
        kind
        for seed in range(10)
        for kind in task.make_batch(train_split, indices, np.random.default_rng(seed)).kinds
    ]
    assert drawn.count("compare") / len(drawn) > 0.45  # 0.625 of the images that have one
    assert uniform.count("compare") / len(uniform) < 0.3  # scored batches stay uniform


def test_a_fusion_model_trains_a_few_steps_on_scenes_vqa_and_reports_each_family(train_split):
    torch.manual_seed(0)
    config = make_config(
        "vqa",
        "early",
        ["image_widths=[16,32]", "text_dim=32", "image_dim=32", "fused_dim=32", "head_hidden=32"],
    )
    task = SceneVQATask(questions_per_image=4)
    words = set(question_words()) | {
        w for texts in train_split.captions for t in texts for w in split_words(t)
    }
    model = build_fusion_model(config, task.task_sizes, vocab=sorted(words))
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    losses = []
    for step in range(3):
        batch = task.make_batch(train_split, torch.arange(16 * step, 16 * step + 16), rng)
        logits = model(batch_inputs(batch), pairs=batch.pairs)
        loss = F.cross_entropy(logits["answer"], batch.targets["answer"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    batches = [task.make_batch(train_split, torch.arange(48), np.random.default_rng(1))]
    metrics = accuracy_by_kind(model, "answer", batches)
    assert set(metrics) == {f"{f}_accuracy" for f in FAMILIES} | {"answer_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_scene_tasks_run_from_the_command_line_and_evaluate_to_their_saved_scores(tmp_path, capsys):
    from ganfuse.cli import main
    from ganfuse.multimodal.evaluate import evaluate_run

    tiny = ["steps=3", "train_size=64", "eval_size=48", "image_widths=[16,32]", "text_dim=32",
            "image_dim=32", "fused_dim=32", "head_hidden=32"]
    sets = [arg for item in tiny for arg in ("--set", item)]
    for task in ("scenes-vqa", "scenes-matching"):
        out = tmp_path / task
        assert main(["fuse", "train", "--task", task, "--fusion", "film", "--out", str(out), "--quiet", *sets]) == 0
        saved = json.loads((out / "metrics.json").read_text())["test"]
        assert evaluate_run(out) == pytest.approx(saved)
        if task == "scenes-vqa":  # accuracy per question family
            assert {f"{f}_accuracy" for f in FAMILIES} <= set(saved)
        assert all(0.0 <= v <= 1.0 for v in saved.values())
    # a task on the wrong world is one line, exit 2, nothing written
    capsys.readouterr()
    assert main(["fuse", "train", "--task", "vqa", "--out", str(tmp_path / "x"), "--set", "world=scenes"]) == 2
    assert capsys.readouterr().err.strip() == "ganfuse: error: world must be shapes for task vqa (got 'scenes')"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["counterfactuals=0.5"],  # scenes-vqa has no negatives to make true
        ["counterfactuals=1.5"],
    ],
)
def test_counterfactuals_are_refused_where_they_mean_nothing(overrides):
    from ganfuse.errors import ConfigError

    task = "scenes-vqa" if overrides == ["counterfactuals=0.5"] else "scenes-matching"
    with pytest.raises(ConfigError, match="counterfactuals"):
        make_config(task, "film", overrides)
