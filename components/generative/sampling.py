"""Images out of a trained model: samples, reconstructions, interpolations, grids.

Every function here works with any *sampler*: a module with ``latent_dim``
and ``generate(z (B, L)) -> (B, 3, H, W)`` images in ``[0, 1]`` (``VAE``:
the decoder's mean; ``Generator``: its output rescaled; the EMA copy of a
generator likewise). Samplers run in eval mode (BatchNorm uses its running
statistics) and their previous mode is restored. Outputs are uint8 arrays
``(N, H, W, 3)``, the layout PIL and the metrics read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.utils import make_grid

from components.generative.common import from_uint8_images, to_uint8_images, unwrap


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def sample(model: nn.Module, n: int, seed: int, *, batch_size: int = 256) -> np.ndarray:
    """Draw ``n`` images from the prior, deterministically for a seed.

    The latents come from ``torch.Generator().manual_seed(seed)`` on the CPU,
    so the same seed gives the same ``z`` on any device (and bit-identical
    images on the CPU).

    Args:
        model: A sampler (``VAE``, ``Generator`` or an EMA copy).
        n: Number of images.
        seed: Seed of the latents.
        batch_size: Latents decoded at once.

    Returns:
        np.ndarray: uint8 ``(n, H, W, 3)``.
    """
    if n < 1:
        raise ValueError(f"sample needs n >= 1, got {n}")
    z = torch.randn(n, unwrap(model).latent_dim, generator=torch.Generator().manual_seed(seed))  # (n, L)
    with _eval_mode(model) as m:
        device = _device(m)
        chunks = [to_uint8_images(m.generate(z[i:i + batch_size].to(device)))
                  for i in range(0, n, batch_size)]
    return np.concatenate(chunks, axis=0)


def reconstructions(vae: nn.Module, x: Tensor | np.ndarray) -> np.ndarray:
    """Reconstruct images through a VAE's posterior mean: ``decode(mu(x))``.

    Args:
        vae: A ``VAE``.
        x: ``(B, 3, H, W)`` float images in ``[0, 1]``, or uint8 ``(B, H, W, 3)``.

    Returns:
        np.ndarray: uint8 ``(B, H, W, 3)`` reconstructions, in the order of ``x``.
    """
    with _eval_mode(vae) as m:
        if isinstance(x, np.ndarray) or x.dtype == torch.uint8:
            x = from_uint8_images(x, value_range=(0.0, 1.0))
        return to_uint8_images(m.reconstruct(x.to(_device(m))))


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``: ``(L,), (L,), (T,) -> (T, L)``."""
    t = t[:, None]  # (T, 1)
    return (1.0 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models).

    Under a Gaussian prior nearly all mass lies near the sphere of radius
    ``sqrt(L)``; a straight line between two samples cuts through the
    low-density interior (its midpoint has norm ~ ``sqrt(L / 2)``), the arc
    stays on the shell. Falls back to :func:`lerp` for (anti)parallel ends.

    Args:
        z0: ``(L,)`` start.
        z1: ``(L,)`` end.
        t: ``(T,)`` positions in ``[0, 1]``.

    Returns:
        Tensor: ``(T, L)``.
    """
    cos = torch.dot(z0 / z0.norm(), z1 / z1.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega).abs() < 1e-6:
        return lerp(z0, z1, t)
    t = t[:, None]  # (T, 1)
    return (torch.sin((1.0 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


INTERPOLATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {"slerp": slerp, "linear": lerp}


def interpolate(model: nn.Module, z0: Tensor, z1: Tensor, steps: int, *, method: str = "slerp") -> np.ndarray:
    """Decode ``steps`` latents from ``z0`` to ``z1`` (both ends included).

    Args:
        model: A sampler (``VAE``, ``Generator`` or an EMA copy).
        z0: ``(L,)`` start latent.
        z1: ``(L,)`` end latent.
        steps: Number of images (>= 2).
        method: A key of :data:`INTERPOLATIONS`: ``slerp`` (default, suited to
            the Gaussian prior) or ``linear``.

    Returns:
        np.ndarray: uint8 ``(steps, H, W, 3)``.
    """
    if steps < 2:
        raise ValueError(f"interpolate needs steps >= 2, got {steps}")
    t = torch.linspace(0.0, 1.0, steps)  # (T,)
    z = INTERPOLATIONS[method](z0.float().cpu(), z1.float().cpu(), t)  # (T, L)
    with _eval_mode(model) as m:
        return to_uint8_images(m.generate(z.to(_device(m))))


def image_grid(images: np.ndarray, nrow: int = 8, *, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """Tile uint8 images into one picture (``torchvision.utils.make_grid``).

    Args:
        images: uint8 ``(N, H, W, 3)``.
        nrow: Images per row (torchvision's meaning).
        padding: Pixels between images.
        pad_value: Grey level of the padding (white by default).

    Returns:
        PIL.Image.Image: an RGB image.
    """
    t = torch.as_tensor(np.asarray(images, dtype=np.uint8)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    grid = make_grid(t, nrow=nrow, padding=padding, pad_value=pad_value)  # (3, H', W') uint8
    return Image.fromarray(grid.permute(1, 2, 0).numpy(), mode="RGB")
