"""FLOP counts of the bench against hand counts: one Conv2d, one ConvTranspose2d, a whole DCGAN step.

A multiply-add is 2 FLOPs. A transposed convolution does one multiply-add per (input pixel, kernel
tap, input channel, output channel); a count over its zero-inserted input would be about stride^2
times more, and a count over its output positions (the convolution's rule) 4x more at stride 2.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganfuse.bench import count_flops, step_flops, steps_per_cycle
from ganfuse.config import load_config
from ganfuse.train.loop import Trainer
from tests.conftest import TINY

BATCH = 2


def _forward_backward(layer: nn.Module, x: torch.Tensor) -> int:
    def step() -> None:
        layer(x).sum().backward()

    return count_flops(step)


def test_a_conv2d_counts_output_pixels_times_taps_times_channels():
    layer = nn.Conv2d(4, 8, 5, stride=2, padding=2)
    x = torch.randn(BATCH, 4, 8, 8)
    # output 4x4; each output value: 5x5 taps x 4 input channels; 8 output channels
    macs = BATCH * (4 * 4) * (5 * 5) * 4 * 8  # 25,600
    with torch.no_grad():
        assert count_flops(lambda: layer(x)) == 2 * macs == 51_200
    # backward: weight gradient (same multiply-adds); no input gradient (x needs none)
    assert _forward_backward(layer, x) == 2 * 2 * macs
    # with an input gradient too: three times the forward
    assert _forward_backward(layer, x.requires_grad_()) == 3 * 2 * macs


def test_a_conv_transpose2d_counts_the_multiply_adds_it_does_not_a_zero_inserted_input():
    layer = nn.ConvTranspose2d(8, 4, 5, stride=2, padding=2, output_padding=1)
    x = torch.randn(BATCH, 8, 4, 4)
    assert layer(x).shape == (BATCH, 4, 8, 8)
    # each of the 4x4 input values meets 5x5 taps for each of 8 x 4 channel pairs
    macs = BATCH * (4 * 4) * (5 * 5) * 8 * 4  # 25,600
    zero_inserted = BATCH * (8 * 8) * (5 * 5) * 8 * 4  # the output-sized (dilated) input: 4x more
    with torch.no_grad():
        flops = count_flops(lambda: layer(x))
    assert flops == 2 * macs == 51_200 and flops != 2 * zero_inserted
    assert _forward_backward(layer, x) == 2 * 2 * macs
    assert _forward_backward(layer, x.requires_grad_()) == 3 * 2 * macs


def test_a_linear_layer_counts_in_times_out():
    layer = nn.Linear(100, 512)
    with torch.no_grad():
        assert count_flops(lambda: layer(torch.randn(BATCH, 100))) == 2 * BATCH * 100 * 512


def _dcgan_step_macs_per_image(z: int, g: int, d: int) -> int:
    """Hand count of one digits-dcgan training step per image (multiply-adds): G forward once
    (the fakes are reused by the G step); D step: D forward on real and fake, weight gradients of
    both, input gradients of every D layer but the first; G step: D forward on the fakes, input
    gradients through all of D (its weights are frozen), weight gradients of G and input gradients
    of every G layer but the first (z needs none)."""
    fc = z * (4 * 4 * g)
    g_convs = [16 * 25 * g * (g // 2), 64 * 25 * (g // 2) * (g // 4), 256 * 25 * (g // 4) * 1]
    g_fwd = fc + sum(g_convs)
    conv1 = 256 * 25 * 1 * d  # 32x32 -> 16x16 output
    d_fwd = conv1 + 64 * 25 * d * 2 * d + 16 * 25 * 2 * d * 4 * d + 4 * d * 16  # + linear head
    d_step = 2 * d_fwd + 2 * d_fwd + 2 * (d_fwd - conv1)
    g_step = d_fwd + d_fwd + g_fwd + (g_fwd - fc)
    return g_fwd + d_step + g_step


@pytest.mark.parametrize("n_critic", [1, 2])
def test_a_training_step_of_the_founding_dcgan_matches_the_hand_count(tmp_path, n_critic):
    config = load_config("digits-dcgan", [*TINY, f"train.n_critic={n_critic}"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert steps_per_cycle(trainer) == 1
    # g_width=32, d_width=8 (TINY): 5,072,896 multiply-adds per image at n_critic=1
    per_image = _dcgan_step_macs_per_image(100, 32, 8)
    assert per_image == 5_072_896
    # n_critic D rounds each draw fakes; only the last one keeps G's graph for the G step
    extra = (n_critic - 1) * (2 * 461_312 + 2 * 461_312 + 2 * (461_312 - 51_200) + 512_000)
    expected = 2 * (trainer.batch_size * (per_image + extra))
    assert step_flops(trainer) == expected
    assert trainer.step == 1  # the count trained one step


def test_the_full_width_preset_is_586_mflop_per_image():
    # The figure benchmarks/README.md reports for digits-dcgan (g_width 256, d_width 64).
    assert 2 * _dcgan_step_macs_per_image(100, 256, 64) == 585_793_536


def test_a_lazy_regulariser_is_counted_once_per_cycle(tmp_path):
    base = [*TINY, "train.loss=hinge", "train.batch_size=8"]
    plain = Trainer(load_config("digits-dcgan", base), tmp_path / "a", progress=False)
    r1 = Trainer(
        load_config("digits-dcgan", [*base, "train.r1_gamma=1", "train.r1_every=4"]),
        tmp_path / "b",
        progress=False,
    )
    assert steps_per_cycle(r1) == 4
    without, with_r1 = step_flops(plain), step_flops(r1)
    assert r1.step == 4
    # R1 every 4 steps: one D forward on the reals and a double backward, a quarter of it per step
    assert without < with_r1 < 2 * without
