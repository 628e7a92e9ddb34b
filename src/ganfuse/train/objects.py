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

from ganfuse.data.scenes import ATTRIBUTE_VALUES, MAX_OBJECTS, parse_caption

CLASSES: tuple[int, ...] = tuple(len(values) for _, values in ATTRIBUTE_VALUES)
UNSTATED = -1  # a label the caption does not state, or a padding object


def _labels(obj) -> list[int]:
    return [values.index(getattr(obj, name)) if getattr(obj, name) is not None else UNSTATED
            for name, values in ATTRIBUTE_VALUES]


class SceneObjectTargets:
    """Per training pair (dataset index): the real objects' centres ``(N, M, 2)`` in [0, 1] and
    labels ``(N, M, 3)`` (colour, shape, size indices) from the scene graph, and the labels the
    caption states ``(N, M, 3)`` (``UNSTATED`` where it leaves one open); ``M = MAX_OBJECTS``,
    padded with ``UNSTATED`` rows."""

    def __init__(self, graphs: list, captions: list[str], image_size: int, device: torch.device):
        n = len(graphs)
        centres = np.full((n, MAX_OBJECTS, 2), 0.5, dtype=np.float32)
        real = np.full((n, MAX_OBJECTS, 3), UNSTATED, dtype=np.int64)
        stated = np.full((n, MAX_OBJECTS, 3), UNSTATED, dtype=np.int64)
        parsed: dict[str, list[list[int]]] = {}
        for i, (graph, caption) in enumerate(zip(graphs, captions, strict=True)):
            for j, obj in enumerate(graph.objects):
                centres[i, j] = np.asarray(obj.center, dtype=np.float32) / image_size
                real[i, j] = _labels(obj)
            if caption not in parsed:
                parsed[caption] = [_labels(spec) for spec in parse_caption(caption).objects]
            for j, labels in enumerate(parsed[caption]):
                stated[i, j] = labels
        self.centres = torch.from_numpy(centres).to(device)
        self.real = torch.from_numpy(real).to(device)
        self.stated = torch.from_numpy(stated).to(device)


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


def _mean_over(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
    loss = _mean_over(F.relu(1 - own), present) + 0.5 * (fake_term + _mean_over(F.relu(1 + wrong), present))
    return loss, {"obj_real": _mean_over(own, present), "obj_wrong": _mean_over(wrong, present),
                  "obj_fake": fakes.mean() if fakes.numel() else fake.new_zeros(())}


def object_g_loss(fake: torch.Tensor, stated: torch.Tensor) -> torch.Tensor:
    """G's object term: ``-D_obj`` of its windows against the objects its caption names
    (``fake (B, K, M)``, ``stated (B, M, 3)``), each named object at the slot matched to it."""
    image, slot, obj = match_slots(fake, stated)
    return -fake[image, slot, obj].mean() if image.numel() else fake.sum() * 0.0
