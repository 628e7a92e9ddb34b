"""Text-to-image GAN networks, re-implemented from the papers (no code copied).

Text reaches the networks as a *condition tensor* (:class:`ganfuse.text.prompts.PromptEncoder`);
inside G and D the module of :func:`ganfuse.text.prompts.build_conditioner` turns it into a
learned text vector ``c (B, cond_dim)``.

``t2i-dfgan`` (after Tao et al., "DF-GAN", CVPR 2022):

- G: ``[z, c]`` -> 4x4 map, then up-sampling residual blocks whose features are modulated by
  per-channel scale and shift predicted from ``[c, z]`` before every convolution ("deep fusion"),
  so the text steers every resolution. ``fusion="input"`` is the ablation: text only enters
  at the 4x4 input and the modulation sees ``z`` alone.
- D: residual down-sampling blocks to a 4x4 map ``h``; its logit scores the *pair* (image, text):
  ``concat`` replicates ``c`` over ``h`` and convolves (DF-GAN's one-way output), ``projection``
  adds ``<P(c), flatten(h)>`` to an unconditional linear logit (Miyato & Koyama 2018, with a
  position-aware projection because the text states *where* the shape is); ``both`` sums them.
  D also embeds ``h`` and ``c`` into a joint space for the contrastive term (XMC-GAN / GALIP
  style). It is called ``D(x, cond)`` -> logits ``(B,)``, or with ``mismatch=`` / ``embed=True``
  for the matching-aware and contrastive terms (one trunk pass serves all).

``t2i-concat``: the baseline, a DCGAN whose G takes ``[z, c]`` at its input (BatchNorm,
transposed convolutions) and whose D concatenates ``c`` to its 4x4 map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.errors import ConfigError
from ganfuse.models.discriminator import DiscriminatorOutput, TextDiscriminator
from ganfuse.models.layers import maybe_spectral_norm
from ganfuse.text.prompts import TextSpec, build_conditioner

T2I_ARCHS = ("t2i-dfgan", "t2i-concat", "t2i-words")  # t2i-words: ganfuse.models.t2i_words
FUSIONS = ("every", "input")
D_CONDITIONS = ("concat", "projection", "both")


# ---------------------------------------------------------------------------------------------
# t2i-dfgan
# ---------------------------------------------------------------------------------------------


class Affine(nn.Module):
    """``x (B, C, H, W), s (B, S) -> gamma(s) * x + beta(s)``, gamma and beta per channel from
    small MLPs; they start at exactly 1 and 0, so a new block passes its input through."""

    def __init__(self, channels: int, cond_dim: int, hidden: int = 64):
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        for mlp, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            nn.init.zeros_(mlp[2].weight)
            nn.init.constant_(mlp[2].bias, bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta(s)[:, :, None, None], self.gamma(s)[:, :, None, None], x)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x up-sampling ``(B, C, H, W) -> (B, C, 2H, 2W)``; the same values as
    ``F.interpolate(mode="nearest")``, several times faster on CPU as a broadcast copy."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # stay channels-last: a layout change before the next conv would cost another copy
        nhwc = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(b, h, 2, w, 2, c)
        return nhwc.reshape(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


class FusionUpBlock(nn.Module):
    """``x (B, Cin, H, W), s (B, S) -> (B, Cout, 2H, 2W)``: nearest up-sampling, then twice
    (affine modulation by ``s``, LeakyReLU, 3x3 conv), plus a 1x1-conv shortcut.

    Per-pixel operations commute with nearest up-sampling, so the first modulation and the
    shortcut's 1x1 conv run at the input resolution: the same function for a quarter of the work.
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.fuse1 = Affine(in_ch, cond_dim)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.fuse2 = Affine(out_ch, cond_dim)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.conv1(upsample2x(F.leaky_relu(self.fuse1(x, s), 0.2, inplace=True)))
        h = self.conv2(F.leaky_relu(self.fuse2(h, s), 0.2, inplace=True))
        return upsample2x(self.shortcut(x)) + h


