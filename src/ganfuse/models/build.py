"""Build a generator/discriminator pair from a config."""

from __future__ import annotations

from torch import nn

from ganfuse.config import Config
from ganfuse.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganfuse.models.resnet import ResNetDiscriminator, ResNetGenerator


def build_gan(config: Config, channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Return ``(G, D)``; ``num_classes`` is used only when ``model.conditional`` is set."""
    m = config.model
    classes = num_classes if m.conditional else 0
    if m.arch == "dcgan":
        g = DCGANGenerator(m.z_dim, channels, m.g_width, classes, m.spectral_norm_g)
        d = DCGANDiscriminator(channels, m.d_width, classes, m.spectral_norm_d, m.minibatch_std)
    else:
        size = config.data.image_size
        g = ResNetGenerator(m.z_dim, channels, size, m.g_width, classes, m.spectral_norm_g)
        d = ResNetDiscriminator(channels, size, m.d_width, classes, m.spectral_norm_d)
    return g, d
