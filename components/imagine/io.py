"""The conditional generator's model folder (:mod:`components.model_folder`, family ``imagine``) and its use.

Parts: ``generator``, ``generator_ema`` (sampled from), ``discriminator``;
files: ``vocab.json`` (the words it reads); config: ``ImagineConfig``.
:class:`Imaginer` turns captions into images: ``capsynth imagine``, the
served model and the evaluation all go through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.config import build, to_dict
from components.data.text import Vocab
from components.imagine.config import ImagineConfig
from components.imagine.models import CaptionError, build_parts, encode_captions, imagine
from components.model_folder import read_model_folder, write_model_folder

FAMILY = "imagine"
VOCAB_FILE = "vocab.json"
MAX_IMAGES_PER_CAPTION = 64  # n of one request (CLI, served model): more is refused


def save_model_dir(path: str | os.PathLike, parts: Mapping[str, nn.Module], cfg: ImagineConfig, vocab: Vocab, *,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write the generator (and its EMA copy, the discriminator), the vocabulary and ``config.json``."""
    if "generator_ema" not in parts and "generator" not in parts:
        raise ValueError("an imagine folder needs 'generator_ema' or 'generator'")
    return write_model_folder(path, family=FAMILY, config=to_dict(cfg), parts=parts,
                              files={VOCAB_FILE: vocab.to_json()}, extra=extra)


class Imaginer:
    """A trained conditional generator: captions in, images out.

    Args:
        model_dir: A folder written by the ``train_imagine`` stage.
        map_location: Device of the generator.
    """

    def __init__(self, model_dir: str | os.PathLike, *, map_location: str | torch.device = "cpu"):
        folder = read_model_folder(model_dir, family=FAMILY)
        self.config = build(ImagineConfig, folder.config, source=str(folder.config_path), prefix="config")
        self.vocab = Vocab.from_json(folder.read_file(VOCAB_FILE))
        part = "generator_ema" if "generator_ema" in folder.parts else "generator"
        self.generator = build_parts(self.config, len(self.vocab))[part]
        self.generator.load_state_dict(folder.state_dict(part, map_location=map_location))
        self.generator.to(map_location).eval()
        self.extra = folder.extra

    def __call__(self, captions: Sequence[str], *, n: int = 1, seed: int = 0) -> torch.Tensor:
        """``n`` images per caption, uint8 ``(len(captions), n, S, S, 3)``; the same call gives the same bytes.

        Raises:
            CaptionError: An empty caption, one too long, or words outside the vocabulary.
            ValueError: ``n`` outside ``1..MAX_IMAGES_PER_CAPTION``.
        """
        if not 1 <= n <= MAX_IMAGES_PER_CAPTION:
            raise ValueError(f"n must be in 1..{MAX_IMAGES_PER_CAPTION}, got {n}")
        tokens, lengths = encode_captions(captions, self.vocab)
        return imagine(self.generator, tokens, lengths, n, seed)


__all__ = ["FAMILY", "MAX_IMAGES_PER_CAPTION", "CaptionError", "Imaginer", "VOCAB_FILE",
           "save_model_dir"]
