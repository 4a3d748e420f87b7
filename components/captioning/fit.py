"""The caption training loop: one function that runs under Ray Train or without it.

:func:`fit_captioner` owns the optimiser, the LR schedule, scheduled sampling,
early stopping on validation CIDEr and the checkpoints; it talks to its runner
only through a :class:`~components.train.session.Session`.
:func:`train_loop_per_worker` is the ``TorchTrainer`` entry point that wires a
:class:`RaySession` to it.

Every epoch: train on this rank's shard (DistributedSampler), then, on every
rank and over the whole validation split, the teacher-forced loss and the
greedy-decoded CIDEr-D (so all ranks take the same early-stopping decision
without communicating), then one report with rank 0's checkpoint: model,
optimiser, scheduler, the best model so far and the metric history. A restart
resumes after the last reported epoch, and gives the same weights as an
uninterrupted run: the shuffle, dropout and scheduled-sampling streams are
reseeded per epoch (:func:`~components.train.session.derive_seed`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from components.captioning.config import CaptionerModelParams, CaptionerTrainParams
from components.captioning.data import CaptionData, SplitCaptions, load_caption_data
from components.captioning.decoding import beam_search, greedy_decode
from components.captioning.losses import LossConfig
from components.captioning.models import CaptionerConfig, build_model
from components.captioning.train import (
    CaptionDataset,
    LengthBucketBatches,
    check_grid_shift,
    collate_captions,
    evaluate_loss,
    shift_grids,
    train_step,
)
from components.config import ConfigError
from components.metrics.captions import quick_scores
from components.train.guard import guard
from components.train.precision import autocast_dtype
from components.train.session import (
    RaySession,
    Session,
    derive_seed,
    maybe_inject_failure,
    unwrap,
)


def _loader(split: SplitCaptions, data: CaptionData, batch_size: int, *, shuffle: bool, seed: int,
            session: Session | None, length_buckets: int = 0) -> torch.utils.data.DataLoader:
    dataset = CaptionDataset(data.features.grid, data.features.pooled, split.caption_rows, split.token_ids)
    sampler = session.sampler(dataset, shuffle=shuffle, seed=seed) if session else None
    generator = torch.Generator().manual_seed(seed)
    if shuffle and length_buckets:
        lengths = (np.asarray(split.token_ids) != 0).sum(1)  # tokens per caption, <start> and <end> included
        batches = LengthBucketBatches(lengths, batch_size=batch_size, buckets=length_buckets, seed=seed,
                                      sampler=sampler)
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate_captions,
                                           num_workers=0)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        collate_fn=collate_captions, generator=generator, num_workers=0,
    )


def image_features(data: CaptionData, rows: np.ndarray, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 ``(B, P, C)`` grids and ``(B, C)`` pooled features of feature rows ``rows``, on ``device``."""
    grid = torch.from_numpy(np.asarray(data.features.grid[rows], dtype=np.float32)).to(device)  # (B, P, C)
    pooled = torch.from_numpy(np.asarray(data.features.pooled[rows], dtype=np.float32)).to(device)  # (B, C)
    return grid, pooled


@torch.no_grad()
def decode_split(model: torch.nn.Module, data: CaptionData, split: SplitCaptions, *, beam_size: int = 1,
                 max_length: int | None = None, length_penalty: float = 0.0, batch_size: int = 256,
                 device: torch.device | str = "cpu") -> tuple[dict[int, str], dict[int, np.ndarray]]:
    """Caption every image of ``split``: greedy at beam 1, batched beam search above.

    Returns:
        image id → caption, and image id → attention weights (L, P) for
        attention models (empty for Show-and-Tell).
    """
    model = unwrap(model).eval()
    device = torch.device(device)
    max_length = max_length or data.vocab.max_caption_length + 1
    captions: dict[int, str] = {}
    attention: dict[int, np.ndarray] = {}
    for start in range(0, len(split.image_ids), batch_size):
        ids = split.image_ids[start : start + batch_size]
        grid, pooled = image_features(data, split.image_rows[start : start + batch_size], device)
        if beam_size > 1:
            result = beam_search(model, grid, pooled, beam_size=beam_size, max_length=max_length,
                                 length_penalty=length_penalty)
        else:
            result = greedy_decode(model, grid, pooled, max_length=max_length)
        for i, (image_id, tokens) in enumerate(zip(ids.tolist(), result.to_lists())):
            captions[image_id] = data.vocab.decode(tokens)
            if result.alphas is not None:
                attention[image_id] = result.alphas[i, : max(len(tokens), 1)].float().cpu().numpy()
    return captions, attention


def _scheduler(optimizer: torch.optim.Optimizer, cfg: CaptionerTrainParams):
    schedules = {
        "constant": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1)),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(cfg.epochs // 3, 1), gamma=0.3),
    }
    return schedules[cfg.lr_schedule]()


