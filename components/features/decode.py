"""Decoding for the features stage: image files → fixed-size uint8 RGB arrays.

Kept free of torch so that Ray's decode workers start fast (they import only
PIL and numpy).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from components.data.images import BadImageError, to_rgb


class ImageDecodeError(BadImageError):
    """A :class:`BadImageError` that survives pickling, so Ray can ship it to the driver."""

    def __reduce__(self):
        return type(self), (self.kind, self.path, self.detail)


def load_resized(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode ``path`` as RGB, resized (squashed, no crop) to ``size x size``: (S, S, 3) uint8.

    JPEGs are decoded at the smallest DCT scale still >= ``size`` (``Image.draft``),
    which makes large photos several times cheaper; the bilinear resize that
    follows is PIL's antialiased one.

    Raises:
        ImageDecodeError: (a BadImageError) the file is missing or cannot be decoded.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))
            img.load()
            rgb = to_rgb(img)
    except FileNotFoundError as err:
        raise ImageDecodeError("missing_image", path, "no such file") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError("corrupt_image", path, f"{type(err).__name__}: {err}") from err
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb)  # writable: DataLoader collation and torch want that


def decode_batch(batch: dict[str, np.ndarray], *, input_size: int) -> dict[str, np.ndarray]:
    """``{image_id, path}`` → ``{image_id (B,), image (B, S, S, 3) uint8}``."""
    paths = batch["path"]
    images = np.empty((len(paths), input_size, input_size, 3), np.uint8)
    for i, path in enumerate(paths):
        images[i] = load_resized(str(path), input_size)
    return {"image_id": np.asarray(batch["image_id"], dtype=np.int64), "image": images}


__all__ = ["ImageDecodeError", "load_resized", "decode_batch"]
