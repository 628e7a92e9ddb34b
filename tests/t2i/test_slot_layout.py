"""G's layout solver on scenes: relations read from the words (``model.slot_relations``), slots
kept inside the canvas (``model.slot_in_canvas``) and the drawn reach (``model.slot_reach``)."""

from __future__ import annotations

import pytest
import torch

from ganfuse.config import load_config
from ganfuse.errors import ConfigError
from ganfuse.models.t2i_words import PAIR_RELATIONS, RELATION_KEEP, SlotGenerator
from ganfuse.text.encoders import scenes_vocabulary
from ganfuse.text.prompts import TextSpec
from ganfuse.train.objects import mode_seeking_loss, pair_relation_loss, relation_loss, slot_loss
from tests.t2i.test_scenes_words import ids_of
from tests.t2i.test_slot_supervision import PALETTE, SHAPE_TABLE, _tiny_run, _tiny_slot_generator

SPEC = TextSpec("small", 0, scenes_vocabulary(), 32)


def _relations(b: int, k: int, pairs: dict[tuple[int, int, int], str]) -> torch.Tensor:
    """Pair probabilities ``(b, K, K, 4)``: 1 for each ``(image, i, j): relation`` given, else 0."""
    out = torch.zeros(b, k, k, len(PAIR_RELATIONS) - 1)
    for (n, i, j), rel in pairs.items():
        out[n, i, j, PAIR_RELATIONS.index(rel) - 1] = 1.0
    return out


def test_relation_pushes_make_a_stated_pair_hold_and_leave_everything_else_where_it_was():
    """Image 0: the head says slot 0 is left of slot 1 (and slot 1 right of slot 0), but slot 0
    sits right of it; after the rounds slot 1's centre lies exactly RELATION_KEEP right of slot
    0's, both moved the same distance, y untouched. Image 1: slot 0 above slot 1 already holds, so
    nothing moves. An absent slot neither pushes nor moves. A head that says it in one order only
    pushes half as hard per round and still gets there; one that says left and right alike pushes
    nothing."""
    g = SlotGenerator(SPEC, z_dim=12, width=16, cond_dim=32, relations=True)
    centres = torch.tensor([[[0.60, 0.30], [0.50, 0.70], [0.20, 0.20], [0.80, 0.80]],
                            [[0.40, 0.20], [0.45, 0.60], [0.70, 0.70], [0.10, 0.90]]])
    gates = torch.tensor([[1.0, 1.0, 1.0, 1e-6], [1.0, 1.0, 1.0, 1.0]])
    edge = torch.full((2, 4), 0.05)
    said = {(0, 0, 1): "left", (0, 1, 0): "right", (0, 3, 2): "below", (0, 2, 3): "above",
            (1, 0, 1): "above", (1, 1, 0): "below"}
    out = g._arrange(centres, edge, gates, _relations(2, 4, said))
    torch.testing.assert_close(out[0, 1, 0] - out[0, 0, 0], torch.tensor(RELATION_KEEP))
    torch.testing.assert_close(out[0, 0, 0] + out[0, 1, 0], centres[0, 0, 0] + centres[0, 1, 0])  # half each
    torch.testing.assert_close(out[0, :, 1], centres[0, :, 1])
    torch.testing.assert_close(out[0, 2:], centres[0, 2:])  # slot 3 absent: its "below" does nothing
    torch.testing.assert_close(out[1], centres[1])
    one_order = g._arrange(centres, edge, gates, _relations(2, 4, {(0, 0, 1): "left"}))
    assert abs(float(one_order[0, 1, 0] - one_order[0, 0, 0]) - RELATION_KEEP) < 1e-3
    unsure = _relations(2, 4, {(0, 0, 1): "left"}) + _relations(2, 4, {(0, 0, 1): "right"})
    torch.testing.assert_close(g._arrange(centres, edge, gates, 0.5 * unsure), centres)
    # by default a push is weighted by the gates; with model.slot_presence a shown slot pushes with
    # full strength whatever its gate (a trained G's sit at 0.2 to 0.8)
    weak = g._arrange(centres, edge, gates * 0.3, _relations(2, 4, said))
    assert float(weak[0, 1, 0] - weak[0, 0, 0]) < RELATION_KEEP - 0.05
    g.presence = True
    torch.testing.assert_close(g._arrange(centres, edge, gates * 0.3, _relations(2, 4, said)), out)


