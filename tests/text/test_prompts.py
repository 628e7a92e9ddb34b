"""Prompts -> condition tensors: the text embedding cache (hits, races between ranks, bad
entries) and the t2i conditioners built on the text encoders."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from types import SimpleNamespace

import pytest
import torch

from ganfuse.text import cache
from ganfuse.text.encoders import shapes_vocabulary
from ganfuse.text.prompts import PromptEncoder, TextSpec, build_conditioner

CAPTIONS = ["a red circle", "a blue square", "a red circle", "a green triangle, top left"]


def fake_embedding(texts: list[str]) -> torch.Tensor:
    """A deterministic 6-d row per text (seeded by its hash), as a sentence encoder would give."""
    rows = []
    for text in texts:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        rows.append(torch.randn(6, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(rows)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFUSE_CACHE", str(tmp_path))
    return tmp_path / "text"


def test_encode_many_hit_returns_exactly_the_rows_of_the_miss(cache_root, monkeypatch):
    calls: list[list[str]] = []

    def encode_cached(texts):
        calls.append(list(texts))
        return SimpleNamespace(pooled=fake_embedding(texts))

    fake = SimpleNamespace(encode_cached=encode_cached)
    monkeypatch.setattr(PromptEncoder, "sentence_encoder", property(lambda self: fake))
    encoder = PromptEncoder(TextSpec("minilm"))
    miss = encoder.encode_many(CAPTIONS)
    assert calls == [sorted(set(CAPTIONS))]  # each distinct text encoded once
    assert miss.dtype == torch.float32 and miss.shape == (4, 6)
    assert torch.equal(miss, fake_embedding(CAPTIONS))
    assert torch.equal(miss[0], miss[2])
    assert [p.name for p in cache_root.iterdir()] == [cache.cache_file("minilm", CAPTIONS).name]

    hit = encoder.encode_many(CAPTIONS)
    reordered = encoder.encode_many(CAPTIONS[::-1])  # the same set of texts: the same entry
    assert len(calls) == 1
    assert torch.equal(hit, miss)
    assert torch.equal(reordered, miss.flip(0))
    PromptEncoder(TextSpec("other-encoder")).encode_many(CAPTIONS)  # another encoder misses
    assert len(calls) == 2


def test_unreadable_or_foreign_entry_is_recomputed_and_replaced(cache_root):
    path = cache.cache_file("minilm", CAPTIONS)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00 half-written")
    first = cache.cached_embeddings("minilm", CAPTIONS, fake_embedding)
    assert torch.equal(first, fake_embedding(CAPTIONS))

    def fail(texts):
        raise AssertionError(f"encoded {texts} although the entry is complete")

    assert torch.equal(cache.cached_embeddings("minilm", CAPTIONS, fail), first)
    # an entry that holds other texts (a digest collision, a hand-copied file) is not trusted
    other = cache.cache_file("minilm", ["another caption"])
    other.write_bytes(path.read_bytes())
    assert torch.equal(cache.cached_embeddings("minilm", ["another caption"], fake_embedding),
                       fake_embedding(["another caption"]))


def _rank(texts: list[str], out: str) -> None:
    torch.save(cache.cached_embeddings("minilm", texts, fake_embedding), out)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_two_ranks_writing_the_same_entry_at_once_both_succeed(cache_root, tmp_path, monkeypatch):
    """Both ranks miss, both write their temporary file, and only then both rename: with one
    shared temporary name the second rename would find no file (or a torn one)."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2, timeout=60)
    save_file = cache.save_file

    def save_then_wait(tensors, filename, metadata):
        save_file(tensors, filename, metadata=metadata)
        barrier.wait()

    monkeypatch.setattr(cache, "save_file", save_then_wait)
    orders = [CAPTIONS, CAPTIONS[::-1]]
    outs = [str(tmp_path / f"rank{i}.pt") for i in range(2)]
    ranks = [context.Process(target=_rank, args=(o, out)) for o, out in zip(orders, outs, strict=True)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(120)
    assert [rank.exitcode for rank in ranks] == [0, 0]
    for texts, out in zip(orders, outs, strict=True):
        assert torch.equal(torch.load(out), fake_embedding(texts))
    assert [p.name for p in cache_root.iterdir()] == [cache.cache_file("minilm", CAPTIONS).name]
    monkeypatch.setattr(cache, "save_file", save_file)
    hit = cache.cached_embeddings("minilm", CAPTIONS, lambda texts: pytest.fail("cache missed"))
    assert torch.equal(hit, fake_embedding(CAPTIONS))


# --- conditioners -----------------------------------------------------------------------------

TOKENS = TextSpec("small", vocab=shapes_vocabulary(), max_length=16)
PROMPTS = ["a large red circle in the center", "a tiny blue disk, top left", "green"]


def test_token_conditioner_is_the_small_encoder_on_word_ids():
    """The t2i networks and the multimodal models share one GRU encoder: on the prompt encoder's
    word ids the conditioner gives what the encoder gives on the texts, and that is the linear
    map of the mean of the bidirectional GRU's outputs over each text's own words."""
    torch.manual_seed(0)
    conditioner = build_conditioner(TOKENS, 16).eval()
    shapes = {k: tuple(v.shape) for k, v in conditioner.state_dict().items()}
    assert shapes["encoder.embedding.weight"] == (len(TOKENS.vocab) + 2, 64)
    assert shapes["encoder.gru.weight_ih_l0"] == (192, 64)
    assert shapes["encoder.project.weight"] == (16, 128)
    ids = PromptEncoder(TOKENS)(PROMPTS)
    with torch.no_grad():
        c = conditioner(ids)
        assert torch.equal(c, conditioner.encoder(PROMPTS).pooled)
        enc = conditioner.encoder
        for i, row in enumerate(ids):
            words = row[row != 0][None]  # unpadded: padding must not change a text's vector
            expected = enc.project(enc.gru(enc.embedding(words))[0].mean(1))[0]
            assert (c[i] - expected).abs().max() < 1e-6
    with pytest.raises(ValueError, match="word ids"):
        conditioner(ids.float())


def test_embedding_conditioner_standardises_then_maps():
    torch.manual_seed(0)
    conditioner = build_conditioner(TextSpec("minilm", embed_dim=8), 4)
    data = torch.randn(100, 8) * 5 + 3
    conditioner.set_statistics(data)
    expected = conditioner.net((data - data.mean(0)) / data.std(0))
    assert (conditioner(data) - expected).abs().max() < 1e-6
    with pytest.raises(ValueError, match="sentence embeddings"):
        conditioner(torch.ones(2, 8, dtype=torch.int64))
