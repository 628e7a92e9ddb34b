"""Word-level text-to-image on ``scenes`` (``model.arch: t2i-words``): the networks read words
through attention, padding takes no part, bindings change the condition, the training pairs
and binding swaps are right."""

from __future__ import annotations

import warnings

import pytest
import torch

from ganfuse.config import load_config
from ganfuse.data import scenes
from ganfuse.data.scenes import ScenesDataset, parse_caption
from ganfuse.errors import ConfigError
from ganfuse.metrics.scene_negatives import caption_words
from ganfuse.metrics.scenes import score_caption
from ganfuse.models.t2i_words import SlotGenerator, WordDiscriminator, masked_attention
from ganfuse.text.encoders import WordTokenizer, scenes_vocabulary
from ganfuse.text.prompts import PromptEncoder, TextSpec
from ganfuse.train.objectives import SwapTable, binding_swaps, scene_t2i_pairs

SPEC = TextSpec("small", 0, scenes_vocabulary(), 32)
# a scenes-t2i run small enough for a test (the steps, sampling and checkpoints are each test's)
TINY_SCENES_T2I = ["train.precision=fp32", "train.batch_size=8", "model.g_width=16", "model.d_width=8",
                   "model.z_dim=12", "text.cond_dim=16", "train.log_every=1"]


def ids_of(*texts: str, length: int = 32) -> torch.Tensor:
    ids, _ = WordTokenizer(SPEC.vocab).encode(list(texts), length)
    return torch.nn.functional.pad(ids, (0, length - ids.shape[1]))


def tiny_generator(seed: int = 0) -> SlotGenerator:
    torch.manual_seed(seed)
    return SlotGenerator(SPEC, z_dim=8, image_size=64, width=32, cond_dim=32).eval()


def test_masked_attention_ignores_padding_keys_and_values():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, generator=gen), torch.randn(2, 5, 8, generator=gen),
               torch.randn(2, 5, 8, generator=gen))
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    out = masked_attention(q, k, v, mask, heads=2)
    k2, v2 = k.clone(), v.clone()
    k2[~mask] = 100.0
    v2[~mask] = -100.0
    assert torch.allclose(masked_attention(q, k2, v2, mask, heads=2), out, atol=1e-6)
    # with one key left, every query returns exactly that key's value
    assert torch.allclose(out[1], v[1, 0].expand(3, 8), atol=1e-6)


def test_padding_length_does_not_change_the_image():
    g = tiny_generator()
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    texts = ("a red circle to the left of a blue star", "a small green square")
    with torch.no_grad():
        short, long = g(z, ids_of(*texts, length=12)), g(z, ids_of(*texts, length=32))
    assert torch.allclose(short, long, atol=1e-5)


def test_swapping_bindings_changes_the_condition_and_the_image():
    g = tiny_generator()
    d = WordDiscriminator(SPEC, 64, 8, 32).eval()
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(2))
    a, b = ids_of("a red circle and a blue square"), ids_of("a blue circle and a red square")
    with torch.no_grad():
        slots_a, slots_b = g.slot_states(z, a), g.slot_states(z, b)
        assert (slots_a - slots_b).abs().max() > 1e-3
        assert (g(z, a) - g(z, b)).abs().max() > 1e-4
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        assert abs(float(d(x, a).logits - d(x, b).logits)) > 1e-5


@pytest.mark.parametrize("mask", ["sprite", "mlp+sprite"])
def test_a_sprite_mask_starts_as_the_same_round_blob_as_the_mlp_mask(mask):
    mlp = tiny_generator()
    torch.manual_seed(0)
    sprite = SlotGenerator(SPEC, z_dim=8, image_size=64, width=32, cond_dim=32, mask=mask).eval()
    shared = {k: v for k, v in mlp.state_dict().items() if k in sprite.state_dict()}
    missing, _ = sprite.load_state_dict(shared, strict=False)
    assert missing == ["sprite.0.weight", "sprite.0.bias", "sprite.1.weight", "sprite.1.bias"]
    z, ids = torch.randn(3, 8), ids_of("a red circle and a blue star", "a green square", "a white star")
    with torch.no_grad():
        torch.testing.assert_close(sprite(z, ids), mlp(z, ids))
        # a sprite cell moves the mask only near its place: lower one cell and only pixels whose
        # offset from a slot's centre falls near that cell change
        sprite.sprite[1].bias[12 * 24 + 6] = -10.0  # a cell near offset (-2, 0): a notch in each blob
        changed = (sprite(z, ids) - mlp(z, ids)).abs().amax(1) > 1e-4
    assert 0 < changed.float().mean() < 0.05


