"""Images for the generative models, decoded once into one uint8 tensor.

The datasets are small (the synthetic one: 3000 images at 64 px, 37 MB as
uint8), so the whole split is decoded once with
``components.data.images.load_rgb`` (RGB, resized) and kept as
``(N, 3, H, W)`` uint8; items are converted to float on access, in the range
the model expects (``MODELS[family].value_range``: ``(0, 1)`` for the VAE,
``(-1, 1)`` for the GAN).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset

from components.data.folders import PreparedDir
from components.data.images import load_rgb


def image_splits(prepared: Path) -> dict[str, list[str]]:
    """Absolute image paths per split from the prepared images table (train and val required).

    Relative paths in the table are relative to the working directory (as the
    ``prepare`` stage writes them), so the Ray workers get absolute ones.
    """
    images = PreparedDir(prepared).images
    table = pq.read_table(images, columns=["path", "split"]).to_pydict()
    splits: dict[str, list[str]] = {}
    for path, split in zip(table["path"], table["split"]):
        splits.setdefault(split, []).append(path if "://" in path else os.path.abspath(path))
    for needed in ("train", "val"):
        if not splits.get(needed):
            raise FileNotFoundError(f"{images} has no '{needed}' images "
                                    f"(splits: {', '.join(sorted(splits)) or 'none'})")
    return splits


def load_images(paths: Sequence[str | os.PathLike], *, size: int, num_workers: int = 0) -> Tensor:
    """Decode and resize images into one tensor.

    Args:
        paths: Image files (e.g. the ``path`` column of ``images.parquet``
            for one split), relative to the working directory or absolute.
        size: Side in pixels (bilinear resize when the file differs).
        num_workers: Decoding threads (0: in this thread).

    Returns:
        Tensor: uint8 ``(N, 3, size, size)`` in the order of ``paths``.
    """

    def one(path: str | os.PathLike) -> np.ndarray:
        return np.asarray(load_rgb(path, size), dtype=np.uint8)  # (H, W, 3)

    if num_workers > 0:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            arrays = list(pool.map(one, paths))
    else:
        arrays = [one(p) for p in paths]
    if not arrays:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


class ImageTensorDataset(Dataset):
    """A map-style dataset over a uint8 image tensor, yielding floats in ``value_range``.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        value_range: ``(low, high)``: 0 maps to ``low``, 255 to ``high``.
    """

    def __init__(self, images: Tensor, *, value_range: tuple[float, float]):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.value_range = value_range

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], *, size: int,
                   value_range: tuple[float, float], num_workers: int = 0) -> ImageTensorDataset:
        """Decode ``paths`` with :func:`load_images` and wrap them."""
        return cls(load_images(paths, size=size, num_workers=num_workers), value_range=value_range)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to_float(self, images: Tensor) -> Tensor:
        """uint8 ``(..., 3, H, W)`` -> float32 in ``value_range``, same shape."""
        low, high = self.value_range
        return images.float() * ((high - low) / 255.0) + low

    def __getitem__(self, index: int) -> Tensor:
        return self.to_float(self.images[index])  # (3, H, W)

    def uint8_hwc(self, limit: int | None = None) -> np.ndarray:
        """The first ``limit`` images as uint8 ``(N, H, W, 3)``, for the diagnostics."""
        return self.images[:limit].permute(0, 2, 3, 1).numpy()
