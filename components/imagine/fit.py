"""The caption-conditioned generator's training loops: functions on a :class:`~components.train.session.Session`.

``model.kind: gan``: the conditional GAN below. ``model.kind: cvae``
(:func:`fit_cvae`): the conditional VAE, one Adam step per batch on
``recon_nll + kl_weight * kl`` (:class:`~components.imagine.models.CVAE`),
the EMA of the decoder sampled from; the same data, seeding, diagnostics,
progress rows, guard and checkpoints as the GAN.

Every epoch pairs each training image with one of its captions (drawn per
epoch, seeded), and per batch takes one discriminator step and one generator
step with the hinge loss:

* D: ``relu(1 - D(x, c)) + relu(1 + D(G(z, c), c))`` and, weighted by
  ``mismatch_weight``, ``relu(1 + D(x, c'))`` with ``c'`` another image's
  caption: a real image under the wrong caption is fake too (Reed et al.
  2016), so D must read the caption, not only judge realism;
* G: ``-D(G(z, c), c)``; then the EMA generator follows.

DiffAugment's translation (same draw for real and fake) guards D against
memorising the images. Every step's losses pass the divergence guard. Rank 0
then samples the EMA generator on fixed validation captions for the cheap
diagnostics (colour-histogram distance to their real images, diversity) and
a progress row; every rank reports once, rank 0 with the checkpoint. Noise,
caption draws and shuffling are seeded per epoch (and rank), so a resumed
run gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from components.generative.augment import AUGMENTATIONS
from components.generative.data import load_images
from components.generative.diagnostics import colour_distance, sample_diversity
from components.generative.ema import EMA
from components.generative.fit import gan_state, restore_gan
from components.generative.steps import make_gan_optimizers
from components.imagine.config import ImagineConfig, ImagineTrainParams
from components.imagine.data import pad
from components.config import to_dict
from components.imagine.models import (
    CVAE,
    VALUE_RANGE,
    ConditionalDecoder,
    ConditionalEncoder,
    ConditionalGenerator,
    ProjectionDiscriminator,
    imagine,
)
from components.train.guard import guard
from components.train.precision import autocast_dtype, memory_format
from components.train.session import (
    RaySession,
    Session,
    autocast,
    derive_seed,
    maybe_inject_failure,
    unwrap,
)

PROGRESS_CAPTIONS = 8  # fixed validation captions drawn every epoch: one row of the progress grid


class Pairs(torch.utils.data.Dataset):
    """Image ``i`` with one of its captions; :meth:`draw` picks the captions of an epoch."""

    def __init__(self, images: Tensor, token_ids: list[list[list[int]]]):
        self.images = images  # uint8 (N, 3, S, S)
        self.token_ids = token_ids
        self.choice = [0] * len(token_ids)

    def draw(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.choice = [int(rng.integers(len(c))) for c in self.token_ids]

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, i: int) -> tuple[Tensor, list[int]]:
        return self.images[i], self.token_ids[i][self.choice[i]]


def _collate(items: list[tuple[Tensor, list[int]]]) -> tuple[Tensor, Tensor, Tensor]:
    images = torch.stack([x for x, _ in items])
    tokens, lengths = pad([ids for _, ids in items])
    low, high = VALUE_RANGE
    return images.float() / 255.0 * (high - low) + low, tokens, lengths  # (B, 3, S, S) in [-1, 1]


def batches(pairs: Pairs, *, batch_size: int, seed: int, session: Session,
            channels_last: bool = False) -> Callable[[int], Iterator[tuple]]:
    """The batches ``(images, tokens, lengths)`` of one rank for an epoch, reseeded per epoch."""
    layout = memory_format(channels_last)
    sampler = session.sampler(pairs, shuffle=True, seed=seed)
    generator = torch.Generator()
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                                         generator=generator, drop_last=True, collate_fn=_collate)
    if len(loader) == 0:
        raise ValueError(f"the train split has {len(pairs)} images, fewer than one batch of {batch_size} "
                         "per worker: lower batch_size")

    def epoch_batches(epoch: int) -> Iterator[tuple]:
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(derive_seed(seed, epoch))
        pairs.draw(derive_seed(seed, epoch, 1))
        for images, tokens, lengths in loader:
            yield images.to(session.device).contiguous(memory_format=layout), tokens.to(session.device), lengths
    return epoch_batches


def train_step(G: nn.Module, D: nn.Module, images: Tensor, tokens: Tensor, lengths: Tensor,
               opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *, ema: EMA, mismatch_weight: float,
               generator: torch.Generator, augment: Callable | None) -> dict[str, Tensor]:
    """One D step and one G step on a batch; returns the losses (detached)."""
    latent_dim = unwrap(G).latent_dim
    aug = (lambda x: x) if augment is None else (lambda x: augment(x, generator))
    z = torch.randn(images.shape[0], latent_dim, generator=generator).to(images.device)
    with torch.no_grad():
        fake = G(z, tokens, lengths)
    chunks, shifts = [images, fake], [0, 0]
    if mismatch_weight > 0 and images.shape[0] > 1:
        chunks, shifts = [*chunks, images], [*shifts, 1]
    logits = D(aug(torch.cat(chunks)), tokens, lengths, shifts).float().chunk(len(chunks))
    d_real, d_fake = F.relu(1 - logits[0]).mean(), F.relu(1 + logits[1]).mean()
    d_mismatch = F.relu(1 + logits[2]).mean() if len(logits) > 2 else torch.zeros(())
    d_loss = d_real + d_fake + mismatch_weight * d_mismatch
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()

    z = torch.randn(images.shape[0], latent_dim, generator=generator).to(images.device)
    g_loss = -D(aug(G(z, tokens, lengths)), tokens, lengths).float().mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    ema.update(G)
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "d_real": logits[0].mean().detach(),
            "d_fake": logits[1].mean().detach(), "d_mismatch": d_mismatch.detach()}


def cvae_train_step(model: nn.Module, images: Tensor, tokens: Tensor, lengths: Tensor, opt: torch.optim.Optimizer, *,
                    ema: EMA, kl_weight: float, generator: torch.Generator) -> dict[str, Tensor]:
    """One Adam step of the CVAE (:class:`~components.imagine.models.CVAE`, maybe DDP-wrapped) on a batch;
    returns the loss terms (detached) and the decoder's pixel std."""
    eps = torch.randn(images.shape[0], unwrap(model).decoder.latent_dim, generator=generator).to(images.device)
    out = model(images, tokens, lengths, eps, kl_weight=kl_weight)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    ema.update(unwrap(model).decoder)
    return {**{k: v.detach() for k, v in out.items()},
            "pixel_std": unwrap(model).decoder.log_std.detach().exp()}


