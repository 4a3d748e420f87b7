"""Model folders round-trip (identical samples), and image data loading."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from components.config import ConfigError
from components.generative.config import GANConfig, VAEConfig
from components.generative.data import ImageTensorDataset, load_images
from components.generative.ema import EMA
from components.generative.io import load_generator, load_model_dir, save_model_dir
from components.generative.models import MODELS, build_gan, build_vae
from components.generative.sampling import sample
from components.generative.steps import gan_train_step, make_gan_optimizers, vae_train_step

VAE_CFG = VAEConfig(image_size=32, latent_dim=4, base_channels=8, decoder_res_blocks=0, likelihood="gaussian",
                    gaussian_std=0.2, learn_std=True, beta=2.0)
GAN_CFG = GANConfig(image_size=32, latent_dim=4, g_channels=8, d_channels=8, loss="hinge", d_norm="none",
                    spectral_norm=True, n_critic=1, gp_weight=0.0, ema_decay=0.5)


def test_registry_parts_build():
    for kind, spec in MODELS.items():
        cfg = VAE_CFG if spec.config_cls is VAEConfig else GAN_CFG
        parts = spec.build_parts(cfg)
        assert set(spec.sampler) <= set(parts), kind


def test_vae_round_trip_gives_identical_samples(tmp_path):
    torch.manual_seed(0)
    vae = build_vae(VAE_CFG)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    vae_train_step(vae, torch.rand(4, 3, 32, 32), opt)  # move off the initial weights (learned std too)
    out = save_model_dir(tmp_path / "vae", "vae", vae, VAE_CFG, extra={"step": 1})
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "vae" and meta["parts"] == {"vae": "vae.pt"} and meta["extra"] == {"step": 1}
    loaded, cfg = load_generator(out)
    assert cfg == VAE_CFG and not loaded.training
    assert np.array_equal(sample(loaded, 6, seed=1), sample(vae, 6, seed=1))
    assert loaded.likelihood.std == pytest.approx(vae.likelihood.std)


def test_gan_round_trip_prefers_the_ema_generator(tmp_path):
    torch.manual_seed(0)
    G, D = build_gan(GAN_CFG)
    ema = EMA(G, decay=GAN_CFG.ema_decay)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-2, lr_d=1e-2, betas=(0.5, 0.999))
    for step in range(2):
        gan_train_step(G, D, torch.rand(4, 3, 32, 32) * 2 - 1, opt_g, opt_d, loss="hinge", n_critic=1,
                       gp_weight=0.0, ema=ema, step=step)
    out = save_model_dir(tmp_path / "gan", "gan",
                         {"generator": G, "generator_ema": ema.module, "discriminator": D}, GAN_CFG)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "discriminator.pt", "generator.pt",
                                                     "generator_ema.pt"]
    sampler, cfg = load_generator(out)
    assert cfg == GAN_CFG
    assert np.array_equal(sample(sampler, 6, seed=2), sample(ema.module, 6, seed=2))
    assert not np.array_equal(sample(sampler, 6, seed=2), sample(G, 6, seed=2))
    loaded = load_model_dir(out)
    x = torch.rand(3, 3, 32, 32)
    D.eval()
    torch.testing.assert_close(loaded.parts["discriminator"](x), D(x))  # spectral-norm state restored
    # without the EMA part, the raw generator samples
    only_g = save_model_dir(tmp_path / "g", "gan", G, GAN_CFG)
    g_loaded, _ = load_generator(only_g)
    assert np.array_equal(sample(g_loaded, 3, seed=0), sample(G, 3, seed=0))


def test_save_refuses_mismatches(tmp_path):
    vae = build_vae(VAE_CFG)
    with pytest.raises(TypeError):
        save_model_dir(tmp_path / "a", "vae", vae, GAN_CFG)
    with pytest.raises(KeyError, match="unknown part 'encoder'"):
        save_model_dir(tmp_path / "a", "vae", {"encoder": vae.encoder}, VAE_CFG)
    G, D = build_gan(GAN_CFG)
    with pytest.raises(ValueError, match="needs one of the parts"):
        save_model_dir(tmp_path / "a", "gan", {"discriminator": D}, GAN_CFG)
    bigger = dataclasses.replace(VAE_CFG, latent_dim=5)
    with pytest.raises(ValueError, match="does not match its config"):
        save_model_dir(tmp_path / "a", "vae", vae, bigger)
    assert not (tmp_path / "a").exists()


def test_load_is_strict_about_the_stored_config(tmp_path):
    out = save_model_dir(tmp_path / "vae", "vae", build_vae(VAE_CFG), VAE_CFG)
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["latnt_dim"] = 3
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unknown key 'config.latnt_dim'"):
        load_generator(out)


def test_load_images_and_dataset_value_ranges(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (10, 20, 30)]):
        arr = np.zeros((40, 40, 3), np.uint8)
        arr[:] = colour
        p = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    Image.fromarray(np.full((40, 40), 128, np.uint8), "L").save(tmp_path / "gray.png")
    paths.append(tmp_path / "gray.png")
    imgs = load_images(paths, size=32, num_workers=2)
    assert imgs.dtype == torch.uint8 and imgs.shape == (4, 3, 32, 32)
    assert imgs[0, :, 5, 5].tolist() == [255, 0, 0] and imgs[3, :, 0, 0].tolist() == [128, 128, 128]
    assert torch.equal(imgs, load_images(paths, size=32))
    unit = ImageTensorDataset(imgs, value_range=(0.0, 1.0))
    sym = ImageTensorDataset.from_paths(paths, size=32, value_range=(-1.0, 1.0))
    assert len(unit) == 4 and unit[0].dtype == torch.float32 and unit[0].shape == (3, 32, 32)
    assert unit[0][:, 0, 0].tolist() == [1.0, 0.0, 0.0] and sym[0][:, 0, 0].tolist() == [1.0, -1.0, -1.0]
    torch.testing.assert_close(unit[2][:, 0, 0] * 255, torch.tensor([10.0, 20.0, 30.0]))  # on the 8-bit grid
    assert unit.uint8_hwc(2).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError):
        ImageTensorDataset(imgs.float(), value_range=(0.0, 1.0))
