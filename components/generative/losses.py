"""Pure loss functions of the VAE and the GAN: tensors in, tensors out.

Nothing here owns parameters or optimisers; the networks live in ``vae.py`` and
``gan.py``, the train steps in ``steps.py``.

Units. Every VAE quantity is in nats *per image*: summed over the
``D = 3 * H * W`` sub-pixels and (by the caller) averaged over the batch.
:func:`bits_per_dim` converts: ``bits/dim = nats / (D * ln 2)``.

GAN losses take discriminator logits (``(B,)`` raw scores, no sigmoid) and
return scalars; the registry :data:`GAN_LOSSES` maps a config name to the pair
``d_loss(real_logits, fake_logits)`` / ``g_loss(fake_logits)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)

# ---------------------------------------------------------------------------
# VAE: likelihoods, prior, posterior, KL
# ---------------------------------------------------------------------------


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, in closed form.

    Kingma & Welling 2014, Appendix B:
    ``-KL = 1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)``.

    Args:
        mu: Posterior means, ``(B, L)``.
        logvar: Posterior log-variances, ``(B, L)``.

    Returns:
        Tensor: ``(B,)`` KL in nats.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)  # (B,)


def std_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension.

    Args:
        z: ``(..., L)`` latent codes.

    Returns:
        Tensor: ``(...)`` log-density in nats.
    """
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=-1)


def diag_gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension.

    Args:
        z: ``(..., L)`` points; ``mu`` and ``logvar`` broadcast against it.
        mu: ``(..., L)`` means.
        logvar: ``(..., L)`` log-variances.

    Returns:
        Tensor: ``(...)`` log-density in nats.
    """
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(dim=-1)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """Element-wise Bernoulli log-likelihood ``x log p + (1-x) log(1-p)``, p = sigmoid(logits).

    Kingma & Welling 2014, Appendix C.1 (Bernoulli MLP decoder). ``x`` may be
    any value in ``[0, 1]`` (grey levels, the usual practice); it is then the
    negative binary cross-entropy, not a normalised probability of 8-bit data,
    so bits/dim computed from it is only a nominal figure (see ``vae.py``).

    Args:
        logits: ``(B, C, H, W)`` decoder outputs.
        x: ``(B, C, H, W)`` targets in ``[0, 1]``.

    Returns:
        Tensor: ``(B, C, H, W)`` log-likelihood in nats.
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def discretized_gaussian_log_prob(
    x: Tensor, mean: Tensor, log_std: Tensor, *, num_levels: int = 256
) -> Tensor:
    """Element-wise log-probability of 8-bit data under a discretized Gaussian.

    The pixel values ``k / (num_levels - 1)``, ``k = 0..num_levels-1``, are the
    centres of bins of width ``1 / (num_levels - 1)``; a level gets the mass of
    ``N(mean, std^2)`` over its bin, the two end bins extending to -inf / +inf
    (Salimans et al. 2017, PixelCNN++ eq. 2, with a Gaussian instead of a
    logistic; Ho et al. 2020, DDPM section 3.3). This is a true probability mass
    function over the 256 levels (it sums to one), so ``-log p`` is a code length
    of the 8-bit data and bits/dim is directly comparable with published
    figures; a continuous density on undequantized data is not (it can exceed
    one and grows without bound as std -> 0).

    Where a bin holds less than 1e-5 of the mass the log of the CDF difference
    loses precision; there the density at the bin centre times the bin width is
    used, as in PixelCNN++, which keeps the gradient informative.

    Args:
        x: ``(B, C, H, W)`` data in ``[0, 1]``, on the grid ``k / (num_levels - 1)``.
        mean: ``(B, C, H, W)`` Gaussian means (pixel units, unconstrained).
        log_std: Log standard deviation, broadcastable to ``x`` (a scalar for a
            shared variance).
        num_levels: Number of quantisation levels (256 for 8-bit images).

    Returns:
        Tensor: ``(B, C, H, W)`` log-probabilities in nats (all <= 0).
    """
    bin_width = 1.0 / (num_levels - 1)
    inv_std = torch.exp(-log_std)
    centred = x - mean  # (B, C, H, W)
    plus_in = (centred + 0.5 * bin_width) * inv_std  # upper bin edge, standardised
    min_in = (centred - 0.5 * bin_width) * inv_std  # lower bin edge, standardised
    mid_in = centred * inv_std
    # Phi(plus) - Phi(min), evaluated in the lower tail, where it is precise:
    # above the mean, by symmetry, as Phi(-min) - Phi(-plus).
    sign = torch.where(mid_in > 0, -1.0, 1.0)
    cdf_delta = sign * (torch.special.ndtr(sign * plus_in) - torch.special.ndtr(sign * min_in))
    log_delta = torch.log(cdf_delta.clamp_min(1e-12))
    log_mid = -0.5 * mid_in.pow(2) - 0.5 * LOG_2PI - log_std + math.log(bin_width)
    log_inner = torch.where(cdf_delta > 1e-5, log_delta, log_mid)
    level = torch.round(x * (num_levels - 1))
    low, high = level <= 0, level >= num_levels - 1
    # End bins reach -inf / +inf: log Phi(upper edge) for level 0,
    # log(1 - Phi(lower edge)) = log Phi(-lower edge) for the top level.
    log_edge = torch.special.log_ndtr(torch.where(low, plus_in, -min_in))
    return torch.where(low | high, log_edge, log_inner)