def fit_captioner(
    session: Session,
    *,
    data: CaptionData,
    model_params: CaptionerModelParams,
    cfg: CaptionerTrainParams,
    storage_dir: str = "",
    on_step: Callable[[torch.nn.Module, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train a caption model; return the final state (as in the last checkpoint).

    Args:
        session: Where it runs (Ray Train worker or this process).
        data: Features, vocab and captions per split (train and val needed).
        model_params: The ``model`` params group (the data gives vocab, feature and grid sizes).
        cfg: The optimisation params.
        storage_dir: The run's storage folder (failure-injection flags).
        on_step: Test hook called after every step with ``(model, epoch, step in the epoch)``
            on every rank (e.g. to check that DDP keeps the ranks' weights equal).

    Returns:
        ``model_config``, ``best_model`` (state dict of the best val CIDEr),
        ``best_epoch``, ``history`` (per-epoch metrics) and the training state.
    """
    torch.set_num_threads(max(cfg.threads_per_worker, 1))
    torch.manual_seed(cfg.seed)
    device = session.device
    model_cfg = CaptionerConfig(vocab_size=len(data.vocab), feature_dim=data.feature_dim,
                                   num_positions=data.num_positions, **dataclasses.asdict(model_params))
    if cfg.grid_shift:  # before training, naming the key: shift_grids would fail at the first batch
        try:
            check_grid_shift(cfg.grid_shift, data.num_positions)
        except ValueError as err:
            raise ConfigError(f"train_captioner.train.grid_shift: {cfg.grid_shift} needs a square grid of more "
                              f"than {cfg.grid_shift} cells a side, the features have {data.num_positions} "
                              "positions") from err
    model = session.prepare_model(build_model(model_cfg))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg)
    loss_cfg = LossConfig(label_smoothing=cfg.label_smoothing, attention_penalty=cfg.attention_penalty)
    amp = autocast_dtype(cfg.precision, device)  # bf16 or None (float32)

    state: dict[str, Any] = {"epoch": -1, "history": [], "best_cider": -math.inf, "best_epoch": -1,
                             "bad_epochs": 0, "best_model": None}
    restored = session.restore()
    if restored is not None:
        unwrap(model).load_state_dict(restored["model"])
        optimizer.load_state_dict(restored["optimizer"])
        scheduler.load_state_dict(restored["scheduler"])
        state = {k: restored[k] for k in state}

    train_loader = _loader(data.splits["train"], data, cfg.batch_size, shuffle=True, seed=cfg.seed,
                           session=session, length_buckets=cfg.length_buckets)
    val_loader = _loader(data.splits["val"], data, cfg.batch_size, shuffle=False, seed=cfg.seed, session=None)
    sampling_gen = torch.Generator(device="cpu")
    shift_gen = torch.Generator(device="cpu")

    for epoch in range(state["epoch"] + 1, cfg.epochs):
        if cfg.early_stopping_patience and state["bad_epochs"] >= cfg.early_stopping_patience:
            break
        maybe_inject_failure(cfg.fail_at_epoch, epoch, session, storage_dir)
        # every random stream reseeded per epoch (and rank): a resumed run repeats this epoch exactly
        torch.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 0))  # dropout
        if train_loader.generator is not None:
            train_loader.generator.manual_seed(derive_seed(cfg.seed, epoch, 1))  # the shuffle (one process)
        sampling_gen.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 2))  # scheduled sampling
        shift_gen.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 3))  # grid_shift
        for epoch_sampler in (train_loader.sampler, train_loader.batch_sampler):
            if hasattr(epoch_sampler, "set_epoch"):  # DistributedSampler / LengthBucketBatches: seed + epoch
                epoch_sampler.set_epoch(epoch)
        sampling_prob = cfg.scheduled_sampling * epoch / max(cfg.epochs - 1, 1)
        start = time.perf_counter()
        sums, steps, captions_seen = {"loss": 0.0, "cross_entropy": 0.0, "grad_norm": 0.0}, 0, 0
        for batch in train_loader:
            batch = shift_grids(batch, cfg.grid_shift, shift_gen)
            out = train_step(model, batch, optimizer, loss_cfg=loss_cfg, grad_clip=cfg.grad_clip or None,
                             sampling_prob=sampling_prob, autocast_dtype=amp,
                             generator=sampling_gen if device.type == "cpu" else None)
            guard({"loss": out["loss"]}, step=steps, epoch=epoch, last_good_epoch=state["epoch"])
            for k in sums:
                sums[k] += out[k]
            if on_step is not None:
                on_step(model, epoch, steps)
            steps += 1
            captions_seen += batch.tokens.shape[0]
        train_seconds = time.perf_counter() - start
        scheduler.step()

        val = evaluate_loss(model, val_loader, loss_cfg=loss_cfg, autocast_dtype=amp)
        val_split = data.splits["val"]
        predictions, _ = decode_split(model, data, val_split, device=device)
        val_scores = quick_scores(predictions, val_split.references)
        model.train()

        metrics = {
            "epoch": epoch,
            "train_loss": sums["loss"] / max(steps, 1),
            "train_cross_entropy": sums["cross_entropy"] / max(steps, 1),
            "grad_norm": sums["grad_norm"] / max(steps, 1),
            "val_loss": val["loss"],
            "val_perplexity": val["perplexity"],
            "val_bleu_4": val_scores["bleu_4"],
            "val_cider": val_scores["cider"],
            "lr": optimizer.param_groups[0]["lr"],
            "sampling_prob": sampling_prob,
            "train_captions_per_s": captions_seen * session.world_size / max(train_seconds, 1e-9),
            "epoch_seconds": time.perf_counter() - start,
            "bf16_autocast": float(amp is not None),
        }
        if val_scores["cider"] > state["best_cider"]:
            state["best_cider"], state["best_epoch"], state["bad_epochs"] = val_scores["cider"], epoch, 0
            state["best_model"] = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
        else:
            state["bad_epochs"] += 1
        session.end_epoch(state, metrics, checkpoint=lambda: {
            **state,
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "model_config": model_cfg.to_dict(),
        })

    return {**state, "model_config": model_cfg.to_dict()}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """``TorchTrainer`` entry point. ``config``: paths, ``model``, ``train``, ``storage_dir``,
    and an optional ``on_step`` test hook."""
    data = load_caption_data(config["features_dir"], config["prepared_dir"])
    fit_captioner(RaySession(), data=data, model_params=config["model"], cfg=config["train"],
                  storage_dir=config["storage_dir"], on_step=config.get("on_step"))


__all__ = ["decode_split", "fit_captioner", "image_features", "train_loop_per_worker"]
