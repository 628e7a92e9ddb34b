"""Text encoders: the bundled MiniLM offline, its cache, and the small trainable encoder."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # noqa: E402 - must precede any hub import

import socket

import pytest
import torch

from ganfuse.errors import ConfigError, OfflineError
from ganfuse.text import (
    SentenceEncoder,
    SmallTextEncoder,
    TextFeatures,
    WordTokenizer,
    build_text_encoder,
)
from ganfuse.text.encoders import shapes_vocabulary, split_words

CAPTIONS = [
    "a small red circle in the top left",
    "top-left corner: a tiny red disc",
    "a large blue square in the bottom right",
]


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    # Any attempt to reach the network while loading fails the test.
    def refuse(*args, **kwargs):
        raise AssertionError("the bundled text encoder tried to open a network connection")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        encoder = build_text_encoder("minilm")
    return encoder


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_minilm_loads_offline_and_gives_unit_norm_384d(minilm: SentenceEncoder):
    assert isinstance(minilm, SentenceEncoder)
    assert (minilm.dim, minilm.token_dim, minilm.max_seq_length) == (384, 384, 256)
    features = minilm(CAPTIONS)
    assert isinstance(features, TextFeatures)
    assert features.pooled.shape == (3, 384)
    assert torch.allclose(features.pooled.norm(dim=1), torch.ones(3), atol=1e-5)
    t = features.tokens.shape[1]
    assert features.tokens.shape == (3, t, 384) and features.mask.shape == (3, t)
    assert features.mask.dtype == torch.bool and bool(features.mask.all(dim=1).any())
    lengths = features.mask.sum(dim=1)
    assert lengths.min() < t  # shorter texts are padded...
    row = int(lengths.argmin())
    assert torch.all(features.tokens[row, lengths[row] :] == 0)  # ...with zeros
    assert not features.pooled.requires_grad
    # Same numbers as sentence-transformers' own encode.
    reference = minilm.model.encode(CAPTIONS, convert_to_tensor=True)
    assert torch.allclose(features.pooled, reference, atol=1e-5)
    # The pooled vector is the normalised mean of the token states.
    mean = features.tokens.sum(dim=1) / lengths[:, None]
    assert torch.allclose(torch.nn.functional.normalize(mean, dim=1), features.pooled, atol=1e-5)


@pytest.mark.parametrize(
    ("anchor", "paraphrase", "different"),
    [
        (
            "a small red circle in the top left",
            "there is a red circle, small, at the upper left",
            "a large blue square in the bottom right",
        ),
        ("a big green triangle", "a large green triangle", "a small yellow circle"),
    ],
)
def test_minilm_paraphrases_are_closer_than_different_scenes(
    minilm: SentenceEncoder, anchor: str, paraphrase: str, different: str
):
    pooled = minilm([anchor, paraphrase, different]).pooled
    same, other = _cosine(pooled[0], pooled[1]), _cosine(pooled[0], pooled[2])
    # Measured: 0.94 vs 0.59 and 0.98 vs 0.44.
    assert same > other + 0.25, (same, other)


def test_minilm_cache_serves_repeated_texts_without_the_model(minilm, monkeypatch):
    minilm.clear_cache()
    first = minilm.encode_cached(CAPTIONS + [CAPTIONS[0]])
    assert minilm.cache_size == 3
    assert torch.equal(first.pooled[0], first.pooled[3])

    def fail(texts):
        raise AssertionError(f"model called for cached texts {texts}")

    monkeypatch.setattr(minilm, "_encode", fail)
    again = minilm([CAPTIONS[2], CAPTIONS[0]])
    assert torch.equal(again.pooled, first.pooled[[2, 0]])
    assert torch.equal(again.mask, first.mask[[2, 0], : again.mask.shape[1]])
    assert torch.equal(again.tokens, first.tokens[[2, 0], : again.tokens.shape[1]])


def test_minilm_truncates_long_prompts_with_a_warning(minilm: SentenceEncoder):
    long_prompt = "a red circle " * 200
    with pytest.warns(UserWarning, match="truncated"):
        features = minilm([long_prompt, "a red circle"])
    assert features.tokens.shape[1] == 256
    assert features.mask.sum(dim=1).tolist() == [256, 5]


def test_minilm_rejects_non_list_input(minilm: SentenceEncoder):
    with pytest.raises(ConfigError):
        minilm("a single string")
    with pytest.raises(ConfigError):
        minilm([])


def test_minilm_stays_frozen_in_train_mode(minilm: SentenceEncoder):
    minilm.train()
    try:
        assert not minilm.model.training
        assert not any(p.requires_grad for p in minilm.parameters())
        minilm.clear_cache()
        a = minilm(["a green triangle"]).pooled
        minilm.clear_cache()
        b = minilm(["a green triangle"]).pooled
        assert torch.equal(a, b)  # no dropout
    finally:
        minilm.eval()


def test_minilm_fine_tuning_lets_gradients_through():
    encoder = build_text_encoder("minilm", trainable=True)
    encoder.train()
    features = encoder(CAPTIONS[:2])
    assert features.pooled.requires_grad
    features.pooled[:, 0].sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert encoder.cache_size == 0


def test_unknown_model_name_offline_is_an_offline_error():
    with pytest.raises(OfflineError, match="no-such-model"):
        build_text_encoder("no-such-org/no-such-model")


# --- small encoder ------------------------------------------------------------------------


def test_word_tokenizer_lowercases_splits_and_maps_unknowns():
    assert split_words("A Red-circle, 2x big!") == ["a", "red", "circle", "x", "big"]
    assert split_words("红色的圆") == ["红色的圆"]  # letters of any script form words
    tokenizer = WordTokenizer.from_texts(["red red circle", "blue circle", "red"])
    assert tokenizer.vocab == ["<pad>", "<unk>", "red", "circle", "blue"]
    with pytest.warns(UserWarning, match="1 text"):
        ids, mask = tokenizer.encode(["Red square", "", "blue circle red"], max_length=2)
    assert ids.tolist() == [[2, 1], [1, 0], [4, 3]]
    assert mask.tolist() == [[True, True], [True, False], [True, True]]


def test_shapes_vocabulary_covers_every_caption_word():
    from ganfuse.data.shapes import ShapesDataset

    vocab = set(shapes_vocabulary())
    captions = ShapesDataset("all", num=300, seed=5).captions
    assert {w for c in captions for w in split_words(c)} <= vocab


def test_small_encoder_shapes_and_gradient_flow():
    torch.manual_seed(0)
    encoder = build_text_encoder("small", dim=64, hidden_dim=32, embed_dim=16)
    assert (encoder.dim, encoder.token_dim) == (64, 64)
    features = encoder(CAPTIONS)
    length = max(len(split_words(c)) for c in CAPTIONS)
    assert features.pooled.shape == (3, 64)
    assert features.tokens.shape == (3, length, 64)
    assert features.mask.sum(dim=1).tolist() == [len(split_words(c)) for c in CAPTIONS]
    (features.pooled.square().sum() + features.tokens.sum()).backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("pooling", ["mean", "mean+final"])
def test_small_encoder_ignores_padding(pooling):
    """Also the final states: packing sorts the batch by length, the final states come back in
    the batch's order (the short caption is first here and sorts last)."""
    torch.manual_seed(0)
    encoder = SmallTextEncoder(dim=32, hidden_dim=16, embed_dim=8, pooling=pooling).eval()
    alone = encoder(["a red circle"])
    batched = encoder(["a red circle", "a huge blue square in the bottom right corner"])
    assert torch.allclose(alone.pooled[0], batched.pooled[0], atol=1e-6)
    assert torch.allclose(alone.tokens[0], batched.tokens[0, :3], atol=1e-6)
    assert torch.all(batched.tokens[0, 3:] == 0)


