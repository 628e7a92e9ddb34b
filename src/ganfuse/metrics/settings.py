"""Evaluation defaults, in one place and free of heavy imports (the CLI reads them for ``--help``)."""

from __future__ import annotations

METRICS = ("fid", "kid", "is", "pr", "dc")
DEFAULT_METRICS = METRICS
# Text-to-image runs: attribute accuracy (+ FD in the attribute classifier's features) of images
# generated from seen and held-out prompts, and R-precision under a contrastive (zero-shot) model.
T2I_METRICS = ("attr", "rprec")
# The privacy audit of a GAN run: its samples' distances to its own training images
# (ganfuse.metrics.memorization), asked for on its own: --metrics memorization.
AUDIT_METRICS = ("memorization",)
AUDIT_DEFAULT_NUM = 2000  # samples audited
T2I_DEFAULT_NUM = 500  # prompts per set (seen, held-out)
DEFAULT_NUM = 10_000  # images per side; FID depends on N, so results always record it
DEFAULT_RESIZE = "tf"  # Inception input resize: TF1-compatible bilinear, as the original FID code
RESIZE_MODES = {
    "tf": "TensorFlow-1-compatible bilinear (torch-fidelity; matches the original TF FID code)",
    "clean": "PIL bicubic with antialiasing (as clean-fid), rounded to uint8",
}
