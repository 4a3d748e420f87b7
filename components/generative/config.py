"""Model configs of the image-synthesis family: frozen, strict, JSON-friendly.

Each is what rebuilds a model from its folder (``config.json``) and the group
the training stage reads from ``params.yaml`` (with
``components.config.build``, which refuses unknown, missing and mistyped
keys). The project's one config style: every field is required (the values
live in ``params.yaml``, stated once); a name from a registry (likelihood,
loss, norm, augmentation) is a ``Literal`` that ``build`` checks, naming the
file and the key; ranges are checked in ``__post_init__`` with a
:class:`~components.config.ConfigError` naming the key.

Optimiser settings (learning rates, Adam betas), batch size, step counts and
seeds are training-loop settings, not model settings, and belong to the
stage's own config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from components.config import ConfigError, check_choices
from components.train.config import Precision, ScalingParams

# The names params.yaml may use, stated here so this module imports no model code (and no
# torch): the registries they select from (``vae.LIKELIHOODS``, ``losses.GAN_LOSSES``,
# ``gan.D_NORMS``, ``augment.AUGMENTATIONS``) must have exactly these keys, which
# tests/unit/test_generative_config_names.py checks.
Likelihood = Literal["bernoulli", "gaussian"]
GANLoss = Literal["hinge", "non_saturating", "wgan_gp"]
DiscriminatorNorm = Literal["batch", "instance", "layer", "none"]
Augmentation = Literal["none", "translation", "translation_cutout"]
GAN_LOSSES_WITH_GRADIENT_PENALTY = ("wgan_gp",)  # ``GANLoss.needs_gradient_penalty``
NAMES = {"likelihood": get_args(Likelihood), "loss": get_args(GANLoss), "d_norm": get_args(DiscriminatorNorm),
         "augment": get_args(Augmentation)}

SUPPORTED_IMAGE_SIZES = (16, 32, 64, 128)  # 4 * 2**n; 32 and 64 are the targets


def _check_common(name: str, image_size: int, latent_dim: int, channels: dict[str, int]) -> None:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ConfigError(f"{name}.image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
    if latent_dim < 1:
        raise ConfigError(f"{name}.latent_dim must be >= 1, got {latent_dim}")
    for key, value in channels.items():
        if value < 1:
            raise ConfigError(f"{name}.{key} must be >= 1, got {value}")


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
    likelihood: Likelihood
    gaussian_std: float
    learn_std: bool
    beta: float

    def __post_init__(self) -> None:
        check_choices(self)
        _check_common("VAEConfig", self.image_size, self.latent_dim,
                      {"base_channels": self.base_channels})
        if self.decoder_res_blocks < 0:
            raise ConfigError(f"VAEConfig.decoder_res_blocks must be >= 0, got {self.decoder_res_blocks}")
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
    loss: GANLoss
    d_norm: DiscriminatorNorm
    spectral_norm: bool
    n_critic: int
    gp_weight: float
    ema_decay: float

    def __post_init__(self) -> None:
        check_choices(self)
        _check_common("GANConfig", self.image_size, self.latent_dim,
                      {"g_channels": self.g_channels, "d_channels": self.d_channels})
        if self.n_critic < 1:
            raise ConfigError(f"GANConfig.n_critic must be >= 1, got {self.n_critic}")
        if self.gp_weight < 0:
            raise ConfigError(f"GANConfig.gp_weight must be >= 0, got {self.gp_weight}")
        if self.loss in GAN_LOSSES_WITH_GRADIENT_PENALTY and self.gp_weight <= 0:
            raise ConfigError(f"GANConfig.gp_weight must be > 0 with loss '{self.loss}'")
        if self.gp_weight > 0 and self.d_norm == "batch":
            raise ConfigError(
                "GANConfig.d_norm must not be 'batch' with a gradient penalty (gp_weight > 0): "
                "use 'layer', 'instance' or 'none'"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"GANConfig.ema_decay must be in [0, 1), got {self.ema_decay}")


# ---------------------------------------------------------------------------
# training-loop configs (``train_vae.train``, ``train_gan.train``)
# ---------------------------------------------------------------------------


def check_train_common(name: str, cfg: Any) -> None:
    """The checks every GAN-style loop's ``train`` group shares: epochs, batch, threads, samples, Adam betas."""
    for key in ("epochs", "batch_size", "threads_per_worker"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{name}.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.num_samples < 2:
        raise ConfigError(f"{name}.num_samples must be >= 2, got {cfg.num_samples}")
    if not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ConfigError(f"{name}.betas must be in [0, 1), got {cfg.betas}")


@dataclasses.dataclass(frozen=True)
class VAETrainParams:
    """Optimisation keys of ``train_vae.train`` in ``params.yaml``."""

    epochs: int
    batch_size: int
    lr: float
    betas: tuple[float, float]  # Adam's (beta1, beta2)
    grad_clip: float  # clip the global gradient norm; 0: off
    iw_samples: int  # k of the IWAE bound on val at the last epoch (and on test); 0: off
    num_samples: int  # prior samples per epoch for the diagnostics (diversity, colours)
    sample_seed: int  # seed of the diagnostic and fixed-noise samples
    seed: int
    precision: Precision  # bf16 autocast of the train steps: auto | bf16 | fp32; evaluation stays float32
    channels_last: bool  # the train steps' models and batches in channels-last memory format
    threads_per_worker: int  # torch intra-op threads per worker (and the CPUs it reserves)
    fail_at_epoch: int  # failure injection for fault-tolerance tests; -1: off

    def __post_init__(self) -> None:
        check_choices(self)
        check_train_common("train_vae.train", self)
        if self.lr <= 0 or self.grad_clip < 0 or self.iw_samples < 0:
            raise ConfigError("train_vae.train: lr must be > 0, grad_clip and iw_samples >= 0")


@dataclasses.dataclass(frozen=True)
class GANTrainParams:
    """Optimisation keys of ``train_gan.train`` in ``params.yaml``."""

    epochs: int
    batch_size: int
    lr_g: float
    lr_d: float  # lr_d > lr_g is the two time-scale rule (TTUR, Heusel et al. 2017)
    betas: tuple[float, float]  # Adam's, shared; DCGAN: (0.5, 0.999)
    augment: Augmentation  # DiffAugment before D (components.generative.augment) | none
    num_samples: int
    sample_seed: int
    seed: int
    precision: Precision
    channels_last: bool
    threads_per_worker: int
    fail_at_epoch: int

    def __post_init__(self) -> None:
        check_choices(self)
        check_train_common("train_gan.train", self)
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ConfigError("train_gan.train: lr_g and lr_d must be > 0")


@dataclasses.dataclass(frozen=True)
class VAEParams:
    """``train_vae`` stage: prepared images → a VAE (``models/vae``), samples, ELBO."""

    model: VAEConfig
    train: VAETrainParams
    scaling: ScalingParams


@dataclasses.dataclass(frozen=True)
class GANParams:
    """``train_gan`` stage: prepared images → a DCGAN (``models/gan``), samples, diagnostics."""

    model: GANConfig
    train: GANTrainParams
    scaling: ScalingParams
