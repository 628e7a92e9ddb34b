"""The founding document's DCGAN (section 4.1), translated from its Keras sketch to PyTorch.

Fixed where the sketch is broken: the discriminator's missing ``Flatten`` import, and its sigmoid
output, which becomes a raw logit for ``BCEWithLogitsLoss`` (numerically stable). Keras'
``padding='same'`` with stride 2 and kernel 5 is ``padding=2`` (plus ``output_padding=1`` for the
transposed convolution), so each layer exactly halves or doubles the resolution.

Optional class conditioning (conditional BN in G, projection in D) and spectral normalisation are
additions for the quality recipes; with their defaults the networks are exactly the document's.
"""

from __future__ import annotations

import torch
from torch import nn

from ganfuse.models.conditioning import Norm2d, ProjectionHead
from ganfuse.models.discriminator import DiscriminatorOutput
from ganfuse.models.layers import maybe_spectral_norm


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Karras et al. 2018: ``(B, C, H, W) -> (B, 1, H, W)``, the feature standard deviation across
    groups of ``group`` samples, averaged over features. A collapsed generator produces batches with
    near-zero spread, which D can then see and punish."""
    b, c, hh, ww = h.shape
    g = min(group, b)
    while b % g:
        g -= 1
    y = h.float().view(g, b // g, c, hh, ww)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/g,)
    return y.repeat(g).view(b, 1, 1, 1).expand(b, 1, hh, ww).to(h.dtype)


def dcgan_init_(module: nn.Module) -> None:
    """Radford et al.'s initialisation: conv and linear weights ~ N(0, 0.02), BN (and GroupNorm)
    scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = getattr(m, "weight_orig", m.weight)
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


DCGAN_SIZES = (32, 64)  # the image sizes the DCGAN networks produce and read


def upsampling_layers(image_size: int) -> int:
    """The number of stride-2 layers from 4x4 to ``image_size`` (3 at 32 px, 4 at 64 px)."""
    if image_size not in DCGAN_SIZES:
        raise ValueError(f"the DCGAN networks are {' or '.join(map(str, DCGAN_SIZES))} px, not {image_size}")
    return DCGAN_SIZES.index(image_size) + 3


class DCGANGenerator(nn.Module):
    """``z (B, z_dim)`` [, ``y (B,)``] -> images ``(B, channels, S, S)`` in [-1, 1], S in {32, 64}.

    Dense 4*4*W + ReLU -> reshape -> ConvT 5x5/2 to W/2 (BN, LeakyReLU) -> W/4 (BN, LeakyReLU)
    -> ``channels``, tanh. The document uses ``W = 256`` at 32 px. At 64 px one more ConvT layer
    (to W/8, BN, LeakyReLU) comes before the last, as Radford et al.'s 64x64 network has one more
    layer than their 32x32 one; the 32-px layer names (``up1``..``up3``) are unchanged.
    """

    def __init__(self, z_dim: int = 100, channels: int = 1, width: int = 256, num_classes: int = 0,
                 use_spectral_norm: bool = False, image_size: int = 32):
        super().__init__()
        self.z_dim, self.channels, self.width, self.num_classes = z_dim, channels, width, num_classes
        self.image_size = image_size
        self.layers = upsampling_layers(image_size)
        sn = use_spectral_norm
        self.fc = maybe_spectral_norm(nn.Linear(z_dim, 4 * 4 * width), sn)
        cin = width
        for i in range(1, self.layers):  # up1, norm1, up2, norm2 [, up3, norm3]
            setattr(self, f"up{i}", maybe_spectral_norm(
                nn.ConvTranspose2d(cin, cin // 2, 5, 2, padding=2, output_padding=1), sn))
            setattr(self, f"norm{i}", Norm2d(cin // 2, num_classes))
            cin //= 2
        setattr(self, f"up{self.layers}", maybe_spectral_norm(
            nn.ConvTranspose2d(cin, channels, 5, 2, padding=2, output_padding=1), sn))
        self.act = nn.LeakyReLU(0.2)  # Keras' LeakyReLU default slope is 0.3; DCGAN's paper uses 0.2
        dcgan_init_(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.fc(z)).view(-1, self.width, 4, 4)
        for i in range(1, self.layers):
            h = self.act(getattr(self, f"norm{i}")(getattr(self, f"up{i}")(h), y))
        return torch.tanh(getattr(self, f"up{self.layers}")(h))


D_NORMS = ("batch", "group")  # the normalisations of the DCGAN discriminator (``model.d_norm``)
MAX_GROUPS = 32  # GroupNorm groups at most (Wu & He 2018's default)


def group_count(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The largest divisor of ``channels`` that is at most ``max_groups`` (GroupNorm needs a divisor)."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def discriminator_norm(kind: str, channels: int) -> nn.Module:
    """``"batch"``: BatchNorm2d (the document's); ``"group"``: GroupNorm, which normalises each
    image on its own, so one image's output never depends on the others of its batch (what
    per-example gradients, and so differentially private training, need)."""
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown discriminator normalisation {kind!r}; choose one of {', '.join(D_NORMS)}")


class DCGANDiscriminator(nn.Module):
    """images ``(B, channels, S, S)`` [, ``y (B,)``] -> logits ``(B,)``, S in {32, 64}.

    Conv 5x5/2 W (LeakyReLU) -> 2W (norm, LeakyReLU) -> 4W (norm, LeakyReLU) -> flatten -> 1 logit.
    The document uses ``W = 64`` and BatchNorm at 32 px; at 64 px one more layer (8W, norm,
    LeakyReLU) brings the map to 4x4 again. ``norm="group"`` puts GroupNorm in BatchNorm's place.
    With spectral norm, the normalisation is dropped (SN replaces it as D's Lipschitz control, as
    in Miyato et al. 2018).
    """

    def __init__(self, channels: int = 1, width: int = 64, num_classes: int = 0,
                 use_spectral_norm: bool = False, minibatch_std: bool = False, norm: str = "batch",
                 image_size: int = 32, aux_classifier: bool = False):
        super().__init__()
        sn = use_spectral_norm
        self.minibatch_std = minibatch_std
        self.layers = upsampling_layers(image_size)
        self.conv1 = maybe_spectral_norm(nn.Conv2d(channels, width, 5, 2, padding=2), sn)
        cout = width
        for i in range(2, self.layers + 1):  # conv2, norm2, conv3, norm3 [, conv4, norm4]
            setattr(self, f"conv{i}", maybe_spectral_norm(nn.Conv2d(cout, cout * 2, 5, 2, padding=2), sn))
            setattr(self, f"norm{i}", nn.Identity() if sn else discriminator_norm(norm, cout * 2))
            cout *= 2
        self.act = nn.LeakyReLU(0.2)
        self.head = ProjectionHead(cout * 4 * 4 + (16 if minibatch_std else 0), num_classes, sn, aux_classifier)
        dcgan_init_(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened last feature map ``(B, C * 4 * 4)``, C = 4W at 32 px, 8W at 64 px."""
        h = self.act(self.conv1(x))
        for i in range(2, self.layers + 1):
            h = self.act(getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(h)))
        if self.minibatch_std:
            h = torch.cat([h, minibatch_stddev(h)], dim=1)
        return h.flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiscriminatorOutput:
        h = self.features(x)
        return DiscriminatorOutput(self.head(h, y), class_logits=self.head.classify(h))
