"""The VAE and GAN training loops without Ray (LocalSession): metrics, resume, NaN guard,
determinism, and a first quality check (colour statistics of samples against real images)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import components.generative.fit as fit_module
from components.config import ConfigError
from components.data.synthetic import render_scene, sample_scene
from components.generative.config import GANConfig, GANTrainParams, VAEConfig, VAETrainParams
from components.generative.diagnostics import colour_histogram, histogram_distance
from components.generative.fit import PROGRESS_SAMPLES, evaluate_vae, fit_gan, fit_vae
from components.generative.models import build_vae
from components.generative.sampling import reconstructions, sample
from components.train.guard import TrainingDivergedError
from components.train.session import LocalSession

SIZE = 16

VAE_MODEL = VAEConfig(image_size=SIZE, latent_dim=8, base_channels=8, decoder_res_blocks=0, likelihood="gaussian", gaussian_std=0.05,
                      learn_std=True, beta=1.0)
VAE_TRAIN = VAETrainParams(epochs=1, batch_size=16, lr=3e-3, betas=(0.9, 0.999), grad_clip=0.0, iw_samples=4,
                           num_samples=16, sample_seed=0, seed=0, precision="fp32", channels_last=False, threads_per_worker=1, fail_at_epoch=-1)
GAN_MODEL = GANConfig(image_size=SIZE, latent_dim=8, g_channels=8, d_channels=8, loss="non_saturating",
                      d_norm="batch", spectral_norm=False, n_critic=2, gp_weight=0.0, ema_decay=0.9)
GAN_TRAIN = GANTrainParams(epochs=1, batch_size=16, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999),
                           augment="translation_cutout", num_samples=16,
                           sample_seed=0, seed=0, precision="fp32", channels_last=False, threads_per_worker=1, fail_at_epoch=-1)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def scenes(n: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """``n`` synthetic scenes (the demo dataset's generator) as uint8 ``(n, 3, size, size)``."""
    images = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        images.append(np.asarray(render_scene(sample_scene(rng), image_size=size, rng=rng)))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return scenes(64), scenes(16, seed=1)


def run(kind: str, data, session=None, **train_overrides):
    session = session or LocalSession()
    train, val = data
    if kind == "vae":
        state = fit_vae(session, train_images=train, val_images=val, model_cfg=VAE_MODEL,
                        cfg=dataclasses.replace(VAE_TRAIN, **train_overrides))
    else:
        state = fit_gan(session, train_images=train, val_images=val, model_cfg=GAN_MODEL,
                        cfg=dataclasses.replace(GAN_TRAIN, **train_overrides))
    return session, state


WEIGHTS = {"vae": ("model",), "gan": ("generator", "discriminator", "generator_ema")}


def assert_same_weights(a: dict, b: dict, kind: str) -> None:
    for part in WEIGHTS[kind]:
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


def test_vae_epoch_reports_elbo_terms_and_diagnostics(data):
    session, state = run("vae", data)
    (row,) = session.history
    for key in ("train_elbo", "train_recon_nll", "train_kl", "train_bits_per_dim", "val_elbo", "val_recon_nll",
                "val_kl", "val_bits_per_dim", "val_iwae_nll", "val_iwae_bits_per_dim", "sample_diversity",
                "colour_hist_distance", "train_images_per_s", "gaussian_std"):
        assert math.isfinite(row[key]), key
    # ELBO = -(recon + KL); bits/dim = -ELBO / (D ln 2); the IWAE bound is at least as tight (up to noise)
    assert row["val_elbo"] == pytest.approx(-(row["val_recon_nll"] + row["val_kl"]), rel=1e-5)
    assert row["val_bits_per_dim"] == pytest.approx(-row["val_elbo"] / (3 * SIZE * SIZE * math.log(2)), rel=1e-5)
    assert row["val_iwae_nll"] < -row["val_elbo"] * 1.01
    assert state["epoch"] == 0 and state["step"] == 64 // 16
    assert state["progress"].shape == (1, PROGRESS_SAMPLES, SIZE, SIZE, 3)
    assert state["progress"].dtype == torch.uint8
    assert session.last_state["model_config"] == dataclasses.asdict(VAE_MODEL)


def test_gan_epoch_reports_losses_and_diagnostics(data):
    session, state = run("gan", data)
    (row,) = session.history
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "sample_diversity", "colour_hist_distance"):
        assert math.isfinite(row[key]), key
    assert row["gp"] == 0.0
    # n_critic = 2: 4 discriminator steps, 2 generator (and EMA) updates
    assert state["step"] == 4 and state["ema"]["num_updates"] == 2
    assert set(WEIGHTS["gan"]) | {"opt_g", "opt_d", "ema"} <= set(state)
    assert state["progress"].shape == (1, PROGRESS_SAMPLES, SIZE, SIZE, 3)


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(kind, data):
    _, straight = run(kind, data, epochs=2)
    first, _ = run(kind, data, epochs=1)
    resumed = LocalSession(initial_state=first.last_state)
    _, state = run(kind, data, session=resumed, epochs=2)
    assert [row["epoch"] for row in resumed.history] == [1]
    assert [row["epoch"] for row in state["history"]] == [0, 1]
    assert state["progress"].shape[0] == 2
    assert_same_weights(state, straight, kind)


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_channels_last_trains_the_same_model_in_the_other_layout_and_resumes_exactly(kind, data):
    _, contiguous = run(kind, data, epochs=2)
    _, straight = run(kind, data, epochs=2, channels_last=True)
    first, _ = run(kind, data, epochs=1, channels_last=True)
    _, resumed = run(kind, data, session=LocalSession(initial_state=first.last_state), epochs=2, channels_last=True)
    assert_same_weights(resumed, straight, kind)
    convs = [w for part in WEIGHTS[kind] for w in straight[part].values() if w.dim() == 4 and w.shape[1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs)
    # the same arithmetic up to float rounding: the losses of each epoch agree. (Not every weight: a bias
    # that feeds a BatchNorm has no true gradient, and Adam scales its rounding noise up to lr-sized steps.)
    losses = {"vae": ("train_elbo", "val_elbo"), "gan": ("d_loss", "g_loss", "d_real", "d_fake")}[kind]
    for a, b in zip(straight["history"], contiguous["history"], strict=True):
        for key in losses:
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["epoch"], key)


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_same_seed_same_weights_other_seed_other_weights(kind, data):
    _, a = run(kind, data)
    _, b = run(kind, data)
    _, c = run(kind, data, seed=1)
    assert_same_weights(a, b, kind)
    with pytest.raises(AssertionError):
        assert_same_weights(a, c, kind)


