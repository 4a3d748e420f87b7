"""A generative model's folder (:mod:`components.model_folder`, family ``vae`` or ``gan``).

Parts per family (``MODELS[family].build_parts``): ``vae`` -> ``vae.pt``;
``gan`` -> ``generator.pt``, ``generator_ema.pt`` (the EMA copy),
``discriminator.pt``. ``config`` is the model config (``VAEConfig`` /
``GANConfig``); loading rebuilds it strictly (``components.config.build``) and
the modules from it. Only the parts ``config.json`` lists are read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.config import build, to_dict
from components.generative.models import MODELS
from components.model_folder import read_model_folder, write_model_folder
from components.train.session import unwrap


@dataclasses.dataclass
class LoadedModel:
    """Everything a model folder holds.

    Attributes:
        family: Key of ``MODELS``.
        cfg: The model config dataclass.
        parts: Part name -> module with its weights, in eval mode.
        extra: The JSON given as ``extra`` when saving (metrics, step, data version...).
    """

    family: str
    cfg: Any
    parts: dict[str, nn.Module]
    extra: dict[str, Any]


def save_model_dir(path: str | os.PathLike, family: str, models: nn.Module | Mapping[str, nn.Module],
                   cfg: Any, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write a model folder: one ``<part>.pt`` per part and ``config.json``.

    Args:
        path: The folder to write (created if needed).
        family: Key of ``MODELS`` (``vae`` or ``gan``).
        models: Part name -> module, e.g. ``{"generator": G, "generator_ema":
            ema.module, "discriminator": D}`` (DDP wrappers are unwrapped);
            or one module, saved as the family's base sampler part (``vae`` or
            ``generator``). At least one sampler part is required.
        cfg: The model config (an instance of ``MODELS[family].config_cls``).
        extra: JSON-serialisable facts to keep beside it.

    Returns:
        Path: ``path``.

    Raises:
        KeyError: Unknown ``family`` or part name.
        TypeError: ``cfg`` is not the family's config class.
        ValueError: No sampler part, or weights that do not fit a model
            rebuilt from ``cfg``.
    """
    spec = MODELS[family]
    if not isinstance(cfg, spec.config_cls):
        raise TypeError(f"{family} needs a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    if isinstance(models, nn.Module):
        models = {spec.sampler[-1]: models}
    fresh = spec.build_parts(cfg)
    unknown = sorted(set(models) - set(fresh))
    if unknown:
        raise KeyError(f"unknown part {unknown[0]!r} for {family} (known: {', '.join(sorted(fresh))})")
    if not any(name in models for name in spec.sampler):
        raise ValueError(f"a {family} folder needs one of the parts {spec.sampler}")
    states = {name: unwrap(m).state_dict() for name, m in models.items()}
    for name, state in states.items():  # the folder must rebuild: fail now, not at load time
        try:
            fresh[name].load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"part {name!r} does not match its config: {err}") from err
    return write_model_folder(path, family=family, config=to_dict(cfg), parts=states, extra=extra)


def load_model_dir(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild every part a model folder holds.

    Args:
        path: A folder written by :func:`save_model_dir`.
        map_location: Device for the weights.

    Returns:
        LoadedModel: family, config, parts (eval mode) and extra.

    Raises:
        ValueError: Not a VAE or GAN folder of this format.
        components.config.ConfigError: The stored config does not fit the
            config class (unknown, missing or mistyped key).
    """
    folder = read_model_folder(path, family=MODELS)
    spec = MODELS[folder.family]
    cfg = build(spec.config_cls, folder.config, source=str(folder.config_path), prefix="config")
    fresh = spec.build_parts(cfg)
    parts = {}
    for name in folder.parts:
        module = fresh[name]
        module.load_state_dict(folder.state_dict(name, map_location=map_location))
        parts[name] = module.to(map_location).eval()
    return LoadedModel(family=folder.family, cfg=cfg, parts=parts, extra=folder.extra)


def load_generator(path: str | os.PathLike, *,
                   map_location: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """The module to sample from, rebuilt from a model folder.

    ``vae``: the whole VAE; ``gan``: the EMA generator when the folder has
    it, else the raw generator. Use with ``sampling.sample`` / ``interpolate``.

    Args:
        path: A folder written by :func:`save_model_dir`.
        map_location: Device for the weights.

    Returns:
        tuple[nn.Module, config]: the sampler (eval mode) and the model config.
    """
    loaded = load_model_dir(path, map_location=map_location)
    name = next(n for n in MODELS[loaded.family].sampler if n in loaded.parts)
    return loaded.parts[name], loaded.cfg
