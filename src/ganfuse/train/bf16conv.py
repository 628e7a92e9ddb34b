"""Convolution weight gradients as a forward convolution, for bf16 autocast on a CPU.

On a CPU with native bf16 (an AMD EPYC with AVX-512 BF16, torch 2.14, oneDNN) the forward and
input-gradient kernels of a bf16 convolution run 2-4x faster than fp32, but the weight-gradient
kernel does not: for the DCGAN's 5x5 stride-2 layers on 4x4 and 8x8 maps it runs *slower* than in
fp32 (7.1 against 4.9 ms for the discriminator's 128->256 layer at batch 64), and the step spends a
third of its time there (``benchmarks/README.md``, "Where the bf16 step loses").

The weight gradient of a convolution is itself a convolution. For ``y = conv2d(x, W)`` with
stride ``s``, padding ``p``, a ``k``x``k`` kernel, no dilation and one group,

    dW[o, i, a, b] = sum_{n, u, v} dy[n, o, u, v] * x[n, i, s*u + a - p, s*v + b - p]

which is ``conv2d`` of ``x`` with its batch and channel axes swapped (channels become the batch,
the batch becomes the channels) by the kernel ``dy`` (likewise swapped), with dilation ``s`` and
padding ``p``; its first ``k``x``k`` outputs are ``dW`` (rows past ``k`` exist when the stride did
not divide the padded size, and are dropped). A transposed convolution ``y = conv_transpose2d(x, W)``
is the adjoint of ``conv2d(., W)`` with the same geometry, so its weight gradient is the same
formula with the roles of ``x`` and ``dy`` exchanged (``output_padding`` only adds rows that are
cropped). oneDNN runs that *forward* convolution at its fast bf16 speed.

:func:`install` gives the eligible ``nn.Conv2d`` and ``nn.ConvTranspose2d`` layers of a network a
forward that takes this path only while CPU autocast is on in bf16; in fp32, on a GPU or outside
autocast they run PyTorch's own convolution, bit for bit. Their parameters, ``state_dict`` and
printed form do not change. The input gradient and the bias gradient are PyTorch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: tuple[int, int], stride, padding,
                transposed: bool) -> torch.Tensor:
    """The gradient of a 2-d convolution's weight (one group, no dilation) as a forward convolution.

    ``x`` is the layer's input, ``grad`` the gradient of its output; the result has the layer's
    weight shape: ``(out, in, kh, kw)`` for ``conv2d``, ``(in, out, kh, kw)`` for
    ``conv_transpose2d``.
    """
    if transposed:  # the adjoint: dy plays the input, x the output gradient
        x, grad = grad, x
    # (C_x, N, H, W) conv (C_grad, N, h, w), dilation = stride -> (C_x, C_grad, >= kh, >= kw)
    w = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=padding, dilation=stride)
    return w[:, :, : kernel[0], : kernel[1]].transpose(0, 1)


class _Conv(torch.autograd.Function):
    """A 2-d convolution whose backward computes the weight gradient with :func:`weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, transposed):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, output_padding, transposed)
        ctx.has_bias = bias is not None
        if transposed:
            return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, output_padding, transposed = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(stride), list(padding), [1, 1], transposed,
                list(output_padding), 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x, grad, weight.shape[-2:], stride, padding, transposed)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


def _cpu_bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


# The path pays where the coarser of a layer's two maps is small: measured on an AMD EPYC with
# AVX-512 BF16 at batch 64 (forward + backward, bf16 autocast), 4x4 maps 1.3-1.6x faster
# (DCGAN 256->128 up to 8x8: 14.9 -> 9.8 ms; 128->256 down to 4x4: 11.9 -> 9.1 ms), 8x8 maps
# from 0.8x to 1.1x, finer maps slower (1->64 at 16x16: 0.68x). So only maps up to 16 pixels.
MAX_COARSE_PIXELS = 16


def _coarse_pixels(x: torch.Tensor, layer: nn.Module) -> int:
    """Pixels of the coarser map of ``layer`` on ``x``: the input of a transposed convolution,
    the output of a convolution."""
    if layer.transposed:
        return x.shape[-2] * x.shape[-1]
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    return ((x.shape[-2] + 2 * p[0] - k[0]) // s[0] + 1) * ((x.shape[-1] + 2 * p[1] - k[1]) // s[1] + 1)


class _FastGradMixin:
    """The forward of a swapped layer: :class:`_Conv` under CPU bf16 autocast, else the parent's."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:  # a transposed convolution asked for an exact size: PyTorch's
            return super().forward(x, output_size)
        if x.device.type != "cpu" or not _cpu_bf16_autocast() or _coarse_pixels(x, self) > MAX_COARSE_PIXELS:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(torch.bfloat16)
        with torch.autocast("cpu", enabled=False):
            # nn.Conv2d keeps output_padding (0, 0) and transposed False: the convolution's geometry
            return _Conv.apply(x.to(torch.bfloat16), self.weight.to(torch.bfloat16), bias, self.stride,
                               self.padding, self.output_padding, self.transposed)

    def _get_name(self) -> str:  # print as the layer it is
        return type(self).__mro__[2].__name__


class FastGradConv2d(_FastGradMixin, nn.Conv2d):
    pass


class FastGradConvTranspose2d(_FastGradMixin, nn.ConvTranspose2d):
    pass


def eligible(layer: nn.Module) -> bool:
    """A plain 2-d convolution (or transposed one) the weight-gradient formula covers."""
    if type(layer) not in (nn.Conv2d, nn.ConvTranspose2d):
        return False
    return (layer.groups == 1 and tuple(layer.dilation) == (1, 1) and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str))


def install(module: nn.Module) -> int:
    """Give ``module``'s eligible convolutions the bf16 weight-gradient path; returns how many."""
    count = 0
    for layer in module.modules():
        if eligible(layer):
            layer.__class__ = FastGradConv2d if type(layer) is nn.Conv2d else FastGradConvTranspose2d
            count += 1
    return count
