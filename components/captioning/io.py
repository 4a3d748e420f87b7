"""A caption model's folder (:mod:`components.model_folder`, family ``captioner``): rebuildable from it alone.

Parts and files::

    <dir>/model.pt      the decoder's state_dict (part ``model``)
    <dir>/vocab.json    Vocab.to_json(): the ids it speaks
    <dir>/config.json   family ``captioner``, config ``CaptionerConfig``, extra {...}

``extra`` is what the model config does not say but a consumer needs (the
backbone that made the features, image size, decoding defaults). To publish
the folder as one unit, write it inside :func:`components.io.atomic_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from components.captioning.models import CaptionerConfig, CaptionModel, build_model
from components.data.text import Vocab
from components.model_folder import read_model_folder, write_model_folder

FAMILY = "captioner"
PART = "model"
VOCAB_FILE = "vocab.json"


class LoadedModel(NamedTuple):
    """What :func:`load_model_dir` returns (unpacks as ``model, cfg, vocab, extra``)."""

    model: CaptionModel
    config: CaptionerConfig
    vocab: Vocab
    extra: dict[str, Any]


def save_model_dir(path: str | os.PathLike, model: nn.Module, cfg: CaptionerConfig, vocab: Vocab,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write the model's weights, its vocabulary and ``config.json`` into ``path`` (created if needed).

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
    return write_model_folder(path, family=FAMILY, config=cfg.to_dict(), parts={PART: model},
                              files={VOCAB_FILE: vocab.to_json()}, extra=extra)


def load_model_dir(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from its folder alone, in eval mode.

    Args:
        path: A folder written by :func:`save_model_dir`.
        map_location: Device for the weights.

    Raises:
        ValueError: Not a captioner folder of this format, or a vocab not matching the config.
        components.config.ConfigError: A bad model config.
    """
    folder = read_model_folder(path, family=FAMILY)
    cfg = CaptionerConfig.from_dict(folder.config, source=str(folder.config_path))
    vocab = Vocab.from_json(folder.read_file(VOCAB_FILE))
    if len(vocab) != cfg.vocab_size:
        raise ValueError(f"{folder.path}: vocab has {len(vocab)} tokens, config vocab_size={cfg.vocab_size}")
    model = build_model(cfg)
    model.load_state_dict(folder.state_dict(PART, map_location=map_location))
    model.to(map_location).eval()
    return LoadedModel(model, cfg, vocab, folder.extra)


__all__ = ["FAMILY", "LoadedModel", "VOCAB_FILE", "load_model_dir", "save_model_dir"]
