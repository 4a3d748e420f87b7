"""A caption model's folder: weights, model config and vocabulary, enough to rebuild it.

Layout (``FORMAT_VERSION`` 1)::

    <dir>/model.pt      state_dict (plain tensors; loaded with weights_only=True)
    <dir>/config.json   {"format_version": 1, "model": CaptionModelConfig, "extra": {...}}
    <dir>/vocab.json    Vocab.to_json()

``extra`` is free JSON for what the model config does not say but a consumer
needs (the backbone that made the features, image size, decoding defaults).
Each file is written atomically; to publish the folder as one unit, write it
inside :func:`components.io.atomic_dir`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from components.captioning.models import CaptionModel, CaptionModelConfig, build_model
from components.data.text import Vocab
from components.io import atomic_file, write_json
from components.train.session import unwrap

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"


class LoadedModel(NamedTuple):
    """What :func:`load_model_dir` returns (unpacks as ``model, cfg, vocab, extra``)."""

    model: CaptionModel
    config: CaptionModelConfig
    vocab: Vocab
    extra: dict[str, Any]


unwrap_model = unwrap  # the plain module inside DDP / torch.compile wrappers


def save_model_dir(path: str | os.PathLike, model: nn.Module, cfg: CaptionModelConfig, vocab: Vocab,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.pt``, ``config.json`` and ``vocab.json`` into ``path`` (created if needed).

    Args:
        path: The model folder.
        model: The trained model (DDP / compiled wrappers are unwrapped).
        cfg: Its config.
        vocab: The vocabulary its ids refer to; ``len(vocab)`` must equal ``cfg.vocab_size``.
        extra: JSON-able metadata stored beside the config.

    Returns:
        ``path`` as a ``Path``.
    """
    if len(vocab) != cfg.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} tokens but the model config says vocab_size={cfg.vocab_size}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    with atomic_file(path / WEIGHTS_FILE, "wb") as f:
        torch.save(state, f)
    write_json(path / CONFIG_FILE, {"format_version": FORMAT_VERSION, "model": cfg.to_dict(),
                                    "extra": dict(extra or {})})
    write_json(path / VOCAB_FILE, vocab.to_json())
    return path


def load_model_dir(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from its folder alone, in eval mode.

    Args:
        path: A folder written by :func:`save_model_dir`.
        map_location: Device for the weights.

    Raises:
        ValueError: Unknown format version, or a vocab not matching the config.
        components.config.ConfigError: A bad model config.
    """
    path = Path(path)
    with open(path / CONFIG_FILE) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / CONFIG_FILE}: unsupported format_version {meta.get('format_version')!r}")
    cfg = CaptionModelConfig.from_dict(meta["model"], source=str(path / CONFIG_FILE))
    vocab = Vocab.load(path / VOCAB_FILE)
    if len(vocab) != cfg.vocab_size:
        raise ValueError(f"{path}: vocab has {len(vocab)} tokens, config vocab_size={cfg.vocab_size}")
    model = build_model(cfg)
    model.load_state_dict(torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True))
    model.to(map_location).eval()
    return LoadedModel(model, cfg, vocab, meta.get("extra", {}))


__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "LoadedModel", "VOCAB_FILE", "WEIGHTS_FILE", "load_model_dir",
           "save_model_dir", "unwrap_model"]