def test_in_canvas_moves_only_the_slots_that_poke_out_and_exactly_back_to_the_edge():
    g = SlotGenerator(SPEC, z_dim=12, width=16, cond_dim=32, in_canvas=True)
    centres = torch.tensor([[[0.02, 0.50], [0.50, 0.97], [0.40, 0.60], [1.20, -0.10]]])
    edge = torch.tensor([[0.10, 0.10, 0.10, 0.20]])
    out = g._arrange(centres, edge, torch.ones(1, 4), None)
    expected = torch.tensor([[[0.10, 0.50], [0.50, 0.90], [0.40, 0.60], [0.80, 0.20]]])
    torch.testing.assert_close(out, expected)


def test_the_reach_scales_the_extent_that_separation_and_the_canvas_keep():
    """With slot_reach 1.3 a slot stops 1.3 blob radii from the edge, with 1.0 at one radius."""
    z = torch.zeros(1, 12)
    ids = ids_of("a red circle and a blue square")
    for reach in (1.0, 1.3):
        torch.manual_seed(0)
        g = SlotGenerator(SPEC, z_dim=12, width=16, cond_dim=32, in_canvas=True, reach=reach).eval()
        with torch.no_grad():
            g.place[1].bias.copy_(torch.tensor([-20.0, 0.0, 0.0, 5.0]))  # every slot far left, scale 1
            g.place[1].weight.zero_()
            centres, scales, _ = g.layout(z, ids)
        radius = g.radius * 6.0 ** 0.5  # the blob's radius at scale 1
        torch.testing.assert_close(centres[0, :, 0], torch.full((4,), reach * radius))
    with pytest.raises(ConfigError, match="model.slot_reach"):
        SlotGenerator(SPEC, z_dim=12, width=16, cond_dim=32, reach=0.0)


def test_pair_relation_loss_reads_the_caption_onto_the_matched_slots():
    """Targets: "A left of B" with A on slot 2 and B on slot 0 asks (2, 0) = left and (0, 2) =
    right, every other pair "none"; logits that say so score a loss near 0 and read 1, and a head
    that says "none" for the pair reads 0. A relation caption whose objects are not both matched is
    left out."""
    _, targets, _, _ = _tiny_slot_generator(["a red circle to the left of a blue square",
                                             "a red circle above a blue square", "a green star"])
    axis, sign = targets.relation_axis, targets.relation_sign
    matching = (torch.tensor([0, 0, 1, 2]), torch.tensor([2, 0, 1, 3]), torch.tensor([0, 1, 0, 0]))
    logits = torch.zeros(3, 4, 4, len(PAIR_RELATIONS))
    logits[..., 0] = 20.0  # "none" everywhere
    logits[0, 2, 0] = torch.tensor([0.0, 20.0, 0.0, 0.0, 0.0])  # left
    logits[0, 0, 2] = torch.tensor([0.0, 0.0, 20.0, 0.0, 0.0])  # right
    loss, read = pair_relation_loss(logits, matching, axis, sign)
    assert loss < 1e-6 and read == 1.0
    # image 1 states "above" but shows only one of its objects: its logits do not count
    logits[1] = torch.randn(4, 4, len(PAIR_RELATIONS))
    assert pair_relation_loss(logits, matching, axis, sign)[0] < 1e-6
    logits[0, 2, 0] = torch.tensor([20.0, 0.0, 0.0, 0.0, 0.0])
    loss, read = pair_relation_loss(logits, matching, axis, sign)
    assert loss > 0.5 and read == 0.0


