"""Evaluation defaults, in one place and free of heavy imports (the CLI reads them for ``--help``)."""

from __future__ import annotations

METRICS = ("fid", "kid", "is", "pr", "dc")
DEFAULT_METRICS = METRICS
# Text-to-image runs on shapes: attribute accuracy (+ FD in the attribute classifier's features) of
# images generated from seen and held-out prompts, R-precision under a contrastive (zero-shot)
# model, and diversity (spread of the object's position over seeds, duplicates; asked for by name).
T2I_METRICS = ("attr", "rprec", "diversity")
# Text-to-image runs on scenes (ganfuse.metrics.scene_t2i): the exact judge's count, binding and
# relation scores per prompt set (scene), spread of object positions and sizes over seeds and
# duplicates (diversity), FD in the scene parser's features with n (fd); all three by default.
SCENE_T2I_METRICS = ("scene", "diversity", "fd")
SCENE_T2I_DEFAULT_METRICS = SCENE_T2I_METRICS
SCENE_T2I_MIN_NUM = 4  # prompts per set: the count ladder has num // 4 of each of 1-4 objects
DIVERSITY_PROMPTS = 50  # prompts per kind whose samples are compared (at most --num)
DIVERSITY_SAMPLES = 10  # samples (seeds) per prompt
# The privacy audit of a GAN run: its samples' distances to its own training images
# (ganfuse.metrics.memorization), asked for on its own: --metrics memorization.
AUDIT_METRICS = ("memorization",)
CAS_METRICS = ("cas",)  # Classification Accuracy Score: trains two classifiers, so it runs on its own
AUDIT_DEFAULT_NUM = 2000  # samples audited
T2I_DEFAULT_NUM = 500  # prompts per set (seen, held-out)
DEFAULT_NUM = 10_000  # images per side; FID depends on N, so results always record it
DEFAULT_RESIZE = "tf"  # Inception input resize: TF1-compatible bilinear, as the original FID code
RESIZE_MODES = {
    "tf": "TensorFlow-1-compatible bilinear (torch-fidelity; matches the original TF FID code)",
    "clean": "PIL bicubic with antialiasing (as clean-fid), rounded to uint8",
}
