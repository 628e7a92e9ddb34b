"""The unpaired-learning pieces of the dual encoder on tiny hand-computed tensors: the modality
discriminator's loss and accuracy, gradient reversal, the two adversarial modes, the modality
probe, the cycle term and mutual-nearest-neighbour pseudo-pairs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.multimodal.alignment import (
    AdversarialAligner,
    ModalityDiscriminator,
    PseudoPairs,
    UnpairedPool,
    alignment_loss,
    cycle_loss,
    modality_accuracy,
    modality_loss,
    modality_probe_accuracy,
    reciprocal_pairs,
    reverse_gradient,
    view_loss,
)


@pytest.fixture(autouse=True)
def _fp32_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FirstCoordinate(nn.Module):
    """A "discriminator" whose logit is the embedding's first coordinate."""

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings[:, 0]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_modality_loss_is_the_hand_computed_balanced_bce():
    images = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])  # logits 2, -1, label 1
    texts = torch.tensor([[0.5, 0.0]])  # logit 0.5, label 0
    # BCE with logits: -log sigmoid(z) = softplus(-z) for label 1, softplus(z) for label 0.
    images_term = (softplus(-2.0) + softplus(1.0)) / 2
    expected = 0.5 * (images_term + softplus(0.5))
    loss = modality_loss(FirstCoordinate(), images, texts)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    flipped = 0.5 * ((softplus(2.0) + softplus(-1.0)) / 2 + softplus(-0.5))
    assert float(modality_loss(FirstCoordinate(), images, texts, "flipped")) == pytest.approx(
        flipped, rel=1e-6
    )
    # Target 1/2: each logit z costs (softplus(-z) + softplus(z)) / 2, at least ln 2 (z = 0).
    half = [(softplus(-z) + softplus(z)) / 2 for z in (2.0, -1.0, 0.5)]
    confusion = 0.5 * ((half[0] + half[1]) / 2 + half[2]) - math.log(2.0)
    assert float(modality_loss(FirstCoordinate(), images, texts, "confusion")) == pytest.approx(
        confusion, rel=1e-6
    )
    undecided = torch.zeros(3, 2)
    assert float(modality_loss(FirstCoordinate(), undecided, undecided, "confusion")) == 0.0


def test_modality_accuracy_is_balanced_over_the_two_modalities():
    images = torch.tensor([[1.0], [2.0], [-1.0], [3.0]])  # 3 of 4 called images
    texts = torch.tensor([[-1.0], [0.5]])  # 1 of 2 called texts (a logit of 0 is "text")
    assert modality_accuracy(FirstCoordinate(), images, texts) == pytest.approx(0.5 * (0.75 + 0.5))


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    weights = torch.tensor([[0.3, -1.0], [2.0, 0.7]])
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    assert torch.equal(x.grad, -0.25 * weights)


def _embeddings(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, generator=generator), torch.randn(5, 4, generator=generator)


def test_grl_mode_trains_the_discriminator_down_and_the_encoders_up_the_same_loss():
    aligner = AdversarialAligner(4, "grl", weight=0.5, lr=1e-3, seed=0)
    assert aligner.shared_parameters() == list(aligner.discriminator.parameters())
    images, texts = _embeddings(1)
    # The plain discriminator loss, for reference gradients.
    a, b = images.clone().requires_grad_(), texts.clone().requires_grad_()
    modality_loss(aligner.discriminator, a, b).backward()
    reference = [p.grad.clone() for p in aligner.discriminator.parameters()]
    aligner.discriminator.zero_grad(set_to_none=True)
    x, y = images.clone().requires_grad_(), texts.clone().requires_grad_()
    aligner.encoder_loss(x, y).backward()
    torch.testing.assert_close(x.grad, -0.5 * a.grad)
    torch.testing.assert_close(y.grad, -0.5 * b.grad)
    for param, expected in zip(aligner.discriminator.parameters(), reference, strict=True):
        torch.testing.assert_close(param.grad, expected)