def diagnostics(generator: nn.Module, tokens: Tensor, lengths: Tensor, real: np.ndarray,
                seed: int) -> tuple[dict[str, float], Tensor]:
    """Colour distance and diversity of one sample per validation caption, and the progress row."""
    images = imagine(generator, tokens, lengths, 1, seed)[:, 0].numpy()  # (N, S, S, 3)
    metrics = {"colour_hist_distance": colour_distance(images, real), "sample_diversity": sample_diversity(images, real)}
    return metrics, torch.from_numpy(images[:PROGRESS_CAPTIONS].copy())


def _end_epoch(session: Session, state: dict[str, Any], snapshot: Callable[[], dict[str, Any]], *, epoch: int,
               sums: dict[str, float], steps: int, seen: int, start: float, epoch_start_time: float,
               sample: Callable[[], tuple[dict[str, float], Tensor]], bf16: bool) -> None:
    """An epoch's metrics (mean losses, throughput; on the chief the diagnostics and a progress row), then
    :meth:`Session.end_epoch`: the same for the GAN and the CVAE loops."""
    train_seconds = time.perf_counter() - start
    metrics: dict[str, float] = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()},
                                 "train_images_per_s": seen * session.world_size / max(train_seconds, 1e-9),
                                 "epoch_start_time": epoch_start_time}
    if session.is_chief:
        values, row = sample()
        metrics.update(values)
        state["progress"] = torch.cat([state["progress"], row[None]])
    metrics["epoch_seconds"] = time.perf_counter() - start
    metrics["bf16_autocast"] = float(bf16)
    session.end_epoch(state, metrics, checkpoint=snapshot)


