"""Captioning from partly paired data (multimodal.semi_captioning): the split, what each unpaired
term trains, the caption -> image -> caption cycle on a fixed fake generator, the exported paired
folder, and where ``--paired-fraction`` is refused."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.cli import main
from ganfuse.data.shapes import DEFAULT_HOLDOUT, parse_caption
from ganfuse.errors import ConfigError
from ganfuse.models.captioner import CaptionVocab
from ganfuse.multimodal import captioning
from ganfuse.multimodal.captioning import build_captioner
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.semi_captioning import (
    NoImageContext,
    UnpairedCaptionTerms,
    caption_split,
    cycle_caption_loss,
    cycle_filtered_pseudo_pairs,
    export_paired_folder,
    language_model_loss,
    unpaired_captions,
)
from ganfuse.multimodal.splits import config_split, shapes_split

TINY = ["train_size=200", "eval_size=24", "batch_size=16", "steps=6", "warmup_steps=1",
        "threads=1", "precision=fp32", "decoder_hidden=32", "decoder_embed=16",
        "image_widths=[8,16]", "image_dim=32"]
HELD = set(DEFAULT_HOLDOUT)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_split_is_nested_disjoint_and_holds_no_held_out_pair():
    train = shapes_split("train", 1000, 0, 32)
    splits = {f: caption_split(len(train), f, seed=0) for f in (0.01, 0.1, 1.0)}
    assert [len(s.paired) for s in splits.values()] == [10, 100, 1000]
    small, large = splits[0.01], splits[0.1]
    assert set(small.paired.tolist()) <= set(large.paired.tolist())  # nested
    assert (len(large.unpaired_images), len(large.unpaired_texts)) == (450, 450)
    parts = [large.paired, large.unpaired_images, large.unpaired_texts]
    assert sorted(torch.cat(parts).tolist()) == list(range(1000))  # disjoint and complete
    assert not splits[1.0].has_unpaired
    # the unpaired captions belong to neither a paired image nor an unpaired one
    texts = unpaired_captions(train, large)
    assert texts == [train.captions[i] for i in large.unpaired_texts.tolist()]
    assert all(parse_caption(t).color_shape not in HELD for t in texts)
    assert all(a.color_shape not in HELD for a in train.attributes)


def test_the_exported_paired_folder_holds_the_paired_rows_only(tmp_path):
    config = make_config("caption", None, [*TINY, "paired_fraction=0.05"])
    assert export_paired_folder(config, tmp_path, captions_per_image=3) == 10
    lines = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    train = config_split(config, "train")
    split = caption_split(len(train), 0.05, config.data_seed)
    assert len(lines) == 30 and len({line["file_name"] for line in lines}) == 10
    assert {line["row"] for line in lines} == set(split.paired.tolist())
    for line in lines:  # each text describes its own image
        assert parse_caption(line["text"]) == train.attributes[line["row"]]


def _tiny_captioner(texts: list[str], attention: bool = False):
    config = make_config("caption", None, [*TINY, f"caption_attention={attention}"])
    torch.manual_seed(0)
    return build_captioner(config, CaptionVocab.from_texts(texts))


@pytest.mark.parametrize("attention", [False, True])
def test_the_language_model_term_trains_the_decoder_and_never_the_image_encoder(attention):
    texts = ["a small red circle in the center", "a large blue square at the top left"]
    model = _tiny_captioner(texts, attention)
    context = NoImageContext(model.image_encoder.dim,
                             model.image_encoder.token_dim if attention else None)
    language_model_loss(model, context, texts).backward()
    decoder = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert decoder and sum(float(g.abs().sum()) for g in decoder) > 0
    assert all(p.grad is None or not p.grad.any() for p in model.image_encoder.parameters())
    assert context.pooled.grad is not None and context.pooled.grad.abs().sum() > 0


class FixedImages:
    """A fake text-to-image generator: one fixed image per known caption, whatever the latents,
    and a black one for any other caption; counts its calls and those with unknown captions."""

    def __init__(self, captions: list[str]):
        generator = torch.Generator().manual_seed(5)
        self.table = {c: torch.rand(3, 32, 32, generator=generator) * 2 - 1 for c in captions}
        self.calls = self.calls_with_unknown = 0

    def __call__(self, captions, generator):
        self.calls += 1
        self.calls_with_unknown += any(c not in self.table for c in captions)
        return torch.stack([self.table.get(c, -torch.ones(3, 32, 32)) for c in captions])


def test_the_cycle_term_teaches_the_captioner_to_write_the_caption_of_a_generated_image():
    texts = ["a small red circle in the center", "a large blue square at the top left",
             "a green triangle, small, bottom right"]
    model = _tiny_captioner(texts)
    source = FixedImages(texts)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = cycle_caption_loss(model, source, texts, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20  # measured: 3.16 -> 0.024
    model.eval()
    assert model.caption(torch.stack([source.table[t] for t in texts])) == texts


def test_the_cycle_filter_keeps_the_pseudo_captions_whose_image_comes_back():
    texts = ["a small red circle in the center", "a large blue square at the top left"]
    model = _tiny_captioner(texts)
    source = FixedImages(texts)
    images = torch.stack([source.table[t] for t in texts])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # a captioner that captions these two images right
        loss = cycle_caption_loss(model, source, texts, torch.Generator())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # the second "real" image is another one: its pseudo-caption's image does not come back
    real = torch.stack([images[0], -images[1]])

    def features(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    kept, captions, cosine = cycle_filtered_pseudo_pairs(
        model, source, real, 0.9, torch.Generator(), features
    )
    assert cosine[0] == pytest.approx(1.0, abs=1e-5)
    assert kept.tolist() == [0] and captions == [texts[0]]


def test_a_partly_paired_run_trains_on_paired_rows_and_records_the_split(tmp_path, monkeypatch):
    rows: list[int] = []
    encode = captioning._ShapesTargets.encode

    def spy(targets, index):
        rows.extend(index)
        return encode(targets, index)

    monkeypatch.setattr(captioning._ShapesTargets, "encode", spy)
    config = make_config("caption", None, [*TINY, "paired_fraction=0.1", "lm_weight=1",
                                           "cycle_weight=1", "pseudo_weight=1", "pseudo_every=3",
                                           "pseudo_threshold=-1", "cycle_run=unused"])
    train = config_split(config, "train")
    split = caption_split(len(train), 0.1, config.data_seed)
    source = FixedImages(unpaired_captions(train, split))
    result = captioning.train_captioner(config, tmp_path / "run", progress=False,
                                        image_source=source)
    assert result.steps == 6
    assert source.calls == 6 + 1  # one cycle batch per step, one pseudo-pair mining
    # the cycle batches hold unpaired captions only; the mining's are the captioner's own
    assert source.calls_with_unknown <= 1
    assert len(rows) == 6 * 16 and set(rows) <= set(split.paired.tolist())
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    unpaired = record["unpaired"]
    assert (unpaired["paired_images"], unpaired["unpaired_images"]) == (20, 90)
    assert unpaired["unpaired_captions"] == 90
    assert unpaired["pseudo_minings"] == 1  # at step 3 of 6
    assert unpaired["pseudo_kept_share"] == 1.0  # threshold -1 keeps every captioned image


def test_unpaired_terms_without_a_generator_say_what_to_give():
    with pytest.raises(ConfigError, match="cycle_run must name a text-to-image run"):
        make_config("caption", None, [*TINY, "paired_fraction=0.1", "cycle_weight=1"])
    config = make_config("caption", None, [*TINY, "paired_fraction=0.1", "lm_weight=1"])
    train = config_split(config, "train")
    model = build_captioner(config, CaptionVocab.from_texts(train.captions))
    terms = UnpairedCaptionTerms(config, train, caption_split(len(train), 0.1, 0), model)
    assert terms.active and terms.source is None and len(terms.parameters()) == 1


def test_paired_fraction_is_refused_where_unsupported(capsys):
    with pytest.raises(ConfigError, match="paired_fraction must be 1 on world=emoji"):
        make_config("caption", None, ["world=emoji", "paired_fraction=0.1"])
    with pytest.raises(ConfigError, match="caption runs on world=shapes only"):
        make_config("caption", None, ["world=scenes", "paired_fraction=0.1"])
    with pytest.raises(ConfigError, match="lm_weight applies to task caption only"):
        make_config("zeroshot", None, ["lm_weight=1"])
    train = ["fuse", "train", "--out", "x", "--paired-fraction"]
    assert main([*train, "0.5", "--task", "matching"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--paired-fraction applies to --task zeroshot or caption only" in err[0]
    assert main([*train, "0.5", "--task", "caption", "--set", "world=emoji"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "paired_fraction must be 1 on world=emoji" in err[0]
