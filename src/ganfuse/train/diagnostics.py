"""Diagnostics attached to a training run at log steps (mode collapse, Frechet distance).

Filled in by the quality and evaluation work; the foundation attaches none by default.
"""

from __future__ import annotations


def attach_default_callbacks(trainer) -> None:
    """Attach the diagnostics the config asks for (``train.monitor_every``, ``train.eval_every``)."""
    return None