@pytest.mark.parametrize(
    ("mode", "target", "d_steps"), [("alternating", "flipped", 1), ("confusion", "confusion", 2)]
)
def test_alternating_modes_step_the_discriminator_themselves_and_leave_it_to_no_one_else(
    mode, target, d_steps
):
    aligner = AdversarialAligner(4, mode, weight=0.5, lr=1e-2, seed=0, d_steps=d_steps)
    assert aligner.shared_parameters() == []
    images, texts = _embeddings(2)
    # What d_steps Adam steps of the discriminator on the detached embeddings give.
    twin = ModalityDiscriminator(4)
    twin.load_state_dict(aligner.discriminator.state_dict())
    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.5, 0.999))
    for _ in range(d_steps):
        optimizer.zero_grad()
        modality_loss(twin, images, texts).backward()
        optimizer.step()

    x, y = images.clone().requires_grad_(), texts.clone().requires_grad_()
    loss = aligner.encoder_loss(x, y)
    for mine, expected in zip(
        aligner.discriminator.state_dict().values(), twin.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(mine, expected)
    # The encoders' term: the mode's target through the stepped discriminator, weighted.
    after = {k: v.clone() for k, v in aligner.discriminator.state_dict().items()}
    loss.backward()
    assert all(p.grad is None for p in aligner.discriminator.parameters())
    a, b = images.clone().requires_grad_(), texts.clone().requires_grad_()
    expected = 0.5 * modality_loss(twin, a, b, target)
    expected.backward()
    torch.testing.assert_close(float(loss.detach()), float(expected.detach()))
    torch.testing.assert_close(x.grad, a.grad)
    torch.testing.assert_close(y.grad, b.grad)
    # Nothing but its own optimiser moved it.
    for key, value in aligner.discriminator.state_dict().items():
        assert torch.equal(value, after[key])


def test_alignment_loss_is_the_mean_squared_distance_of_each_image_to_its_own_caption():
    images = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    far = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    # texts beyond the first B (hard negatives) are no image's caption and do not count
    assert alignment_loss(images, torch.cat([images, far])).item() == 0.0
    texts = torch.cat([images[:3], -images[3:]])  # three pairs at distance 0, three at 2
    assert alignment_loss(images, texts).item() == pytest.approx(4.0 * 3 / 6, abs=1e-6)
    rotated = torch.stack([torch.eye(8)[1], torch.eye(8)[0]])  # orthogonal unit vectors
    assert alignment_loss(torch.eye(8)[:2], rotated).item() == pytest.approx(2.0, abs=1e-6)


def test_the_probe_separates_apart_clouds_and_is_at_chance_on_one_cloud():
    generator = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(40, 8, generator=generator)
    apart = torch.zeros(40, 8)
    apart[:, 0] = 1.0
    images, texts = apart + noise, -apart + noise.flip(0)
    accuracy = modality_probe_accuracy(images[:20], texts[:20], images[20:], texts[20:], steps=50)
    assert accuracy == 1.0
    # The same points as both modalities: whatever the probe says is right for one, wrong for
    # the other, so balanced accuracy is exactly one half.
    same = apart + noise
    assert modality_probe_accuracy(same[:20], same[:20], same[20:], same[20:], steps=50) == 0.5


def test_cycle_term_is_zero_when_every_round_trip_closes_and_positive_otherwise():
    basis = torch.eye(3)
    assert float(cycle_loss(basis, basis, scale=100.0)) == pytest.approx(0.0, abs=1e-6)
    # Texts at a permutation of the images still close every cycle.
    assert float(cycle_loss(basis, basis[[2, 0, 1]], scale=100.0)) == pytest.approx(0.0, abs=1e-6)
    # Two images share one nearest text: the round trip from either lands half way between them.
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    loss = float(cycle_loss(basis, texts, scale=100.0))
    # Image 0 -> text 0 -> (image 0 + image 1) / 2: 1 - cos = 1 - 1/sqrt(2), same for image 1;
    # image 2 and the texts close; mean over the two directions.
    expected = 0.5 * (2 * (1 - 1 / math.sqrt(2)) / 3)
    assert loss == pytest.approx(expected, abs=1e-4)
    # An identical duplicate image is no broken cycle.
    duplicated = basis[[0, 0, 1, 2]]
    assert float(cycle_loss(duplicated, basis, scale=100.0)) == pytest.approx(0.0, abs=1e-6)


def test_reciprocal_pairs_keep_nearest_texts_whose_near_images_include_the_image():
    images = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # Image 0 <-> text 0 (cos 1); image 1's nearest is text 1 (0.96), text 1's nearest image is
    # image 1 (0.96 against image 2's 0.8); image 2's nearest is text 1, its second nearest image.
    rows, cols = reciprocal_pairs(images, texts, neighbours=1, threshold=0.0)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]  # mutual nearest neighbours
    rows, cols = reciprocal_pairs(images, texts, neighbours=2, threshold=0.0)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 1]
    rows, cols = reciprocal_pairs(images, texts, neighbours=2, threshold=0.9)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]


