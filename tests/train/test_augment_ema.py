import pytest
import torch

from ganfuse.train.augment import AdaptiveAugment, color, cutout, diff_augment, translate
from ganfuse.train.ema import EMA


def _images(b=6, c=3, s=16, seed=0):
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_translation_shifts_by_whole_pixels_with_zero_fill():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 4] = 1.0
    seen = set()
    for seed in range(40):
        y = translate(x, torch.Generator().manual_seed(seed))
        assert y.shape == x.shape and y.sum() == 1.0  # the pixel moves (shift <= 1 keeps it inside)
        r, c = (y[0, 0] == 1).nonzero()[0].tolist()
        assert abs(r - 3) <= 1 and abs(c - 4) <= 1
        seen.add((r - 3, c - 4))
    assert len(seen) >= 6  # several distinct shifts are drawn


def test_translation_by_pixels_with_border_padding_moves_each_image_by_whole_pixels():
    images = torch.randn(16, 3, 8, 8)
    views = translate(images, torch.Generator().manual_seed(0), pixels=2, padding="border")
    moves = set()
    for image, view in zip(images, views, strict=True):
        found = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if torch.allclose(
                view,
                image[:, (torch.arange(8) - dy).clamp(0, 7)][:, :, (torch.arange(8) - dx).clamp(0, 7)],
                atol=1e-6,
            )
        ]
        assert len(found) == 1  # exactly one whole-pixel shift within the range explains it
        moves.add(found[0])
    assert len(moves) > 5  # each image draws its own offset
    again = translate(images, torch.Generator().manual_seed(0), pixels=2, padding="border")
    assert torch.equal(views, again)


def test_translation_rejects_an_unknown_padding():
    with pytest.raises(ValueError, match="padding"):
        translate(torch.zeros(1, 1, 4, 4), padding="reflect")


def test_cutout_zeroes_a_square_of_half_the_side():
    x = torch.ones(4, 2, 16, 16)
    y = cutout(x, torch.Generator().manual_seed(0))
    zeros = (y[:, 0] == 0).flatten(1).sum(1)
    assert y.shape == x.shape
    assert ((zeros > 0) & (zeros <= 64)).all()  # an 8x8 square, possibly clipped by the border
    assert torch.equal(y[:, 0], y[:, 1])  # same mask on every channel


def test_color_keeps_shape_and_is_random():
    x = _images()
    a, b = color(x, torch.Generator().manual_seed(0)), color(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and not torch.allclose(a, b)


@pytest.mark.parametrize("ops", [["translation"], ["cutout"], ["color"], ["translation", "cutout", "color"]])
def test_augmentations_are_differentiable(ops):
    x = _images().requires_grad_(True)
    y = diff_augment(x, ops, p=1.0, generator=torch.Generator().manual_seed(0))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_probability_zero_is_identity_and_one_changes_every_image():
    x = _images()
    assert torch.equal(diff_augment(x, ["translation", "cutout"], p=0.0), x)
    y = diff_augment(x, ["cutout"], p=1.0, generator=torch.Generator().manual_seed(0))
    assert all(not torch.equal(a, b) for a, b in zip(x, y, strict=True))


def test_ada_moves_p_toward_the_target():
    aug = AdaptiveAugment(["translation"], target=0.6, interval=1, kimg=0.1)
    assert aug.p == 0.0
    for step in range(1, 4):  # D is overfitting: all real logits positive -> r_t = 1 > 0.6
        aug.accumulate(torch.ones(50))
        aug.update(step, batch_size=50)
    assert aug.p == pytest.approx(1.0) and aug.last_rt == 1.0  # 3 * 50 / 100 capped at 1
    aug.accumulate(-torch.ones(50))
    aug.update(4, batch_size=50)
    assert aug.p == pytest.approx(0.5)
    restored = AdaptiveAugment(["translation"], target=0.6, interval=1, kimg=0.1)
    restored.load_state_dict(aug.state_dict())
    assert restored.p == aug.p and restored.last_rt == aug.last_rt


def test_ema_update_math_and_buffer_copy():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9, warmup_steps=10)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 2))  # changes BN running stats
    ema.update(model, step=5)  # decay at step 5 of a 10-step warm-up: 0.45
    for e, s, live in zip(ema.model.parameters(), start, model.parameters(), strict=True):
        assert torch.allclose(e, 0.45 * s + 0.55 * live)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert ema.decay_at(0) == 0.0 and ema.decay_at(20) == 0.9


def test_batchnorm_recalibration_is_the_exact_average_over_the_batches():
    from torch import nn

    from ganfuse.train.ema import recalibrate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    model.eval()
    batches = [torch.randn(16, 3) * (i + 1) + i for i in range(3)]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert recalibrate_batchnorm(model, lambda i: (batches[i],), 3)
    assert not model.training and model[1].momentum == 0.1  # mode and momentum restored
    hidden = [model[0](b) for b in batches]
    assert torch.allclose(model[1].running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0), atol=1e-5)
    assert torch.allclose(model[1].running_var, torch.stack([h.var(0) for h in hidden]).mean(0), atol=1e-4)
    # the second layer sees activations normalised with each batch's own statistics (train mode)
    second = [model[3](torch.relu(torch.nn.functional.batch_norm(h, None, None, model[1].weight, model[1].bias,
                                                                     training=True))) for h in hidden]
    assert torch.allclose(model[4].running_mean, torch.stack([h.mean(0) for h in second]).mean(0), atol=1e-5)
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k  # parameters untouched
    assert not recalibrate_batchnorm(nn.Linear(2, 2), lambda i: (torch.zeros(1, 2),), 3)


def test_ema_generator_statistics_belong_to_its_own_weights(tmp_path):
    """After training, the EMA generator's BatchNorm statistics are those of its own activations,
    not the live generator's (which would be wrong for the averaged weights)."""
    from torch import nn

    from ganfuse.config import load_config
    from ganfuse.train.loop import Trainer

    config = load_config("digits", ["train.precision=fp32", "model.g_width=16", "model.d_width=8", "train.batch_size=16",
                                    "train.ema_decay=0.9", "train.ema_warmup_steps=0"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    for _ in range(6):
        trainer.train_step()
    g = trainer.sampling_generator
    bn = next(m for m in g.modules() if isinstance(m, nn.BatchNorm2d))
    live = next(m for m in trainer.G.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(bn.running_mean, live.running_mean)
    captured = []
    hook = bn.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    g.train()
    with torch.no_grad():
        g(torch.randn(512, config.model.z_dim), None)
    g.eval()
    hook.remove()
    fresh = captured[0].mean(dim=(0, 2, 3))
    scale = captured[0].std(dim=(0, 2, 3)).mean()
    assert (bn.running_mean - fresh).abs().max() < 0.1 * scale  # its own statistics, up to sampling noise
    assert (live.running_mean - fresh).abs().max() > (bn.running_mean - fresh).abs().max()
