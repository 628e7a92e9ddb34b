"""Inception Score (Salimans et al. 2016) from class probabilities:

    IS = exp( E_x KL( p(y|x) || p(y) ) ),  p(y) = E_x p(y|x),

computed on contiguous splits of the rows in the order given and reported as the mean and
(population) standard deviation over splits. Split ``i`` of ``S`` holds rows
``[i*N//S, (i+1)*N//S)``: every row is used and split sizes differ by at most one.
"""

from __future__ import annotations

import torch

from ganfuse.metrics.inputs import ArrayLike, MetricInputError, feature_matrix

_ROW_SUM_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; this only catches logits


def split_bounds(n: int, splits: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` bounds of ``splits`` near-equal parts of ``n`` rows."""
    return [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]


def inception_score_from_probs(p: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """IS of class probabilities ``p`` ``(N, K)`` (rows non-negative, summing to 1) over ``splits`` parts."""
    probs = feature_matrix(p, "p", min_rows=1)
    if not 1 <= splits <= probs.shape[0]:
        raise MetricInputError(
            f"splits must be between 1 and the number of rows ({probs.shape[0]}), got {splits}"
        )
    if bool((probs < 0).any()) or float((probs.sum(dim=1) - 1.0).abs().max()) > _ROW_SUM_TOLERANCE:
        raise MetricInputError(
            "p must hold probabilities (rows >= 0 summing to 1); apply softmax to logits first"
        )
    scores = torch.empty(splits, dtype=torch.float64)
    for i, (start, stop) in enumerate(split_bounds(probs.shape[0], splits)):
        part = probs[start:stop]
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # 0 log 0 = 0
        scores[i] = kl.mean().exp()
    return float(scores.mean()), float(scores.std(correction=0))
