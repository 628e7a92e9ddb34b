"""Text-to-image networks: shapes, gradient flow into the text path, conditioning that matters."""

from __future__ import annotations

import pytest
import torch

from ganfuse.config import load_config
from ganfuse.errors import ConfigError
from ganfuse.models.build import build_t2i
from ganfuse.models.discriminator import DiscriminatorOutput, TextDiscriminator
from ganfuse.models.t2i import upsample2x
from ganfuse.text.encoders import shapes_vocabulary
from ganfuse.text.prompts import PromptEncoder, PromptError, TextSpec

EMBED = TextSpec("minilm", embed_dim=24)
TOKENS = TextSpec("small", vocab=shapes_vocabulary(), max_length=16)


def conditions(spec: TextSpec, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if spec.kind == "tokens":
        return torch.randint(2, len(spec.vocab) + 2, (n, 7), generator=gen)
    return torch.randn(n, spec.embed_dim, generator=gen)


def tiny(arch: str = "t2i-dfgan", size: int = 32, **text) -> object:
    if arch == "t2i-concat":  # the baseline has no embedding heads for the preset's contrastive term
        text.setdefault("contrastive_weight", 0.0)
    overrides = [f"model.arch={arch}", "model.z_dim=8", "model.g_width=32", "model.d_width=8",
                 "text.cond_dim=16", f"data.image_size={size}", "data.name=shapes", "train.loss=hinge"]
    return load_config("shapes-t2i", overrides + [f"text.{k}={v}" for k, v in text.items()])


@pytest.mark.parametrize("spec", [EMBED, TOKENS], ids=["embedding", "tokens"])
@pytest.mark.parametrize("arch,size", [("t2i-dfgan", 32), ("t2i-dfgan", 64), ("t2i-concat", 32)])
def test_shapes_and_gradients_reach_the_text_path(spec, arch, size):
    torch.manual_seed(0)
    g, d = build_t2i(tiny(arch, size), spec)
    z, cond = torch.randn(4, 8), conditions(spec, 4)
    images = g(z, cond)
    assert images.shape == (4, 3, size, size)
    with torch.no_grad():
        bounded = g.eval()(z, cond)
    g.train()
    assert bounded.min() >= -1 and bounded.max() <= 1
    logits = d(images, cond).logits
    assert logits.shape == (4,)
    out = d(images, cond, mismatch=cond.roll(1, 0))
    assert isinstance(out, DiscriminatorOutput) and out.mismatch.shape == (4,)
    (logits.sum() + out.mismatch.sum() + images.square().sum()).backward()
    # the learned text path of both networks receives gradient: the condition is not ignored.
    # DF-GAN's modulation starts as the identity (zero last layers), so in G the gradient first
    # reaches the layers that read the text; after one update it reaches the text encoder too.
    assert text_grad(d) > 0
    if arch == "t2i-dfgan":
        assert sum(float(b.fuse1.gamma[2].weight.grad.abs().sum()) for b in g.blocks) > 0
        torch.optim.SGD(g.parameters(), lr=1e-4).step()
        g.zero_grad()
        g(z, cond).square().sum().backward()
    assert text_grad(g) > 0


def text_grad(net) -> float:
    return sum(float(p.grad.abs().sum()) for p in net.text.parameters() if p.grad is not None)


@pytest.mark.parametrize("fusion", ["every", "input"])
@pytest.mark.parametrize("condition", ["concat", "projection", "both"])
def test_text_changes_the_output_in_every_ablation(fusion, condition):
    torch.manual_seed(1)
    g, d = build_t2i(tiny(fusion=fusion, d_condition=condition), EMBED)
    # perturb the zero-initialised modulation so the text acts from the first forward pass
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z = torch.randn(3, 8)
    a, b = conditions(EMBED, 3, 0), conditions(EMBED, 3, 1)
    assert (g(z, a) - g(z, b)).abs().max() > 1e-4
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert (d(x, a).logits - d(x, b).logits).abs().max() > 1e-6


def test_dfgan_generator_fuses_text_in_every_block_only_when_asked():
    every, _ = build_t2i(tiny(fusion="every"), EMBED)
    only_input, _ = build_t2i(tiny(fusion="input"), EMBED)
    cond_dim, z_dim = 16, 8
    assert all(b.fuse1.gamma[0].in_features == cond_dim + z_dim for b in every.blocks)
    assert all(b.fuse1.gamma[0].in_features == z_dim for b in only_input.blocks)
    assert only_input.fc.in_features == every.fc.in_features == z_dim + cond_dim


def test_contrastive_heads_exist_only_when_used():
    _, plain = build_t2i(tiny(contrastive_weight=0.0), EMBED)
    _, con = build_t2i(tiny(contrastive_weight=0.5), EMBED)
    assert plain.image_embed is None
    x, cond = torch.rand(5, 3, 32, 32), conditions(EMBED, 5)
    out = con(x, cond, embed=True)
    assert out.image_embedding.shape == out.text_embedding.shape == (5, 16)
    assert torch.allclose(out.image_embedding.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ConfigError, match="no embedding heads"):
        plain(x, cond, embed=True)


@pytest.mark.parametrize("arch", ["t2i-dfgan", "t2i-concat"])
def test_every_text_discriminator_takes_the_same_keywords(arch):
    """One contract for every text discriminator: the same keywords, one output type; a missing
    capability is a clear error, never a TypeError about an unexpected keyword."""
    _, d = build_t2i(tiny(arch, contrastive_weight=0.0), EMBED)
    assert isinstance(d, TextDiscriminator) and not d.has_embedding
    d.eval()  # spectral norm's power iteration would change D between the two calls
    x, cond = torch.rand(4, 3, 32, 32), conditions(EMBED, 4)
    out = d(x, cond, mismatch=cond.roll(1, 0), embed=False, features=True, negatives=None)
    assert isinstance(out, DiscriminatorOutput)
    assert out.logits.shape == out.mismatch.shape == (4,) and out.text.shape == (4, 16)
    assert len(out.features) >= 2 and out.image_embedding is None
    # the same images with their own texts score what the plain call scores
    assert torch.allclose(d(x, cond).logits, out.logits)
    with pytest.raises(ConfigError, match="contrastive"):
        d(x, cond, negatives=conditions(EMBED, 3))


def test_upsample_matches_nearest_interpolation():
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(upsample2x(x), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


def test_embedding_standardisation_is_saved_with_the_weights():
    g, _ = build_t2i(tiny(), EMBED)
    g.text.set_statistics(torch.randn(50, 24) * 3 + 1)
    state = g.state_dict()
    assert "text.mean" in state and "text.std" in state
    g2, _ = build_t2i(tiny(), EMBED)
    g2.load_state_dict(state)
    z, cond = torch.randn(2, 8), conditions(EMBED, 2)
    assert torch.equal(g(z, cond), g2(z, cond))


def test_a_wrong_kind_of_condition_is_refused():
    g, _ = build_t2i(tiny(), EMBED)
    with pytest.raises(ValueError, match="sentence embeddings"):
        g(torch.randn(2, 8), torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="condition"):
        g(torch.randn(2, 8), None)


def test_t2i_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="text.fusion"):
        tiny(fusion="sometimes")
    with pytest.raises(ConfigError, match="text.d_condition"):
        tiny(d_condition="sum")
    with pytest.raises(ConfigError, match="data.name"):
        load_config("shapes-t2i", ["data.name=digits"])


def test_small_prompt_encoder_handles_bad_prompts():
    enc = PromptEncoder(TOKENS)
    ids = enc(["a large red circle in the center", "a small blue disc"])
    assert ids.dtype == torch.int64 and ids.shape[0] == 2 and bool((ids[0] > 1).all())
    for bad in ([""], ["   "], [], "a red circle", [3]):
        with pytest.raises(PromptError):
            enc(bad)
    with pytest.warns(UserWarning, match="truncated"):
        long = enc(["red " * 100])
    assert long.shape[1] == TOKENS.max_length
    with pytest.warns(UserWarning, match="no word"):
        enc(["красный круг в центре"])  # Cyrillic: words split fine, none known
