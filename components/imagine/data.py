"""The prepared data as (image, caption) pairs: what the conditional generator trains and is judged on."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch import Tensor

from components.data.folders import PreparedDir
from components.data.text import Vocab


@dataclasses.dataclass(frozen=True)
class CaptionedImages:
    """The images of one split and their captions.

    Attributes:
        image_ids: ``image_id`` of each image, in the images table's order.
        paths: Absolute image paths, same order.
        captions: Per image, its captions as text.
        token_ids: Per image, its captions as word ids (no ``<start>``/``<end>``).
    """

    image_ids: list[int]
    paths: list[str]
    captions: list[list[str]]
    token_ids: list[list[list[int]]]


def captioned_images(prepared: Path, split: str) -> CaptionedImages:
    """Every image of ``split`` that has a caption, with its captions (images-table order).

    Raises:
        FileNotFoundError: The prepared tables are missing.
        ValueError: No captioned image in ``split``.
    """
    folder = PreparedDir(prepared)
    images = pq.read_table(folder.images, columns=["image_id", "path", "split"]).to_pydict()
    captions = pq.read_table(folder.captions, columns=["image_id", "split", "caption", "token_ids"]).to_pydict()
    by_image: dict[int, list[tuple[str, list[int]]]] = {}
    specials = {Vocab.pad_id, Vocab.start_id, Vocab.end_id}
    for image_id, cap_split, text, ids in zip(captions["image_id"], captions["split"], captions["caption"],
                                              captions["token_ids"]):
        if cap_split == split:
            by_image.setdefault(image_id, []).append((text, [i for i in ids if i not in specials]))
    kept = [(i, p) for i, p, s in zip(images["image_id"], images["path"], images["split"])
            if s == split and by_image.get(i)]
    if not kept:
        raise ValueError(f"{folder.images}: no captioned image in split '{split}'")
    return CaptionedImages(
        image_ids=[i for i, _ in kept],
        paths=[p if "://" in p else os.path.abspath(p) for _, p in kept],
        captions=[[t for t, _ in by_image[i]] for i, _ in kept],
        token_ids=[[ids for _, ids in by_image[i]] for i, _ in kept],
    )


def pad(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Word-id lists as ``(B, T)`` right-padded with ``<pad>`` and lengths ``(B,)`` (an empty list counts 1)."""
    length = max(1, max((len(r) for r in rows), default=1))
    tokens = torch.full((len(rows), length), Vocab.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens, torch.tensor([max(1, len(r)) for r in rows], dtype=torch.long)


__all__ = ["CaptionedImages", "captioned_images", "pad"]
