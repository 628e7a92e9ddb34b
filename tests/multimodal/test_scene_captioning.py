"""Captioning on ``scenes``: training targets, the kind-conditioned attending decoder, the scores by
the exact judge (on hand-made scenes with known answers) and the run's command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganfuse.cli import main
from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import (
    CAPTION_KINDS,
    DEFAULT_HOLDOUT,
    SceneGraph,
    SceneObject,
    generate_scenes,
    parse_caption,
)
from ganfuse.errors import ConfigError, UserError
from ganfuse.metrics.scenes import score_caption
from ganfuse.models.captioner import CaptionDecoder, CaptionVocab, kind_token
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.scene_captioning import (
    encode_targets,
    matched_objects,
    scene_caption_metrics,
    scene_caption_vocab,
    score_scene_captions,
    training_caption,
)
from ganfuse.multimodal.splits import scenes_split

from .conftest import TINY


def _object(color, shape, size, x, y):
    half = 3 if size == "small" else 4
    return SceneObject(color, shape, size, (x, y), (x - half, y - half, x + half, y + half))


# A 32-pixel scene: a small red circle top-left, a large blue square top-right (8 px right of the
# circle: "right of" holds), a small green star below both.
SCENE = SceneGraph(
    (
        _object("red", "circle", "small", 6.0, 6.0),
        _object("blue", "square", "large", 22.0, 6.0),
        _object("green", "star", "small", 14.0, 24.0),
    ),
    32,
)


@pytest.fixture(scope="module")
def train_scenes():
    _, graphs, captions = generate_scenes(300, seed=3, split="train", image_size=32)
    return graphs, captions


def test_full_list_targets_name_every_object_with_its_size_in_reading_order(train_scenes):
    graphs, _ = train_scenes
    rng = np.random.default_rng(0)
    for graph in graphs:
        description = parse_caption(training_caption(graph, "list", rng))
        assert score_caption(description, graph).correct
        assert [(o.color, o.shape, o.size) for o in description.objects] == [
            (o.color, o.shape, o.size) for o in graph.objects
        ]
        assert description.counts[0].count == len(graph.objects)
        shuffled = parse_caption(training_caption(graph, "list", rng, order="random"))
        assert sorted(map(repr, shuffled.objects)) == sorted(map(repr, description.objects))


@pytest.mark.parametrize("kind", ["relation", "count", "single"])
def test_other_targets_are_true_captions_of_their_kind(train_scenes, kind):
    graphs, _ = train_scenes
    rng = np.random.default_rng(1)
    kinds = [parse_caption(training_caption(g, kind, rng)).kind for g in graphs]
    assert all(score_caption(training_caption(g, kind, rng), g).correct for g in graphs)
    # relation falls back to single where no two objects are far enough apart
    expected = {kind, "single"} if kind == "relation" else {kind}
    assert set(kinds) == expected
    with pytest.raises(ConfigError, match="unknown caption kind"):
        training_caption(graphs[0], "story", rng)


def test_training_targets_never_name_a_held_out_pair(train_scenes):
    graphs, _ = train_scenes
    rng = np.random.default_rng(2)
    named = {
        (o.color, o.shape)
        for g in graphs
        for kind in CAPTION_KINDS
        for o in parse_caption(training_caption(g, kind, rng)).objects
    }
    assert named and not named & set(DEFAULT_HOLDOUT)


def test_kind_tokens_start_the_inputs_and_never_reach_the_text(train_scenes):
    graphs, captions = train_scenes
    vocab = scene_caption_vocab(graphs, captions, ["list", "count"])
    assert vocab.kinds == ("list", "count")
    texts = ["three shapes: a small red circle, a large blue box and a tiny green star", "one star"]
    inputs, targets = encode_targets(vocab, texts, ["list", "count"])
    assert inputs[:, 0].tolist() == [
        vocab.index[kind_token("list")],
        vocab.index[kind_token("count")],
    ]
    assert 3 not in targets.tolist()[0]  # no <unk>: the vocabulary holds every target word
    assert [vocab.decode(row) for row in targets.tolist()] == texts
    assert vocab.decode([vocab.start_id("list"), *targets[0].tolist()]) == texts[0]
    with pytest.raises(UserError, match="no caption kind 'single'; its kinds: list, count"):
        vocab.start_id("single")
    assert CaptionVocab.from_texts(texts).kinds == ()


def test_matching_is_one_to_one():
    (two_reds,) = [parse_caption("a red circle and a red circle")]
    assert matched_objects(two_reds, SCENE) == 1
    full = parse_caption("a red circle, a large blue square and a green star")
    assert matched_objects(full, SCENE) == 3
    assert matched_objects(parse_caption("three shapes"), SCENE) == 0


def test_scores_of_known_captions():
    captions = [
        "three shapes: a small red circle, a large blue square and a small green star",  # all true
        "a red circle",  # true but vague: covers 1 of 3
        "a large blue square is to the right of a red circle",  # true relation, 2 of 3
        "a green star is above a red circle",  # false relation, objects present: 2 of 3
        "two shapes: a red circle and a blue square",  # false count, 2 of 3
        "a purple circle",  # unparseable (no such colour)
        "a small blue square",  # wrong size: binding fails, covers 0
        "exactly 1 star",  # true count, names no object
    ]
    scores = score_scene_captions(captions, [SCENE] * len(captions))
    assert scores["exact_match"] == pytest.approx(4 / 8)
    assert scores["unparseable"] == pytest.approx(1 / 8)
    assert scores["coverage"] == pytest.approx((1 + 1 / 3 + 2 / 3 + 2 / 3 + 2 / 3 + 0 + 0) / 8)
    assert scores["mentions_all"] == pytest.approx(1 / 8)
    assert scores["binding"] == pytest.approx(5 / 6)
    assert scores["relations"] == pytest.approx(1 / 2)
    assert scores["count"] == pytest.approx(2 / 3)
    assert "bleu" not in scores
    only_objects = score_scene_captions(["a red circle"], [SCENE])
    assert "relations" not in only_objects and "count" not in only_objects
    with pytest.raises(ValueError, match="one graph per caption"):
        score_scene_captions(["a red circle"], [])


def test_bleu_is_100_for_a_reference_and_lower_for_another_caption():
    references = [["a red circle", "there is a red circle", "three shapes", "a green star"]]
    assert score_scene_captions(["there is a red circle"], [SCENE], references)[
        "bleu"
    ] == pytest.approx(100.0)
    assert score_scene_captions(["a small blue square"], [SCENE], references)["bleu"] < 50


def test_an_oracle_captioner_scores_perfectly_on_every_split_and_kind():
    splits = {name: scenes_split(name, 40, 0, 32) for name in ("test", "heldout")}
    rng = np.random.default_rng(0)

    def oracle(images, kind):
        (data,) = [d for d in splits.values() if torch.equal(images, uint8_to_float(d.images))]
        return [training_caption(g, kind, rng) for g in data.graphs]

    scores = scene_caption_metrics(oracle, splits, CAPTION_KINDS)
    for prefix in ("", "heldout_"):
        assert scores[f"{prefix}exact_match"] == 1.0 and scores[f"{prefix}unparseable"] == 0.0
        assert scores[f"{prefix}coverage"] == 1.0 and scores[f"{prefix}mentions_all"] == 1.0
        for kind in ("relation", "count", "single"):
            assert scores[f"{prefix}{kind}_exact_match"] == 1.0
        assert scores[f"{prefix}single_coverage"] < 1.0  # one object of one to four
    assert "list_exact_match" not in scores  # the headline is the list kind


def test_the_attending_decoder_reads_the_patch_tokens():
    torch.manual_seed(0)
    decoder = CaptionDecoder(vocab_size=12, image_dim=8, embed_dim=6, hidden=16, token_dim=5)
    pooled, tokens = torch.randn(2, 8), torch.randint(1, 12, (2, 7))
    patches = torch.randn(2, 9, 5)
    logits = decoder(pooled, tokens, patches)
    assert logits.shape == (2, 7, 12)
    assert not torch.allclose(logits, decoder(pooled, tokens, patches.flip(1) * 2))
    with pytest.raises(ValueError, match="pass patches"):
        decoder(pooled, tokens)
    # greedy decoding with a start token per row gives the teacher-forced argmax path
    ids = decoder.greedy(pooled, torch.tensor([4, 5]), eos=2, max_length=5, patches=patches)
    inputs = torch.cat([torch.tensor([[4], [5]]), ids[:, :-1]], dim=1)
    assert torch.equal(decoder(pooled, inputs, patches).argmax(-1), ids)
    with pytest.raises(ConfigError, match="divisible"):
        CaptionDecoder(12, 8, hidden=18, token_dim=5)


def test_config_allows_scenes_captioning_only():
    assert make_config("caption", None, ["world=scenes"]).world == "scenes"
    with pytest.raises(ConfigError, match="world must be shapes for task matching"):
        make_config("matching", None, ["world=scenes"])
    with pytest.raises(ConfigError, match="caption_kinds must list distinct kinds"):
        make_config("caption", None, ["world=scenes", "caption_kinds=list,poem"])
    with pytest.raises(ConfigError, match="caption_kinds must list distinct kinds"):
        make_config("caption", None, ["caption_kinds=list,list"])
    with pytest.raises(ConfigError, match="caption_order must be reading or random"):
        make_config("caption", None, ["caption_order=alphabetical"])


def test_cli_kind_names_match_the_dataset():
    from ganfuse.cli.caption import CAPTION_KINDS as CLI_KINDS

    assert CLI_KINDS == CAPTION_KINDS


@pytest.fixture(scope="module")
def scenes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "scenes-caption"
    argv = ["fuse", "train", "--task", "caption", "--out", str(out), "--quiet"]
    argv += [f"--set={o}" for o in [*TINY, "world=scenes", "caption_kinds=list,count"]]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    from PIL import Image

    images, _, _ = generate_scenes(1, seed=0, split="test", image_size=32)
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray(images[0]).save(path)
    return path


def test_a_scenes_run_is_scored_on_test_and_heldout_and_evaluate_repeats_it(scenes_run, capsys):
    metrics = json.loads((scenes_run / "metrics.json").read_text())["test"]
    for prefix in ("", "heldout_"):
        for key in ("exact_match", "unparseable", "coverage", "mentions_all", "bleu"):
            assert f"{prefix}{key}" in metrics and f"{prefix}count_{key}" in metrics
        assert f"{prefix}relation_exact_match" not in metrics  # not trained
    capsys.readouterr()
    assert main(["fuse", "evaluate", str(scenes_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics, nan_ok=True)


def test_caption_cli_on_a_scenes_run(scenes_run, scene_png, capsys):
    capsys.readouterr()
    assert main(["caption", str(scenes_run), "--image", str(scene_png), "--kind", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["list", "count"]
    assert main(["caption", str(scenes_run), "--image", str(scene_png), "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["kind"] == "list" and row["image"] == str(scene_png)
    assert main(["caption", str(scenes_run), "--image", str(scene_png), "--kind", "single"]) == 2
    assert "no caption kind 'single'; its kinds: list, count" in capsys.readouterr().err
    assert main(["caption", str(scenes_run), "--cycle", str(scenes_run)]) == 2
    assert "--cycle checks shapes text-to-image runs" in capsys.readouterr().err


def test_kind_is_refused_for_a_shapes_caption_run(caption_run, shape_png, capsys):
    argv = ["caption", str(caption_run.run_dir), "--image", str(shape_png), "--kind", "list"]
    assert main(argv) == 2
    assert "leave out --kind" in capsys.readouterr().err


def test_a_frozen_encoder_keeps_its_weights_and_the_attending_decoder_trains():
    from ganfuse.multimodal.captioning import build_captioner, train_captioner

    config = make_config(
        "caption", None, [*TINY, "world=scenes", "caption_kinds=list", "freeze_image_encoder=true"]
    )
    result = train_captioner(config, None, progress=False)
    torch.manual_seed(config.seed)
    fresh = build_captioner(config, result.model.vocab)
    for name, value in fresh.image_encoder.state_dict().items():
        assert torch.equal(value, result.model.image_encoder.state_dict()[name]), name
    assert result.model.decoder.attention is not None
    assert not torch.equal(fresh.decoder.out.weight, result.model.decoder.out.weight)
