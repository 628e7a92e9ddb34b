"""``ganfuse.multimodal.scoring``: a matching run scores an image against a text by its log-probability
of "match", a zeroshot run by cosine similarity, at the run's own image size; other runs and other
worlds are refused with a message that says what to use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganfuse.data.base import uint8_to_float
from ganfuse.data.shapes import ShapesDataset
from ganfuse.errors import CheckpointError, ConfigError
from ganfuse.multimodal.scoring import load_scorer
from ganfuse.multimodal.train import load_fusion_run
from ganfuse.multimodal.zeroshot import load_dual_encoder


def _images_and_captions(size: int):
    data = ShapesDataset("test", num=6, seed=3, image_size=size)
    return uint8_to_float(data.images), list(data.captions)


def test_a_matching_run_scores_the_log_probability_of_match(matching_run):
    scorer = load_scorer(matching_run.run_dir)
    images, captions = _images_and_captions(32)
    scores = scorer(images, captions)
    model, _, _ = load_fusion_run(matching_run.run_dir)
    with torch.no_grad():
        expected = model({"image": images, "text": captions})["match"].log_softmax(-1)[:, 1]
    torch.testing.assert_close(scores, expected)
    assert scorer.measure == "log P(match)" and bool((scores <= 0).all())
    # images of another size are area-averaged to the run's 32 px first
    big = F.interpolate(images, scale_factor=2, mode="nearest")
    torch.testing.assert_close(scorer(big, captions), scores)


def test_a_zeroshot_run_scores_cosine_similarity(zeroshot_run):
    scorer = load_scorer(zeroshot_run.run_dir)
    images, captions = _images_and_captions(32)
    scores = scorer(images, captions[::-1])
    model = load_dual_encoder(zeroshot_run.run_dir)
    with torch.no_grad():
        expected = (model.encode_image(images) * model.encode_text(captions[::-1])).sum(-1)
    torch.testing.assert_close(scores, expected)
    assert bool((scores.abs() <= 1 + 1e-5).all())


def test_runs_that_cannot_score_and_other_worlds_are_refused(caption_run, matching_run, tmp_path):
    with pytest.raises(CheckpointError, match="matching run .* or a zeroshot run"):
        load_scorer(caption_run.run_dir)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_scorer(tmp_path)
    scorer = load_scorer(matching_run.run_dir)
    scorer.check_world("shapes")
    with pytest.raises(ConfigError, match="trained on 'shapes', the generator on 'scenes'"):
        scorer.check_world("scenes")
    with pytest.raises(ValueError, match="one text per image"):
        scorer(torch.zeros(2, 3, 32, 32), ["a red circle"])
