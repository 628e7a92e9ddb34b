"""Object-level supervision for text-to-image on ``scenes`` (``text.object_weight``).

A GAN's discriminator judges a whole image; on ``scenes`` the small things that decide a caption's
truth, an object's shape above all, are a few pixels of a 64x64 canvas, and a scene-level verdict
teaches them last (30 minutes of training drew every object as a disc). Layout-to-image GANs
(Layout2Im, Zhao et al. 2019; LostGAN, Sun & Wu 2019; OP-GAN, Hinz et al. 2020) add an
object-level judge that looks at each object's box. Here:

- D's object head (:class:`ganfuse.models.t2i_words.ObjectHead`) is a conditional (projection)
  discriminator of windows: a window around a real object's centre with that object's
  description (colour, shape, size, from the scene graph) is real; the same window with its colour
  or shape changed is fake (matching-aware, as the scene-level D); and G's windows, around its
  slots' centres, with the descriptions of the objects its caption names, are fake;
- the slots are matched one to one to the named objects by the Hungarian algorithm on the object
  discriminator's own verdicts (as DETR matches predictions to objects), and G raises the verdicts
  of the matched pairs. What the caption leaves open (a size not stated) is left out of the
  description, and positions are not asked for: the descriptions come from the caption, never from
  the paired image.

A classifier of real windows alone (cross-entropy on real objects, G raising the likelihood of the
named classes) was tried first and did not teach shape: its gradients on G's off-manifold blobs
did not lead to shapes (in 150-300 steps of G trained on that term alone, the matched shape
accuracy stayed at 0.25-0.41, chance 0.2, and the images decayed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ganfuse.data.scenes import (
    ATTRIBUTE_VALUES,
    MAX_OBJECTS,
    RELATION_AXES,
    SIZES,
    object_side,
    parse_caption,
)

CLASSES: tuple[int, ...] = tuple(len(values) for _, values in ATTRIBUTE_VALUES)
UNSTATED = -1  # a label the caption does not state, or a padding object


def _labels(obj) -> list[int]:
    return [values.index(getattr(obj, name)) if getattr(obj, name) is not None else UNSTATED
            for name, values in ATTRIBUTE_VALUES]


class SceneObjectTargets:
    """Per training pair (dataset index): the real objects' centres ``(N, M, 2)`` in [0, 1] and
    labels ``(N, M, 3)`` (colour, shape, size indices) from the scene graph, and the labels the
    caption states ``(N, M, 3)`` (``UNSTATED`` where it leaves one open); ``M = MAX_OBJECTS``,
    padded with ``UNSTATED`` rows. ``named_centres (N, M, 2)`` and ``named_real (N, M, 3)``: the
    centre and labels of the real object each named one is (in the caption's order: the first
    object the caption names first), where the caption names every object of its scene, as the
    training pairs do. ``relation (N,)``: the caption states a relation between its first two
    named objects; ``relation_axis (N,)`` (0: x, 1: y) and ``relation_sign (N,)`` say which: the
    second named object's centre less the first's, along that axis and times that sign, is at
    least the dataset's margin in a true scene (sign 0 where no relation is stated)."""

    def __init__(self, graphs: list, captions: list[str], image_size: int, device: torch.device):
        n = len(graphs)
        centres = np.full((n, MAX_OBJECTS, 2), 0.5, dtype=np.float32)
        real = np.full((n, MAX_OBJECTS, 3), UNSTATED, dtype=np.int64)
        stated = np.full((n, MAX_OBJECTS, 3), UNSTATED, dtype=np.int64)
        named_centres = np.full((n, MAX_OBJECTS, 2), 0.5, dtype=np.float32)
        named_real = np.full((n, MAX_OBJECTS, 3), UNSTATED, dtype=np.int64)
        relation_axis = np.zeros(n, dtype=np.int64)
        relation_sign = np.zeros(n, dtype=np.float32)
        relational: dict[str, tuple[int, float] | None] = {}
        parsed: dict[str, list[list[int]]] = {}
        for i, (graph, caption) in enumerate(zip(graphs, captions, strict=True)):
            for j, obj in enumerate(graph.objects):
                centres[i, j] = np.asarray(obj.center, dtype=np.float32) / image_size
                real[i, j] = _labels(obj)
            if caption not in parsed:
                description = parse_caption(caption)
                parsed[caption] = [_labels(spec) for spec in description.objects]
                relational[caption] = (RELATION_AXES[description.relations[0].relation]
                                       if description.kind == "relation" and len(description.objects) == 2 else None)
            if relational[caption] is not None:
                relation_axis[i], relation_sign[i] = relational[caption]
            unused = list(range(len(graph.objects)))
            for j, labels in enumerate(parsed[caption]):
                stated[i, j] = labels
                fits = [o for o in unused if all(s < 0 or s == r for s, r in zip(labels, real[i, o], strict=True))]
                if fits:  # twins: the first of them
                    unused.remove(fits[0])
                    named_centres[i, j] = centres[i, fits[0]]
                    named_real[i, j] = real[i, fits[0]]
        self.centres = torch.from_numpy(centres).to(device)
        self.real = torch.from_numpy(real).to(device)
        self.stated = torch.from_numpy(stated).to(device)
        self.named_centres = torch.from_numpy(named_centres).to(device)
        self.named_real = torch.from_numpy(named_real).to(device)
        self.relation_axis = torch.from_numpy(relation_axis).to(device)
        self.relation_sign = torch.from_numpy(relation_sign).to(device)
        self.relation = self.relation_sign != 0


