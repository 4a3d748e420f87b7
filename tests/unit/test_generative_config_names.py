"""The config's choice names and the registries they select from agree (config.py imports no model code)."""

from __future__ import annotations

import pytest

from components.generative import config
from components.generative.augment import AUGMENTATIONS
from components.generative.gan import D_NORMS
from components.generative.losses import GAN_LOSSES
from components.generative.vae import LIKELIHOODS


@pytest.mark.parametrize("names, registry", [
    (config.NAMES["likelihood"], LIKELIHOODS),
    (config.NAMES["loss"], GAN_LOSSES),
    (config.NAMES["d_norm"], D_NORMS),
    (config.NAMES["augment"], AUGMENTATIONS),
])
def test_names_are_the_registry_keys(names, registry):
    assert sorted(names) == sorted(registry)


def test_gradient_penalty_losses_are_the_ones_that_need_it():
    assert sorted(config.GAN_LOSSES_WITH_GRADIENT_PENALTY) == sorted(
        name for name, loss in GAN_LOSSES.items() if loss.needs_gradient_penalty)
