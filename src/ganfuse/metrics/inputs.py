"""Validation of the feature and probability arrays that the metric functions take.

Every metric accepts ``torch.Tensor`` or ``numpy.ndarray`` inputs and works on float64 CPU copies,
so results do not depend on the caller's dtype or device.
"""

from __future__ import annotations

import numpy as np
import torch

from ganfuse.errors import UserError

ArrayLike = torch.Tensor | np.ndarray


class MetricInputError(UserError, ValueError):
    """Features, probabilities or images a metric cannot use; the message says which input and what
    it needs. Also a ``ValueError``, which is what it is to code that catches the built-in."""


def as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    """Return ``x`` as a contiguous float64 CPU tensor (a copy only when needed)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise MetricInputError(
            f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}"
        )
    return x.detach().to(device="cpu", dtype=torch.float64).contiguous()


def feature_matrix(x: ArrayLike, name: str, min_rows: int = 1, check_finite: bool = True) -> torch.Tensor:
    """Check that ``x`` is ``(N, D)`` with ``N >= min_rows`` finite values; return it as float64.
    ``check_finite=False`` leaves the finiteness check to the caller (one pass less over x)."""
    out = as_float64(x, name)
    if out.ndim != 2:
        raise MetricInputError(
            f"{name} must be a 2-D (N, D) array of features, got shape {tuple(out.shape)}"
        )
    if out.shape[0] < min_rows:
        raise MetricInputError(
            f"{name} has {out.shape[0]} rows; this metric needs at least {min_rows}"
        )
    if out.shape[1] < 1:
        raise MetricInputError(f"{name} has no feature columns")
    if check_finite and not bool(torch.isfinite(out).all()):
        raise MetricInputError(f"{name} contains NaN or infinite values")
    return out


def same_width(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise unless two ``(N, D)`` feature matrices share ``D``."""
    if a.shape[-1] != b.shape[-1]:
        raise MetricInputError(
            f"{names[0]} has {a.shape[-1]} features per row but {names[1]} has {b.shape[-1]}; "
            "compare features from the same extractor"
        )
