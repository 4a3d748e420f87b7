"""The registry of model families: name -> its params group class and its :class:`~components.train.family.Family`.

The generic train stage, the evaluate stage, the sweep, the params loader and
the CLI loop over it. An entry holds:

* the class of the family's ``train_<name>`` params group, from a leaf module
  (no torch, no model code): loading ``params.yaml`` imports no training code,
  so the ``prepare`` and ``features`` stages' code identity stays their own;
* the ``"module:attribute"`` of the family's spec, imported on first use, so
  listing the families (``capsynth --help``) imports no torch.

Adding a family: a package with its model, loop, params classes and a
``Family`` spec; one entry here; its ``train_<name>`` group in ``params.yaml``;
its stage in ``dvc.yaml`` (README §Model families).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from components.captioning.config import CaptionerParams
from components.generative.config import GANParams, VAEParams


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered family: its params group class and where its spec is."""

    config: type
    spec: str  # "module:attribute" of its Family


FAMILIES: dict[str, Entry] = {
    "captioner": Entry(CaptionerParams, "components.captioning.family:CAPTIONER"),
    "vae": Entry(VAEParams, "components.generative.family:VAE"),
    "gan": Entry(GANParams, "components.generative.family:GAN"),
}


def names() -> list[str]:
    """The registered family names, in registry order."""
    return list(FAMILIES)


def _entry(name: str) -> Entry:
    if name not in FAMILIES:
        raise KeyError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def config_of(name: str) -> type:
    """The class of family ``name``'s ``train_<name>`` params group."""
    return _entry(name).config


def module_of(name: str) -> str:
    """The module that holds family ``name``'s spec (for DVC deps)."""
    return _entry(name).spec.partition(":")[0]


def modules_of(name: str) -> list[str]:
    """Every module family ``name`` names: its spec's, and its evaluation's (the evaluate stage's deps)."""
    family = get(name)
    return [module_of(name)] + ([family.evaluate.partition(":")[0]] if family.evaluate else [])


def get(name: str) -> Any:
    """The :class:`~components.train.family.Family` spec of family ``name`` (its module imported now).

    Raises:
        KeyError: ``name`` is not registered (the message lists the families).
    """
    module, _, attr = _entry(name).spec.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["FAMILIES", "Entry", "config_of", "get", "module_of", "modules_of", "names"]