def _widths(first: int, blocks: int, grow: bool, floor: int = 8) -> list[int]:
    """Channel widths of ``blocks + 1`` maps: halving from ``first`` (G) or doubling to it (D)."""
    widths = [max(first // 2**i, floor) for i in range(blocks + 1)]
    return widths[::-1] if grow else widths


def _blocks_for(image_size: int) -> int:
    if image_size < 8 or image_size & (image_size - 1):
        raise ConfigError(f"t2i models need a power-of-two image size >= 8, got {image_size}")
    return int(math.log2(image_size // 4))


class FusionGenerator(nn.Module):
    """``z (B, z_dim), cond`` -> images ``(B, 3, S, S)`` (DF-GAN-style deep fusion); in eval mode
    clamped to [-1, 1], in train mode the unbounded linear output that D judges.

    ``cond`` is the condition tensor (see :class:`PromptEncoder`). A linear map of ``[z, c]``
    gives the 4x4 map (text needs a spatial entry point: "top left" is a place, and per-channel
    modulation alone is the same everywhere); ``fusion="every"`` then modulates every block by
    ``[c, z]``, ``"input"`` by ``z`` only (text enters at the input alone).
    """

    def __init__(self, spec: TextSpec, z_dim: int = 100, image_size: int = 32, width: int = 128,
                 cond_dim: int = 128, fusion: str = "every", channels: int = 3, base: int = 4):
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"text.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.z_dim, self.image_size, self.fusion, self.base = z_dim, image_size, fusion, base
        self.text = build_conditioner(spec, cond_dim)
        widths = _widths(width, _blocks_for(image_size) - int(math.log2(base // 4)), grow=False)
        self.fc = nn.Linear(z_dim + cond_dim, widths[0] * base * base)
        style_dim = z_dim + (cond_dim if fusion == "every" else 0)
        self.blocks = nn.ModuleList(
            FusionUpBlock(a, b, style_dim) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.to_rgb = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond is None:
            raise ValueError("a text-to-image generator needs a condition (text) for every image")
        c = self.text(cond)
        s = torch.cat([c, z], dim=1) if self.fusion == "every" else z
        h = self.fc(torch.cat([z, c], dim=1)).view(z.shape[0], -1, self.base, self.base)
        for block in self.blocks:
            h = block(h, s)
        out = self.to_rgb(F.leaky_relu(h, 0.2))
        # Linear output while training: shapes images are mostly exact black (-1), and a tanh
        # saturates there, so G's gradient vanished and it stayed blank (measured: all-black
        # samples after 200 steps with tanh, shapes appearing by step 100 without).
        return out if self.training else out.clamp(-1.0, 1.0)


class DownBlock(nn.Module):
    """``(B, Cin, H, W) -> (B, Cout, H/2, W/2)``: 3x3 conv, LeakyReLU, 4x4 stride-2 conv,
    LeakyReLU, added to an average-pooled 1x1-conv shortcut.

    DF-GAN scales the residual by a learned gain that starts at 0; with Adam a scalar moves about
    ``lr`` per step, so for a budget of a few thousand steps D stayed nearly linear (measured: D
    told fakes from reals 10-20% of the time after 400 steps). No gain here.
    """

    def __init__(self, in_ch: int, out_ch: int, sn: bool = False):
        super().__init__()
        self.conv1 = maybe_spectral_norm(nn.Conv2d(in_ch, out_ch, 3, padding=1), sn)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(out_ch, out_ch, 4, stride=2, padding=1), sn)
        self.shortcut = maybe_spectral_norm(nn.Conv2d(in_ch, out_ch, 1), sn) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)
        return F.avg_pool2d(self.shortcut(x), 2) + h


class PairHead(nn.Module):
    """Scores (4x4 image features, text vector) pairs: ``h (B, C, 4, 4), c (B, cond_dim) -> (B,)``."""

    def __init__(self, channels: int, cond_dim: int, condition: str, sn: bool = False):
        super().__init__()
        if condition not in D_CONDITIONS:
            raise ConfigError(f"text.d_condition must be one of {', '.join(D_CONDITIONS)}, got {condition!r}")
        self.condition = condition
        self.concat = None
        if condition in ("concat", "both"):
            self.concat = nn.Sequential(
                maybe_spectral_norm(nn.Conv2d(channels + cond_dim, channels, 3, padding=1), sn), nn.LeakyReLU(0.2),
                maybe_spectral_norm(nn.Conv2d(channels, 1, 4), sn),
            )
        self.linear = self.project = None
        if condition in ("projection", "both"):
            self.linear = maybe_spectral_norm(nn.Linear(channels * 16, 1), sn)
            self.project = maybe_spectral_norm(nn.Linear(cond_dim, channels * 16, bias=False), sn)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = h.new_zeros(h.shape[0])
        if self.concat is not None:
            grid = c[:, :, None, None].expand(-1, -1, *h.shape[-2:])
            out = out + self.concat(torch.cat([h, grid], dim=1)).flatten()
        if self.project is not None:
            flat = h.flatten(1)
            out = out + self.linear(flat).squeeze(1) + (self.project(c) * flat).sum(1)
        return out


class MatchingDiscriminator(TextDiscriminator):
    """Images ``(B, 3, S, S)`` and conditions -> :class:`DiscriminatorOutput` whose ``logits (B,)``
    say "real image matching its text"; ``mismatch=``, ``embed=``, ``features=`` and ``negatives=``
    add their parts from the same single pass of the image trunk.
    """

    def __init__(self, spec: TextSpec, image_size: int = 32, width: int = 32, cond_dim: int = 128,
                 condition: str = "projection", embed_dim: int = 0, channels: int = 3, sn: bool = False):
        super().__init__()
        self.text = build_conditioner(spec, cond_dim)
        widths = _widths(width * 2 ** _blocks_for(image_size), _blocks_for(image_size), grow=True)
        self.from_rgb = maybe_spectral_norm(nn.Conv2d(channels, widths[0], 3, padding=1), sn)
        self.blocks = nn.Sequential(*(DownBlock(a, b, sn) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.head = PairHead(widths[-1], cond_dim, condition, sn)
        # joint image-text space for the contrastive term; absent (embed_dim=0) when unused, so
        # that every parameter takes part in every loss (as DDP requires)
        self.has_embedding = embed_dim > 0
        self.image_embed = nn.Linear(widths[-1] * 16, embed_dim) if embed_dim else None
        self.text_embed = nn.Linear(cond_dim, embed_dim) if embed_dim else None

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, finest first; the last, after a LeakyReLU, is the ``(B, C, 4, 4)``
        map the heads read."""
        h, outs = self.from_rgb(x), []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        outs[-1] = F.leaky_relu(outs[-1], 0.2)
        return outs

    def forward(self, x: torch.Tensor, cond: torch.Tensor, *, mismatch: torch.Tensor | None = None,
                embed: bool = False, features: bool = False,
                negatives: torch.Tensor | None = None) -> DiscriminatorOutput:
        check_text_request(self, cond, embed or negatives is not None)
        maps = self.trunk(x)
        h = maps[-1]
        c = self.text(cond)
        # the pairs first, then the mismatched ones: with spectral norm each head call takes a
        # power-iteration step, so the order is part of the function
        logits = self.head(h, c)
        wrong = self.head(h, self.text(mismatch)) if mismatch is not None else None
        img = txt = neg = None
        if embed or negatives is not None:
            img = F.normalize(self.image_embed(h.flatten(1)), dim=1)
            txt = F.normalize(self.text_embed(c), dim=1)
        if negatives is not None:
            neg = F.normalize(self.text_embed(self.text(negatives)), dim=1)
        return DiscriminatorOutput(logits, wrong, img, txt, c, maps if features else None, neg)


def check_text_request(d: TextDiscriminator, cond: torch.Tensor | None, embed: bool) -> None:
    if cond is None:
        raise ValueError("a text-to-image discriminator needs a condition for every image")
    if embed and not d.has_embedding:
        raise ConfigError(f"{type(d).__name__} has no embedding heads: the contrastive term needs "
                          "model.arch=t2i-dfgan with text.contrastive_weight > 0")


# ---------------------------------------------------------------------------------------------
# t2i-concat (baseline)
# ---------------------------------------------------------------------------------------------


class ConcatGenerator(nn.Module):
    """The baseline: ``[z, c]`` -> dense 4x4 map -> (2x transposed conv, BN, ReLU) blocks -> 3x3
    conv, tanh: ``z (B, z_dim), cond -> (B, 3, S, S)`` in [-1, 1]."""

    def __init__(self, spec: TextSpec, z_dim: int = 100, image_size: int = 32, width: int = 128,
                 cond_dim: int = 128, channels: int = 3):
        super().__init__()
        self.z_dim, self.image_size = z_dim, image_size
        self.text = build_conditioner(spec, cond_dim)
        widths = _widths(width, _blocks_for(image_size), grow=False)
        self.fc = nn.Linear(z_dim + cond_dim, widths[0] * 16)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.Conv2d(widths[-1], channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond is None:
            raise ValueError("a text-to-image generator needs a condition (text) for every image")
        h = self.fc(torch.cat([z, self.text(cond)], dim=1))
        return self.net(h.view(z.shape[0], -1, 4, 4))


class ConcatDiscriminator(TextDiscriminator):
    """The baseline: 4x4 stride-2 convs with LeakyReLU to a 4x4 map, the text vector replicated
    and concatenated to it, a 3x3 conv and a 4x4 conv to one logit: ``(B, 3, S, S), cond ->``
    :class:`DiscriminatorOutput`. It has no embedding heads (``embed``/``negatives`` refused)."""

    def __init__(self, spec: TextSpec, image_size: int = 32, width: int = 32, cond_dim: int = 128,
                 channels: int = 3):
        super().__init__()
        self.text = build_conditioner(spec, cond_dim)
        widths = _widths(width * 2 ** _blocks_for(image_size), _blocks_for(image_size), grow=True)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers)
        self.head = PairHead(widths[-1], cond_dim, "concat")

    def forward(self, x: torch.Tensor, cond: torch.Tensor, *, mismatch: torch.Tensor | None = None,
                embed: bool = False, features: bool = False,
                negatives: torch.Tensor | None = None) -> DiscriminatorOutput:
        check_text_request(self, cond, embed or negatives is not None)
        h, maps = x, []
        for layer in self.trunk:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                maps.append(h)
        c = self.text(cond)
        logits = self.head(h, c)
        wrong = self.head(h, self.text(mismatch)) if mismatch is not None else None
        return DiscriminatorOutput(logits, wrong, None, None, c, maps[1:] if features else None)
