"""Cheap training diagnostics: sample diversity, colour statistics.

These are signals for the training loop and reports, not the evaluation
metrics (FID/KID, precision/recall live with the ``evaluate`` stage).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def mean_pairwise_l2(images: np.ndarray, *, max_images: int = 512) -> float:
    """Mean Euclidean distance between distinct images in pixel space (``[0, 1]`` scale).

    Args:
        images: uint8 ``(N, H, W, 3)``, N >= 2; only the first ``max_images``
            are used (cost is quadratic).
        max_images: Cap on N.

    Returns:
        float: mean over ordered pairs ``i != j`` of ``||x_i - x_j||_2``.
    """
    x = torch.as_tensor(np.asarray(images[:max_images])).flatten(start_dim=1).double() / 255.0  # (N, D)
    n = x.shape[0]
    if n < 2:
        raise ValueError("mean_pairwise_l2 needs at least two images")
    d = torch.cdist(x, x)  # (N, N), zero diagonal
    return float(d.sum() / (n * (n - 1)))


def sample_diversity(samples: np.ndarray, real: np.ndarray, *, max_images: int = 512) -> float:
    """Mode-collapse signal: pairwise spread of samples relative to real images.

    ``mean_pairwise_l2(samples) / mean_pairwise_l2(real)``. About 1 when the
    samples vary as much as the data; it falls towards 0 as the generator
    collapses onto few modes (all samples alike); well above 1 means noise.
    Pixel L2 is a crude stand-in for a perceptual distance (LPIPS, unavailable
    offline): it sees colour and layout, not semantics, so use it to watch a
    run, not to rank models. Compare equal sample counts.

    Args:
        samples: uint8 ``(N, H, W, 3)`` generated images.
        real: uint8 ``(M, H, W, 3)`` real images of the same size.
        max_images: Cap on each set.

    Returns:
        float: the ratio.
    """
    return mean_pairwise_l2(samples, max_images=max_images) / mean_pairwise_l2(real, max_images=max_images)


def colour_histogram(images: np.ndarray, bins: int = 16, *, joint: bool = False) -> np.ndarray:
    """Normalised colour histogram of a set of images.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        bins: Bins per channel, equal width over 0..255.
        joint: One joint RGB histogram (``bins**3`` cells: which colours
            occur) instead of three per-channel marginals.

    Returns:
        np.ndarray: float64 ``(3, bins)`` (rows R, G, B), or ``(1, bins**3)``
        when ``joint``; each row sums to 1.
    """
    x = np.asarray(images, dtype=np.uint8).reshape(-1, 3).astype(np.int64)  # (P, 3)
    idx = x * bins // 256  # (P, 3) bin per channel
    if joint:
        flat = (idx[:, 0] * bins + idx[:, 1]) * bins + idx[:, 2]  # (P,)
        counts = np.bincount(flat, minlength=bins**3)[None, :]  # (1, bins**3)
    else:
        counts = np.stack([np.bincount(idx[:, c], minlength=bins) for c in range(3)])  # (3, bins)
    return counts / counts.sum(axis=1, keepdims=True)


def chi2_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric chi-square ``1/2 sum (p - q)^2 / (p + q)`` per row, averaged; in ``[0, 1]``."""
    num = (p - q) ** 2
    den = p + q
    per_row = 0.5 * np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0).sum(axis=-1)
    return float(per_row.mean())


def l1_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance per row (total variation), averaged; in ``[0, 1]``."""
    return float((0.5 * np.abs(p - q).sum(axis=-1)).mean())


HISTOGRAM_DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "chi2": chi2_distance,
    "l1": l1_distance,
}


def histogram_distance(p: np.ndarray, q: np.ndarray, *, metric: str = "chi2") -> float:
    """Distance between two :func:`colour_histogram` outputs of the same shape.

    0 for identical colour statistics, 1 for disjoint ones. Compare samples
    with real images to catch colour drift or a generator stuck on a palette.

    Args:
        p: ``(K, bins)`` histogram, rows summing to 1.
        q: Same shape.
        metric: A key of :data:`HISTOGRAM_DISTANCES`: ``chi2`` or ``l1``.

    Returns:
        float: the distance, averaged over rows (channels).
    """
    if p.shape != q.shape:
        raise ValueError(f"histogram shapes differ: {p.shape} vs {q.shape}")
    return HISTOGRAM_DISTANCES[metric](p, q)


def colour_distance(a: np.ndarray, b: np.ndarray, *, bins: int = 8) -> float:
    """Chi-square distance of the joint colour histograms of two image sets (0 same colours, 1 disjoint).

    The one colour signal of the VAE and GAN stages and their per-epoch curves.

    Args:
        a: uint8 ``(N, H, W, 3)``.
        b: uint8 ``(M, H, W, 3)``.
        bins: Bins per channel (``bins**3`` joint cells).
    """
    return histogram_distance(colour_histogram(a, bins, joint=True), colour_histogram(b, bins, joint=True))