def test_the_pair_head_learns_each_relation_from_the_words_and_the_layout_then_holds_it():
    """A tiny slot generator with the pair head, trained on the slot term and the pair term only
    (no hinge on its centres): for fresh noise its layout holds every stated relation, because the
    head reads it and the layout pushes the pair apart, while along the open axis the noise still
    moves the objects."""
    captions = [f"a red circle {rel} a blue square" for rel in ("to the left of", "to the right of", "above", "below")]
    torch.manual_seed(0)
    _, targets, ids, _ = _tiny_slot_generator(captions)
    g = SlotGenerator(SPEC, z_dim=12, width=16, cond_dim=32, mask="mlp", relations=True)
    g.slot_window = SHAPE_TABLE.shape[-1]
    opt = torch.optim.Adam(g.parameters(), lr=3e-3, betas=(0.5, 0.999))
    reps = 8
    axis, sign = targets.relation_axis.repeat(reps), targets.relation_sign.repeat(reps)
    stated, batch_ids = targets.stated.repeat(reps, 1, 1), ids.repeat(reps, 1)

    def step():
        g.train()
        g(torch.randn(len(batch_ids), 12), batch_ids)
        windows, colours, centres, _ = g.last_slots
        slots, _, matching = slot_loss(windows, colours, stated, SHAPE_TABLE, PALETTE)
        pair, read = pair_relation_loss(g.last_relations, matching, axis, sign)
        held = relation_loss(centres, matching, axis, sign, 0.125)[1]
        return slots + pair, read, held, centres, matching

    _, _, before, _, _ = step()
    for _ in range(220):  # the head reads the relations by step 200 (all held there, 47% at 100)
        loss = step()[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, read, after, centres, matching = step()
    assert before < 0.6 and read > 0.95 and after > 0.95, (before, read, after)
    image, slot, obj = matching
    first = centres[image[obj == 0], slot[obj == 0]]
    for a in (0, 1):  # left/right leave y open, above/below leave x open
        assert first[(axis == a).nonzero().squeeze(1), 1 - a].std() > 0.05


def test_slot_relations_need_the_relation_weight_and_a_run_reports_the_pair_term(tmp_path):
    with pytest.raises(ConfigError, match="model.slot_relations"):
        load_config("scenes-t2i", ["model.slot_relations=true", "text.relation_weight=0"])
    with pytest.raises(ConfigError, match="model.slot_reach"):
        load_config("scenes-t2i", ["model.slot_reach=-1"])
    _, rows = _tiny_run(tmp_path, 3, "text.slot_weight=1.0", "text.relation_weight=1.0", "model.slot_relations=true",
                        "model.slot_in_canvas=true", "model.slot_reach=1.3", "model.slot_presence=true")
    last = [r for r in rows if "relation_pairs" in r][-1]
    assert last["relation_pairs"] > 0 and 0.0 <= last["relation_read"] <= 1.0


def _pair_term_trains(reads_words: bool) -> set[str]:
    """The parameters of a tiny G that the pair term alone gives a gradient."""
    _, targets, ids, _ = _tiny_slot_generator(["a red circle to the left of a blue square", "a green star"])
    g = SlotGenerator(SPEC, z_dim=12, width=16, cond_dim=32, mask="mlp", relations=True,
                      relation_reads_words=reads_words)
    g.slot_window = SHAPE_TABLE.shape[-1]
    g.train()
    g(torch.randn(2, 12), ids)
    windows, colours, _, _ = g.last_slots
    _, _, matching = slot_loss(windows, colours, targets.stated, SHAPE_TABLE, PALETTE)
    loss, _ = pair_relation_loss(g.last_relations, matching, targets.relation_axis, targets.relation_sign)
    loss.backward()
    return {name for name, p in g.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_the_pair_heads_loss_trains_the_head_alone():
    """The pair term's gradient reaches the head's own attention and MLP, and nothing of G's word
    reading, slots or layout (a strong pair term there distorted the objects' outlines)."""
    trained = _pair_term_trains(reads_words=False)
    assert trained and all(name.startswith(("relate.", "relate_read.")) for name in trained), trained
    assert any(name.startswith("relate_read.") for name in trained)


def test_with_relation_reads_words_the_pair_term_also_trains_the_words_but_not_the_slots():
    trained = _pair_term_trains(reads_words=True)
    words = {name for name in trained if name.startswith(("text.", "token_proj."))}
    assert "token_proj.weight" in words and any(name.startswith("text.") for name in words), trained
    # the slots' queries, their reading of the words, the noise, the layout and the painters: none
    assert trained - words == {name for name in trained if name.startswith(("relate.", "relate_read."))}
    with pytest.raises(ConfigError, match="model.relation_reads_words"):
        load_config("scenes-t2i", ["model.relation_reads_words=true"])


def test_mode_seeking_loss_is_one_over_the_gate_weighted_move_per_unit_of_noise():
    centres = torch.tensor([[[0.2, 0.2], [0.5, 0.5]], [[0.1, 0.9], [0.3, 0.3]]])
    moved = torch.tensor([[[0.3, 0.1], [0.9, 0.9]], [[0.1, 0.5], [0.3, 0.3]]])
    gates = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # the first image's second slot is absent
    noise, other = torch.zeros(2, 4), torch.full((2, 4), 0.5)
    loss, ratio = mode_seeking_loss(centres, moved, gates, noise, other)
    move = (1.0 * 0.2 + 0.5 * 0.4 + 0.5 * 0.0) / 2.0  # L1 moves, weighted by the gates
    torch.testing.assert_close(ratio, torch.tensor(move / 0.5))
    torch.testing.assert_close(loss, torch.tensor(1 / (move / 0.5 + 1e-5)))


def test_spread_places_the_slots_again_with_the_next_images_noise_and_training_on_it_spreads_them():
    torch.manual_seed(0)  # the tiny G's initial weights
    g, _, ids, opt = _tiny_slot_generator(["a red circle to the left of a blue square", "a green star",
                                           "a large white triangle", "two objects: a cyan star and a red square"])
    z = torch.randn(4, 12, generator=torch.Generator().manual_seed(0))
    g.train()
    g(z, ids)
    assert g.last_spread is None  # off unless text.spread_weight asks for it
    g.spread = True
    g(z, ids)
    centres, moved, gates, noise, other = g.last_spread
    torch.testing.assert_close(moved, g.layout(z.roll(1, 0), ids)[0])
    torch.testing.assert_close(centres, g.layout(z, ids)[0])
    assert torch.equal(other, z.roll(1, 0)[:, :8]) and torch.equal(noise, z[:, :8])
    with torch.no_grad():
        g(z, ids)
    assert g.last_spread is None  # the D step's fakes: no graph, no second placement
    g.eval()
    g(z, ids)
    assert g.last_spread is None  # sampling draws once
    g.train()
    gen = torch.Generator().manual_seed(1)
    many, words = torch.randn(256, 12, generator=gen), ids.repeat(64, 1)

    def spread() -> float:  # the ratio over 256 fixed noises, each against the next
        g(many, words)
        return float(mode_seeking_loss(*g.last_spread)[1])

    before = spread()
    for _ in range(150):
        g(torch.randn(16, 12, generator=gen), ids.repeat(4, 1))
        loss, _ = mode_seeking_loss(*g.last_spread)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = spread()
    assert after > 1.25 * before, (before, after)


def test_spread_weight_is_for_slot_generators_and_a_run_reports_the_ratio(tmp_path):
    with pytest.raises(ConfigError, match="text.spread_weight"):
        load_config("shapes-t2i", ["text.spread_weight=1"])
    with pytest.raises(ConfigError, match="text.spread_weight"):
        load_config("scenes-t2i", ["text.spread_weight=-1"])
    _, rows = _tiny_run(tmp_path, 3, "text.slot_weight=1.0", "text.spread_weight=1.0")
    spread = [r["spread_g"] for r in rows if "spread_g" in r]
    assert len(spread) == 3 and all(value > 0 for value in spread)
