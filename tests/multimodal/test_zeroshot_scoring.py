"""Zero-shot pieces on tiny hand-computed examples: prompt ensembling, InfoNCE, recall@k."""

from __future__ import annotations

import math

import torch

from ganfuse.multimodal.zeroshot import (
    class_embeddings,
    info_nce,
    prompt_templates,
    recall_at_k,
    zero_shot_predict,
)

# Fixed 2-d "embeddings" of every prompt of the tiny example.
VECTORS = {
    "a red circle": [3.0, 4.0],  # normalised: (0.6, 0.8)
    "red circle here": [1.0, 0.0],  # (1, 0)
    "a blue square": [0.0, 2.0],  # (0, 1)
    "blue square here": [-1.0, 1.0],  # (-0.7071, 0.7071)
}
CLASSES = [("red", "circle"), ("blue", "square")]
TEMPLATES = ["a {color} {shape}", "{color} {shape} here"]


def fake_encode(texts):
    return torch.tensor([VECTORS[t] for t in texts])


def test_class_embedding_is_the_normalised_mean_of_normalised_prompts():
    weights = class_embeddings(fake_encode, CLASSES, TEMPLATES)
    red = torch.tensor([1.6, 0.8]) / 2  # mean of (0.6, 0.8) and (1, 0)
    blue = torch.tensor([-1 / math.sqrt(2), 1 + 1 / math.sqrt(2)]) / 2
    expected = torch.stack([red / red.norm(), blue / blue.norm()])
    torch.testing.assert_close(weights, expected)


def test_prediction_equals_hand_computed_cosine_ranking():
    weights = class_embeddings(fake_encode, CLASSES, TEMPLATES)
    # red class direction ~ (0.894, 0.447); blue ~ (-0.383, 0.924)
    images = torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.1], [0.7, 0.7]])
    cosines = torch.nn.functional.normalize(images, dim=-1) @ weights.t()
    by_hand = []
    for row in images.tolist():
        n = math.hypot(*row)
        scores = [(row[0] * w[0] + row[1] * w[1]) / n for w in weights.tolist()]
        by_hand.append(max(range(2), key=scores.__getitem__))
    assert by_hand == [0, 1, 1, 0]
    assert zero_shot_predict(images, weights).tolist() == by_hand
    assert cosines.argmax(-1).tolist() == by_hand


def test_prompt_templates_cover_every_template_size_and_position():
    templates = prompt_templates()
    assert len(templates) == 8 * 2 * 9
    assert all("{color}" in t and "{shape}" in t for t in templates)
    assert len(set(templates)) == len(templates)


def test_info_nce_matches_hand_computation():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    scale = 2.0
    # logits = 2 * [[0.6, 0.8], [0.8, -0.6]]
    lse_row0 = math.log(math.exp(1.2) + math.exp(1.6))
    lse_row1 = math.log(math.exp(1.6) + math.exp(-1.2))
    lse_col0 = math.log(math.exp(1.2) + math.exp(1.6))
    lse_col1 = math.log(math.exp(1.6) + math.exp(-1.2))
    i2t = ((lse_row0 - 1.2) + (lse_row1 + 1.2)) / 2
    t2i = ((lse_col0 - 1.2) + (lse_col1 + 1.2)) / 2
    expected = (i2t + t2i) / 2
    assert math.isclose(float(info_nce(image, text, scale)), expected, rel_tol=1e-5)
    # A diagonal positives mask is plain InfoNCE.
    eye = torch.eye(2, dtype=torch.bool)
    assert math.isclose(float(info_nce(image, text, scale, eye)), expected, rel_tol=1e-5)


def test_info_nce_with_shared_positives_does_not_push_duplicates_apart():
    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1]]), dim=-1)
    text = image.clone()
    everything = torch.ones(2, 2, dtype=torch.bool)
    # With both pairs marked positive, the loss is exactly the entropy floor: log 2 minus nothing
    # to gain from separating them -> loss is minimal when the two rows score equally.
    loss_same = info_nce(image, text, 10.0, everything)
    loss_plain = info_nce(image, text, 10.0)
    assert loss_same > 0 and loss_plain < loss_same
    assert math.isclose(
        float(info_nce(text[[0, 0]], text[[0, 0]], 10.0, everything)), math.log(2), rel_tol=1e-5
    )


def test_recall_at_k_counts_any_same_key_candidate():
    similarity = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.1, 0.3], [0.5, 0.6, 0.7]])
    query_keys = torch.tensor([7, 7, 9])
    candidate_keys = torch.tensor([1, 7, 9])
    recall = recall_at_k(similarity, query_keys, candidate_keys, ks=(1, 2, 3))
    # query 0: top1 key 1 (miss), top2 has 7; query 1: order 2,0,1 -> key 7 at rank 3;
    # query 2: top1 is key 9.
    assert recall == {1: 1 / 3, 2: 2 / 3, 3: 1.0}
