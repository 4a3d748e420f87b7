"""Caption image files with a trained model folder: the ``capsynth caption`` engine.

The model folder records the backbone its features came from (name, weights
choice and source, input size, grid, SHA-256 of the weights); the backbone is
rebuilt from that record and its hash checked, so a caption is computed from
the very features the model was trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from components.captioning.decoding import beam_search, greedy_decode
from components.captioning.io import load_model_dir
from components.data.images import load_rgb
from components.data.ptb import detokenize
from components.features.backbones import get_spec
from components.features.weights import load_backbone


class Captioner:
    """A loaded caption model with its backbone; call it on images.

    Args:
        model_dir: A folder written by the ``train_captioner`` stage.
        beam_size: 1 for greedy decoding, more for beam search.
        length_penalty: GNMT length penalty alpha for beam search.
    """

    def __init__(self, model_dir: str | os.PathLike, *, beam_size: int = 3, length_penalty: float = 0.0):
        loaded = load_model_dir(model_dir)
        self.model, self.vocab = loaded.model.eval(), loaded.vocab
        feats = loaded.extra.get("features") or {}
        missing = [k for k in ("backbone", "weights", "grid_size", "input_size") if feats.get(k) is None]
        if missing:
            raise ValueError(f"{model_dir}/config.json: extra.features lacks {', '.join(missing)}")
        self.backbone, info = load_backbone(
            feats["backbone"], weights=feats["weights"], grid_size=int(feats["grid_size"]),
            stage=int(feats.get("stage") or 4), weights_path=feats.get("weights_path") or "", seed=int(feats.get("seed") or 0),
        )
        if feats.get("weights_sha256") and info.sha256 != feats["weights_sha256"]:
            raise ValueError(
                f"{model_dir}: the backbone rebuilt from {info.source} has weights {info.sha256[:12]}…, "
                f"not the {feats['weights_sha256'][:12]}… the model was trained on"
            )
        self.input_size = get_spec(feats["backbone"]).resolve_input_size(int(feats["input_size"]))
        self.beam_size = beam_size
        self.length_penalty = length_penalty

    @torch.inference_mode()
    def __call__(self, images: Sequence[str | os.PathLike | BinaryIO | Image.Image], *,
                 beam_size: int | None = None) -> list[str]:
        """One caption per image: a file path, a binary file object (any format and colour mode PIL reads)
        or an opened image (untrusted input is opened by ``components.serving.ServingLimits.open_image``).

        ``beam_size`` overrides the captioner's for this call (1: greedy).
        """
        beam_size = self.beam_size if beam_size is None else beam_size
        if not images:
            return []
        pixels = np.stack([np.asarray(load_rgb(p, self.input_size)) for p in images])  # (B, S, S, 3)
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S)
        grid, pooled = self.backbone.extract(x)  # (B, C, g, g), (B, C)
        grid = grid.flatten(2).transpose(1, 2)  # (B, P, C)
        max_length = self.vocab.max_caption_length + 1
        if beam_size > 1:
            result = beam_search(self.model, grid, pooled, beam_size=beam_size, max_length=max_length,
                                 length_penalty=self.length_penalty)
        else:
            result = greedy_decode(self.model, grid, pooled, max_length=max_length)
        return [detokenize(self.vocab.decode(tokens)) for tokens in result.to_lists()]  # man 's -> man's


def caption_images(images: Sequence[str | os.PathLike], model_dir: str | os.PathLike, *,
                   beam_size: int = 3) -> list[str]:
    """Caption ``images`` with the model in ``model_dir`` (see :class:`Captioner`)."""
    return Captioner(model_dir, beam_size=beam_size)(images)
