"""Model configs of the image-synthesis family: frozen, strict, JSON-friendly.

Each is what rebuilds a model from its folder (``config.json``) and the group
the training stage reads from ``params.yaml`` (with
``components.config.build``, which refuses unknown, missing and mistyped
keys). Every field is required, as elsewhere in the project: the values live
in ``params.yaml``, stated once. Names in registries (likelihood, loss, norm)
are checked here so a typo fails when the params are loaded, naming the key.

Optimiser settings (learning rates, Adam betas), batch size, step counts and
seeds are training-loop settings, not model settings, and belong to the
stage's own config.
"""

from __future__ import annotations

import dataclasses

from components.config import ConfigError
from components.generative.gan import D_NORMS
from components.generative.losses import GAN_LOSSES
from components.generative.vae import LIKELIHOODS

SUPPORTED_IMAGE_SIZES = (16, 32, 64, 128)  # 4 * 2**n; 32 and 64 are the targets


def _check_common(name: str, image_size: int, latent_dim: int, channels: dict[str, int]) -> None:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ConfigError(f"{name}.image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
    if latent_dim < 1:
        raise ConfigError(f"{name}.latent_dim must be >= 1, got {latent_dim}")
    for key, value in channels.items():
        if value < 1:
            raise ConfigError(f"{name}.{key} must be >= 1, got {value}")


def check_choice(name: str, key: str, value: str, registry: dict) -> None:
    """Refuse a ``value`` that is not a name in ``registry``, naming ``name.key`` and the choices."""
    if value not in registry:
        raise ConfigError(f"{name}.{key} must be one of {sorted(registry)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """A convolutional VAE (``components.generative.vae``).

    Attributes:
        image_size: Image side in pixels (32 or 64).
        latent_dim: Size of z.
        base_channels: Channels of the first encoder stage (doubling per stage).
        decoder_res_blocks: Residual 3x3 blocks after each inner decoder
            stage (0: the plain transposed-convolution decoder).
        likelihood: ``gaussian`` (discretized, 8-bit) or ``bernoulli``.
        gaussian_std: The Gaussian's shared std in pixel units (data in
            ``[0, 1]``): fixed, or the initial value when ``learn_std``.
            Ignored by ``bernoulli``.
        learn_std: Learn the Gaussian's shared std.
        beta: KL weight of the training loss (1 = VAE, > 1 = beta-VAE).
    """

    image_size: int
    latent_dim: int
    base_channels: int
    decoder_res_blocks: int
    likelihood: str
    gaussian_std: float
    learn_std: bool
    beta: float

    def __post_init__(self) -> None:
        _check_common("VAEConfig", self.image_size, self.latent_dim,
                      {"base_channels": self.base_channels})
        if self.decoder_res_blocks < 0:
            raise ConfigError(f"VAEConfig.decoder_res_blocks must be >= 0, got {self.decoder_res_blocks}")
        check_choice("VAEConfig", "likelihood", self.likelihood, LIKELIHOODS)
        if self.gaussian_std <= 0:
            raise ConfigError(f"VAEConfig.gaussian_std must be > 0, got {self.gaussian_std}")
        if self.beta < 0:
            raise ConfigError(f"VAEConfig.beta must be >= 0, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class GANConfig:
    """A DCGAN and its adversarial objective (``components.generative.gan``).

    Attributes:
        image_size: Image side in pixels (32 or 64).
        latent_dim: Size of z.
        g_channels: Generator width (the paper's ``ngf``, 64).
        d_channels: Discriminator width (the paper's ``ndf``, 64).
        loss: Key of ``GAN_LOSSES``: ``non_saturating``, ``hinge``, ``wgan_gp``.
        d_norm: Key of ``D_NORMS``: ``batch``, ``layer``, ``instance``, ``none``.
        spectral_norm: Spectral normalisation of the discriminator's convs.
        n_critic: Discriminator updates per generator update (5 for WGAN-GP).
        gp_weight: Gradient penalty lambda; applied when > 0, whatever the
            loss; required > 0 by ``wgan_gp`` (10 in the paper).
        ema_decay: Decay of the generator's weight average, in ``[0, 1)``.
    """

    image_size: int
    latent_dim: int
    g_channels: int
    d_channels: int
    loss: str
    d_norm: str
    spectral_norm: bool
    n_critic: int
    gp_weight: float
    ema_decay: float

    def __post_init__(self) -> None:
        _check_common("GANConfig", self.image_size, self.latent_dim,
                      {"g_channels": self.g_channels, "d_channels": self.d_channels})
        check_choice("GANConfig", "loss", self.loss, GAN_LOSSES)
        check_choice("GANConfig", "d_norm", self.d_norm, D_NORMS)
        if self.n_critic < 1:
            raise ConfigError(f"GANConfig.n_critic must be >= 1, got {self.n_critic}")
        if self.gp_weight < 0:
            raise ConfigError(f"GANConfig.gp_weight must be >= 0, got {self.gp_weight}")
        if GAN_LOSSES[self.loss].needs_gradient_penalty and self.gp_weight <= 0:
            raise ConfigError(f"GANConfig.gp_weight must be > 0 with loss '{self.loss}'")
        if self.gp_weight > 0 and self.d_norm == "batch":
            raise ConfigError(
                "GANConfig.d_norm must not be 'batch' with a gradient penalty (gp_weight > 0): "
                "use 'layer', 'instance' or 'none'"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"GANConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
