"""The registry of model families: name -> :class:`~components.train.family.Family`.

The generic train stage, the sweep and the CLI loop over it. Entries name the
module and attribute of each spec as a string and are imported on first use,
so listing the families (``capsynth --help``) imports no torch.

Adding a family: a package with its model, loop and a ``Family`` spec, one
line here, its ``train_<name>`` group in ``params.yaml`` and its stage in
``dvc.yaml`` (README §Adding a model family).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.train.family import Family

FAMILIES: dict[str, str] = {
    "captioner": "components.captioning.family:CAPTIONER",
    "vae": "components.generative.family:VAE",
    "gan": "components.generative.family:GAN",
}


def names() -> list[str]:
    """The registered family names, in registry order."""
    return list(FAMILIES)


def module_of(name: str) -> str:
    """The module that holds family ``name``'s spec (for DVC deps and code fingerprints)."""
    return _entry(name)[0]


def modules_of(name: str) -> list[str]:
    """Every module family ``name`` names: its spec's, and its evaluation's (for the evaluate stage's deps)."""
    family = get(name)
    return [module_of(name)] + ([family.evaluate.partition(":")[0]] if family.evaluate else [])


def get(name: str) -> Family:
    """The spec of family ``name``.

    Raises:
        KeyError: ``name`` is not registered (the message lists the families).
    """
    module, attr = _entry(name)
    return getattr(importlib.import_module(module), attr)


def _entry(name: str) -> tuple[str, str]:
    if name not in FAMILIES:
        raise KeyError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    module, _, attr = FAMILIES[name].partition(":")
    return module, attr


__all__ = ["FAMILIES", "get", "module_of", "modules_of", "names"]