@pytest.mark.parametrize("kind, step_fn", [("vae", "vae_train_step"), ("gan", "gan_train_step")])
def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(kind, step_fn, data,
                                                                                  monkeypatch):
    _, clean = run(kind, data, epochs=1)
    real_step = getattr(fit_module, step_fn)
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:  # the 2nd step of epoch 1 (4 steps per epoch)
            out["d_loss" if kind == "gan" else "recon_nll"] = float("nan")
        return out

    monkeypatch.setattr(fit_module, step_fn, poisoned)
    session = LocalSession()
    with pytest.raises(TrainingDivergedError, match=r"non-finite .* = nan at step 5 \(epoch 1\).*"
                                                    r"last good checkpoint: epoch 0"):
        run(kind, data, session=session, epochs=3)
    assert [row["epoch"] for row in session.history] == [0]
    assert session.last_state["epoch"] == 0
    # the checkpoint is a snapshot: the steps of epoch 1 did not change it
    assert_same_weights(session.last_state, clean, kind)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="batch_size"):
        dataclasses.replace(VAE_TRAIN, batch_size=0)
    with pytest.raises(ConfigError, match="betas"):
        dataclasses.replace(GAN_TRAIN, betas=(0.5, 1.0))
    with pytest.raises(ConfigError, match="lr_g"):
        dataclasses.replace(GAN_TRAIN, lr_g=0.0)
    with pytest.raises(ConfigError, match=r"GANTrainParams.augment must be one of .*got 'flip'"):
        dataclasses.replace(GAN_TRAIN, augment="flip")


def test_too_few_images_for_one_batch_is_a_clear_error(data):
    with pytest.raises(ValueError, match="fewer than one batch"):
        run("vae", data, batch_size=128)


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    return histogram_distance(colour_histogram(a, 8, joint=True), colour_histogram(b, 8, joint=True))


def test_briefly_trained_vae_improves_elbo_and_matches_real_colours_better_than_noise():
    train, test = scenes(256), scenes(64, seed=1)
    model_cfg = dataclasses.replace(VAE_MODEL, base_channels=16, latent_dim=16)
    cfg = dataclasses.replace(VAE_TRAIN, epochs=10, batch_size=16, iw_samples=0, num_samples=64)
    torch.manual_seed(cfg.seed)  # the loop's initial weights
    at_init = evaluate_vae(build_vae(model_cfg), test)
    session = LocalSession()
    state = fit_vae(session, train_images=train, val_images=test, model_cfg=model_cfg, cfg=cfg)
    model = build_vae(model_cfg)
    model.load_state_dict(state["model"])
    after = evaluate_vae(model, test)
    assert after["elbo"] > at_init["elbo"] + 1000  # nats per image
    val_elbo = [row["val_elbo"] for row in session.history]
    assert val_elbo[-1] > val_elbo[0]

    real = test.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3)
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    noise_distance = _colour_distance(noise, real)
    assert _colour_distance(sample(model, 64, seed=0), real) < 0.7 * noise_distance
    # reconstructions keep the colours and the layout: closer to their originals than the mean image is
    recon = reconstructions(model, real)
    assert _colour_distance(recon, real) < 0.3 * noise_distance
    mse = np.mean((recon / 255.0 - real / 255.0) ** 2)
    baseline = np.mean((real.mean(axis=0, keepdims=True) / 255.0 - real / 255.0) ** 2)
    assert mse < 0.5 * baseline