def test_noise_moves_the_objects():
    g = tiny_generator()
    ids = ids_of("a red circle and a blue square").expand(16, -1)
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        centres, scales, gates = g.layout(z, ids)
    assert centres.shape == (16, 4, 2) and scales.shape == gates.shape == (16, 4)
    assert float(centres.std(0).mean()) > 0.01  # the noise places objects differently
    assert bool(((gates > 0) & (gates < 1)).all())


def test_training_pairs_name_every_object():
    data = ScenesDataset("train", num=200)
    pairs = scene_t2i_pairs(data.graphs, data.captions)
    assert len(pairs) > 200  # the relation captions of two-object scenes come on top
    for i, text in pairs:
        description = parse_caption(text)
        assert description.kind in ("list", "relation", "single")  # a one-object list reads as single
        assert len(description.objects) == len(data.graphs[i].objects)
        assert score_caption(description, data.graphs[i]).correct


def test_binding_swaps_are_false_share_the_words_and_avoid_held_out_pairs():
    data = ScenesDataset("train", num=200)
    pairs = scene_t2i_pairs(data.graphs, data.captions)
    captions, graphs = [t for _, t in pairs], [data.graphs[i] for i, _ in pairs]
    swaps = binding_swaps(captions, graphs, data.holdout, seed=0)
    assert len(swaps) > 100
    held = {f"{c} {s}" for c, s in scenes.DEFAULT_HOLDOUT}
    for text, graph in zip(captions, graphs, strict=True):
        if text not in swaps:
            continue
        swap = swaps[text]
        assert caption_words(text) == caption_words(swap) and swap != text
        assert not score_caption(swap, graph).correct
        assert not any(f"{o.color} {o.shape}" in held for o in parse_caption(swap).objects)


def test_swap_table_finds_each_rows_swap_and_passes_unknown_rows_through():
    rows = ids_of("a red circle and a blue square", "a green star left of a white disc", "a cyan box")
    swaps = ids_of("a blue circle and a red square", "a white star left of a green disc", "a cyan box")
    table = SwapTable(rows[:2], swaps[:2])
    batch = rows[[1, 2, 0, 1]]
    out, found = table.lookup(batch)
    assert found.tolist() == [True, False, True, True]
    assert torch.equal(out, torch.stack([swaps[1], rows[2], swaps[0], swaps[1]]))


def test_unknown_words_in_a_prompt_warn_and_do_not_crash():
    encoder = PromptEncoder(SPEC)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = encoder(["a purple circle and a blue square"])
    assert ids.shape[0] == 1
    assert any("'purple'" in str(w.message) for w in caught)


@pytest.mark.parametrize(("data", "model", "text", "key"), [
    ("scenes", "{arch: t2i-words}", "{encoder: minilm}", "text.encoder"),  # word attention needs words
    ("scenes", "{arch: t2i-words, slot_mask: sprites}", "{encoder: small}", "model.slot_mask"),
    ("shapes", "{arch: t2i-dfgan}", "{encoder: small, object_weight: 1.0}", "text.object_weight"),
])
def test_config_names_the_key_a_word_level_setting_breaks(tmp_path, data, model, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{name: {data}, image_size: 64}}\nmodel: {model}\ntext: {text}\n"
                    "train: {loss: hinge}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(str(path))


def test_a_tiny_scenes_run_monitors_generates_and_evaluates_from_the_cli(tmp_path, monkeypatch, capsys):
    import json

    import ganfuse
    from ganfuse.cli import main

    monkeypatch.setitem(scenes.DEFAULT_SPLIT_SIZES, "train", 64)
    config = load_config("scenes-t2i", TINY_SCENES_T2I + [
        "train.steps=2", "train.sample_every=2", "train.checkpoint_every=2", "train.eval_every=2",
        "train.eval_num=8"])
    out = ganfuse.train(config, out=tmp_path / "run", progress=False)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("seen_count", "seen_binding", "seen_relation", "heldout_correct"):
        assert 0.0 <= last[key] <= 1.0, key  # the exact judge read the monitor's samples

    with pytest.warns(UserWarning, match="'purple'"):
        assert main(["generate", str(out), "--prompt", "a purple circle and a blue star", "--num", "2",
                     "--out", str(tmp_path / "gen")]) == 0
    assert len(list((tmp_path / "gen").glob("*.png"))) == 2

    capsys.readouterr()
    assert main(["evaluate", str(out), "--num", "8", "--metrics", "scene", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["sets"]) == {"seen", "heldout", "ladder"}
    assert all(0.0 <= row["count"] <= 1.0 for row in result["sets"].values())
