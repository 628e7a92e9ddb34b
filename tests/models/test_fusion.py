"""Fusion modules: shapes, gradient flow to every input they read, and their defining rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganfuse.errors import ConfigError
from ganfuse.models.encoders import ImageEncoder
from ganfuse.models.fusion import (
    FUSION_LEVELS,
    GatedFusion,
    LateFusion,
    LowRankFusion,
    ModalityFeatures,
    ModalitySpec,
    build_fusion,
    combine_decisions,
)
from ganfuse.models.heads import DecisionSplit, TaskHeads

B, T, GRID = 5, 7, (4, 4)
SPECS = {
    "image": ModalitySpec(pooled_dim=24, token_dim=20, grid=GRID),
    "text": ModalitySpec(pooled_dim=12, token_dim=10),
}
# Which inputs each fusion reads: its gradient must reach each of them.
READS = {
    "early": {("image", "pooled"), ("text", "pooled")},
    "late-mean": {("image", "pooled"), ("text", "pooled")},
    "late-weighted": {("image", "pooled"), ("text", "pooled")},
    "late-stacking": {("image", "pooled"), ("text", "pooled")},
    "gated": {("image", "pooled"), ("text", "pooled")},
    "low-rank": {("image", "pooled"), ("text", "pooled")},
    "cross-attention": {("image", "tokens"), ("text", "tokens")},
    "film": {("image", "tokens"), ("text", "pooled")},
}


def make_features(seed: int = 0) -> dict[str, ModalityFeatures]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False  # one padded caption
    return {
        "image": ModalityFeatures(
            pooled=torch.randn(B, 24, generator=g).requires_grad_(),
            tokens=torch.randn(B, GRID[0] * GRID[1], 20, generator=g).requires_grad_(),
            grid=GRID,
        ),
        "text": ModalityFeatures(
            pooled=torch.randn(B, 12, generator=g).requires_grad_(),
            tokens=torch.randn(B, T, 10, generator=g).requires_grad_(),
            mask=mask,
        ),
    }


@pytest.mark.parametrize("name", list(FUSION_LEVELS))
def test_output_shape_and_gradient_reaches_every_input(name):
    torch.manual_seed(0)
    fusion = build_fusion(name, SPECS, out_dim=9)
    assert fusion.level == FUSION_LEVELS[name]
    features = make_features()
    fused = fusion(features)
    assert fused.shape == (B, 9)
    assert torch.isfinite(fused).all()
    # A random projection, so that no gradient cancels by symmetry.
    (fused * torch.randn(B, 9, generator=torch.Generator().manual_seed(1))).sum().backward()
    for modality, field in READS[name]:
        grad = getattr(features[modality], field).grad
        assert grad is not None and grad.abs().sum() > 0, (modality, field)
        assert grad.abs().flatten(1).sum(1).gt(0).all(), (
            f"{modality}.{field}: a row got no gradient"
        )
    for parameter_name, parameter in fusion.named_parameters():
        assert parameter.grad is not None, parameter_name


def test_cross_attention_ignores_padded_text_tokens():
    torch.manual_seed(0)
    fusion = build_fusion("cross-attention", SPECS, out_dim=6).eval()
    features = make_features()
    before = fusion(features)
    features["text"].tokens.data[0, 4:] += 100.0  # change only the padding of caption 0
    after = fusion(features)
    torch.testing.assert_close(before, after)
    after.sum().backward()
    assert features["text"].tokens.grad[0, 4:].abs().max() == 0


def test_plain_tensors_are_read_as_pooled_features():
    fusion = build_fusion("early", SPECS, out_dim=4)
    out = fusion({"image": torch.randn(3, 24), "text": torch.randn(3, 12)})
    assert out.shape == (3, 4)


def test_missing_modality_and_unknown_option_are_reported():
    fusion = build_fusion("gated", SPECS, out_dim=4)
    with pytest.raises(KeyError, match="text"):
        fusion({"image": torch.randn(2, 24)})
    with pytest.raises(ConfigError, match="rank"):
        build_fusion("early", SPECS, out_dim=4, rank=3)
    with pytest.raises(ConfigError, match="unknown fusion"):
        build_fusion("sum", SPECS, out_dim=4)


# -- late fusion's combination rules on fixed logits ------------------------------------------


FIXED = {"image": torch.tensor([[2.0, 0.0, -1.0]]), "text": torch.tensor([[0.0, 4.0, 1.0]])}


def test_mean_rule_averages_the_decisions():
    torch.testing.assert_close(combine_decisions(FIXED, "mean"), torch.tensor([[1.0, 2.0, 0.0]]))


def test_weighted_rule_uses_softmax_weights():
    weights = torch.log(torch.tensor([3.0, 1.0]))  # softmax -> 0.75, 0.25
    expected = torch.tensor([[1.5, 1.0, -0.5]])
    torch.testing.assert_close(combine_decisions(FIXED, "weighted", weights), expected)
    # Equal weights are the mean.
    torch.testing.assert_close(
        combine_decisions(FIXED, "weighted", torch.zeros(2)), combine_decisions(FIXED, "mean")
    )


def test_stacking_rule_is_a_linear_map_of_all_decisions():
    stacking = nn.Linear(6, 3)
    with torch.no_grad():
        stacking.weight.zero_()
        stacking.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
        stacking.weight[0, 0] = 1.0  # image logit 0
        stacking.weight[1, 4] = -1.0  # text logit 1
        stacking.weight[2, 2] = 2.0  # image logit 2
        stacking.weight[2, 5] = 1.0  # text logit 2
    expected = torch.tensor([[2.5, -4.0, -1.0]])
    torch.testing.assert_close(combine_decisions(FIXED, "stacking", stacking=stacking), expected)


def test_late_fusion_forward_combines_its_per_modality_decisions():
    torch.manual_seed(0)
    fusion = LateFusion({"image": 24, "text": 12}, out_dim=3, rule="weighted")
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([0.3, -0.2]))
    features = make_features()
    decisions = fusion.decisions(features)
    torch.testing.assert_close(
        fusion(features), combine_decisions(decisions, "weighted", fusion.weights)
    )


@pytest.mark.parametrize("rule", ["mean", "weighted", "stacking"])
def test_late_fusion_is_additive_so_it_cannot_tell_a_swap(rule):
    """f(a, x) + f(b, y) == f(a, y) + f(b, x): a sum of unimodal decisions scores the true pairs
    and the swapped pairs the same in total, which is why it fails image-text matching."""
    torch.manual_seed(0)
    fusion = LateFusion({"image": 24, "text": 12}, out_dim=2, rule=rule)
    image, text = torch.randn(2, 24), torch.randn(2, 12)
    true_pairs = fusion({"image": image, "text": text}).sum(0)
    swapped = fusion({"image": image, "text": text.flip(0)}).sum(0)
    torch.testing.assert_close(true_pairs, swapped)


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="rule"):
        combine_decisions(FIXED, "max")


# -- the other fusions' defining formulas ------------------------------------------------------


def test_gates_sum_to_one_over_modalities():
    fusion = GatedFusion({"image": 24, "text": 12}, out_dim=8)
    gates = fusion.gates(make_features())
    assert gates.shape == (B, 2, 8)
    torch.testing.assert_close(gates.sum(1), torch.ones(B, 8))


def test_low_rank_fusion_matches_its_formula():
    torch.manual_seed(0)
    fusion = LowRankFusion({"image": 3, "text": 2}, out_dim=4, rank=2)
    image, text = torch.randn(1, 3), torch.randn(1, 2)
    zi = torch.cat([fusion.norms["image"](image), torch.ones(1, 1)], -1)[0]
    zt = torch.cat([fusion.norms["text"](text), torch.ones(1, 1)], -1)[0]
    expected = (
        sum(
            fusion.rank_weights[r]
            * (zi @ fusion.factors["image"][r])
            * (zt @ fusion.factors["text"][r])
            for r in range(2)
        )
        + fusion.bias
    )
    torch.testing.assert_close(fusion({"image": image, "text": text})[0], expected)


def test_film_gamma_starts_at_one_and_text_changes_the_output():
    torch.manual_seed(0)
    fusion = build_fusion("film", SPECS, out_dim=6).eval()
    with torch.no_grad():
        fusion.film_generator[1].weight.zero_()
        fusion.film_generator[1].bias.zero_()
    gamma, beta = fusion.film_parameters(torch.randn(B, 12))
    torch.testing.assert_close(gamma, torch.ones_like(gamma))
    torch.testing.assert_close(beta, torch.zeros_like(beta))
    fusion = build_fusion("film", SPECS, out_dim=6).eval()
    features = make_features()
    other = make_features()
    other["text"] = ModalityFeatures(pooled=torch.randn(B, 12))
    assert not torch.allclose(fusion(features), fusion(other))


def _film_options_model(**options):
    torch.manual_seed(0)
    return build_fusion("film", SPECS, out_dim=8, **options).eval()


def test_film_coordinates_let_a_pooled_read_out_tell_where_a_feature_is():
    """With a global max read-out, the same feature at two places gives the same output unless
    the coordinate maps are appended (``coords=1``): relations ("left of") need them."""
    text = ModalityFeatures(pooled=torch.randn(1, 12))

    def image_with_feature_at(cell: int) -> ModalityFeatures:
        tokens = torch.zeros(1, GRID[0] * GRID[1], 20)
        tokens[0, cell] = 3.0
        return ModalityFeatures(pooled=torch.zeros(1, 24), tokens=tokens, grid=GRID)

    left, right = image_with_feature_at(4), image_with_feature_at(7)  # row 1, columns 0 and 3
    for coords, differs in ((0, False), (1, True)):
        fusion = _film_options_model(coords=coords, pool=1, kernel=1)
        a = fusion({"image": left, "text": text})
        b = fusion({"image": right, "text": text})
        assert torch.allclose(a, b, atol=1e-6) is not differs


def test_film_mean_read_out_counts_where_max_saturates():
    """``pool=2`` joins a mean over the grid to the max: two copies of a feature give the same
    max as one, but a different mean (counting needs it)."""
    text = ModalityFeatures(pooled=torch.randn(1, 12))

    def image_with(cells: list[int]) -> ModalityFeatures:
        tokens = torch.zeros(1, GRID[0] * GRID[1], 20)
        tokens[0, cells] = 3.0
        return ModalityFeatures(pooled=torch.zeros(1, 24), tokens=tokens, grid=GRID)

    fusion = _film_options_model(pool=2, kernel=1)
    one = fusion({"image": image_with([0]), "text": text})
    two = fusion({"image": image_with([0, 15]), "text": text})
    assert one.shape == (1, 8)
    torch.testing.assert_close(one[:, :4], two[:, :4])  # the max half
    assert (one[:, 4:] - two[:, 4:]).abs().max() > 1e-4  # the mean half


def test_film_context_block_sees_the_whole_map_with_one_by_one_kernels():
    """With 1x1 kernels a position sees only itself, unless ``context=1`` broadcasts the map's
    max to every position: changing a far cell then changes the output at cell 0."""
    text = ModalityFeatures(pooled=torch.randn(1, 12))
    base = torch.randn(1, GRID[0] * GRID[1], 20)
    changed = base.clone()
    changed[0, 15] += 5.0
    for context, reaches in ((0, False), (1, True)):
        fusion = _film_options_model(context=context, kernel=1)
        maps = []
        for tokens in (base, changed):
            x = tokens.transpose(1, 2).reshape(1, -1, *GRID)
            x = fusion.stem(x)
            gamma, beta = fusion.film_parameters(text.pooled)
            for index, block in enumerate(fusion.blocks):
                x = block(x, gamma[:, index], beta[:, index])
            maps.append(x[0, :, 0, 0])
        assert (not torch.allclose(maps[0], maps[1])) is reaches


def test_film_keypoints_read_where_a_feature_fires():
    """``keypoints``: each key channel's softmax over the grid, read as an expected (x, y) in
    [-1, 1]. One feature on a blank grid, moved to the mirror cell across the vertical axis,
    mirrors every keypoint's x and keeps its y (1x1 kernels: blank cells all look alike)."""
    torch.manual_seed(0)
    fusion = build_fusion("film", SPECS, out_dim=12, pool=2, kernel=1, keypoints=2).eval()
    text = ModalityFeatures(pooled=torch.randn(1, 12))

    def keypoints_with_feature_at(cell: int) -> torch.Tensor:
        tokens = torch.zeros(1, GRID[0] * GRID[1], 20)
        tokens[0, cell] = 3.0
        image = ModalityFeatures(pooled=torch.zeros(1, 24), tokens=tokens, grid=GRID)
        out = fusion({"image": image, "text": text})
        assert out.shape == (1, 12)
        return out[0, 8:].view(2, 2)  # (channel, (x, y))

    left, right = keypoints_with_feature_at(4), keypoints_with_feature_at(7)  # row 1
    torch.testing.assert_close(left[:, 0], -right[:, 0])
    torch.testing.assert_close(left[:, 1], right[:, 1])
    assert left[:, 0].abs().max() > 1e-3 and left.abs().max() <= 1.0


