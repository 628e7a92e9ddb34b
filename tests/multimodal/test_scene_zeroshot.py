"""The dual encoder on ``scenes``: the vectorised truth table is the exact judge, the batch's
positives and hard negatives follow it, the loss and the scores match hand computations, and a
run saves, loads, re-evaluates and starts a scenes fusion run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganfuse.data.scenes import SceneGraph, SceneObject, generate_scenes, parse_caption
from ganfuse.errors import ConfigError, UserError
from ganfuse.metrics.scene_negatives import binding_negatives, caption_words
from ganfuse.metrics.scenes import score_caption, scoring_margin
from ganfuse.multimodal.scene_zeroshot import (
    SceneArrays,
    binding_wins,
    caption_truth,
    contrastive_batch,
    evaluate_scenes_split,
    recall_relevant,
)
from ganfuse.multimodal.splits import scenes_split
from ganfuse.multimodal.zeroshot import binding_loss, info_nce
from ganfuse.text.encoders import scenes_vocabulary, split_words

from .conftest import TINY

SCENES_TINY = [*TINY, "world=scenes"]


def _obj(color, shape, size, x, y) -> SceneObject:
    half = 3 if size == "small" else 4
    return SceneObject(
        color, shape, size, (x, y), (int(x) - half, int(y) - half, int(x) + half, int(y) + half)
    )


# ---------------------------------------------------------------------------------------------
# The truth table
# ---------------------------------------------------------------------------------------------


def test_truth_table_equals_the_judge_on_every_pair():
    data = scenes_split("test", 24, 0, 32)
    heldout = scenes_split("heldout", 12, 0, 32)
    captions = [c for texts in data.captions + heldout.captions for c in texts]
    # Binding negatives: same words, false of their own image, often true of another one.
    for graph, texts in zip(data.graphs, data.captions, strict=True):
        for text in texts:
            captions += [n.text for n in binding_negatives(text, graph)]
    graphs = list(data.graphs) + list(heldout.graphs)
    truth = caption_truth(captions, graphs)
    expected = np.array([[score_caption(c, g).correct for g in graphs] for c in captions])
    assert truth.shape == (len(captions), 36)
    assert np.array_equal(truth, expected)
    assert 0.02 < truth.mean() < 0.5  # neither trivially true nor trivially false


def test_relation_margin_and_injective_binding_match_the_judge():
    margin = scoring_margin(32)  # 2 pixels at 32
    at = SceneGraph(
        (
            _obj("red", "circle", "small", 8.0, 10.0),
            _obj("blue", "star", "large", 8.0 + margin, 20.0),
        ),
        32,
    )
    short = SceneGraph(
        (
            _obj("red", "circle", "small", 8.0, 10.0),
            _obj("blue", "star", "large", 7.9 + margin, 20.0),
        ),
        32,
    )
    one_red = SceneGraph((_obj("red", "circle", "small", 8.0, 10.0),), 32)
    captions = [
        "a red circle to the left of a blue star",  # exactly at the margin: true
        "a blue star is right of a small red circle",
        "a red circle above a large blue star",
        "a red circle and a red circle",  # two mentions need two objects
        "two shapes: a red circle and a blue star",
        "there are 2 objects",
        "one red circle",
    ]
    graphs = [at, short, one_red]
    truth = caption_truth(captions, graphs)
    expected = np.array([[score_caption(c, g).correct for g in graphs] for c in captions])
    assert np.array_equal(truth, expected)
    assert truth[:, 0].tolist() == [True, True, True, False, True, True, True]
    assert not truth[0, 1]  # 0.1 pixel short of the margin
    assert truth[3].tolist() == [False, False, False]


def test_graphs_of_different_sizes_are_refused():
    small = SceneGraph((_obj("red", "circle", "small", 8.0, 10.0),), 32)
    large = SceneGraph((_obj("red", "circle", "small", 8.0, 10.0),), 64)
    with pytest.raises(UserError, match="image size"):
        SceneArrays.from_graphs([small, large])


def test_vocabulary_is_every_caption_word():
    vocab = set(scenes_vocabulary())
    _, _, captions = generate_scenes(1500, 0, "all", 32)
    words = {w for texts in captions for c in texts for w in split_words(c)}
    assert words == vocab  # nothing missing, nothing no caption uses


# ---------------------------------------------------------------------------------------------
# Batches and the loss
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hard", [True, False])
def test_batch_positives_follow_the_judge_and_negatives_are_binding_swaps(hard):
    data = scenes_split("train", 64, 0, 32)
    arrays = SceneArrays.from_graphs(data.graphs)
    index = torch.arange(48)
    batch = contrastive_batch(data, arrays, index, np.random.default_rng(3), hard, data.holdout)
    b = len(index)
    assert batch.positives.shape == (b, len(batch.texts))
    assert batch.positives[torch.arange(b), torch.arange(b)].all()  # each caption of its image
    expected = [[score_caption(t, data.graphs[i]).correct for t in batch.texts] for i in range(b)]
    assert batch.positives.tolist() == expected
    assert (batch.hard_negatives > 5) == hard and (batch.hard_negatives == 0) == (not hard)
    held = set(data.holdout)
    assert len(batch.negative_of) == batch.hard_negatives
    for negative, row in zip(batch.texts[b:], batch.negative_of, strict=True):
        caption, graph = batch.texts[row], data.graphs[int(index[row])]
        assert negative in {n.text for n in binding_negatives(caption, graph)}
        assert caption_words(negative) == caption_words(caption)
        assert not score_caption(negative, graph).correct
        assert not {(o.color, o.shape) for o in parse_caption(negative).objects} & held


def test_counterfactual_images_make_a_batchs_negatives_true():
    """The dual encoder's counterfactuals: for a share of a batch's hard negatives, the image
    edited so that the negative is true and its caption false (by the parser and the judge)."""
    from ganfuse.metrics import to_uint8
    from ganfuse.metrics.scenes import parse_scenes
    from ganfuse.multimodal.zeroshot import counterfactual_images

    data = scenes_split("train", 64, 0, 32)
    arrays = SceneArrays.from_graphs(data.graphs)
    index = torch.arange(48)
    batch = contrastive_batch(data, arrays, index, np.random.default_rng(3), True, data.holdout)
    negative_of = torch.tensor(batch.negative_of)
    images, rows = counterfactual_images(
        data, index, batch.texts, negative_of, 1.0, np.random.default_rng(0)
    )
    assert len(rows) >= 0.7 * len(negative_of) and images.shape[1:] == (3, 32, 32)
    graphs = parse_scenes(to_uint8(images))
    for graph, h in zip(graphs, rows.tolist(), strict=True):
        assert score_caption(batch.texts[len(index) + h], graph).correct
        assert not score_caption(batch.texts[int(negative_of[h])], graph).correct
    none = counterfactual_images(data, index, batch.texts, negative_of, 0.0, np.random.default_rng(0))
    assert none is None


def test_contrastive_batches_can_swap_binding_negatives_for_replacements():
    data = scenes_split("train", 64, 0, 32)
    arrays = SceneArrays.from_graphs(data.graphs)
    index = torch.arange(48)
    batch = contrastive_batch(
        data, arrays, index, np.random.default_rng(3), True, data.holdout, replacement_fraction=0.8
    )
    b = len(index)
    replaced = 0
    for negative, row in zip(batch.texts[b:], batch.negative_of, strict=True):
        caption, graph = batch.texts[row], data.graphs[int(index[row])]
        assert not score_caption(negative, graph).correct
        assert not batch.positives[row, b + batch.negative_of.index(row)]
        replaced += caption_words(negative) != caption_words(caption)
    # three of four caption kinds admit a replacement (counts do not): about 0.8 * 3/4 of 48
    assert replaced >= 20
    # single captions, which have no binding negative, now bring a negative too
    plain = contrastive_batch(data, arrays, index, np.random.default_rng(3), True, data.holdout)
    assert batch.hard_negatives > plain.hard_negatives


def test_info_nce_with_hard_negatives_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # row 2: a hard negative
    positives = torch.tensor([[True, False, False], [False, True, False]])
    loss = info_nce(image, texts, 2.0, positives)

    def ce(logits, target):
        return math.log(sum(math.exp(v) for v in logits)) - logits[target]

    i2t = ce([2.0, 0.0, 1.2], 0) + ce([0.0, 2.0, 1.6], 1)
    t2i = ce([2.0, 0.0], 0) + ce([0.0, 2.0], 1)  # the negative has no image of its own
    assert float(loss) == pytest.approx(0.25 * (i2t + t2i), rel=1e-6)
    # Without extra texts it is the square loss of before; None is the diagonal.
    square = info_nce(image, texts[:2], 2.0, positives[:, :2])
    assert float(square) == pytest.approx(float(info_nce(image, texts[:2], 2.0)), rel=1e-6)
    assert float(loss) > float(square)
    # A hard negative that is true of image 1 is a positive of it, not pushed away.
    shared = info_nce(image, texts, 2.0, torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool))
    i2t_shared = ce([2.0, 0.0, 1.2], 0) + 0.5 * (ce([0.0, 2.0, 1.6], 1) + ce([0.0, 2.0, 1.6], 2))
    assert float(shared) == pytest.approx(0.25 * (i2t_shared + t2i), rel=1e-6)
    with pytest.raises(ValueError, match="at least one text per image"):
        info_nce(image, texts[:1], 2.0)


def test_binding_loss_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    # Text 2 negates caption 1, text 3 negates caption 0.
    loss = binding_loss(image, texts, 2.0, torch.tensor([1, 0]))

    def two_way(positive, negative):
        return math.log(math.exp(positive) + math.exp(negative)) - positive

    expected = 0.5 * (two_way(2.0, 1.6) + two_way(2.0, 1.6))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(binding_loss(image, texts[:2], 2.0, torch.zeros(0, dtype=torch.int64))) == 0.0


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def test_recall_counts_any_relevant_candidate():
    similarity = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.7], [0.3, 0.2, 0.1]])
    relevant = torch.tensor([[False, True, False], [False, False, True], [False, False, True]])
    assert recall_relevant(similarity, relevant, (1, 2, 3)) == {1: 0.0, 2: 2 / 3, 3: 1.0}
    with pytest.raises(ValueError, match="differ"):
        recall_relevant(similarity, relevant[:2])


def test_binding_wins_count_a_tie_as_one_half():
    image = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    positive = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.0], [1.0, 0.0]]), dim=-1)
    negative = F.normalize(torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), dim=-1)
    assert binding_wins(image, positive, negative).tolist() == [1.0, 0.0, 0.5]


def test_scores_of_an_oracle_a_contrarian_and_a_bag_of_words():
    data = scenes_split("test", 30, 0, 32)
    n, vocab = len(data), scenes_vocabulary()

    def one_hot_images(dim):
        def embed(images):
            assert images.shape == (n, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
            return torch.eye(n, dim)

        return embed

    def oracle(texts):  # each caption points at the images it is true of
        return F.normalize(torch.from_numpy(caption_truth(texts, data.graphs)).float(), dim=-1)

    best = evaluate_scenes_split(one_hot_images(n), oracle, data, "seen")
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "binding", "binding_attribute"):
        assert best[f"seen_{key}"] == 1.0
    assert 0 < best["seen_r1_chance"] < 0.5
    worst = evaluate_scenes_split(one_hot_images(n), lambda t: -oracle(t), data, "seen")
    assert worst["seen_t2i_r1"] == 0.0 and worst["seen_binding"] == 0.0

    def bag(texts):  # a caption and its binding negative get the same vector: every pair a tie
        rows = [[caption_words(t)[w] for w in vocab] for t in texts]
        return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)

    words = evaluate_scenes_split(one_hot_images(len(vocab)), bag, data, "x")
    assert words["x_binding"] == 0.5
    assert {"x_binding_attribute", "x_binding_reversal"} <= set(words)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes_run(tmp_path_factory):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.zeroshot import train_zeroshot

    out = tmp_path_factory.mktemp("runs") / "zeroshot-scenes"
    return train_zeroshot(make_config("zeroshot", None, SCENES_TINY), out, progress=False)


def test_a_scenes_run_saves_loads_and_evaluates_to_the_same_numbers(scenes_run):
    from ganfuse.multimodal.evaluate import evaluate_run
    from ganfuse.multimodal.zeroshot import load_dual_encoder

    metrics = scenes_run.metrics
    assert {"seen_i2t_r1", "heldout_t2i_r5", "seen_binding_reversal", "heldout_binding"} <= set(
        metrics
    )
    loaded = load_dual_encoder(scenes_run.run_dir)
    assert loaded.text_encoder.tokenizer.words() == scenes_vocabulary()
    texts = ["a red circle to the left of a blue star", "three shapes"]
    torch.testing.assert_close(
        loaded.encode_text(texts), scenes_run.model.eval().encode_text(texts)
    )
    assert evaluate_run(scenes_run.run_dir) == pytest.approx(metrics)


def test_a_scenes_run_starts_a_scenes_fusion_run(scenes_run, tmp_path):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.evaluate import evaluate_run
    from ganfuse.multimodal.model import build_text
    from ganfuse.multimodal.scene_tasks import build_scene_task, scene_vocabulary
    from ganfuse.multimodal.train import init_text_encoder, train_fusion
    from ganfuse.multimodal.zeroshot import load_dual_encoder

    run = str(scenes_run.run_dir)
    overrides = [*TINY, f"image_encoder_init={run}", "freeze_image_encoder=true"]
    config = make_config("scenes-vqa", "film", [*overrides, f"text_encoder_init={run}"])
    result = train_fusion(config, tmp_path / "vqa", progress=False)
    source = load_dual_encoder(run)
    for key, value in result.model.encoders["image"].state_dict().items():
        torch.testing.assert_close(value, source.image_encoder.state_dict()[key])
    # Frozen scenes features cached in training, images through the encoder when reloaded.
    assert evaluate_run(result.run_dir) == pytest.approx(result.test_metrics)

    # The question words the captions lack start fresh, the caption words are copied.
    torch.manual_seed(0)
    vocab = scene_vocabulary(build_scene_task("scenes-vqa"), scenes_split("train", 64, 0, 32))
    target = build_text(config, vocab)
    fresh_how = target.embedding.weight[target.tokenizer.index["how"]].clone()
    init_text_encoder(target, run)
    words = source.text_encoder.tokenizer.index
    assert "how" not in words
    torch.testing.assert_close(target.embedding.weight[target.tokenizer.index["how"]], fresh_how)
    for word in ("red", "left", "circle", "there", "is"):
        torch.testing.assert_close(
            target.embedding.weight[target.tokenizer.index[word]],
            source.text_encoder.embedding.weight[words[word]],
        )


def test_scenes_zeroshot_config_checks():
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.zeroshot import train_zeroshot

    defaults = make_config("zeroshot", None, ["world=scenes"])
    assert defaults.hard_negatives is True and defaults.binding_weight == 1.0
    assert defaults.counterfactuals == 1.0  # the binding term also on edited images
    for off in ("hard_negatives=false", "binding_weight=0"):  # nothing to turn around
        assert make_config("zeroshot", None, ["world=scenes", off]).counterfactuals == 0.0
    assert make_config("zeroshot", None, []).counterfactuals == 0.0  # shapes: no scene graphs
    assert (
        make_config("zeroshot", None, ["world=scenes", "hard_negatives=false"]).hard_negatives
        is False
    )
    with pytest.raises(ConfigError, match="binding_weight must not be negative"):
        make_config("zeroshot", None, ["world=scenes", "binding_weight=-1"])
    with pytest.raises(ConfigError, match="hard_negatives"):
        make_config("zeroshot", None, ["hard_negatives=sometimes"])
    for bad in (["counterfactuals=1"], ["world=scenes", "hard_negatives=false", "counterfactuals=1"]):
        with pytest.raises(ConfigError, match="counterfactuals"):
            make_config("zeroshot", None, bad)
    with pytest.raises(ConfigError, match="small text encoder"):
        train_zeroshot(
            make_config("zeroshot", None, [*SCENES_TINY, "text_encoder=minilm"]), progress=False
        )


def test_predict_on_a_scene_gives_the_similarity_only(scenes_run, tmp_path):
    from PIL import Image

    from ganfuse.multimodal.predict import load_image, predict

    data = scenes_split("test", 4, 0, 32)
    path = tmp_path / "scene.png"
    Image.fromarray(data.images[0].permute(1, 2, 0).numpy()).save(path)
    text = data.captions[0][0]
    answer = predict(scenes_run.run_dir, path, text)
    model = scenes_run.model.eval()
    with torch.no_grad():
        expected = float(model.encode_image(load_image(path, 32))[0] @ model.encode_text([text])[0])
    assert answer["kind"] == "zeroshot" and "class" not in answer
    assert answer["similarity"] == pytest.approx(expected, abs=1e-5)
    assert answer["lines"] == [f"similarity: {expected:.3f}"]
