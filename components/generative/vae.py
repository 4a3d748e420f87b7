"""Convolutional VAE (Kingma & Welling 2014) with a beta weight (Higgins et al. 2017).

Data convention: the VAE reads and writes images as floats in ``[0, 1]``, on
the 8-bit grid ``k / 255`` (``ImageTensorDataset(value_range=(0, 1))``).

Likelihoods (:data:`LIKELIHOODS`, chosen by ``VAEConfig.likelihood``):

``gaussian``
    A *discretized* Gaussian over the 256 levels of each sub-pixel
    (:func:`~components.generative.losses.discretized_gaussian_log_prob`), mean
    from the decoder, one scalar standard deviation shared by all pixels:
    fixed at ``gaussian_std`` (``learn_std: false``), or a learned parameter
    initialised there (``learn_std: true``; the shared learned variance of the
    sigma-VAE, Rybkin et al. 2021). Because it is a probability mass function
    of the 8-bit data, the ELBO is a bound on ``log P(x)`` of the actual
    images, bits/dim is meaningful, and a learned variance cannot collapse to
    zero to inflate the likelihood (each level's probability is at most 1).
    We chose discretization over uniform dequantization (``x + u``,
    ``u ~ U[0, 1/256)``, Theis et al. 2016) because it is exact and adds no
    noise to the loss; with dequantization the figure would be a bound that
    needs a ``+ 8`` bits/dim correction and a noise draw per evaluation.

``bernoulli``
    The decoder outputs logits; the likelihood is ``-BCE(logits, x)`` on the
    grey levels in ``[0, 1]`` (the usual practice). It is not normalised over
    8-bit data, so its "bits/dim" is nominal and must not be compared with the
    Gaussian's or with the literature.

Every loss term is per image in nats (summed over ``D = 3 * H * W``, averaged
over the batch): ``recon_nll = -E_q[log p(x|z)]`` (one reparameterised sample),
``kl = KL(q(z|x) || N(0, I))`` in closed form, ``elbo = -(recon_nll + kl)``,
``loss = recon_nll + beta * kl`` (the beta-VAE objective; the ELBO itself is
always the beta = 1 bound), ``bits_per_dim = -elbo / (D ln 2)``.
:func:`iwae_log_likelihood` gives the tighter importance-weighted estimate
(Burda et al. 2016).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from components.generative import losses
from components.generative.common import standard_normal

if TYPE_CHECKING:  # config.py imports this module's registry
    from components.generative.config import VAEConfig


def num_stages(image_size: int) -> int:
    """Stride-2 stages between ``image_size`` and the 4x4 bottleneck (3 for 32 px, 4 for 64)."""
    return int(math.log2(image_size // 4))


def _norm(channels: int) -> nn.GroupNorm:
    # Per-example normalisation: the ELBO of an image does not depend on its batch.
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class Encoder(nn.Module):
    """q(z|x): strided convolutions down to 4x4, then a linear map to (mu, logvar).

    Args:
        image_size: Input side in pixels (a power of two, e.g. 32 or 64).
        latent_dim: L, size of z.
        base_channels: Channels of the first stage; each stage doubles them.
    """

    def __init__(self, *, image_size: int, latent_dim: int, base_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(num_stages(image_size)):
            c_out = base_channels * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), _norm(c_out), nn.SiLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.to_params = nn.Linear(c_in * 4 * 4, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encode images.

        Args:
            x: ``(B, 3, H, W)`` images in ``[0, 1]``.

        Returns:
            tuple[Tensor, Tensor]: ``mu`` and ``logvar``, each ``(B, L)``.
        """
        h = self.features(x * 2.0 - 1.0)  # (B, C, 4, 4); centred input
        mu, logvar = self.to_params(h.flatten(start_dim=1)).chunk(2, dim=-1)  # (B, L) each
        return mu, logvar


