"""Building blocks shared by every network family."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import spectral_norm


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` with spectral normalisation of its weight (Miyato et al. 2018) when ``enabled``,
    else ``module`` itself, so one network definition serves both settings."""
    return spectral_norm(module) if enabled else module