def fit_imagine(session: Session, *, train_images: Tensor, train_tokens: list[list[list[int]]],
                val_images: Tensor, val_tokens: list[list[int]], vocab_size: int, model_cfg: ImagineConfig,
                cfg: ImagineTrainParams, storage_dir: str = "",
                on_step: Callable[[nn.Module, nn.Module, int], None] | None = None) -> dict[str, Any]:
    """Train the conditional GAN; return the final state (as in the last checkpoint).

    Args:
        session: Where it runs.
        train_images: uint8 ``(N, 3, S, S)``.
        train_tokens: Per training image, its captions' word ids.
        val_images: uint8 ``(M, 3, S, S)``, the images of ``val_tokens``.
        val_tokens: One caption per validation image (word ids): the diagnostics' conditions.
        vocab_size: Size of the vocabulary the word ids index.
        model_cfg: The model config.
        cfg: The optimisation params.
        storage_dir: The run's storage folder (failure-injection flags).
        on_step: Test hook called after every step with ``(G, D, step)``.

    Returns:
        ``generator``, ``generator_ema``, ``discriminator`` (state dicts), ``opt_g``,
        ``opt_d``, ``ema``, ``model_config``, ``vocab_size``, ``epoch``, ``step``,
        ``history`` and ``progress`` (uint8 ``(E, 8, S, S, 3)``).

    Raises:
        TrainingDivergedError: A loss went NaN or infinite.

    ``model_cfg.kind: cvae``: :func:`fit_cvae` (its ``encoder`` and one ``opt``
    instead of the discriminator and its optimiser).
    """
    if model_cfg.kind == "cvae":
        return fit_cvae(session, train_images=train_images, train_tokens=train_tokens, val_images=val_images,
                        val_tokens=val_tokens, vocab_size=vocab_size, model_cfg=model_cfg, cfg=cfg,
                        storage_dir=storage_dir, on_step=on_step)
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    device = session.device
    amp = autocast_dtype(cfg.precision, device)  # bf16 or None (float32), once per run
    layout = memory_format(cfg.channels_last)
    G = session.prepare_model(ConditionalGenerator(model_cfg, vocab_size).to(memory_format=layout))
    D = session.prepare_model(ProjectionDiscriminator(model_cfg, vocab_size).to(memory_format=layout))
    ema = EMA(G, decay=model_cfg.ema_decay)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=cfg.lr_g, lr_d=cfg.lr_d, betas=cfg.betas)
    size, n_val = model_cfg.image_size, min(cfg.num_samples, len(val_tokens))
    state: dict[str, Any] = {"epoch": -1, "step": 0, "history": [], "progress": torch.zeros(
        (0, min(PROGRESS_CAPTIONS, n_val), size, size, 3), dtype=torch.uint8)}
    state = restore_gan(session.restore(), state, G, D, ema, opt_g, opt_d)

    train = batches(Pairs(train_images, train_tokens), batch_size=cfg.batch_size, seed=cfg.seed, session=session,
                    channels_last=cfg.channels_last)
    val_t, val_l = pad(val_tokens[:n_val])
    real = val_images[:n_val].permute(0, 2, 3, 1).numpy()  # (n, S, S, 3) uint8
    noise = torch.Generator()
    augment = AUGMENTATIONS[cfg.augment]

    def snapshot() -> dict[str, Any]:
        return {**gan_state(state, G, D, ema, opt_g, opt_d, model_cfg), "vocab_size": vocab_size}

    for epoch in range(state["epoch"] + 1, cfg.epochs):
        maybe_inject_failure(cfg.fail_at_epoch, epoch, session, storage_dir)
        noise.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 2))
        epoch_start_time, start = time.time(), time.perf_counter()
        sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0, "d_mismatch": 0.0}
        seen = steps = 0
        for images, tokens, lengths in train(epoch):
            with autocast(device, amp):
                out = train_step(G, D, images, tokens, lengths, opt_g, opt_d, ema=ema,
                                 mismatch_weight=cfg.mismatch_weight, generator=noise, augment=augment)
            out = {k: float(v) for k, v in out.items()}
            guard(out, step=state["step"], epoch=epoch, last_good_epoch=state["epoch"])
            for k in sums:
                sums[k] += out[k]
            if on_step is not None:
                on_step(G, D, state["step"])
            seen += images.shape[0]
            steps += 1
            state["step"] += 1
        _end_epoch(session, state, snapshot, epoch=epoch, sums=sums, steps=steps, seen=seen, start=start,
                   epoch_start_time=epoch_start_time, sample=lambda: diagnostics(ema.module, val_t, val_l, real,
                                                                                 cfg.sample_seed),
                   bf16=amp is not None)
    return snapshot()


CVAE_SUMS = ("loss", "recon_nll", "kl", "pixel_std")


