"""Builders and the model registry: a config in, modules out.

``MODELS[family]`` says, for each generative family (``vae``, ``gan``), which config class describes
it, how to build its named parts, which part samples images, and the value
range its data must have. The training stage, the model folder loader and the
sweep all go through it, so adding a family is one entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from components.generative.config import GANConfig, VAEConfig
from components.generative.gan import Discriminator, Generator
from components.generative.vae import LIKELIHOODS, VAE, Decoder, Encoder


def build_vae(cfg: VAEConfig) -> VAE:
    """Build a VAE from its config (random weights).

    Args:
        cfg: The model config.

    Returns:
        VAE: ``forward`` gives the loss terms, ``generate`` decodes latents.
    """
    dims = dict(image_size=cfg.image_size, latent_dim=cfg.latent_dim, base_channels=cfg.base_channels)
    return VAE(
        encoder=Encoder(**dims),
        decoder=Decoder(**dims, res_blocks=cfg.decoder_res_blocks),
        likelihood=LIKELIHOODS[cfg.likelihood].from_config(cfg),
        beta=cfg.beta,
        image_size=cfg.image_size,
        latent_dim=cfg.latent_dim,
    )


def build_generator(cfg: GANConfig) -> Generator:
    """The DCGAN generator of ``cfg`` (random DCGAN-initialised weights)."""
    return Generator(image_size=cfg.image_size, latent_dim=cfg.latent_dim, channels=cfg.g_channels)


def build_discriminator(cfg: GANConfig) -> Discriminator:
    """The DCGAN discriminator of ``cfg``."""
    return Discriminator(image_size=cfg.image_size, channels=cfg.d_channels, norm=cfg.d_norm,
                         spectral_norm=cfg.spectral_norm)


def build_gan(cfg: GANConfig) -> tuple[Generator, Discriminator]:
    """Build the DCGAN pair from its config.

    Args:
        cfg: The model config.

    Returns:
        tuple[Generator, Discriminator]: ``(G, D)``.
    """
    return build_generator(cfg), build_discriminator(cfg)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model family.

    Attributes:
        config_cls: Its frozen config dataclass.
        build_parts: ``cfg -> {part name: module}``, every part a model folder
            may hold (all built with random weights).
        sampler: Part names to sample from, in order of preference (the GAN
            prefers the EMA generator when the folder has it).
        value_range: The ``(low, high)`` range of the images it trains on.
    """

    config_cls: type
    build_parts: Callable[[object], dict[str, nn.Module]]
    sampler: tuple[str, ...]
    value_range: tuple[float, float]


MODELS: dict[str, ModelSpec] = {
    "vae": ModelSpec(
        config_cls=VAEConfig,
        build_parts=lambda cfg: {"vae": build_vae(cfg)},
        sampler=("vae",),
        value_range=VAE.value_range,
    ),
    "gan": ModelSpec(
        config_cls=GANConfig,
        build_parts=lambda cfg: {
            "generator": build_generator(cfg),
            "generator_ema": build_generator(cfg),
            "discriminator": build_discriminator(cfg),
        },
        sampler=("generator_ema", "generator"),
        value_range=Generator.value_range,
    ),
}
