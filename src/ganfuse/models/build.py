"""Build a generator/discriminator pair from a config."""

from __future__ import annotations

from torch import nn

from ganfuse.config import Config
from ganfuse.data.scenes import ATTRIBUTE_VALUES
from ganfuse.errors import ConfigError
from ganfuse.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganfuse.models.resnet import ResNetDiscriminator, ResNetGenerator
from ganfuse.models.t2i import (
    T2I_ARCHS,
    ConcatDiscriminator,
    ConcatGenerator,
    FusionGenerator,
    MatchingDiscriminator,
)
from ganfuse.models.t2i_words import SlotGenerator, WordDiscriminator
from ganfuse.text.prompts import TextSpec


def build_gan(config: Config, channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Return ``(G, D)``; ``num_classes`` is used only when ``model.conditional`` is set."""
    m = config.model
    classes = num_classes if m.conditional else 0
    size = config.data.image_size
    aux = classes > 0 and config.train.aux_class_weight > 0  # AC-GAN's classifier on D's features
    if m.arch == "dcgan":
        g = DCGANGenerator(m.z_dim, channels, m.g_width, classes, m.spectral_norm_g, size)
        d = DCGANDiscriminator(channels, m.d_width, classes, m.spectral_norm_d, m.minibatch_std, m.d_norm, size,
                               aux_classifier=aux)
    else:
        g = ResNetGenerator(m.z_dim, channels, size, m.g_width, classes, m.spectral_norm_g)
        d = ResNetDiscriminator(channels, size, m.d_width, classes, m.spectral_norm_d, aux_classifier=aux)
    return g, d


def build_t2i(config, spec: TextSpec, channels: int = 3) -> tuple[nn.Module, nn.Module]:
    """``(G, D)`` for a config whose ``model.arch`` is one of :data:`T2I_ARCHS`."""
    m, t, size = config.model, config.text, config.data.image_size
    if m.arch == "t2i-dfgan":
        g = FusionGenerator(spec, m.z_dim, size, m.g_width, t.cond_dim, t.fusion, channels)
        embed_dim = t.cond_dim if t.contrastive_weight > 0 else 0
        d = MatchingDiscriminator(spec, size, m.d_width, t.cond_dim, t.d_condition, embed_dim, channels,
                                  m.spectral_norm_d)
    elif m.arch == "t2i-concat":
        g = ConcatGenerator(spec, m.z_dim, size, m.g_width, t.cond_dim, channels)
        d = ConcatDiscriminator(spec, size, m.d_width, t.cond_dim, channels)
    elif m.arch == "t2i-words":
        g = SlotGenerator(spec, m.z_dim, size, m.g_width, t.cond_dim, t.slots, channels=channels,
                          mask=m.slot_mask, sprite_gain=m.sprite_gain, mask_resolution=m.mask_resolution,
                          separate=m.slot_separation, shape_from_words=m.shape_from_words,
                          relations=m.slot_relations, in_canvas=m.slot_in_canvas, reach=m.slot_reach,
                          presence=m.slot_presence, outline_supervised=m.outline_supervised,
                          relation_reads_words=m.relation_reads_words)
        # scenes with text.object_weight: an object head over colours, shapes and sizes
        classes = tuple(len(values) for _, values in ATTRIBUTE_VALUES) if t.object_weight > 0 else ()
        # with text.layout_weight: a layout head over colours and shapes (and centres)
        layout = tuple(len(values) for _, values in ATTRIBUTE_VALUES[:2]) if t.layout_weight > 0 else ()
        d = WordDiscriminator(spec, size, m.d_width, t.cond_dim, channels, m.spectral_norm_d,
                              object_classes=classes, layout_classes=layout)
    else:
        raise ConfigError(f"model.arch {m.arch!r} is not a text-to-image architecture ({', '.join(T2I_ARCHS)})")
    return g, d


def text_spec_from_config(config) -> TextSpec:
    """The :class:`TextSpec` a config describes (``text.embed_dim`` is filled in by training)."""
    t = config.text
    return TextSpec(t.encoder, t.embed_dim, list(t.vocab), t.max_words)
