"""Sampling utilities and diagnostics: determinism, grids, interpolation, guards, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.generative.common import to_uint8_images
from components.generative.config import GANConfig, VAEConfig
from components.generative.diagnostics import (
    colour_distance,
    colour_histogram,
    histogram_distance,
    mean_pairwise_l2,
    sample_diversity,
)
from components.generative.models import build_gan, build_vae
from components.generative.sampling import image_grid, interpolate, lerp, reconstructions, sample, slerp

VAE_CFG = VAEConfig(image_size=32, latent_dim=6, base_channels=8, decoder_res_blocks=1, likelihood="bernoulli",
                    gaussian_std=0.1, learn_std=False, beta=1.0)
GAN_CFG = GANConfig(image_size=32, latent_dim=6, g_channels=8, d_channels=8, loss="hinge", d_norm="batch",
                    spectral_norm=False, n_critic=1, gp_weight=0.0, ema_decay=0.9)


@pytest.fixture(params=["vae", "generator"])
def sampler(request):
    torch.manual_seed(0)
    return build_vae(VAE_CFG) if request.param == "vae" else build_gan(GAN_CFG)[0]


def test_sample_is_deterministic_for_a_seed(sampler):
    a = sample(sampler, 5, seed=7, batch_size=2)
    b = sample(sampler, 5, seed=7)
    c = sample(sampler, 5, seed=8)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sampler.training  # mode restored


def test_sample_uses_eval_mode_batch_norm():
    torch.manual_seed(0)
    G = build_gan(GAN_CFG)[0]
    with torch.no_grad():
        G.net[-2].weight.mul_(50)  # spread the outputs so the BatchNorm mode shows
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))  # what sample() draws for seed 3
    got = sample(G, 4, seed=3).astype(int)
    eval_imgs = to_uint8_images(G.eval().generate(z)).astype(int)
    train_imgs = to_uint8_images(G.train().generate(z)).astype(int)  # (also moves running stats)
    assert np.abs(got - eval_imgs).max() <= 1  # float noise of batched convs at most
    assert np.abs(got - train_imgs).max() > 10


def test_image_grid_layout():
    imgs = np.zeros((5, 8, 8, 3), np.uint8)
    imgs[1] = 200
    grid = image_grid(imgs, nrow=3, padding=2)
    assert grid.mode == "RGB" and grid.size == (3 * 10 + 2, 2 * 10 + 2)
    arr = np.asarray(grid)
    assert (arr[2:10, 12:20] == 200).all() and (arr[0, :] == 255).all()


def test_interpolation_ends_and_paths():
    torch.manual_seed(0)
    vae = build_vae(VAE_CFG)
    z0, z1 = torch.randn(6), torch.randn(6)
    frames = interpolate(vae, z0, z1, 5)
    assert frames.shape == (5, 32, 32, 3)
    ends = to_uint8_images(vae.eval().generate(torch.stack([z0, z1]))).astype(int)
    assert np.abs(frames[[0, -1]].astype(int) - ends).max() <= 1
    t = torch.linspace(0, 1, 5)
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    s = slerp(a, b, t)
    torch.testing.assert_close(s.norm(dim=1), torch.full((5,), 3.0))  # stays on the sphere
    torch.testing.assert_close(s[[0, -1]], torch.stack([a, b]))
    torch.testing.assert_close(lerp(a, b, t)[2], torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(slerp(a, 2 * a, t), lerp(a, 2 * a, t))  # parallel ends fall back


def test_reconstructions_accept_float_or_uint8():
    torch.manual_seed(0)
    vae = build_vae(VAE_CFG)
    x = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8).numpy()
    r1 = reconstructions(vae, x)
    r2 = reconstructions(vae, torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255)
    assert r1.shape == (3, 32, 32, 3) and np.array_equal(r1, r2)


def test_diversity_signal():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    collapsed = np.repeat(real[:1], 10, axis=0)
    assert sample_diversity(collapsed, real) == 0.0
    assert sample_diversity(real, real) == pytest.approx(1.0)
    two = np.stack([np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)])
    assert mean_pairwise_l2(two) == pytest.approx(np.sqrt(3))


def test_colour_histogram_and_distances():
    red = np.zeros((2, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((2, 4, 4, 3), np.uint8)
    blue[..., 2] = 255
    h = colour_histogram(red, bins=4)
    assert h.shape == (3, 4) and np.allclose(h.sum(axis=1), 1)
    assert h[0, 3] == 1.0 and h[1, 0] == 1.0 and h[2, 0] == 1.0
    hj = colour_histogram(red, bins=4, joint=True)
    assert hj.shape == (1, 64) and hj[0, 3 * 16] == 1.0
    for metric in ("chi2", "l1"):
        assert histogram_distance(h, h, metric=metric) == 0.0
        # marginals: R and B channels differ completely, G is equal -> 2/3
        assert histogram_distance(h, colour_histogram(blue, bins=4), metric=metric) == pytest.approx(2 / 3)
        assert histogram_distance(hj, colour_histogram(blue, bins=4, joint=True), metric=metric) == 1.0
    half = np.concatenate([red, blue])
    # chi2 between [1, 0] and [.5, .5]: 0.5 * (0.25/1.5 + 0.25/0.5) = 1/3, on R and B rows
    assert histogram_distance(h, colour_histogram(half, bins=4), metric="chi2") == pytest.approx(2 / 9)
    with pytest.raises(ValueError):
        histogram_distance(h, hj)
    # the stages' one colour signal: joint histograms, so red against blue is 1 whatever the bins
    assert colour_distance(red, red) == 0.0 and colour_distance(red, blue) == 1.0
    assert colour_distance(red, half) == pytest.approx(1 / 3)  # [1, 0] vs [.5, .5] on the joint cells
