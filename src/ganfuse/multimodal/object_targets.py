"""Dense object supervision for the ``scenes`` image encoder, from the scene graphs.

Each cell of the encoder's patch grid is labelled with the object whose centre falls in it:
its colour, shape and size (class 0 of each: no object centred there). A linear probe reads the
three from the cell's token, and its cross-entropy joins the task's loss with ``object_weight``.
This is the supervision an object detector's features carry into VQA models (Anderson et al.'s
bottom-up attention, trained on Visual Genome's objects and attributes): the image encoder
learns what each object *is* from a dense signal instead of from the task's one yes/no per
caption, so the fusion's steps go to binding words to objects and to relations. The probe is
part of training only; a saved run does not hold it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.scenes import COLORS, SHAPES, SIZES, SceneGraph

# (name, values): class k + 1 of a field is its k-th value, class 0 "no object centred here"
FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("color", tuple(COLORS)),
    ("shape", SHAPES),
    ("size", SIZES),
)


def cell_targets(graphs: list[SceneGraph], grid: tuple[int, int]) -> torch.Tensor:
    """``(N, 3, H, W)`` int64: per image and cell of a ``grid`` over the image, the colour, shape
    and size class of the object centred in that cell (0 where none is). Two centres in one cell
    (rare: objects keep a gap) leave the later object's label."""
    height, width = grid
    targets = torch.zeros(len(graphs), len(FIELDS), height, width, dtype=torch.int64)
    for n, graph in enumerate(graphs):
        for obj in graph.objects:
            x, y = obj.center
            col = min(int(x * width / graph.image_size), width - 1)
            row = min(int(y * height / graph.image_size), height - 1)
            for f, (name, values) in enumerate(FIELDS):
                targets[n, f, row, col] = values.index(getattr(obj, name)) + 1
    return targets


class ObjectProbe(nn.Module):
    """A linear read-out of every grid token into the three fields' classes; :meth:`loss` is the
    mean of the three cross-entropies over all cells."""

    def __init__(self, token_dim: int):
        super().__init__()
        self.sizes = [len(values) + 1 for _, values in FIELDS]
        self.read = nn.Linear(token_dim, sum(self.sizes))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, H*W, D)`` row-major, ``targets`` ``(B, 3, H, W)`` -> a scalar."""
        logits = self.read(tokens).split(self.sizes, dim=-1)
        flat = targets.flatten(2)  # (B, 3, H*W)
        return sum(
            F.cross_entropy(part.flatten(0, 1), flat[:, f].flatten())
            for f, part in enumerate(logits)
        ) / len(FIELDS)