def test_film_attention_gives_each_block_its_own_part_of_the_sentence():
    """``attend=1``: block k's FiLM parameters come from its query's attention over the text
    tokens. Padding is never attended (changing padded tokens changes nothing); a real token is."""
    fusion = _film_options_model(attend=1, pool=2, kernel=1)
    torch.manual_seed(1)
    pooled, tokens = torch.randn(2, 12), torch.randn(2, T, 10)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 4:] = False
    gamma, beta = fusion.film_parameters(pooled, tokens, mask)
    assert gamma.shape == beta.shape == (2, 2, 64)  # (batch, blocks, channels)
    padded = tokens.clone()
    padded[1, 4:] = 100.0
    gamma2, beta2 = fusion.film_parameters(pooled, padded, mask)
    torch.testing.assert_close(gamma2, gamma)
    torch.testing.assert_close(beta2, beta)
    changed = tokens.clone()
    changed[1, 0] += 1.0  # a real token: it is attended
    assert not torch.allclose(fusion.film_parameters(pooled, changed, mask)[0][1], gamma[1])
    with pytest.raises(ValueError, match="token features"):
        fusion.film_parameters(pooled)


@pytest.mark.parametrize(
    "options",
    [
        {"pool": 3},
        {"coords": 2},
        {"kernel": 5},
        {"context": 2},
        {"pool": 2, "out_dim": 7},
        {"keypoints": 2, "pool": 1},
        {"keypoints": 4, "pool": 2},
        {"attend": 2},
    ],
)
def test_film_rejects_bad_options(options):
    options = {"out_dim": 8, **options}
    with pytest.raises(ValueError, match="FiLM"):
        build_fusion("film", SPECS, **options)


