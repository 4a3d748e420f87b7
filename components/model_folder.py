"""The model folder: one format for every family's trained model, rebuildable from the folder alone.

Layout (``FORMAT_VERSION`` 2)::

    <dir>/config.json   {"format_version": 2, "family": "vae", "config": {...},
                         "parts": {"vae": "vae.pt"}, "files": ["vocab.json"],
                         "extra": {...}, "torch_version": "2.x"}
    <dir>/<part>.pt     one state_dict per part (CPU tensors; read with weights_only=True)
    <dir>/<file>        the family's other files, JSON (the captioner's vocab.json)

``family`` names the registered family (``components.families``) whose loader
rebuilds it; ``config`` is that family's model config as plain JSON (the
loader rebuilds it strictly); ``parts`` are the modules with weights (the
captioner: ``model``; the VAE: ``vae``; the GAN: ``generator``,
``generator_ema``, ``discriminator``); ``extra`` is free JSON a consumer needs
(the backbone that made the features, the Ray run). Wall-clock figures stay
out (:func:`components.train.family.without_wall_clock`): the folder's bytes
are its identity for DVC and the registry.

Each file is written atomically and ``config.json`` last, so a folder with a
``config.json`` is complete; to publish the folder as one unit (a stage
output), write it inside :func:`components.io.atomic_dir`. This module knows
no family: :mod:`components.captioning.io` and :mod:`components.generative.io`
build their models on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.io import atomic_file, find_json_dir, write_json
from components.train.session import unwrap

FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_SUFFIX = ".pt"


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    """A model folder's ``config.json``, read; weights and files are read on demand.

    Attributes:
        path: The folder.
        family: The family that wrote it.
        config: Its model config, as plain JSON.
        parts: Part name -> weights file name.
        files: The family's other files (names in the folder).
        extra: Free JSON stored beside the config.
    """

    path: Path
    family: str
    config: dict[str, Any]
    parts: dict[str, str]
    files: tuple[str, ...]
    extra: dict[str, Any]

    @property
    def config_path(self) -> Path:
        """``<path>/config.json``, for error messages."""
        return self.path / CONFIG_FILE

    def state_dict(self, part: str, *, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The weights of ``part`` (``torch.load(weights_only=True)``)."""
        if part not in self.parts:
            raise KeyError(f"{self.config_path}: no part {part!r} (parts: {', '.join(sorted(self.parts))})")
        return torch.load(self.path / self.parts[part], map_location=map_location, weights_only=True)

    def read_file(self, name: str) -> Any:
        """The JSON content of one of the family's files."""
        if name not in self.files:
            raise KeyError(f"{self.config_path}: no file {name!r} (files: {', '.join(self.files) or 'none'})")
        return json.loads((self.path / name).read_text())


def write_model_folder(path: str | os.PathLike, *, family: str, config: Mapping[str, Any],
                       parts: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
                       files: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write a model folder: ``<part>.pt`` per part, the family's JSON files, then ``config.json``.

    Args:
        path: The folder (created if needed).
        family: The registered family name its loader goes by.
        config: The model config as plain JSON.
        parts: Part name -> module (DDP / compiled wrappers are unwrapped) or state_dict.
        files: File name -> JSON content (``{"vocab.json": vocab.to_json()}``).
        extra: Free JSON to keep beside the config.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: No part, or a file name that is a part's weights file or ``config.json``.
    """
    if not parts:
        raise ValueError(f"a {family} model folder needs at least one part")
    files = dict(files or {})
    weights = {name: f"{name}{WEIGHTS_SUFFIX}" for name in sorted(parts)}
    clash = sorted(set(files) & ({CONFIG_FILE} | set(weights.values())))
    if clash:
        raise ValueError(f"file name {clash[0]!r} is taken by the folder's own files")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        state = unwrap(part).state_dict() if isinstance(part, nn.Module) else part
        with atomic_file(path / weights[name], "wb") as f:
            torch.save({k: v.detach().cpu() for k, v in state.items()}, f)
    for name, content in files.items():
        write_json(path / name, content)
    write_json(path / CONFIG_FILE, {  # last: a folder with a config.json is complete
        "format_version": FORMAT_VERSION,
        "family": family,
        "config": dict(config),
        "parts": weights,
        "files": sorted(files),
        "extra": dict(extra or {}),
        "torch_version": torch.__version__,
    })
    return path


def _meta(config_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{config_path.parent} is not a model folder: no {CONFIG_FILE}") from None
    except ValueError as err:
        raise ValueError(f"{config_path}: not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{config_path}: format_version {version!r}, expected {FORMAT_VERSION} "
                         "(a folder from an older capsynth: retrain it, `dvc repro`)")
    return meta


def read_model_folder(path: str | os.PathLike, *, family: str | Collection[str] | None = None) -> ModelFolder:
    """Read a model folder's ``config.json``.

    Args:
        path: A folder written by :func:`write_model_folder`.
        family: The family (or families) the caller can rebuild; None: any.

    Raises:
        FileNotFoundError: No ``config.json``.
        ValueError: Not JSON, another format version, another family.
    """
    path = Path(path)
    meta = _meta(path / CONFIG_FILE)
    wanted = (family,) if isinstance(family, str) else family
    if wanted is not None and meta.get("family") not in wanted:
        raise ValueError(f"{path / CONFIG_FILE}: a {meta.get('family')!r} model, expected {' or '.join(wanted)}")
    return ModelFolder(path=path, family=meta["family"], config=meta["config"], parts=dict(meta["parts"]),
                       files=tuple(meta.get("files", ())), extra=dict(meta.get("extra", {})))


def find_model_folder(root: str | os.PathLike, family: str | Collection[str]) -> Path:
    """The shallowest model folder of ``family`` under ``root`` (itself included), e.g. in a downloaded MLflow model.

    Raises:
        FileNotFoundError: None there (the message names the families).
    """
    wanted = (family,) if isinstance(family, str) else tuple(family)
    found = find_json_dir(root, CONFIG_FILE, lambda meta: meta.get("format_version") == FORMAT_VERSION
                          and meta.get("family") in wanted)
    if found is None:
        raise FileNotFoundError(f"{root} holds no {' or '.join(wanted)} model folder (a {CONFIG_FILE} "
                                f"of format_version {FORMAT_VERSION}): train one first (dvc repro)")
    return found


__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "ModelFolder", "find_model_folder", "read_model_folder",
           "write_model_folder"]