@pytest.mark.parametrize("pooling", ["mean", "mean+final"])
def test_small_encoder_rebuilds_from_config_and_state_dict(tmp_path, pooling):
    import json

    from safetensors.torch import load_file, save_file

    torch.manual_seed(1)
    encoder = SmallTextEncoder.from_texts(
        ["zebra stripes", "a red circle"], dim=16, hidden_dim=8, pooling=pooling
    )
    config_path = tmp_path / "text.json"
    config_path.write_text(json.dumps(encoder.config()))
    save_file(encoder.state_dict(), str(tmp_path / "text.safetensors"))
    rebuilt = build_text_encoder(**json.loads(config_path.read_text()))
    rebuilt.load_state_dict(load_file(str(tmp_path / "text.safetensors")))
    texts = ["zebra circle", "unknown words here"]
    assert rebuilt.tokenizer.vocab == encoder.tokenizer.vocab
    assert torch.equal(rebuilt(texts).pooled, encoder(texts).pooled)


def test_small_encoder_final_states_are_the_grus_last_outputs_each_way():
    """``mean+final`` appends the forward pass's output at the last word and the backward pass's
    at the first (what a GRU's final state is), so the pooled vector is exactly that map."""
    torch.manual_seed(2)
    encoder = SmallTextEncoder(dim=8, hidden_dim=4, embed_dim=4, pooling="mean+final").eval()
    texts = ["a blue square left of a red circle", "a red circle"]
    features = encoder(texts)
    lengths = features.mask.sum(dim=1)
    rows = torch.arange(len(texts))
    forward_last = features.tokens[rows, lengths - 1, :4]
    backward_first = features.tokens[:, 0, 4:]
    mean = features.tokens.sum(dim=1) / lengths[:, None]
    expected = encoder.project(torch.cat([mean, forward_last, backward_first], dim=1))
    assert torch.allclose(features.pooled, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="pooling"):
        SmallTextEncoder(pooling="max")


def test_small_encoder_truncates_with_warning_and_handles_odd_text():
    encoder = SmallTextEncoder(max_length=4, dim=8, hidden_dim=4, embed_dim=4)
    with pytest.warns(UserWarning, match="truncated"):
        features = encoder(["one two three four five six", "", "日本語のテキスト"])
    assert features.tokens.shape[1] == 4
    assert features.mask.sum(dim=1).tolist() == [4, 1, 1]
    assert torch.isfinite(features.pooled).all()
