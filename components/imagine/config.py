"""The ``train_imagine`` params group: a caption-conditioned generator (GAN or CVAE) and its training loop.

A leaf module (no torch, no model code), in the project's one config style
(:mod:`components.config`): every key required, names as ``Literal``, ranges
checked in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.config import ConfigError, check_choices
from components.generative.config import check_train_common
from components.train.config import Precision, ScalingParams

SUPPORTED_IMAGE_SIZES = (32, 64)
KINDS = ("gan", "cvae")


@dataclasses.dataclass(frozen=True)
class ImagineConfig:
    """A caption-conditioned generator (``components.imagine.models``).

    Attributes:
        kind: ``gan``: the generator and its projection discriminator;
            ``cvae``: a conditional VAE, encoder q(z|x, c) and decoder
            p(x|z, c), sampled from the prior z ~ N(0, I).
        image_size: Image side in px (32 or 64).
        latent_dim: Size of the noise z.
        text_dim: Size of the caption embedding (the GRU's hidden state).
        word_dim: Size of the word embeddings the GRU reads.
        g_channels: Generator (CVAE: decoder) width (channels of its last hidden stage).
        d_channels: Discriminator (CVAE: encoder) width (channels of its first stage).
        ema_decay: Decay of the generator's weight average, sampled from.
    """

    kind: Literal["gan", "cvae"]
    image_size: int
    latent_dim: int
    text_dim: int
    word_dim: int
    g_channels: int
    d_channels: int
    ema_decay: float

    def __post_init__(self) -> None:
        check_choices(self)
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ConfigError(f"ImagineConfig.image_size must be one of {SUPPORTED_IMAGE_SIZES}, "
                              f"got {self.image_size}")
        for key in ("latent_dim", "text_dim", "word_dim", "g_channels", "d_channels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ImagineConfig.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ImagineConfig.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True)
class ImagineTrainParams:
    """Optimisation keys of ``train_imagine.train``.

    The CVAE (``model.kind: cvae``) trains encoder and decoder with one Adam
    of learning rate ``lr_g`` and ``betas``, and the loss
    ``recon_nll + kl_weight * kl``; ``lr_d``, ``augment`` and
    ``mismatch_weight`` are the GAN's only, as ``kl_weight`` is the CVAE's.
    """

    epochs: int
    batch_size: int
    lr_g: float
    lr_d: float
    betas: tuple[float, float]  # Adam's, shared (SN-GAN with the hinge loss: (0.0, 0.9))
    augment: Literal["none", "translation"]  # DiffAugment before D (cutout would erase named objects)
    mismatch_weight: float  # weight of D's "real image, wrong caption" fake term (Reed et al. 2016); 0: off
    kl_weight: float  # CVAE: beta, the weight of KL(q(z|x, c) || N(0, I)) in the loss (1: the ELBO)
    num_samples: int  # EMA-generator samples of val captions per epoch, for the diagnostics
    sample_seed: int
    seed: int
    precision: Precision  # bf16 autocast of the train steps: auto | bf16 | fp32
    channels_last: bool  # the train steps' models and batches in channels-last memory format
    threads_per_worker: int
    fail_at_epoch: int  # failure injection for the fault-tolerance tests; -1: off

    def __post_init__(self) -> None:
        check_choices(self)
        check_train_common("train_imagine.train", self)
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ConfigError("train_imagine.train: lr_g and lr_d must be > 0")
        if self.mismatch_weight < 0:
            raise ConfigError(f"train_imagine.train.mismatch_weight must be >= 0, got {self.mismatch_weight}")
        if self.kl_weight <= 0:
            raise ConfigError(f"train_imagine.train.kl_weight must be > 0, got {self.kl_weight}")


@dataclasses.dataclass(frozen=True)
class ImagineParams:
    """``train_imagine`` stage: prepared images and captions → a caption-conditioned generator."""

    model: ImagineConfig
    train: ImagineTrainParams
    scaling: ScalingParams


__all__ = ["KINDS", "ImagineConfig", "ImagineParams", "ImagineTrainParams"]
