"""The CPU bf16 path for convolution weight gradients (``ganfuse.train.bf16conv``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ganfuse.config import load_config
from ganfuse.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganfuse.train import bf16conv
from ganfuse.train.loop import Trainer

GEOMETRIES = [  # (transposed, kernel, stride, padding, output_padding)
    (False, (3, 3), (1, 1), (1, 1), (0, 0)),
    (False, (5, 5), (2, 2), (2, 2), (0, 0)),
    (False, (4, 4), (2, 2), (1, 1), (0, 0)),
    (False, (4, 3), (3, 2), (0, 1), (0, 0)),  # a stride that does not divide the padded size
    (True, (5, 5), (2, 2), (2, 2), (1, 1)),  # the DCGAN generator's layers
    (True, (4, 4), (2, 2), (1, 1), (0, 0)),
    (True, (3, 5), (2, 3), (1, 0), (1, 2)),
]


@pytest.mark.parametrize("transposed,kernel,stride,padding,output_padding", GEOMETRIES)
def test_the_weight_gradient_as_a_convolution_is_exact(transposed, kernel, stride, padding, output_padding):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 9, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*((4, 5) if transposed else (5, 4)), *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def conv(x, w, b):
        return bf16conv._Conv.apply(x, w, b, stride, padding, output_padding, transposed)

    assert torch.autograd.gradcheck(conv, (x, w, b))
    y = conv(x, w, b)
    grad = torch.randn_like(y)
    ours = bf16conv.weight_grad(x.detach(), grad, kernel, stride, padding, transposed)
    theirs = torch.ops.aten.convolution_backward(
        grad, x.detach(), w.detach(), None, list(stride), list(padding), [1, 1], transposed,
        list(output_padding), 1, [False, True, False])[1]
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def _networks():
    torch.manual_seed(0)
    g, d = DCGANGenerator(100, 1), DCGANDiscriminator(1)
    fast_g, fast_d = copy.deepcopy(g), copy.deepcopy(d)
    assert bf16conv.install(fast_g) == 3 and bf16conv.install(fast_d) == 3
    return (g, d), (fast_g, fast_d)


def _grads(g, d, z, bf16: bool):
    g.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fake = g(z)
        logits = d(fake).logits
    (logits.float() ** 2).mean().backward()
    return fake, [p.grad.clone() for p in [*g.parameters(), *d.parameters()]]


def test_outside_bf16_autocast_an_installed_network_is_bit_identical():
    plain, fast = _networks()
    z = torch.randn(8, 100)
    out_a, grads_a = _grads(*plain, z, bf16=False)
    out_b, grads_b = _grads(*fast, z, bf16=False)
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    # the layers keep their parameters, their names in state_dict and their printed form
    assert plain[1].state_dict().keys() == fast[1].state_dict().keys()
    assert repr(plain[0]) == repr(fast[0]) and repr(plain[1]) == repr(fast[1])
    assert type(copy.deepcopy(fast[1]).conv3) is bf16conv.FastGradConv2d


def test_under_bf16_autocast_the_coarse_layers_take_the_path_and_agree_with_pytorch():
    plain, fast = _networks()
    z = torch.randn(16, 100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = fast[1].act(fast[1].norm2(fast[1].conv2(fast[1].act(fast[1].conv1(torch.randn(2, 1, 32, 32))))))
        assert type(fast[1].conv3(h).grad_fn).__name__ == "_ConvBackward"  # 8x8 -> 4x4: the path
        assert type(fast[1].conv2(torch.randn(2, 64, 16, 16)).grad_fn).__name__ != "_ConvBackward"  # 8x8 maps: PyTorch's
    _, reference = _grads(*plain, z, bf16=False)  # fp32
    _, native = _grads(*plain, z, bf16=True)
    _, ours = _grads(*fast, z, bf16=True)
    names = [n for n, _ in [*plain[0].named_parameters(), *plain[1].named_parameters()]]
    for name, ref, a, b in zip(names, reference, native, ours, strict=True):
        if name.endswith("weight") and ("up" in name or "conv" in name):
            # the two bf16 paths agree closely, and are as far from fp32 as each other
            assert (a - b).norm() <= 2e-2 * a.norm(), name
            assert (b - ref).norm() <= 1.1 * (a - ref).norm() + 1e-3 * ref.norm(), name


def test_layers_the_formula_does_not_cover_are_left_alone():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, dilation=2),
                        nn.Conv2d(4, 4, 3, padding="same"), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                        nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 4, 3)), nn.Conv2d(4, 4, 3))
    assert bf16conv.install(net) == 1
    assert [type(m).__name__ for m in net][-1] == "FastGradConv2d"


@pytest.mark.parametrize("switch", [True, False])
def test_the_trainer_installs_the_path_on_a_cpu_unless_switched_off(tmp_path, switch):
    config = load_config("digits-dcgan", ["train.precision=fp32", "train.steps=2", "train.batch_size=8",
                                          f"train.bf16_conv_grad={str(switch).lower()}"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert (type(trainer.D.conv3) is bf16conv.FastGradConv2d) is switch
    assert (type(trainer.G.up1) is bf16conv.FastGradConvTranspose2d) is switch


def test_fp32_training_is_the_same_with_and_without_the_path(tmp_path):
    weights = []
    for switch in ("true", "false"):
        config = load_config("digits-dcgan", ["train.precision=fp32", "train.batch_size=8",
                                              f"train.bf16_conv_grad={switch}"])
        trainer = Trainer(config, tmp_path / switch, progress=False)
        for _ in range(2):
            trainer.train_step()
        weights.append(trainer.weights(calibrated=False))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