def fit_cvae(session: Session, *, train_images: Tensor, train_tokens: list[list[list[int]]],
             val_images: Tensor, val_tokens: list[list[int]], vocab_size: int, model_cfg: ImagineConfig,
             cfg: ImagineTrainParams, storage_dir: str = "",
             on_step: Callable[[nn.Module, nn.Module, int], None] | None = None) -> dict[str, Any]:
    """Train the conditional VAE (arguments as :func:`fit_imagine`; ``on_step`` gets ``(decoder, encoder, step)``).

    Returns:
        ``generator`` (the decoder), ``generator_ema``, ``encoder`` (state dicts), ``opt``, ``ema``,
        ``model_config``, ``vocab_size``, ``epoch``, ``step``, ``history`` and ``progress``.
    """
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    device = session.device
    amp = autocast_dtype(cfg.precision, device)
    model = session.prepare_model(CVAE(ConditionalEncoder(model_cfg, vocab_size), ConditionalDecoder(
        model_cfg, vocab_size)).to(memory_format=memory_format(cfg.channels_last)))
    ema = EMA(unwrap(model).decoder, decay=model_cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    size, n_val = model_cfg.image_size, min(cfg.num_samples, len(val_tokens))
    state: dict[str, Any] = {"epoch": -1, "step": 0, "history": [], "progress": torch.zeros(
        (0, min(PROGRESS_CAPTIONS, n_val), size, size, 3), dtype=torch.uint8)}
    restored = session.restore()
    if restored is not None:
        unwrap(model).decoder.load_state_dict(restored["generator"])
        unwrap(model).encoder.load_state_dict(restored["encoder"])
        ema.load_state_dict(restored["ema"])
        opt.load_state_dict(restored["opt"])
        state = {k: restored[k] for k in state}

    train = batches(Pairs(train_images, train_tokens), batch_size=cfg.batch_size, seed=cfg.seed, session=session,
                    channels_last=cfg.channels_last)
    val_t, val_l = pad(val_tokens[:n_val])
    real = val_images[:n_val].permute(0, 2, 3, 1).numpy()
    noise = torch.Generator()

    def snapshot() -> dict[str, Any]:
        inner = unwrap(model)
        return {**state, "generator": inner.decoder.state_dict(), "encoder": inner.encoder.state_dict(),
                "generator_ema": ema.module.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                "model_config": to_dict(model_cfg), "vocab_size": vocab_size}

    for epoch in range(state["epoch"] + 1, cfg.epochs):
        maybe_inject_failure(cfg.fail_at_epoch, epoch, session, storage_dir)
        noise.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 2))
        epoch_start_time, start = time.time(), time.perf_counter()
        sums = dict.fromkeys(CVAE_SUMS, 0.0)
        seen = steps = 0
        for images, tokens, lengths in train(epoch):
            with autocast(device, amp):
                out = cvae_train_step(model, images, tokens, lengths, opt, ema=ema, kl_weight=cfg.kl_weight,
                                      generator=noise)
            out = {k: float(v) for k, v in out.items()}
            guard(out, step=state["step"], epoch=epoch, last_good_epoch=state["epoch"])
            for k in sums:
                sums[k] += out[k]
            if on_step is not None:
                on_step(unwrap(model).decoder, unwrap(model).encoder, state["step"])
            seen += images.shape[0]
            steps += 1
            state["step"] += 1
        _end_epoch(session, state, snapshot, epoch=epoch, sums=sums, steps=steps, seen=seen, start=start,
                   epoch_start_time=epoch_start_time, sample=lambda: diagnostics(ema.module, val_t, val_l, real,
                                                                                 cfg.sample_seed),
                   bf16=amp is not None)
    return snapshot()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """``TorchTrainer`` entry point. ``config``: ``train``/``val`` (paths and word ids), ``vocab_size``,
    ``model``, ``train``, ``storage_dir``, an optional ``on_step`` test hook."""
    model_cfg, cfg = config["model"], config["train"]
    size, threads = model_cfg.image_size, cfg.threads_per_worker
    fit_imagine(RaySession(),
                train_images=load_images(config["train_data"]["paths"], size=size, num_workers=threads),
                train_tokens=config["train_data"]["token_ids"],
                val_images=load_images(config["val_data"]["paths"], size=size, num_workers=threads),
                val_tokens=config["val_data"]["token_ids"], vocab_size=config["vocab_size"], model_cfg=model_cfg,
                cfg=cfg, storage_dir=config["storage_dir"], on_step=config.get("on_step"))


__all__ = ["Pairs", "batches", "cvae_train_step", "diagnostics", "fit_cvae", "fit_imagine", "train_loop_per_worker", "train_step"]