class ResidualBlock(nn.Module):
    """``x + f(x)``, ``f`` two 3x3 convolutions with GroupNorm (He et al. 2016), then SiLU; shape kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), _norm(channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1), _norm(channels),
        )
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        return self.act(x + self.body(x))


class Decoder(nn.Module):
    """p(x|z): a linear map to 4x4, then transposed convolutions up to the image size.

    After every inner upsampling stage (8 and 16 px for a 32 px image) come
    ``res_blocks`` :class:`ResidualBlock` s: 3x3 convolutions at that
    resolution, which draw the edges of small shapes that a transposed
    convolution alone blurs (README §VAE and GAN). Returns the likelihood's
    parameters per sub-pixel ``(B, 3, H, W)``: logits (Bernoulli) or means
    (Gaussian).

    Args:
        image_size: Output side in pixels (a power of two).
        latent_dim: L, size of z.
        base_channels: Channels of the last hidden stage; each stage above doubles them.
        res_blocks: Residual blocks after each inner stage (0: none).
    """

    def __init__(self, *, image_size: int, latent_dim: int, base_channels: int, res_blocks: int = 0):
        super().__init__()
        n = num_stages(image_size)
        c = base_channels * 2 ** (n - 1)
        self.c_top = c
        self.from_latent = nn.Linear(latent_dim, c * 4 * 4)
        layers: list[nn.Module] = [_norm(c), nn.SiLU()]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), _norm(c // 2), nn.SiLU()]
            c //= 2
            layers += [ResidualBlock(c) for _ in range(res_blocks)]
        layers.append(nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Decode ``z`` ``(B, L)`` to likelihood parameters ``(B, 3, H, W)``."""
        h = self.from_latent(z).view(z.shape[0], self.c_top, 4, 4)  # (B, C, 4, 4)
        return self.net(h)  # (B, 3, H, W)


class BernoulliLikelihood(nn.Module):
    """Bernoulli pixels; the decoder outputs logits (Kingma & Welling 2014, App. C.1)."""

    @classmethod
    def from_config(cls, cfg: VAEConfig) -> BernoulliLikelihood:
        """No parameters: the decoder's logits are the whole distribution."""
        return cls()

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """Per-image log p(x|z): ``x`` and ``params`` ``(B, 3, H, W)`` -> ``(B,)`` nats."""
        return losses.sum_per_image(losses.bernoulli_log_prob(params, x))

    def mean(self, params: Tensor) -> Tensor:
        """Expected image in ``[0, 1]``: ``sigmoid(logits)``, ``(B, 3, H, W)``."""
        return torch.sigmoid(params)


