"""The VAE and GAN training loops: functions that run under Ray Train or without it.

:func:`fit_vae` and :func:`fit_gan` own the optimisers, the step counter, the
per-epoch evaluation and the checkpoints; they talk to their runner only
through a :class:`~components.train.session.Session` (as ``fit_captioner``
does). :func:`train_loop_per_worker_vae` / :func:`train_loop_per_worker_gan`
are the ``TorchTrainer`` entry points that decode the images and wire a
:class:`RaySession` to them.

Every epoch: train on this rank's shard (``DistributedSampler`` when
distributed), checking every step's losses (:func:`components.train.guard.guard`: a NaN or an
infinity stops the run with :class:`TrainingDivergedError`, before anything is
reported, so the last good checkpoint stays the last one); then rank 0
evaluates (VAE: validation ELBO terms, and the IWAE bound at the last epoch)
and computes the cheap sample diagnostics (sample diversity, colour-histogram
distance to real validation images, a fixed-noise sample row for the progress
grid); then every rank reports once, rank 0 with the checkpoint: the weights,
the optimisers, the step count, the metric history and the progress rows. A
restart resumes after the last reported epoch, and gives the same weights as
an uninterrupted run: shuffling and noise are seeded per epoch (and rank).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from components.config import to_dict
from components.generative.augment import AUGMENTATIONS
from components.generative.common import unwrap
from components.generative.config import GANConfig, GANTrainParams, VAEConfig, VAETrainParams
from components.generative.data import ImageTensorDataset, load_images
from components.generative.diagnostics import (
    colour_distance,
    sample_diversity,
)
from components.generative.ema import EMA, recalibrate_batchnorm
from components.generative.models import MODELS, build_gan, build_vae
from components.generative.sampling import sample
from components.generative.steps import gan_train_step, make_gan_optimizers, vae_eval_step, vae_train_step
from components.train.guard import TrainingDivergedError, guard
from components.train.precision import autocast_dtype, memory_format
from components.train.session import (
    RaySession,
    Session,
    autocast,
    derive_seed,
    maybe_inject_failure,
)

PROGRESS_SAMPLES = 8  # fixed-noise samples kept per epoch: one row of the progress grid


# ---------------------------------------------------------------------------
# helpers shared by both loops
# ---------------------------------------------------------------------------


class _Epochs:
    """The training batches of one rank, reseeded per epoch so a resumed run repeats the same order."""

    def __init__(self, dataset: ImageTensorDataset, *, batch_size: int, seed: int, session: Session,
                 channels_last: bool = False):
        self.memory_format = memory_format(channels_last)
        self.sampler = session.sampler(dataset, shuffle=True, seed=seed)
        self.generator = torch.Generator()
        self.seed = seed
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=self.sampler is None, sampler=self.sampler,
            generator=self.generator, drop_last=True, num_workers=0,
            pin_memory=session.device.type == "cuda",
        )
        if len(self.loader) == 0:
            per_rank = len(self.sampler) if self.sampler is not None else len(dataset)
            raise ValueError(f"the train split has {per_rank} images per worker, fewer than "
                             f"one batch of {batch_size}: lower batch_size")

    def __call__(self, epoch: int, device: torch.device) -> Iterator[Tensor]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.generator.manual_seed(derive_seed(self.seed, epoch))
        for batch in self.loader:  # (B, 3, H, W) float
            yield batch.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)


def _sample_diagnostics(sampler: nn.Module, real: np.ndarray, cfg: Any) -> tuple[dict[str, float], Tensor]:
    """Mode-collapse and colour signals of ``num_samples`` prior samples, and the fixed-noise row."""
    images = sample(sampler, cfg.num_samples, cfg.sample_seed)  # (N, H, W, 3) uint8
    metrics = {"sample_diversity": sample_diversity(images, real),
               "colour_hist_distance": colour_distance(images, real)}
    return metrics, torch.from_numpy(images[:PROGRESS_SAMPLES].copy())  # (8, H, W, 3)


def _mean(sums: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(count, 1) for k, v in sums.items()}


# ---------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate_vae(model: nn.Module, images: Tensor, *, batch_size: int = 256, iw_samples: int = 0,
                 seed: int = 0) -> dict[str, float]:
    """Mean ELBO terms (nats per image, bits/dim) over a set, optionally the IWAE bound.

    Float32, eval mode, deterministic for a seed.

    Args:
        model: A ``VAE`` (possibly DDP-wrapped); its device is used.
        images: uint8 ``(N, 3, H, W)`` at the model's size.
        batch_size: Images per pass.
        iw_samples: ``k`` of the importance-weighted NLL (Burda et al. 2016); 0: skip.
        seed: Seed of the reparameterisation and importance samples.

    Returns:
        dict[str, float]: ``loss``, ``recon_nll``, ``kl``, ``elbo``, ``bits_per_dim``
        (and ``gaussian_std``), plus ``iwae_nll`` and ``iwae_bits_per_dim`` when
        ``iw_samples > 0``; each the mean over the images.
    """
    vae = unwrap(model)
    device = next(vae.parameters()).device
    data = ImageTensorDataset(images, value_range=MODELS["vae"].value_range)
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        batch = data.to_float(images[start:start + batch_size]).to(device)  # (B, 3, H, W)
        out = vae_eval_step(vae, batch, iw_samples=iw_samples, generator=generator)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v * batch.shape[0]
    return _mean(sums, len(data))


def fit_vae(
    session: Session,
    *,
    train_images: Tensor,
    val_images: Tensor,
    model_cfg: VAEConfig,
    cfg: VAETrainParams,
    storage_dir: str = "",
) -> dict[str, Any]:
    """Train a VAE; return the final state (as in the last checkpoint).

    Args:
        session: Where it runs (Ray Train worker or this process).
        train_images: uint8 ``(N, 3, S, S)``, ``S = model_cfg.image_size``.
        val_images: uint8 ``(M, 3, S, S)``: per-epoch ELBO and diagnostics (rank 0).
        model_cfg: The model config.
        cfg: The optimisation params.
        storage_dir: The run's storage folder (failure-injection flags).

    Returns:
        ``model`` (state dict), ``optimizer``, ``model_config``, ``epoch``,
        ``step``, ``history`` (per-epoch metrics) and ``progress`` (uint8
        ``(E, 8, S, S, 3)`` fixed-noise samples, one row per epoch).

    Raises:
        TrainingDivergedError: A loss term went NaN or infinite.
    """
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    device = session.device
    amp = autocast_dtype(cfg.precision, device)  # bf16 or None (float32), once per run
    model = session.prepare_model(build_vae(model_cfg).to(memory_format=memory_format(cfg.channels_last)))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    size = model_cfg.image_size
    state: dict[str, Any] = {"epoch": -1, "step": 0, "history": [],
                             "progress": torch.zeros((0, PROGRESS_SAMPLES, size, size, 3), dtype=torch.uint8)}
    restored = session.restore()
    if restored is not None:
        unwrap(model).load_state_dict(restored["model"])
        optimizer.load_state_dict(restored["optimizer"])
        state = {k: restored[k] for k in state}

    train = _Epochs(ImageTensorDataset(train_images, value_range=MODELS["vae"].value_range),
                    batch_size=cfg.batch_size, seed=cfg.seed, session=session, channels_last=cfg.channels_last)
    real = val_images.permute(0, 2, 3, 1).numpy()[: cfg.num_samples]  # (M, S, S, 3) uint8
    noise = torch.Generator()  # reparameterisation noise, reseeded per epoch and rank

    for epoch in range(state["epoch"] + 1, cfg.epochs):
        maybe_inject_failure(cfg.fail_at_epoch, epoch, session, storage_dir)
        noise.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 1))
        epoch_start_time, start = time.time(), time.perf_counter()
        sums, seen, steps = {}, 0, 0
        for batch in train(epoch, device):
            with autocast(device, amp):
                out = vae_train_step(model, batch, optimizer, generator=noise, grad_clip=cfg.grad_clip or None)
            guard(out, step=state["step"], epoch=epoch, last_good_epoch=state["epoch"])
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v * batch.shape[0]
            seen += batch.shape[0]
            steps += 1
            state["step"] += 1
        train_seconds = time.perf_counter() - start
        train_metrics = _mean(sums, seen)

        metrics: dict[str, float] = {
            "epoch": epoch,
            **{f"train_{k}": train_metrics[k] for k in ("loss", "elbo", "recon_nll", "kl", "bits_per_dim")},
            "grad_norm": train_metrics["grad_norm"],
            "train_images_per_s": seen * session.world_size / max(train_seconds, 1e-9),
            "epoch_start_time": epoch_start_time,
        }
        if "gaussian_std" in train_metrics:
            metrics["gaussian_std"] = train_metrics["gaussian_std"]
        if session.is_chief:
            last = epoch == cfg.epochs - 1
            val = evaluate_vae(model, val_images, batch_size=max(cfg.batch_size, 64),
                               iw_samples=cfg.iw_samples if last else 0, seed=cfg.seed)
            guard(val, step=state["step"], epoch=epoch, last_good_epoch=state["epoch"])
            metrics.update({f"val_{k}": v for k, v in val.items() if k not in ("loss", "gaussian_std")})
            diagnostics, row = _sample_diagnostics(unwrap(model), real, cfg)
            metrics.update(diagnostics)
            state["progress"] = torch.cat([state["progress"], row[None]])
        metrics["epoch_seconds"] = time.perf_counter() - start
        metrics["bf16_autocast"] = float(amp is not None)
        session.end_epoch(state, metrics, checkpoint=lambda: {
            **state, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": to_dict(model_cfg)})

    return {**state, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": to_dict(model_cfg)}


# ---------------------------------------------------------------------------
# GAN
# ---------------------------------------------------------------------------


def fit_gan(
    session: Session,
    *,
    train_images: Tensor,
    val_images: Tensor,
    model_cfg: GANConfig,
    cfg: GANTrainParams,
    storage_dir: str = "",
    on_step: Callable[[nn.Module, nn.Module, int], None] | None = None,
) -> dict[str, Any]:
    """Train a DCGAN with an EMA generator; return the final state (as in the last checkpoint).

    One :func:`gan_train_step` per batch: one D update, and a G update (and
    EMA update) every ``model_cfg.n_critic`` steps. Rank 0's diagnostics use
    the EMA generator with BatchNorm statistics recalibrated for its weights.

    Args:
        session: Where it runs.
        train_images: uint8 ``(N, 3, S, S)``.
        val_images: uint8 ``(M, 3, S, S)``: the real images the diagnostics compare with.
        model_cfg: The model config.
        cfg: The optimisation params.
        storage_dir: The run's storage folder (failure-injection flags).
        on_step: Test hook called after every step with ``(G, D, step)``
            (e.g. to check that DDP ranks hold the same weights).

    Returns:
        ``generator``, ``generator_ema``, ``discriminator`` (state dicts),
        ``opt_g``, ``opt_d``, ``ema`` (EMA state), ``model_config``, ``epoch``,
        ``step``, ``history`` and ``progress`` (uint8 ``(E, 8, S, S, 3)``).

    Raises:
        TrainingDivergedError: A loss term went NaN or infinite.
    """
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    device = session.device
    amp = autocast_dtype(cfg.precision, device)  # bf16 or None (float32), once per run
    G, D = (m.to(memory_format=memory_format(cfg.channels_last)) for m in build_gan(model_cfg))
    G, D = session.prepare_model(G), session.prepare_model(D)
    ema = EMA(G, decay=model_cfg.ema_decay)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=cfg.lr_g, lr_d=cfg.lr_d, betas=cfg.betas)
    size = model_cfg.image_size
    state: dict[str, Any] = {"epoch": -1, "step": 0, "history": [],
                             "progress": torch.zeros((0, PROGRESS_SAMPLES, size, size, 3), dtype=torch.uint8)}
    state = restore_gan(session.restore(), state, G, D, ema, opt_g, opt_d)

    train = _Epochs(ImageTensorDataset(train_images, value_range=MODELS["gan"].value_range),
                    batch_size=cfg.batch_size, seed=cfg.seed, session=session, channels_last=cfg.channels_last)
    real = val_images.permute(0, 2, 3, 1).numpy()[: cfg.num_samples]  # (M, S, S, 3) uint8
    noise = torch.Generator()
    augment = AUGMENTATIONS[cfg.augment]

    for epoch in range(state["epoch"] + 1, cfg.epochs):
        maybe_inject_failure(cfg.fail_at_epoch, epoch, session, storage_dir)
        noise.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 2))
        epoch_start_time, start = time.time(), time.perf_counter()
        sums = {"d_loss": 0.0, "gp": 0.0, "d_real": 0.0, "d_fake": 0.0}
        g_loss, g_steps, seen, steps = 0.0, 0, 0, 0
        for batch in train(epoch, device):
            with autocast(device, amp):
                out = gan_train_step(G, D, batch, opt_g, opt_d, loss=model_cfg.loss, n_critic=model_cfg.n_critic,
                                     gp_weight=model_cfg.gp_weight, ema=ema, step=state["step"],
                                     generator=noise, augment=augment)
            guard(out, step=state["step"], epoch=epoch, last_good_epoch=state["epoch"])
            for k in sums:
                sums[k] += out[k]
            if "g_loss" in out:
                g_loss, g_steps = g_loss + out["g_loss"], g_steps + 1
            if on_step is not None:
                on_step(G, D, state["step"])
            seen += batch.shape[0]
            steps += 1
            state["step"] += 1
        train_seconds = time.perf_counter() - start

        metrics: dict[str, float] = {
            "epoch": epoch,
            **_mean(sums, steps),
            "g_loss": g_loss / max(g_steps, 1),
            "train_images_per_s": seen * session.world_size / max(train_seconds, 1e-9),
            "epoch_start_time": epoch_start_time,
        }
        if session.is_chief:
            # standing BatchNorm statistics for the averaged weights (the next update overwrites them)
            recalibrate_batchnorm(ema.module, batch_size=cfg.batch_size, seed=cfg.sample_seed)
            diagnostics, row = _sample_diagnostics(ema.module, real, cfg)
            metrics.update(diagnostics)
            state["progress"] = torch.cat([state["progress"], row[None]])
        metrics["epoch_seconds"] = time.perf_counter() - start
        metrics["bf16_autocast"] = float(amp is not None)
        session.end_epoch(state, metrics,
                          checkpoint=lambda: gan_state(state, G, D, ema, opt_g, opt_d, model_cfg))

    return gan_state(state, G, D, ema, opt_g, opt_d, model_cfg)


def gan_state(state: dict[str, Any], G: nn.Module, D: nn.Module, ema: EMA, opt_g, opt_d,
              model_cfg: Any) -> dict[str, Any]:
    """A GAN loop's checkpoint: its ``state`` with both players, the EMA, both optimisers and the model config."""
    return {**state, "generator": unwrap(G).state_dict(), "discriminator": unwrap(D).state_dict(),
            "generator_ema": ema.module.state_dict(), "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "model_config": to_dict(model_cfg)}


def restore_gan(restored: dict[str, Any] | None, state: dict[str, Any], G: nn.Module, D: nn.Module, ema: EMA,
                opt_g, opt_d) -> dict[str, Any]:
    """Load a :func:`gan_state` checkpoint into the players, the EMA and the optimisers; return the
    loop state (the keys of ``state``) to go on from. ``restored`` None: ``state`` as it is."""
    if restored is None:
        return state
    unwrap(G).load_state_dict(restored["generator"])
    unwrap(D).load_state_dict(restored["discriminator"])
    ema.load_state_dict(restored["ema"])
    opt_g.load_state_dict(restored["opt_g"])
    opt_d.load_state_dict(restored["opt_d"])
    return {k: restored[k] for k in state}


# ---------------------------------------------------------------------------
# Ray Train entry points
# ---------------------------------------------------------------------------


def _load_splits(config: dict[str, Any], size: int) -> tuple[Tensor, Tensor]:
    threads = config["train"].threads_per_worker
    return (load_images(config["paths"]["train"], size=size, num_workers=threads),
            load_images(config["paths"]["val"], size=size, num_workers=threads))


def train_loop_per_worker_vae(config: dict[str, Any]) -> None:
    """``TorchTrainer`` entry point. ``config``: ``paths`` (split -> absolute image paths,
    train and val), ``model``, ``train``, ``storage_dir``."""
    train_images, val_images = _load_splits(config, config["model"].image_size)
    fit_vae(RaySession(), train_images=train_images, val_images=val_images, model_cfg=config["model"],
            cfg=config["train"], storage_dir=config["storage_dir"])


def train_loop_per_worker_gan(config: dict[str, Any]) -> None:
    """``TorchTrainer`` entry point; ``config`` as :func:`train_loop_per_worker_vae`,
    plus an optional ``on_step`` test hook."""
    train_images, val_images = _load_splits(config, config["model"].image_size)
    fit_gan(RaySession(), train_images=train_images, val_images=val_images, model_cfg=config["model"],
            cfg=config["train"], storage_dir=config["storage_dir"],
            on_step=config.get("on_step"))


def grid_rows(progress: Tensor) -> np.ndarray:
    """The progress rows ``(E, 8, S, S, 3)`` as one image list for ``image_grid(nrow=8)``."""
    return progress.reshape(-1, *progress.shape[2:]).numpy()


__all__ = ["evaluate_vae", "fit_vae", "fit_gan", "gan_state", "restore_gan",
           "train_loop_per_worker_vae", "train_loop_per_worker_gan", "grid_rows"]
