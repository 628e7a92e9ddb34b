"""Hard negatives for image-text matching: the true attributes with exactly one of them changed.

A caption of such a negative is wrong about one thing only (the colour, the shape, the size or
the position), so the model must check every attribute of the text against the image; neither
modality alone tells a match from a mismatch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ganfuse.data.shapes import ATTRIBUTE_VALUES, ShapeAttributes

ATTRIBUTE_FIELDS: tuple[str, ...] = tuple(ATTRIBUTE_VALUES)


def one_attribute_negative(
    attrs: ShapeAttributes,
    rng: np.random.Generator,
    forbidden_pairs: Collection[tuple[str, str]] = (),
    fields: Sequence[str] = ATTRIBUTE_FIELDS,
) -> tuple[ShapeAttributes, str]:
    """``(negative, changed_field)``: ``attrs`` with one field, drawn uniformly from ``fields``,
    set to a different value drawn uniformly.

    A change that would produce a ``(color, shape)`` pair in ``forbidden_pairs`` is never made, so
    a training negative never names a held-out pair; a field with no allowed change is skipped.
    """
    values = attrs.as_dict()
    order = [fields[i] for i in rng.permutation(len(fields))]
    for field in order:
        options = []
        for value in ATTRIBUTE_VALUES[field]:
            if value == values[field]:
                continue
            changed = {**values, field: value}
            if (changed["color"], changed["shape"]) not in forbidden_pairs:
                options.append(value)
        if options:
            values[field] = options[int(rng.integers(len(options)))]
            return ShapeAttributes(**values), field
    raise ValueError(f"no allowed one-attribute change of {attrs}")  # pragma: no cover
