"""The registry of model families: name -> its params group class and its :class:`~components.train.family.Family`.

The generic train stage, the evaluate and register stages, the sweep, the
params loader and the CLI loop over it. It is found, not written: each
package under ``components/`` that holds families says so in its
``__init__.py``::

    FAMILIES = {"vae": Entry(params="components.generative.config:VAEParams",
                             spec="components.generative.family:VAE")}

so adding a family touches its own package, its ``train_<name>`` group in
``params.yaml`` and its stage in ``dvc.yaml`` (README §Adding a model family).
A family that lives elsewhere (a notebook, a test, another distribution)
calls :func:`register`.

An entry names, as ``"module:attribute"`` strings imported on first use:

* the class of the family's ``train_<name>`` params group, from a leaf module
  (no torch, no model code): loading ``params.yaml`` imports no training code,
  so the ``prepare`` and ``features`` stages' code identity stays their own;
* the family's spec, so that listing the families (``capsynth --help``)
  imports no torch.

Families come in package order (``captioning``: captioner; ``generative``:
vae, gan), then the registered ones: the order of the report's sections and
of the ``register`` stage.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any


@dataclasses.dataclass(frozen=True)
class Entry:
    """One family: where its params group class and its spec are (``"module:attribute"``), and its stage.

    ``stage`` names the family's training stage and ``params.yaml`` group when it is not
    ``train_<name>`` (the SCST-fine-tuned captioner trains in ``finetune_captioner``).
    """

    params: str
    spec: str
    stage: str = ""


_registered: dict[str, Entry] = {}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def entries() -> dict[str, Entry]:
    """Every family: those the packages under ``components/`` declare, then the registered ones."""
    import components

    found: dict[str, Entry] = {}
    for info in sorted(pkgutil.iter_modules(components.__path__), key=lambda info: info.name):
        if info.ispkg:
            found.update(getattr(importlib.import_module(f"components.{info.name}"), "FAMILIES", {}))
    clash = sorted(set(found) & set(_registered))
    if clash:
        raise ValueError(f"model family '{clash[0]}' is both in a components package and registered")
    return found | _registered


def register(name: str, entry: Entry) -> None:
    """Add a family that lives outside ``components/`` (for this process; see :func:`unregister`)."""
    if name in entries():
        raise ValueError(f"model family '{name}' exists already")
    _registered[name] = entry


def unregister(name: str) -> None:
    """Take back what :func:`register` added."""
    _registered.pop(name, None)


def names() -> list[str]:
    """The family names, in registry order."""
    return list(entries())


def _entry(name: str) -> Entry:
    found = entries()
    if name not in found:
        raise KeyError(f"unknown model family '{name}' (known: {', '.join(found)})")
    return found[name]


def stage_of(name: str) -> str:
    """Family ``name``'s training stage and ``params.yaml`` group: its entry's ``stage``, else ``train_<name>``
    (also for a name no entry has: a family built in a test)."""
    entry = entries().get(name)
    return entry.stage if entry is not None and entry.stage else f"train_{name}"


def config_of(name: str) -> type:
    """The class of family ``name``'s ``train_<name>`` params group."""
    return _load(_entry(name).params)


def module_of(name: str) -> str:
    """The module that holds family ``name``'s spec (for DVC deps)."""
    return _entry(name).spec.partition(":")[0]


def modules_of(name: str) -> list[str]:
    """Every module family ``name`` names: its spec's, its evaluation's and its registration's
    (the deps of the stages that load every family)."""
    family = get(name)
    named = [ref.partition(":")[0] for ref in (family.evaluate, family.registration) if ref]
    return list(dict.fromkeys([module_of(name), *named]))


def get(name: str) -> Any:
    """The :class:`~components.train.family.Family` spec of family ``name`` (its module imported now).

    Raises:
        KeyError: ``name`` is not a family (the message lists the families).
    """
    return _load(_entry(name).spec)


__all__ = ["Entry", "config_of", "entries", "get", "module_of", "modules_of", "names", "register", "stage_of",
           "unregister"]