def test_pseudo_pairs_pair_images_with_descriptions_and_vary_their_captions():
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    for i in range(3):
        images[i, i] = 255  # image i is channel i
    texts = ["red", "crimson", "green", "blue"]
    keys = ["r", "r", "g", "b"]  # "red" and "crimson" say the same
    pool = UnpairedPool(images, texts, keys)
    pairs = PseudoPairs(pool, threshold=0.5, neighbours=1, seed=0)
    vectors = {"red": [1.0, 0.2, 0], "crimson": [1.0, -0.2, 0], "green": [0, 1.0, 0],
               "blue": [0, 0, 1.0]}

    def embed_images(x):  # channel means in [-1, 1] -> which channel is lit
        return torch.nn.functional.normalize(x.mean(dim=(2, 3)) + 1.0, dim=-1)

    def embed_texts(t):
        return torch.nn.functional.normalize(torch.tensor([vectors[s] for s in t]), dim=-1)

    assert pairs.mine(embed_images, embed_texts) == 3
    descriptions = [pairs.descriptions[d] for d in pairs.described.tolist()]
    assert dict(zip(pairs.images.tolist(), descriptions, strict=True)) == {0: "r", 1: "g", 2: "b"}
    generator = torch.Generator().manual_seed(0)
    captions_of_red = set()
    for _ in range(20):
        drawn_images, drawn_texts, positives = pairs.draw(3, generator)
        assert drawn_images.shape == (3, 3, 4, 4)
        assert torch.equal(positives, torch.eye(3, dtype=torch.bool))
        lit = drawn_images.mean(dim=(2, 3)).argmax(dim=1).tolist()  # which image each row is
        for image, text in zip(lit, drawn_texts, strict=True):
            assert keys[texts.index(text)] == "rgb"[image]
            if image == 0:
                captions_of_red.add(text)
    assert captions_of_red == {"red", "crimson"}
    # Precision reads each pair's description by its first caption.
    assert pairs.precision(lambda row, text: (row, text) in {(0, "red"), (1, "green")}) == 2 / 3


def test_view_loss_is_nt_xent_low_for_matching_views_and_high_for_swapped_ones():
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    views = F.normalize(embeddings + 0.01 * torch.randn(6, 16, generator=generator), dim=-1)
    loss = view_loss(embeddings, views, 10.0)
    # NT-Xent by hand: row i of the 2B stacked rows against the other 2B - 1, target its pair.
    both = torch.cat([embeddings, views])
    total = 0.0
    for i in range(12):
        logits = [10.0 * float(both[i] @ both[j]) for j in range(12) if j != i]
        partner = (i + 6) % 12
        positive = 10.0 * float(both[i] @ both[partner])
        total += math.log(sum(math.exp(v) for v in logits)) - positive
    # fp32 logits of about 10 leave an absolute rounding of about 1e-6 in a log-sum-exp
    assert float(loss) == pytest.approx(total / 12, abs=1e-5)
    swapped = view_loss(embeddings, views.roll(1, dims=0), 10.0)
    assert float(loss) < 0.1 < float(swapped)