class DiscretizedGaussianLikelihood(nn.Module):
    """Discretized Gaussian pixels with one shared std, fixed or learned.

    Args:
        std: The fixed standard deviation (pixel units, data in ``[0, 1]``), or
            the initial value of the learned one.
        learn_std: Learn ``log_std`` as a parameter (shared by all pixels).
    """

    # Keeps exp(-log_std) finite; well below half a level (1/510).
    MIN_LOG_STD = math.log(1e-4)

    def __init__(self, *, std: float, learn_std: bool):
        super().__init__()
        log_std = torch.tensor(math.log(std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    @classmethod
    def from_config(cls, cfg: VAEConfig) -> DiscretizedGaussianLikelihood:
        """``std = cfg.gaussian_std``, learned when ``cfg.learn_std``."""
        return cls(std=cfg.gaussian_std, learn_std=cfg.learn_std)

    @property
    def std(self) -> float:
        """The current standard deviation (pixel units)."""
        return float(self.log_std.detach().clamp_min(self.MIN_LOG_STD).exp())

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """Per-image log P(x|z) of the 8-bit data: ``(B, 3, H, W)`` -> ``(B,)`` nats."""
        log_std = self.log_std.clamp_min(self.MIN_LOG_STD)
        return losses.sum_per_image(losses.discretized_gaussian_log_prob(x, params, log_std))

    def mean(self, params: Tensor) -> Tensor:
        """Expected image: the Gaussian mean clipped to ``[0, 1]``, ``(B, 3, H, W)``."""
        return params.clamp(0.0, 1.0)


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": DiscretizedGaussianLikelihood,
}


class VAE(nn.Module):
    """Encoder, decoder and likelihood; ``forward`` returns the per-image loss terms.

    ``forward`` runs every parameter (the learned std included), so the model
    can be wrapped in ``DistributedDataParallel`` and still sync all gradients.

    Args:
        encoder: q(z|x).
        decoder: p(x|z)'s parameters.
        likelihood: One of :data:`LIKELIHOODS`.
        beta: Weight of the KL term in the training loss (1 = plain VAE).
        image_size: Image side in pixels.
        latent_dim: L.
    """

    value_range = (0.0, 1.0)

    def __init__(self, *, encoder: Encoder, decoder: Decoder, likelihood: nn.Module, beta: float,
                 image_size: int, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.beta = beta
        self.image_size = image_size
        self.latent_dim = latent_dim

    @property
    def num_dims(self) -> int:
        """D = 3 * H * W, the sub-pixels per image."""
        return 3 * self.image_size * self.image_size

    def forward(self, x: Tensor, eps: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One reparameterised pass (Kingma & Welling 2014, eq. 10, analytic KL).

        Args:
            x: ``(B, 3, H, W)`` images in ``[0, 1]``.
            eps: ``(B, L)`` standard normal noise; drawn when omitted.
            generator: RNG for ``eps`` when it is drawn.

        Returns:
            dict[str, Tensor]: per-image ``(B,)`` tensors ``log_px_z`` (one
            sample of log p(x|z)) and ``kl``; and ``mu``, ``logvar``, ``z``
            ``(B, L)``, ``params`` ``(B, 3, H, W)``.
        """
        # under bf16 autocast the networks compute in bf16; the latent, the likelihood and the KL in float32
        mu, logvar = (t.float() for t in self.encoder(x))  # (B, L) each
        if eps is None:
            eps = standard_normal(mu.shape, generator=generator, like=mu)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, L)
        params = self.decoder(z).float()  # (B, 3, H, W)
        return {
            "log_px_z": self.likelihood.log_prob(x, params),  # (B,)
            "kl": losses.gaussian_kl(mu, logvar),  # (B,)
            "mu": mu, "logvar": logvar, "z": z, "params": params,
        }

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """Decode latents to images: the likelihood's mean, ``(B, L) -> (B, 3, H, W)`` in ``[0, 1]``."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean of ``x`` ``(B, 3, H, W)``: images in ``[0, 1]``."""
        mu, _ = self.encoder(x)
        return self.generate(mu)


def elbo_terms(out: dict[str, Tensor], *, beta: float, num_dims: int) -> dict[str, Tensor]:
    """Batch-mean loss terms from :meth:`VAE.forward`'s output, all per image.

    Args:
        out: ``VAE.forward`` output.
        beta: KL weight of the training loss.
        num_dims: D = 3 * H * W.

    Returns:
        dict[str, Tensor]: scalars ``loss`` (recon_nll + beta * kl, to
        minimise), ``recon_nll``, ``kl``, ``elbo`` (nats) and ``bits_per_dim``
        (of -elbo).
    """
    recon_nll = -out["log_px_z"].mean()
    kl = out["kl"].mean()
    elbo = -(recon_nll + kl)
    return {
        "loss": recon_nll + beta * kl,
        "recon_nll": recon_nll,
        "kl": kl,
        "elbo": elbo,
        "bits_per_dim": losses.bits_per_dim(-elbo, num_dims),
    }


@torch.no_grad()
def log_importance_weights(vae: VAE, x: Tensor, eps: Tensor) -> Tensor:
    """``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)`` with ``z_k = mu + sigma * eps_k``.

    Args:
        vae: The model (unwrapped, eval mode advised).
        x: ``(B, 3, H, W)`` images in ``[0, 1]``.
        eps: ``(K, B, L)`` standard normal noise, one row per importance sample.

    Returns:
        Tensor: ``(K, B)`` log-weights in nats.
    """
    k, b, latent = eps.shape
    mu, logvar = vae.encoder(x)  # (B, L)
    z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, L)
    params = vae.decoder(z.reshape(k * b, latent))  # (K*B, 3, H, W)
    x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])  # (K*B, 3, H, W)
    log_px_z = vae.likelihood.log_prob(x_rep, params).view(k, b)  # (K, B)
    return log_px_z + losses.std_normal_log_prob(z) - losses.diag_gaussian_log_prob(z, mu, logvar)


@torch.no_grad()
def iwae_log_likelihood(vae: VAE, x: Tensor, *, k: int, generator: torch.Generator | None = None,
                        chunk_size: int = 64) -> Tensor:
    """Importance-weighted estimate of log p(x) (Burda et al. 2016, eq. 8).

    ``log p(x) ~= logsumexp_k log w_k - log k``. Its expectation is a lower
    bound that rises with ``k`` towards log p(x); ``k = 1`` is the ELBO (with a
    Monte Carlo KL). Report ``-result`` as the NLL and
    ``bits_per_dim(-result, vae.num_dims)``.

    Args:
        vae: The model (unwrapped; call ``.eval()`` first).
        x: ``(B, 3, H, W)`` images in ``[0, 1]``.
        k: Importance samples per image (e.g. 1000 for the literature's figure).
        generator: RNG for the samples.
        chunk_size: Samples decoded at once (memory: ``chunk_size * B`` images).

    Returns:
        Tensor: ``(B,)`` log-likelihood estimates in nats.
    """
    b = x.shape[0]
    chunks = []
    for start in range(0, k, chunk_size):
        n = min(chunk_size, k - start)
        eps = standard_normal((n, b, vae.latent_dim), generator=generator, like=x)  # (n, B, L)
        chunks.append(log_importance_weights(vae, x, eps))  # (n, B)
    log_w = torch.cat(chunks, dim=0)  # (K, B)
    return torch.logsumexp(log_w, dim=0) - math.log(k)
