"""Caption training pieces independent of Ray: the dataset, one train step, evaluation.

The Ray Train loop (``train_loop_per_worker``) wires these together: it builds
a :class:`CaptionDataset` from the cached features and the captions table,
wraps it in a ``DataLoader`` with :func:`collate_captions`, calls
:func:`train_step` per batch and :func:`evaluate_loss` per epoch, and reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from components.captioning.losses import LossConfig, caption_loss
from components.data.text import Vocab
from components.train.session import autocast


class CaptionBatch(NamedTuple):
    """One batch: ``grid`` ``(B, P, C)`` float32, ``pooled`` ``(B, C)`` float32, ``tokens`` ``(B, T)`` int64."""

    grid: Tensor
    pooled: Tensor
    tokens: Tensor


class CaptionDataset(Dataset):
    """(image features, caption) pairs over in-memory or memory-mapped arrays.

    One item per caption. Feature arrays may be float16 and ``np.memmap``:
    rows are read and converted to float32 once per batch (``__getitems__``,
    which ``DataLoader`` calls with the batch's indices).

    Args:
        grid: ``(N, P, C)`` feature grids, one row per image.
        pooled: ``(N, C)`` pooled features.
        caption_image_index: ``(M,)`` the feature row (0..N-1, not the image
            id) of each caption.
        token_ids: ``(M, L)`` caption ids ``<start> .. <end>``, right-padded with 0.
    """

    def __init__(self, grid: np.ndarray, pooled: np.ndarray, caption_image_index: np.ndarray,
                 token_ids: np.ndarray) -> None:
        if grid.ndim != 3 or pooled.ndim != 2 or len(grid) != len(pooled):
            raise ValueError(f"grid must be (N, P, C) and pooled (N, C), got {grid.shape} and {pooled.shape}")
        caption_image_index = np.asarray(caption_image_index, dtype=np.int64)
        token_ids = np.asarray(token_ids)
        if caption_image_index.ndim != 1 or token_ids.ndim != 2 or len(caption_image_index) != len(token_ids):
            raise ValueError("caption_image_index must be (M,) and token_ids (M, L), got "
                             f"{caption_image_index.shape} and {token_ids.shape}")
        if len(caption_image_index) and not (
            0 <= caption_image_index.min() and caption_image_index.max() < len(grid)
        ):
            raise ValueError(f"caption_image_index must lie in [0, {len(grid)})")
        self.grid = grid
        self.pooled = pooled
        self.caption_image_index = caption_image_index
        self.token_ids = token_ids.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, index: int) -> CaptionBatch:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[CaptionBatch]:
        rows = self.caption_image_index[np.asarray(indices, dtype=np.int64)]  # (B,)
        grid = torch.from_numpy(np.asarray(self.grid[rows], dtype=np.float32))  # (B, P, C)
        pooled = torch.from_numpy(np.asarray(self.pooled[rows], dtype=np.float32))  # (B, C)
        tokens = torch.from_numpy(self.token_ids[np.asarray(indices, dtype=np.int64)])  # (B, L)
        return [CaptionBatch(g, p, t) for g, p, t in zip(grid, pooled, tokens)]


class LengthBucketBatches(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches of captions of similar length: fewer padded decoder steps.

    A batch is unrolled for as many steps as its longest caption. On the synthetic
    data lengths run from 6 to 19 tokens (mean 12.7), so plain shuffled batches of 32
    are nearly always 19 wide; grouping similar lengths cuts the steps by about a third.

    Each epoch: the indices of ``sampler`` (or a shuffle of all of them) in order, cut
    into chunks of ``batch_size * buckets``; each chunk sorted by length (stable) and cut
    into batches; then the order of all batches shuffled. Deterministic given ``seed``
    and the epoch (:meth:`set_epoch`), as the loop's resume needs. Under DDP ``sampler``
    is the rank's ``DistributedSampler``: every rank gets the same number of batches.

    Args:
        lengths: ``(M,)`` token count of each caption.
        batch_size: Captions per batch (the last batch of a chunk may be smaller).
        buckets: Batches per chunk (>= 1); larger: tighter lengths, less random batches.
        seed: Seed of the shuffles.
        sampler: The rank's sampler, or None for a shuffle of ``range(M)``.
    """

    def __init__(self, lengths: np.ndarray, *, batch_size: int, buckets: int, seed: int,
                 sampler: torch.utils.data.Sampler | None = None) -> None:
        if batch_size < 1 or buckets < 1:
            raise ValueError(f"batch_size and buckets must be >= 1, got {batch_size} and {buckets}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.buckets, self.seed = batch_size, buckets, seed
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = (np.fromiter(iter(self.sampler), dtype=np.int64) if self.sampler is not None
                 else rng.permutation(len(self.lengths)))
        chunk = self.batch_size * self.buckets
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.lengths)
        chunk = self.batch_size * self.buckets
        full, rest = divmod(n, chunk)
        return full * self.buckets + math.ceil(rest / self.batch_size)


def collate_captions(items: Sequence[CaptionBatch], *, pad_id: int = Vocab.pad_id) -> CaptionBatch:
    """Stack items into a batch and cut the padding columns no caption of the batch uses."""
    grid = torch.stack([it.grid for it in items])  # (B, P, C)
    pooled = torch.stack([it.pooled for it in items])  # (B, C)
    tokens = torch.stack([it.tokens for it in items])  # (B, L)
    width = max(int((tokens != pad_id).sum(1).max()), 2)
    return CaptionBatch(grid, pooled, tokens[:, :width])


def check_grid_shift(max_shift: int, positions: int) -> int:
    """The side of a square grid of ``positions`` cells that :func:`shift_grids` can move by up to ``max_shift``.

    Raises:
        ValueError: ``positions`` is not a square, or ``max_shift`` is not in ``1..side - 1``.
    """
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"grid_shift needs a square grid, got {positions} positions")
    if not 0 < max_shift < side:
        raise ValueError(f"grid_shift must be in 0..{side - 1} for a {side}x{side} grid, got {max_shift}")
    return side


