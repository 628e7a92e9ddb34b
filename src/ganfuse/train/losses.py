"""The GAN objectives and regularisers, all on float32 logits ``(B,)``.

Each ``*_d_loss(real, fake)`` is what the discriminator minimises and ``*_g_loss(fake)`` what the
generator minimises:

- ``nonsaturating`` (Goodfellow et al. 2014, the founding document's): BCE with logits; G maximises
  ``log D(G(z))`` instead of minimising ``log(1 - D(G(z)))``, whose gradient vanishes early on.
- ``hinge`` (Lim & Ye 2017; Miyato et al. 2018).
- ``wgan-gp`` (Gulrajani et al. 2017): Wasserstein critic, plus :func:`gradient_penalty`.
- ``lsgan`` (Mao et al. 2017): least squares with targets 1 (real) and 0 (fake).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def nonsaturating_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def nonsaturating_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def wasserstein_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def least_squares_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())


def least_squares_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake - 1.0).pow(2).mean()


LOSS_FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "wgan-gp": (wasserstein_d_loss, wasserstein_g_loss),
    "lsgan": (least_squares_d_loss, least_squares_g_loss),
}


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018: ``E ||grad_x D(x)||^2`` on real images (``real_images`` must require grad).

    Returns the un-weighted mean squared gradient norm; the caller multiplies by ``gamma / 2``.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def gradient_penalty(
    discriminator: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gulrajani et al. 2017: ``E (||grad D(x_hat)|| - 1)^2`` on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    logits = discriminator(mixed).float()
    (grad,) = torch.autograd.grad(logits.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


# ---------------------------------------------------------------------------------------------
# text-to-image terms


def matching_aware_hinge_d_loss(real: torch.Tensor, fake: torch.Tensor, mismatch: torch.Tensor | None,
                                mismatch_weight: float = 1.0) -> torch.Tensor:
    """``relu(1 - real) + [relu(1 + fake) + w * relu(1 + mismatch)] / (1 + w)``, each term a batch
    mean of logits ``(B,)`` (Reed et al. 2016's matching-aware discriminator, hinge form); without
    ``mismatch`` it is :func:`hinge_d_loss`."""
    if mismatch is None or mismatch_weight == 0:
        return hinge_d_loss(real, fake)
    loss_fake = F.relu(1.0 + fake).mean() + mismatch_weight * F.relu(1.0 + mismatch).mean()
    return F.relu(1.0 - real).mean() + loss_fake / (1.0 + mismatch_weight)


def info_nce(image: torch.Tensor, text: torch.Tensor, symmetric: bool = True, temperature: float = 0.1,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss of unit vectors ``image, text (B, K)`` where row i of each is a pair:
    cross-entropy of picking text i for image i among the batch's texts and the extra
    ``negatives`` ``(N, K)`` (and image i for text i, within the batch, when ``symmetric``)."""
    logits = image @ text.t() / temperature
    target = torch.arange(image.shape[0], device=image.device)
    candidates = logits if negatives is None else torch.cat([logits, image @ negatives.t() / temperature], 1)
    loss = F.cross_entropy(candidates, target)
    return (loss + F.cross_entropy(logits.t(), target)) / 2 if symmetric else loss


def matching_aware_gradient_penalty(logits: torch.Tensor, images: torch.Tensor, text: torch.Tensor,
                                    power: float) -> torch.Tensor:
    """MA-GP (Tao et al. 2022): ``E ||(grad_x, grad_c) logits||^p`` over real matching pairs.

    ``images`` ``(B, C, H, W)`` must require grad; ``text`` ``(B, cond_dim)`` is D's text vector
    (part of the graph of ``logits``)."""
    grad_x, grad_c = torch.autograd.grad(logits.sum(), (images, text), create_graph=True)
    norm = (grad_x.flatten(1).pow(2).sum(1) + grad_c.pow(2).sum(1) + 1e-12).sqrt()
    return norm.pow(power).mean()


def paired_feature_matching(fake_maps: list[torch.Tensor], real_maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over D's blocks of the mean absolute difference between the feature maps of fake ``i``
    and real ``i`` (same caption), as in pix2pixHD's discriminator feature-matching loss."""
    terms = [(f.float() - r.float().detach()).abs().mean() for f, r in zip(fake_maps, real_maps, strict=True)]
    return torch.stack(terms).mean()
