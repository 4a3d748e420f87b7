"""A backbone trained inside the pipeline: visual concepts from the training captions.

The offline default cannot use ImageNet weights (nothing is downloaded), and a
randomly initialised ResNet's deep features carry too little of what a caption
needs (colour and shape of small objects). So the pipeline trains the chosen
backbone itself, on the **training split only**, as a multi-label classifier
of the words of each image's reference captions: the "visual concept
detectors" of Fang et al. 2015 (From Captions to Visual Concepts and Back).
Global average pooling of the last feature map, a linear layer, one sigmoid
per vocabulary word, binary cross-entropy. The trained trunk is then the
feature extractor; its grid keeps the spatial layout for attention.

No caption of the validation or test split is seen; the word targets are the
captions the captioner trains on anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from components.features.backbones import Backbone

log = logging.getLogger(__name__)


def concept_targets(token_ids: Sequence[Sequence[int]], image_rows: Sequence[int], *, num_images: int,
                    vocab_size: int, ignore_ids: Sequence[int] = (0, 1, 2, 3)) -> np.ndarray:
    """Multi-hot word targets: ``(num_images, vocab_size)`` float32, 1 where any caption of the image has the word."""
    targets = np.zeros((num_images, vocab_size), np.float32)
    for row, ids in zip(image_rows, token_ids):
        targets[row, np.asarray(ids, dtype=np.int64)] = 1.0
    targets[:, list(ignore_ids)] = 0.0
    return targets


def train_concepts(
    backbone: Backbone,
    images: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    threads: int = 1,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``backbone`` in place as a concept classifier; return the last epoch's loss.

    Args:
        backbone: The trunk to train (its ``feature_map`` is used).
        images: ``(N, S, S, 3)`` uint8 training images.
        targets: ``(N, V)`` multi-hot word targets (:func:`concept_targets`).
        epochs: Passes over the images.
        batch_size: Images per step.
        lr: Adam learning rate.
        seed: Shuffling and head initialisation.
        threads: torch intra-op threads.
        progress: Show a progress bar.
    """
    if len(images) != len(targets) or len(images) == 0:
        raise ValueError(f"need as many targets as images, got {len(images)} images and {len(targets)} targets")
    torch.set_num_threads(max(threads, 1))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(backbone.channels, targets.shape[1])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, 3, S, S) uint8, a view
    labels = torch.from_numpy(targets)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=lr)
    backbone.train()
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="features: training concept backbone", unit="step", disable=not progress,
               mininterval=1.0)
    for epoch in range(epochs):
        loss_sum, seen = 0.0, 0
        order = torch.randperm(len(images), generator=generator)
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            x = pixels[idx].float().div_(255.0)  # (B, 3, S, S)
            logits = head(backbone.feature_map(x).mean(dim=(2, 3)))  # (B, V)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss) * len(idx)
            seen += len(idx)
            bar.update()
        log.info("concept backbone epoch %d: BCE %.4f", epoch, loss_sum / seen)
    bar.close()
    backbone.eval()
    return {"concept_bce": loss_sum / max(seen, 1), "concept_train_seconds": time.perf_counter() - start}
