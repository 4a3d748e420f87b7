"""Opening images: validation at prepare time, RGB decoding everywhere else.

One rule for colour modes: every reader gets RGB. Grayscale (``L``, ``I``,
``I;16``, ``F``), palette (``P``), ``CMYK``, ``YCbCr`` and ``LAB`` images are
converted; images with alpha (``RGBA``, ``LA``, ``PA``, ``P`` with
transparency) are composited over white first, so transparent pixels do not
turn black. The ``prepare`` stage records the mode found on disk.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

# A decompression bomb is a bad image, not a warning to print thousands of times.
warnings.simplefilter("error", Image.DecompressionBombWarning)


class BadImageError(ValueError):
    """An image cannot be used.

    ``kind`` is ``missing_image`` or ``corrupt_image`` (:func:`inspect_image`),
    or ``outside_root`` (``prepare.check_inside_images_dir``).
    """

    def __init__(self, kind: str, path: str, detail: str):
        super().__init__(f"{path}: {kind.replace('_', ' ')} ({detail})")
        self.kind = kind
        self.path = path
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str  # as stored on disk

    @property
    def needs_conversion(self) -> bool:
        return self.mode != "RGB"


def inspect_image(path: str | os.PathLike) -> ImageInfo:
    """Fully decode ``path`` once to prove it is usable; return its size and mode.

    ``Image.verify`` alone misses truncated files, so the pixels are loaded.

    Raises:
        BadImageError: ``missing_image`` when the file does not exist,
            ``corrupt_image`` when it cannot be decoded (truncated, not an
            image, zero-sized).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadImageError("missing_image", path, "no such file")
    try:
        with Image.open(path) as img:
            img.load()
            info = ImageInfo(width=img.width, height=img.height, mode=img.mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImageError("corrupt_image", path, f"{type(err).__name__}: {err}") from err
    if info.width == 0 or info.height == 0:
        raise BadImageError("corrupt_image", path, "zero-sized image")
    return info


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency over white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: scale to 8 bit by the image's own range.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike | BinaryIO | Image.Image,
             size: int | tuple[int, int] | None = None) -> Image.Image:
    """Open ``path`` (or a binary file object, or take an opened image) as an RGB image, optionally resized
    to ``size`` (bilinear)."""
    if isinstance(path, Image.Image):
        rgb = to_rgb(path)
    else:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    if size is not None:
        wh = (size, size) if isinstance(size, int) else size
        if rgb.size != wh:
            rgb = rgb.resize(wh, Image.Resampling.BILINEAR)
    return rgb
