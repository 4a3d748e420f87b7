"""Small tensor helpers shared by the generative modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from components.train.session import unwrap  # noqa: F401  (re-exported for the generative modules)


def standard_normal(shape: Sequence[int], *, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0, 1) noise drawn on ``generator``'s device (global RNG if None), cast to ``like``.

    Drawing on the generator's own device lets a CPU generator seed GPU work
    reproducibly.
    """
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device).to(like)


def to_uint8_images(x: Tensor) -> np.ndarray:
    """Float images in ``[0, 1]`` ``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)`` (clipped, rounded)."""
    x = (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)  # (B, 3, H, W)
    return x.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)


def from_uint8_images(images: np.ndarray | Tensor, *, value_range: tuple[float, float]) -> Tensor:
    """uint8 images ``(B, H, W, 3)`` -> float ``(B, 3, H, W)`` scaled to ``value_range``."""
    t = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    low, high = value_range
    return t * (high - low) + low
