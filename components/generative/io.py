"""Model folders: weights and config side by side, rebuildable from the folder alone.

Layout of a folder written by :func:`save_model_dir`::

    <dir>/config.json      {"format_version", "kind", "config", "parts", "extra", "torch_version"}
    <dir>/<part>.pt        one state_dict per part (CPU tensors)

Parts per kind (``MODELS[kind]``): ``vae`` -> ``vae.pt``; ``dcgan`` ->
``generator.pt``, ``generator_ema.pt`` (the EMA copy), ``discriminator.pt``.
``config`` is the model config as plain JSON; loading rebuilds it strictly
(``components.config.build``) and the modules from it, then loads the weights
with ``torch.load(weights_only=True)``. Only the parts ``config.json`` lists
are read. Each file is written atomically; to publish the folder as one unit
(a stage output), write it inside :func:`components.io.atomic_dir`, as the
caption model folders do.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.config import build, to_dict
from components.generative.common import unwrap
from components.generative.models import MODELS
from components.io import atomic_file, write_json

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"


@dataclasses.dataclass
class LoadedModel:
    """Everything a model folder holds.

    Attributes:
        kind: Key of ``MODELS``.
        cfg: The model config dataclass.
        parts: Part name -> module with its weights, in eval mode.
        extra: The JSON given as ``extra`` when saving (metrics, step, data version...).
    """

    kind: str
    cfg: Any
    parts: dict[str, nn.Module]
    extra: dict[str, Any]


def save_model_dir(path: str | os.PathLike, kind: str, models: nn.Module | Mapping[str, nn.Module],
                   cfg: Any, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write a model folder: one ``<part>.pt`` per part and ``config.json``.

    Args:
        path: The folder to write (created if needed).
        kind: Key of ``MODELS`` (``vae`` or ``dcgan``).
        models: Part name -> module, e.g. ``{"generator": G, "generator_ema":
            ema.module, "discriminator": D}`` (DDP wrappers are unwrapped);
            or one module, saved as the kind's base sampler part (``vae`` or
            ``generator``). At least one sampler part is required.
        cfg: The model config (an instance of ``MODELS[kind].config_cls``).
        extra: JSON-serialisable facts to keep beside it.

    Returns:
        Path: ``path``.

    Raises:
        KeyError: Unknown ``kind`` or part name.
        TypeError: ``cfg`` is not the kind's config class.
        ValueError: No sampler part, or weights that do not fit a model
            rebuilt from ``cfg``.
    """
    spec = MODELS[kind]
    if not isinstance(cfg, spec.config_cls):
        raise TypeError(f"{kind} needs a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    if isinstance(models, nn.Module):
        models = {spec.sampler[-1]: models}
    fresh = spec.build_parts(cfg)
    unknown = sorted(set(models) - set(fresh))
    if unknown:
        raise KeyError(f"unknown part {unknown[0]!r} for {kind} (known: {', '.join(sorted(fresh))})")
    if not any(name in models for name in spec.sampler):
        raise ValueError(f"a {kind} folder needs one of the parts {spec.sampler}")
    states = {name: {k: v.detach().cpu() for k, v in unwrap(m).state_dict().items()}
              for name, m in models.items()}
    for name, state in states.items():  # the folder must rebuild: fail now, not at load time
        try:
            fresh[name].load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"part {name!r} does not match its config: {err}") from err
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": to_dict(cfg),
        "parts": {name: f"{name}.pt" for name in sorted(states)},
        "extra": dict(extra or {}),
        "torch_version": torch.__version__,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, state in states.items():
        with atomic_file(path / meta["parts"][name], "wb") as f:
            torch.save(state, f)
    write_json(path / CONFIG_FILE, meta)  # last: a folder with a config.json is complete
    return path


def load_model_dir(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild every part a model folder holds.

    Args:
        path: A folder written by :func:`save_model_dir`.
        map_location: Device for the weights.

    Returns:
        LoadedModel: kind, config, parts (eval mode) and extra.

    Raises:
        ValueError: Unsupported format version or unknown kind.
        components.config.ConfigError: The stored config does not fit the
            config class (unknown, missing or mistyped key).
    """
    path = Path(path)
    config_path = path / CONFIG_FILE
    meta = json.loads(config_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: format_version {meta.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    kind = meta["kind"]
    if kind not in MODELS:
        raise ValueError(f"{config_path}: unknown kind {kind!r} (known: {', '.join(sorted(MODELS))})")
    spec = MODELS[kind]
    cfg = build(spec.config_cls, meta["config"], source=str(config_path), prefix="config")
    fresh = spec.build_parts(cfg)
    parts = {}
    for name, filename in meta["parts"].items():
        module = fresh[name]
        state = torch.load(path / filename, map_location=map_location, weights_only=True)
        module.load_state_dict(state)
        parts[name] = module.to(map_location).eval()
    return LoadedModel(kind=kind, cfg=cfg, parts=parts, extra=meta.get("extra", {}))


def load_generator(path: str | os.PathLike, *,
                   map_location: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """The module to sample from, rebuilt from a model folder.

    ``vae``: the whole VAE; ``dcgan``: the EMA generator when the folder has
    it, else the raw generator. Use with ``sampling.sample`` / ``interpolate``.

    Args:
        path: A folder written by :func:`save_model_dir`.
        map_location: Device for the weights.

    Returns:
        tuple[nn.Module, config]: the sampler (eval mode) and the model config.
    """
    loaded = load_model_dir(path, map_location=map_location)
    name = next(n for n in MODELS[loaded.kind].sampler if n in loaded.parts)
    return loaded.parts[name], loaded.cfg