def sum_per_image(values: Tensor) -> Tensor:
    """Sum element-wise values over all but the batch dimension: ``(B, ...) -> (B,)``."""
    return values.flatten(start_dim=1).sum(dim=1)


def bits_per_dim(nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert a per-image negative log-likelihood in nats to bits per dimension.

    Args:
        nats: Per-image NLL (or -ELBO) in nats.
        num_dims: ``D = C * H * W`` sub-pixels per image.

    Returns:
        ``nats / (D * ln 2)``, same type as ``nats``.
    """
    return nats / (num_dims * math.log(2.0))


# ---------------------------------------------------------------------------
# GAN: adversarial losses and the gradient penalty
# ---------------------------------------------------------------------------


def non_saturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator cross-entropy: ``-log D(x) - log(1 - D(G(z)))``.

    Goodfellow et al. 2014, eq. 1, with ``D = sigmoid(logits)``; written with
    softplus for stability: ``-log sigmoid(a) = softplus(-a)``.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def non_saturating_g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``-log D(G(z))`` (Goodfellow et al. 2014, section 3)."""
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``.

    Lim & Ye 2017 (Geometric GAN); Miyato et al. 2018, eq. 16.
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator side of the hinge loss: ``-E[D(G(z))]`` (Miyato et al. 2018, eq. 17)."""
    return -fake_logits.mean()


def wasserstein_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Critic loss ``E[D(G(z))] - E[D(x)]`` (Arjovsky et al. 2017; Gulrajani et al. 2017, Alg. 1).

    The Lipschitz constraint is the separate :func:`gradient_penalty`.
    """
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator loss ``-E[D(G(z))]`` (Gulrajani et al. 2017, Alg. 1, line 11)."""
    return -fake_logits.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Two-sided gradient penalty ``lambda * E[(||grad D(x_hat)||_2 - 1)^2]``.

    Gulrajani et al. 2017, eq. 3 and Alg. 1: ``x_hat = eps x + (1 - eps) x~``
    with ``eps ~ U[0, 1]`` per example. The graph is kept (``create_graph``) so
    the penalty is differentiated with the critic loss. The gradient is taken
    per example, so the critic must not mix examples (no batch norm).

    Args:
        critic: Maps ``(B, C, H, W)`` images to ``(B,)`` scores.
        real: ``(B, C, H, W)`` real images.
        fake: ``(B, C, H, W)`` generated images (detached or not).
        weight: lambda (10 in the paper).
        generator: RNG for ``eps``; on ``real``'s device, or a CPU generator.

    Returns:
        Tensor: scalar, already multiplied by ``weight``.
    """
    b = real.shape[0]
    eps = torch.rand(b, 1, 1, 1, generator=generator,
                     device=generator.device if generator is not None else real.device)
    eps = eps.to(device=real.device, dtype=real.dtype)  # (B, 1, 1, 1)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)  # (B, C, H, W)
    scores = critic(x_hat)  # (B,)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)  # (B, C, H, W)
    grad_norm = grad.float().flatten(start_dim=1).norm(2, dim=1)  # (B,), float32 under autocast
    return weight * (grad_norm - 1.0).pow(2).mean()


@dataclasses.dataclass(frozen=True)
class GANLoss:
    """A pair of adversarial losses, looked up by name in :data:`GAN_LOSSES`.

    Attributes:
        d_loss: ``(real_logits (B,), fake_logits (B,)) -> scalar`` for D.
        g_loss: ``fake_logits (B,) -> scalar`` for G.
        needs_gradient_penalty: The loss only makes sense with a Lipschitz
            constraint from :func:`gradient_penalty` (``gp_weight > 0``).
    """

    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    needs_gradient_penalty: bool = False


GAN_LOSSES: dict[str, GANLoss] = {
    "non_saturating": GANLoss(non_saturating_d_loss, non_saturating_g_loss),
    "hinge": GANLoss(hinge_d_loss, hinge_g_loss),
    "wgan_gp": GANLoss(wasserstein_d_loss, wasserstein_g_loss, needs_gradient_penalty=True),
}