def shift_grids(batch: CaptionBatch, max_shift: int, generator: torch.Generator) -> CaptionBatch:
    """Translate each image's square feature grid by a random whole number of cells (augmentation).

    Every image of the batch moves by its own ``dx, dy`` drawn uniformly from ``-max_shift..max_shift``
    (``generator``); the cells that enter at an edge repeat that edge's cells (replicate padding:
    the synthetic scenes' background reaches every edge). The objects move together, so the
    relations a caption names stay true; what changes is where they lie on the grid, and on a grid
    cached finer than the decoder attends (``grid_stride`` 2) the phase of the learned pooling.
    ``pooled`` is left as it is (a mean over the grid, nearly unchanged).

    Args:
        batch: ``grid`` ``(B, P, C)`` with ``P`` a square.
        max_shift: Largest shift in cells; 0 returns ``batch`` unchanged (and draws nothing).
        generator: The draws' random stream (CPU).

    Raises:
        ValueError: As :func:`check_grid_shift`.
    """
    if max_shift == 0:
        return batch
    b, p, c = batch.grid.shape
    side = check_grid_shift(max_shift, p)
    grid = batch.grid.transpose(1, 2).reshape(b, c, side, side)  # (B, C, S, S)
    padded = nn.functional.pad(grid, (max_shift,) * 4, mode="replicate")  # (B, C, S+2m, S+2m)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator).to(grid.device)  # (2, B)
    cells = torch.arange(side, device=grid.device)
    rows = (offsets[0, :, None] + cells)[:, :, None]  # (B, S, 1)
    cols = (offsets[1, :, None] + cells)[:, None, :]  # (B, 1, S)
    shifted = padded.permute(0, 2, 3, 1)[torch.arange(b, device=grid.device)[:, None, None], rows, cols]  # (B, S, S, C)
    return batch._replace(grid=shifted.reshape(b, p, c))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_step(model: nn.Module, batch: Sequence[Tensor], optimizer: torch.optim.Optimizer, *,
               loss_cfg: LossConfig = LossConfig(), grad_clip: float | None = None, sampling_prob: float = 0.0,
               autocast_dtype: torch.dtype | None = None,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """One optimisation step on one batch.

    Args:
        model: A caption model, possibly wrapped in DDP (called as ``model(...)``).
        batch: ``(grid, pooled, tokens)``; moved to the model's device.
        optimizer: Steps the model's parameters.
        loss_cfg: Label smoothing and attention penalty weight.
        grad_clip: Clip the global gradient norm to this value; None or 0: no clipping.
        sampling_prob: Scheduled sampling probability for this step (Bengio et
            al. 2015); the loop owns its schedule.
        autocast_dtype: ``torch.bfloat16`` to run the forward pass under
            autocast (float16 would need a gradient scaler); None: full precision.
        generator: Random generator for scheduled sampling.

    Returns:
        Floats: ``loss``, ``cross_entropy``, ``nll``, ``attention_penalty``,
        ``num_tokens`` and ``grad_norm`` (before clipping).
    """
    model.train()
    device = _device_of(model)
    grid, pooled, tokens = (x.to(device, non_blocking=True) for x in batch)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, autocast_dtype):
        output = model(grid, pooled, tokens, sampling_prob=sampling_prob, generator=generator)
        terms = caption_loss(output, tokens, cfg=loss_cfg)
    loss = terms["loss"]
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else math.inf)
    optimizer.step()
    metrics = {name: float(value.detach()) for name, value in terms.items()}
    metrics["grad_norm"] = float(grad_norm)
    return metrics


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: Iterable[Sequence[Tensor]], *, loss_cfg: LossConfig = LossConfig(),
                  autocast_dtype: torch.dtype | None = None, all_reduce: bool = True) -> dict[str, float]:
    """Teacher-forced loss over a whole loader (no scheduled sampling).

    Cross-entropy and NLL are averaged per target token, the attention penalty
    per caption. When ``torch.distributed`` is initialised and ``all_reduce``
    is true the sums are reduced over ranks, so every rank returns the same
    figures for the whole (sharded) loader.

    Returns:
        Floats: ``loss`` (cross-entropy + lambda * penalty), ``cross_entropy``,
        ``nll``, ``perplexity`` (``exp(nll)``), ``attention_penalty``,
        ``num_tokens``.
    """
    was_training = model.training
    model.eval()
    device = _device_of(model)
    # token-weighted cross_entropy, nll; caption-weighted penalty; counts
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    try:
        for batch in loader:
            grid, pooled, tokens = (x.to(device, non_blocking=True) for x in batch)
            with autocast(device, autocast_dtype):
                terms = caption_loss(model(grid, pooled, tokens), tokens, cfg=loss_cfg)
            n_tok = terms["num_tokens"].double()
            n_cap = float(tokens.shape[0])
            sums += torch.stack([
                terms["cross_entropy"].double() * n_tok, terms["nll"].double() * n_tok,
                terms["attention_penalty"].double() * n_cap, n_tok, n_tok.new_tensor(n_cap),
            ])
    finally:
        model.train(was_training)
    if all_reduce and dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    ce_sum, nll_sum, pen_sum, n_tok, n_cap = sums.tolist()
    ce = ce_sum / max(n_tok, 1.0)
    nll = nll_sum / max(n_tok, 1.0)
    penalty = pen_sum / max(n_cap, 1.0)
    return {
        "loss": ce + loss_cfg.attention_penalty * penalty, "cross_entropy": ce, "nll": nll,
        "perplexity": math.exp(min(nll, 700.0)), "attention_penalty": penalty, "num_tokens": n_tok,
    }


__all__ = [
    "CaptionBatch", "CaptionDataset", "LengthBucketBatches", "check_grid_shift", "collate_captions", "evaluate_loss",
    "shift_grids", "train_step",
]