# -- encoder and heads ------------------------------------------------------------------------


def test_image_encoder_gives_pooled_and_patch_grid_that_keep_position():
    torch.manual_seed(0)
    encoder = ImageEncoder(dim=16, widths=(8, 16, 32)).eval()
    images = -torch.ones(2, 3, 32, 32)
    images[0, :, 2:10, 2:10] = 1.0  # a white square top-left
    images[1, :, 22:30, 22:30] = 1.0  # the same square bottom-right
    features = encoder(images)
    assert features.pooled.shape == (2, 16)
    assert features.tokens.shape == (2, 16, 16)
    assert features.grid == (4, 4)
    # The pooled vector is not a translation-invariant average: position survives.
    assert (features.pooled[0] - features.pooled[1]).abs().max() > 1e-3


def test_heads_and_decision_split():
    heads = TaskHeads(8, {"match": 2, "color": 7})
    out = heads(torch.randn(3, 8))
    assert out["match"].shape == (3, 2) and out["color"].shape == (3, 7)
    split = DecisionSplit({"match": 2, "color": 7})
    decisions = torch.arange(9.0).repeat(2, 1)
    parts = split(decisions)
    torch.testing.assert_close(parts["match"], decisions[:, :2])
    torch.testing.assert_close(parts["color"], decisions[:, 2:])
