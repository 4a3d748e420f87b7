"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

A discriminator trained on a few thousand images memorises them within a few
epochs; its gradients then stop telling the generator what the images look
like (on the synthetic scenes: coloured blobs with no shape). DiffAugment
applies the same random, differentiable transformation ``T`` to every image the
discriminator sees, real or generated, in both players' losses:
``D(T(x))`` and ``D(T(G(z)))``. The generator still has to produce
untransformed images (``T`` is applied after it, and gradients flow through
``T``), so the augmentation does not leak into the samples.

Two policies of the paper, for images ``(B, C, H, W)``:

* ``translation``: shift each image by up to 1/8 of its side in each axis,
  filling with zeros;
* ``cutout``: zero a square of half the side at a random centre (clipped at the
  border).

:data:`AUGMENTATIONS` names the combinations ``train_gan.train.augment`` takes.
Every random draw comes from the caller's ``torch.Generator``, so a seeded run
is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _randint(low: int, high: int, shape: tuple[int, ...], *, like: Tensor,
             generator: torch.Generator | None) -> Tensor:
    """Integers in ``[low, high]`` drawn on the generator's device, moved to ``like``'s."""
    device = generator.device if generator is not None else like.device
    return torch.randint(low, high + 1, shape, generator=generator, device=device).to(like.device)


def translation(x: Tensor, *, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by up to ``ratio`` of its side (integer pixels), zeros coming in.

    Args:
        x: ``(B, C, H, W)``.
        ratio: The largest shift, as a fraction of the side.
        generator: RNG of the shifts.

    Returns:
        ``(B, C, H, W)``: ``out[b, :, i, j] = x[b, :, i - dy_b, j - dx_b]``, 0 outside.
    """
    b, _, h, w = x.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if max_y == 0 and max_x == 0:
        return x
    dy = _randint(-max_y, max_y, (b, 1, 1), like=x, generator=generator)  # (B, 1, 1)
    dx = _randint(-max_x, max_x, (b, 1, 1), like=x, generator=generator)
    rows = torch.arange(h, device=x.device)[None, :, None] - dy + max_y  # (B, H, 1) in the padded image
    cols = torch.arange(w, device=x.device)[None, None, :] - dx + max_x  # (B, 1, W)
    padded = F.pad(x, (max_x, max_x, max_y, max_y))  # (B, C, H + 2 max_y, W + 2 max_x)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: Tensor, *, ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Zero one ``ratio``-of-the-side square per image, at a random centre (clipped at the border).

    Args:
        x: ``(B, C, H, W)``.
        ratio: The square's side, as a fraction of the image's.
        generator: RNG of the centres.

    Returns:
        ``(B, C, H, W)``: ``x`` times a 0/1 mask.
    """
    b, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h - 1, (b, 1, 1), like=x, generator=generator)  # (B, 1, 1)
    cx = _randint(0, w - 1, (b, 1, 1), like=x, generator=generator)
    rows = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    r, c = rows - (cy - size_y // 2), cols - (cx - size_x // 2)  # offsets into the square
    inside = (r >= 0) & (r < size_y) & (c >= 0) & (c < size_x)  # (B, H, W)
    return x * (~inside).to(x.dtype)[:, None]


Augmentation = Callable[[Tensor, torch.Generator | None], Tensor]


def _compose(*fns: Callable[..., Tensor]) -> Augmentation:
    def apply(x: Tensor, generator: torch.Generator | None) -> Tensor:
        for fn in fns:
            x = fn(x, generator=generator)
        return x
    return apply


AUGMENTATIONS: dict[str, Augmentation | None] = {
    "none": None,
    "translation": _compose(translation),
    "translation_cutout": _compose(translation, cutout),
}
"""``train_gan.train.augment`` → the transformation applied before the discriminator (None: none)."""


__all__ = ["AUGMENTATIONS", "Augmentation", "cutout", "translation"]
