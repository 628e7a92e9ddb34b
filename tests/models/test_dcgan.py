import torch

from ganfuse.models.dcgan import DCGANDiscriminator, DCGANGenerator


def test_generator_follows_the_founding_document():
    g = DCGANGenerator(z_dim=100, channels=1)
    # Dense 100 -> 4*4*256, then three 5x5 stride-2 transposed convolutions 256 -> 128 -> 64 -> 1
    assert tuple(g.fc.weight.shape) == (4 * 4 * 256, 100)
    assert tuple(g.up1.weight.shape) == (256, 128, 5, 5)
    assert tuple(g.up2.weight.shape) == (128, 64, 5, 5)
    assert tuple(g.up3.weight.shape) == (64, 1, 5, 5)
    assert g.up1.stride == (2, 2)


def test_generator_output_shape_and_range():
    torch.manual_seed(0)
    for channels in (1, 3):
        g = DCGANGenerator(channels=channels)
        out = g(torch.randn(5, 100) * 10)  # large inputs still land in [-1, 1] through tanh
        assert out.shape == (5, channels, 32, 32)
        assert out.min() >= -1 and out.max() <= 1
        assert out.abs().max() > 0.5  # not a degenerate constant


def test_discriminator_follows_the_founding_document():
    d = DCGANDiscriminator(channels=3)
    assert tuple(d.conv1.weight.shape) == (64, 3, 5, 5)
    assert tuple(d.conv2.weight.shape) == (128, 64, 5, 5)
    assert tuple(d.conv3.weight.shape) == (256, 128, 5, 5)
    assert isinstance(d.norm2, torch.nn.BatchNorm2d) and isinstance(d.norm3, torch.nn.BatchNorm2d)
    assert tuple(d.head.linear.weight.shape) == (1, 256 * 4 * 4)  # flatten -> 1 logit


def test_discriminator_returns_unbounded_logits():
    torch.manual_seed(0)
    d = DCGANDiscriminator(channels=1)
    logits = d(torch.randn(7, 1, 32, 32)).logits
    assert logits.shape == (7,)
    # logits, not probabilities: the sigmoid lives inside BCEWithLogits
    d.head.linear.bias.data.fill_(5.0)
    assert d(torch.randn(7, 1, 32, 32)).logits.min() > 1.0


def test_conditional_networks_use_labels():
    torch.manual_seed(0)
    g = DCGANGenerator(channels=1, num_classes=10)
    d = DCGANDiscriminator(channels=1, num_classes=10)
    g.eval()
    for m in g.modules():  # give each class a distinct scale so the labels matter
        if hasattr(m, "scale") and isinstance(m.scale, torch.nn.Embedding):
            torch.nn.init.normal_(m.scale.weight, 1.0, 0.5)
    z = torch.randn(4, 100)
    a = g(z, torch.zeros(4, dtype=torch.long))
    b = g(z, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(a, b)
    torch.nn.init.normal_(d.head.embed.weight)
    x = torch.randn(4, 1, 32, 32)
    assert not torch.allclose(d(x, torch.zeros(4, dtype=torch.long)).logits, d(x, torch.ones(4, dtype=torch.long)).logits)


def test_minibatch_stddev_sees_collapse():
    from ganfuse.models.dcgan import minibatch_stddev

    same = torch.randn(1, 3, 4, 4).expand(8, 3, 4, 4).contiguous()
    assert minibatch_stddev(same).abs().max() < 1e-3  # a collapsed batch has (almost) no spread
    varied = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = minibatch_stddev(varied)
    assert out.shape == (8, 1, 4, 4) and out.min() > 0.3
    # by hand for the first group (samples 0, 2, 4, 6 with group 4 and batch 8)
    expected = varied[0::2].var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
    assert torch.allclose(out[0, 0, 0, 0], expected, atol=1e-6)


def test_the_32px_networks_keep_their_parameter_names():
    # checkpoints and exports of 32-px runs name these tensors; the 64-px option must not rename them
    g = DCGANGenerator(z_dim=100, channels=1, num_classes=10)
    assert [k for k in g.state_dict() if k.endswith("weight")] == [
        "fc.weight", "up1.weight", "norm1.norm.scale.weight", "norm1.norm.shift.weight", "up2.weight",
        "norm2.norm.scale.weight", "norm2.norm.shift.weight", "up3.weight"]
    d = DCGANDiscriminator(channels=1)
    assert [k for k in d.state_dict() if k.endswith("weight")] == [
        "conv1.weight", "conv2.weight", "norm2.weight", "conv3.weight", "norm3.weight", "head.linear.weight"]


def test_64px_networks_add_one_layer_each():
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=100, channels=3, width=256, image_size=64)
    # 4 -> 8 -> 16 -> 32 -> 64: widths 256 -> 128 -> 64 -> 32 -> 3
    assert [tuple(getattr(g, f"up{i}").weight.shape[:2]) for i in range(1, 5)] == [(256, 128), (128, 64), (64, 32), (32, 3)]
    assert not hasattr(g, "up5")
    images = g(torch.randn(3, 100))
    assert images.shape == (3, 3, 64, 64) and images.abs().max() <= 1
    d = DCGANDiscriminator(channels=3, width=32, image_size=64)
    assert [tuple(getattr(d, f"conv{i}").weight.shape[:2]) for i in range(1, 5)] == [(32, 3), (64, 32), (128, 64), (256, 128)]
    assert d.features(images).shape == (3, 256 * 4 * 4)  # back to a 4x4 map, 8W channels
    assert d(images).logits.shape == (3,)


def test_other_image_sizes_are_refused():
    import pytest

    with pytest.raises(ValueError, match="32 or 64 px"):
        DCGANGenerator(image_size=128)