def wrong_labels(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each object's description with its colour or its shape (one of the two, at random) changed
    to another value: ``(B, M, 3)``, padding rows unchanged. A real object with such a description
    is a mismatch the object discriminator must reject: the same window, a different shape."""
    b, m, _ = labels.shape
    draw = lambda high: torch.randint(0, high, (b, m), generator=gen, device=gen.device).to(labels.device)  # noqa: E731
    which = draw(2)  # 0: colour, 1: shape
    out = labels.clone()
    for a in (0, 1):
        shift = 1 + draw(CLASSES[a] - 1)  # never the same value
        changed = (labels[..., a] + shift) % CLASSES[a]
        out[..., a] = torch.where((which == a) & (labels[..., a] >= 0), changed, labels[..., a])
    return out


def match_slots(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which slot shows which named object: ``logits (B, K, M)`` of K windows against M
    descriptions (higher: fits better), ``labels (B, M, 3)`` (padding rows are all negative).
    Per image, the named objects are matched one to one to slots by the Hungarian algorithm on the
    negated logits (as DETR matches predictions to objects); slots left over are not judged.
    Returns index tensors ``(image, slot, object)`` of the matched pairs."""
    named = (labels >= 0).any(-1).cpu().numpy()
    cost = -logits.detach().float().cpu().numpy()
    image, slot, obj = [], [], []
    for b in range(cost.shape[0]):
        wanted = np.flatnonzero(named[b])
        if wanted.size == 0:
            continue
        rows, cols = linear_sum_assignment(cost[b][:, wanted])
        image.extend([b] * len(rows))
        slot.extend(rows.tolist())
        obj.extend(wanted[cols].tolist())
    return tuple(torch.tensor(v, dtype=torch.int64, device=logits.device) for v in (image, slot, obj))


def mean_where(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` (bool or 0/1) is set; 0 where it is set nowhere."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def object_d_loss(real: torch.Tensor, labels: torch.Tensor, fake: torch.Tensor,
                  stated: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The object discriminator's hinge loss, matching-aware as the scene-level one is:
    ``real (B, M, 2M)``: real windows at their objects against (their own descriptions, the
    :func:`wrong_labels`); ``labels (B, M, 3)`` the real objects; ``fake (B, K, M)`` G's windows
    against the objects their captions name, ``stated (B, M, 3)``. Real objects with their own
    description are real; G's objects (each matched to a slot) and real objects with a wrong
    description are fake, the two halves weighted equally. Returns the loss and what to report."""
    m = labels.shape[1]
    present = (labels >= 0).any(-1).to(real.dtype)
    own = real[:, :, :m].diagonal(dim1=1, dim2=2)
    wrong = real[:, :, m:].diagonal(dim1=1, dim2=2)
    image, slot, obj = match_slots(fake, stated)
    fakes = fake[image, slot, obj]
    fake_term = F.relu(1 + fakes).mean() if fakes.numel() else fake.sum() * 0.0
    loss = mean_where(F.relu(1 - own), present) + 0.5 * (fake_term + mean_where(F.relu(1 + wrong), present))
    return loss, {"obj_real": mean_where(own, present), "obj_wrong": mean_where(wrong, present),
                  "obj_fake": fakes.mean() if fakes.numel() else fake.new_zeros(())}


def object_g_loss(fake: torch.Tensor, stated: torch.Tensor) -> torch.Tensor:
    """G's object term: ``-D_obj`` of its windows against the objects its caption names
    (``fake (B, K, M)``, ``stated (B, M, 3)``), each named object at the slot matched to it."""
    image, slot, obj = match_slots(fake, stated)
    return -fake[image, slot, obj].mean() if image.numel() else fake.sum() * 0.0


# ---------------------------------------------------------------------------------------------
# slot supervision (text.slot_weight)
# ---------------------------------------------------------------------------------------------

SLOT_WINDOW = 24  # pixels per side of a supervised slot's window at 64x64: a large object (18 px) and a margin
_SUPERSAMPLE = 4  # target masks are the shapes' coverage of each pixel, from 4x4 points per pixel


def shape_targets(window: int, image_size: int) -> torch.Tensor:
    """Each shape's coverage of the pixels of a ``window x window`` window centred on it, at every
    size: ``(shapes, sizes, window, window)`` float in [0, 1] (the dataset's own shape definitions,
    :func:`ganfuse.data.scenes.shape_mask`, rendered at 4x4 points per pixel and averaged)."""
    from ganfuse.data.scenes import SHAPES, SIZES, object_side, shape_mask

    fine = window * _SUPERSAMPLE
    out = np.zeros((len(SHAPES), len(SIZES), window, window), dtype=np.float32)
    for i, shape in enumerate(SHAPES):
        for j, size in enumerate(SIZES):
            side = object_side(size, image_size) * _SUPERSAMPLE
            mask = shape_mask(shape, side, (fine - side) / 2, (fine - side) / 2, fine)
            out[i, j] = mask.reshape(window, _SUPERSAMPLE, window, _SUPERSAMPLE).mean(axis=(1, 3))
    return torch.from_numpy(out)


def colour_targets() -> torch.Tensor:
    """Each colour's RGB in the images' [-1, 1] range: ``(colours, 3)``."""
    from ganfuse.data.scenes import COLORS

    return torch.tensor(list(COLORS.values()), dtype=torch.float32) / 127.5 - 1.0


def slot_costs(windows: torch.Tensor, colours: torch.Tensor, stated: torch.Tensor, shapes: torch.Tensor,
               palette: torch.Tensor, open_sizes: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What it costs slot ``k`` to show named object ``m``: ``windows (B, K, W, W)`` each slot's
    mask logits, ``colours (B, K, 3)``, ``stated (B, M, 3)`` the objects the captions name
    (``UNSTATED`` where open), ``shapes`` and ``palette`` from :func:`shape_targets` and
    :func:`colour_targets`. Returns ``(mask cost (B, K, M), colour cost (B, K, M), empty cost
    (B, K))``: the mean binary cross-entropy of the slot's mask against the named shape's coverage,
    less the coverage's own entropy (0 for an exact match; at the stated size, or the better of the two sizes where the caption leaves it open), the
    mean squared error of its colour against the named colour, and the cross-entropy of the slot
    against an empty window (what a slot no object is matched to pays). ``open_sizes (B, K)``
    (size indices): where the caption leaves a size open, slot ``k`` is asked for this size
    instead of the better of the two (G draws it from its noise, so open sizes vary as the real
    ones do; the better of the two let every open object settle on one size)."""
    b, k, w, _ = windows.shape
    colour_i, shape_i, size_i = (stated[..., a].clamp(min=0) for a in range(3))
    target = shapes[shape_i]  # (B, M, sizes, W, W)
    logits = windows.flatten(2).float()  # (B, K, P)
    pos = F.softplus(-logits)  # -log sigmoid(l): the cost of a pixel the shape covers
    neg = F.softplus(logits)  # -log(1 - sigmoid(l)): the cost of one it does not
    t = target.flatten(3)  # (B, M, sizes, P)
    bce = (torch.einsum("bkp,bmzp->bkmz", pos, t) + torch.einsum("bkp,bmzp->bkmz", neg, 1 - t)) / (w * w)
    # less the targets' own entropy (edge pixels are partly covered): a window that shows the shape
    # exactly costs 0 (the cross-entropy becomes a KL divergence, with the same gradient)
    entropy = -(torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t)).mean(-1)  # (B, M, sizes)
    bce = bce - entropy[:, None]
    stated_size = (stated[..., 2] >= 0)[:, None, :, None]  # (B, 1, M, 1)
    by_size = torch.where(stated_size & (torch.arange(bce.shape[-1], device=bce.device) != size_i[:, None, :, None]),
                          torch.full_like(bce, float("inf")), bce)
    mask_cost = by_size.min(-1).values
    if open_sizes is not None:
        asked = torch.where(stated_size[..., 0], size_i[:, None, :], open_sizes[:, :, None])  # (B, K, M)
        mask_cost = bce.gather(-1, asked[..., None]).squeeze(-1)
    colour_cost = (colours.float()[:, :, None] - palette[colour_i][:, None]).square().mean(-1)
    return mask_cost, colour_cost, neg.mean(-1)


def slot_loss(windows: torch.Tensor, colours: torch.Tensor, stated: torch.Tensor, shapes: torch.Tensor,
              palette: torch.Tensor, open_sizes: torch.Tensor | None = None,
              matching: tuple[torch.Tensor, ...] | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    """Slot supervision: every object the caption names is matched one to one to a slot by the
    Hungarian algorithm on the summed costs of :func:`slot_costs` (as DETR matches predictions to
    objects); a matched slot's mask is pulled to the named shape and its colour to the named colour,
    and every slot left over to an empty window (so the image holds as many objects as the caption
    names). Positions are not asked for: each window is centred on its own slot, wherever the
    noise put it (and with ``open_sizes``, sizes the caption leaves open as the noise drew them).
    Returns the loss, mean per image of (matched costs + empty costs) / K, what to
    report, and the matching (index tensors ``(image, slot, object)``); a ``matching`` given (made
    from the same slots) is used as it is."""
    mask_cost, colour_cost, empty = slot_costs(windows, colours, stated, shapes, palette, open_sizes)
    image, slot, obj = match_slots(-(mask_cost + colour_cost), stated) if matching is None else matching
    matched = torch.zeros_like(empty, dtype=torch.bool)
    matched[image, slot] = True
    b, k = empty.shape
    total = mask_cost[image, slot, obj].sum() + colour_cost[image, slot, obj].sum() + empty[~matched].sum()
    report = {"slot_mask": mask_cost[image, slot, obj].mean() if image.numel() else empty.new_zeros(()),
              "slot_colour": colour_cost[image, slot, obj].mean() if image.numel() else empty.new_zeros(()),
              "slot_empty": empty[~matched].mean() if (~matched).any() else empty.new_zeros(())}
    return total / (b * k), report, (image, slot, obj)


def window_extent(windows: torch.Tensor) -> torch.Tensor:
    """An object's extent from its window's mask logits ``(..., W, W)``: the square root of the
    area it covers, as a share of the window's side ``(...)`` (a large square is 0.75 at 64x64)."""
    return torch.sigmoid(windows.float()).sum((-1, -2)).sqrt() / windows.shape[-1]


def real_extents(labels: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """The extent (:func:`window_extent`) of real objects ``labels (..., 3)`` (colour, shape,
    size), from their shapes' coverage ``shapes`` (:func:`shape_targets`); 0 for padding rows."""
    area = shapes.sum((-1, -2))[labels[..., 1].clamp(min=0), labels[..., 2].clamp(min=0)]
    return torch.where((labels >= 0).all(-1), area.sqrt() / shapes.shape[-1], torch.zeros_like(area))


def matched_layout(centres: torch.Tensor, extents: torch.Tensor, stated: torch.Tensor,
                   matching: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """G's layout in the named objects' order: ``centres (B, K, 2)`` and ``extents (B, K)``
    (:func:`window_extent`) of the slots, ``stated (B, M, 3)``, ``matching`` from :func:`slot_loss`
    -> ``(labels (B, M, 2), places (B, M, 3))``: row ``m`` is the colour and shape the caption names
    for object ``m`` and the centre ``(x, y)`` and extent of the slot matched to it; rows no slot
    shows are padding (labels -1)."""
    image, slot, obj = matching
    labels = torch.full_like(stated[..., :2], UNSTATED)
    labels[image, obj] = stated[image, obj, :2]
    placed = centres.new_full((*stated.shape[:2], 3), 0.5)
    found = torch.cat([centres, extents[..., None].to(centres.dtype)], dim=-1)
    placed = placed.index_put((image, obj), found[image, slot])
    return labels, placed


def layout_d_loss(logits: torch.Tensor, n: int, valid: torch.Tensor | None) -> torch.Tensor:
    """The layout discriminator's hinge loss on ``logits`` of ``n`` real layouts with their own
    captions, ``n`` of G's and then real layouts that do not fit their captions (wrong captions,
    places swapped), of which ``valid`` marks those that truly do not (None: there are none). Reals
    are real; G's and the misfits are fake, the two halves weighted equally (as the scene-level
    matching-aware loss)."""
    real, fake = logits[:n], logits[n:2 * n]
    loss_fake = F.relu(1 + fake).mean()
    if valid is not None:
        loss_fake = 0.5 * (loss_fake + mean_where(F.relu(1 + logits[2 * n:]), valid))
    return F.relu(1 - real).mean() + loss_fake


def swap_places(places: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """Layouts ``(B, M, 3)`` with the first two objects' centres exchanged where ``swap (B,)``
    (each keeps its own extent): "a red circle left of a blue square" drawn with the circle where
    the square is and the square where the circle is, false for a relation caption."""
    swapped = places.clone()
    swapped[:, 0, :2], swapped[:, 1, :2] = places[:, 1, :2], places[:, 0, :2]
    return torch.where(swap[:, None, None], swapped, places)


def mode_seeking_loss(centres: torch.Tensor, moved: torch.Tensor, gates: torch.Tensor, noise: torch.Tensor,
                      other: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode seeking on a layout (MSGAN, Mao et al. 2019, ``text.spread_weight``): G placed each
    image's slots at ``centres (B, K, 2)`` from the noise ``noise (B, N)`` and at ``moved`` from
    ``other``, the words the same. The ratio is the slots' mean L1 move, each slot weighted by its
    gate (``gates (B, K)``, as given: an absent slot's move counts for nothing), over the noises'
    mean L1 distance; the loss is ``1 / (ratio + eps)``, large where the layout ignores the noise
    and flat once it follows it. Returns the loss and the ratio (detached)."""
    weights = gates.detach().float()
    move = ((centres.float() - moved.float()).abs().sum(-1) * weights).sum() / weights.sum().clamp(min=1e-6)
    ratio = move / (noise.float() - other.float()).abs().mean().clamp(min=1e-6)
    return 1.0 / (ratio + eps), ratio.detach()


def relation_loss(centres: torch.Tensor, matching: tuple[torch.Tensor, ...], axis: torch.Tensor,
                  sign: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """G's relation term (``text.relation_weight``): where a caption states "A <relation> B", the
    slots matched to A and B (``matching`` from :func:`slot_loss`, named objects 0 and 1) are
    pushed apart along the relation's axis until B's centre lies ``margin`` (canvas units) beyond
    A's on the stated side: a hinge, zero once the relation holds, so the noise keeps every place
    the caption leaves open (where along the axis, and the other axis entirely). ``centres
    (B, K, 2)`` in [0, 1], ``axis`` and ``sign`` ``(B,)`` from :class:`SceneObjectTargets` (sign 0:
    no relation). Returns the loss (mean over the relation rows, 0 without any) and the share of
    those rows whose slots already satisfy the relation."""
    image, slot, obj = matching
    slot_of = named_slots(matching, centres.shape[0], centres.device)
    rows = (sign != 0) & (slot_of[:, 0] >= 0) & (slot_of[:, 1] >= 0)
    b = torch.arange(centres.shape[0], device=centres.device)
    named = centres[b[:, None], slot_of[:, :2].clamp(min=0)]  # (B, 2, 2): the two related objects' slots
    gap = sign.to(centres.dtype) * (named[:, 1] - named[:, 0]).gather(1, axis[:, None]).squeeze(1)
    return mean_where(F.relu(margin - gap), rows), mean_where(gap >= margin, rows)


def named_slots(matching: tuple[torch.Tensor, ...], b: int, device: torch.device) -> torch.Tensor:
    """The slot each named object is matched to, ``(B, MAX_OBJECTS)`` (-1 where none is), from a
    ``matching`` of :func:`slot_loss`."""
    image, slot, obj = matching
    slot_of = torch.full((b, MAX_OBJECTS), -1, dtype=torch.long, device=device)
    slot_of[image, obj] = slot
    return slot_of


def pair_relation_loss(logits: torch.Tensor, matching: tuple[torch.Tensor, ...], axis: torch.Tensor,
                       sign: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair head's term (``model.slot_relations``, weighted by ``text.relation_weight``):
    cross-entropy of G's logits ``(B, K, K, 1 + 4)`` over what slot i is of slot j ("none", then
    the relations in the order of ``RELATION_AXES``) against the caption: where it states "A
    <relation> B", the slot matched to A is that relation of the slot matched to B and B's slot the
    inverse of A's; every other pair of distinct slots is "none" (the two kinds of pair weigh half
    each). Images whose caption states a
    relation that the matching does not show both objects of are left out. ``matching`` from
    :func:`slot_loss`; ``axis``, ``sign (B,)`` from :class:`SceneObjectTargets`. Returns the loss
    and the share of stated relations the head reads right (both directions; NaN-free 0 without any)."""
    b, k = logits.shape[:2]
    slot_of = named_slots(matching, b, logits.device)
    stated = sign != 0
    rows = stated & (slot_of[:, 0] >= 0) & (slot_of[:, 1] >= 0)
    target = torch.zeros(b, k, k, dtype=torch.long, device=logits.device)
    target[stated & ~rows] = -100  # a relation the image does not show both objects of: unknown
    target[:, torch.arange(k), torch.arange(k)] = -100
    # the relation's index in RELATION_AXES (left, right, above, below: axis x 2, + 1 for a negative
    # sign); its inverse flips the last bit
    index = 2 * axis + (sign < 0).long()
    r = rows.nonzero().squeeze(1)
    a, o = slot_of[r, 0], slot_of[r, 1]
    target[r, a, o] = index[r] + 1
    target[r, o, a] = (index[r] ^ 1) + 1
    each = F.cross_entropy(logits.float().flatten(0, 2), target.flatten(), ignore_index=-100,
                           reduction="none").view(b, k, k)
    # the stated pairs and the "none" pairs weigh half each: a batch has about 50 "none" pairs for
    # every stated one, and the head then learnt the axis of a relation long before its direction
    loss = 0.5 * (mean_where(each, target > 0) + mean_where(each, target == 0))
    guess = logits.argmax(-1)
    right = (guess[r, a, o] == target[r, a, o]) & (guess[r, o, a] == target[r, o, a])
    return loss, right.float().mean() if r.numel() else logits.new_zeros(())


def asked_half_sides(stated: torch.Tensor, matching: tuple[torch.Tensor, ...], open_sizes: torch.Tensor | None,
                     k: int, image_size: int) -> torch.Tensor:
    """Half the side of the object each slot is asked to show, in canvas units ``(B, K)``: the size
    the caption states for the named object matched to the slot, or where it leaves the size open,
    the one the slot's noise drew (``open_sizes (B, K)``; without it, the small one, the least any
    real object needs); 0 for slots no named object is matched to."""
    image, slot, obj = matching
    halves = torch.tensor([object_side(s, image_size) / (2 * image_size) for s in SIZES], device=stated.device)
    size = stated[image, obj, 2]
    if open_sizes is not None:
        size = torch.where(size >= 0, size, open_sizes[image, slot].to(size.dtype))
    out = torch.zeros(stated.shape[0], k, device=stated.device)
    out[image, slot] = halves[size.clamp(min=0)]
    return out


def placement_loss(centres: torch.Tensor, matching: tuple[torch.Tensor, ...], halves: torch.Tensor,
                   gap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """G's placement term (``text.placement_weight``): every real scene holds its objects wholly
    inside the canvas and apart from each other (bounding squares at least ``gap`` apart along x
    or y, :func:`ganfuse.data.scenes.generate_scenes`), so the slots matched to named objects are
    pushed back inside the canvas and apart from each other until that holds: hinges, zero once it
    holds, so the noise keeps every place that satisfies it. An object cut by the canvas edge or
    covered by another one is read as another shape (or two same-coloured ones as one).
    ``centres (B, K, 2)`` in [0, 1], ``matching`` from :func:`slot_loss`, ``halves (B, K)`` from
    :func:`asked_half_sides`, ``gap`` in canvas units. Returns the loss (the mean inside-hinge over
    matched slots plus the mean apart-hinge over pairs of matched slots of one image) and the share
    of images with a matched slot whose layout already holds."""
    image, slot, _ = matching
    b, k = centres.shape[:2]
    matched = torch.zeros(b, k, dtype=torch.bool, device=centres.device)
    matched[image, slot] = True
    h = halves[..., None].to(centres.dtype)
    outside = (F.relu(h - centres) + F.relu(centres - (1 - h))).sum(-1)  # (B, K)
    # Chebyshev distance of centres against what two bounding squares and the gap need
    distance = (centres[:, :, None] - centres[:, None]).abs().amax(-1)  # (B, K, K)
    need = halves[:, :, None] + halves[:, None] + gap
    upper = torch.ones(k, k, dtype=torch.bool, device=centres.device).triu(1)
    pairs = matched[:, :, None] & matched[:, None] & upper
    overlap = F.relu(need.to(centres.dtype) - distance)
    loss = mean_where(outside, matched) + mean_where(overlap, pairs)
    broken = ((outside > 0) & matched).any(1) | ((overlap > 0) & pairs).any(-1).any(-1)
    return loss, mean_where(~broken, matched.any(1))
