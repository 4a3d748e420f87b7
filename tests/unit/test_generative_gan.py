"""DCGAN: shapes, config rules, the n_critic schedule, losses in a step, EMA, determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from components.config import ConfigError, build
from components.generative.config import GANConfig
from components.generative.ema import EMA, recalibrate_batchnorm
from components.generative.gan import D_NORMS
from components.generative.losses import GAN_LOSSES
from components.generative.models import MODELS, build_gan
from components.generative.steps import gan_train_step, make_gan_optimizers


def tiny_cfg(**overrides) -> GANConfig:
    base = dict(image_size=32, latent_dim=8, g_channels=8, d_channels=8, loss="non_saturating",
                d_norm="batch", spectral_norm=False, n_critic=1, gp_weight=0.0, ema_decay=0.9)
    return GANConfig(**{**base, **overrides})


def real_batch(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1  # (n, 3, S, S) in [-1, 1]


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _changed(m: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in m.named_parameters())


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("norm", sorted(D_NORMS))
def test_shapes(size, norm):
    G, D = build_gan(tiny_cfg(image_size=size, d_norm=norm))
    x = G(torch.randn(3, 8))
    assert x.shape == (3, 3, size, size) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)
    assert G.generate(torch.randn(2, 8)).min() >= 0


def test_64px_layout_is_the_papers():
    G, D = build_gan(tiny_cfg(image_size=64, g_channels=64, d_channels=64))
    convs_t = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs_t] == [512, 256, 128, 64, 3]
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]


def test_spectral_norm_wraps_every_discriminator_conv():
    _, D = build_gan(tiny_cfg(spectral_norm=True, d_norm="none"))
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    _, plain = build_gan(tiny_cfg())
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "lsgan"}, "loss must be one of"),
        ({"d_norm": "spectral"}, "d_norm must be one of"),
        ({"loss": "wgan_gp", "d_norm": "layer", "gp_weight": 0.0}, "gp_weight must be > 0"),
        ({"loss": "wgan_gp", "d_norm": "batch", "gp_weight": 10.0}, "must not be 'batch'"),
        ({"loss": "hinge", "d_norm": "batch", "gp_weight": 1.0}, "must not be 'batch'"),
        ({"n_critic": 0}, "n_critic"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"image_size": 100}, "image_size"),
    ],
)
def test_config_rules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(**overrides)


def test_config_builds_strictly_from_a_mapping():
    cfg = build(GANConfig, dataclasses.asdict(tiny_cfg()))
    assert cfg == tiny_cfg()
    with pytest.raises(ConfigError, match="missing key 'n_critic'"):
        build(GANConfig, {k: v for k, v in dataclasses.asdict(cfg).items() if k != "n_critic"})
    assert MODELS["gan"].value_range == (-1.0, 1.0)


def test_make_gan_optimizers_ttur():
    G, D = build_gan(tiny_cfg())
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-4, lr_d=4e-4, betas=(0.0, 0.9))
    assert opt_g.param_groups[0]["lr"] == 1e-4 and opt_d.param_groups[0]["lr"] == 4e-4
    assert opt_g.param_groups[0]["betas"] == (0.0, 0.9)
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in G.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {id(p) for p in D.parameters()}


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": "non_saturating"},
        {"loss": "hinge", "spectral_norm": True, "d_norm": "none"},
        {"loss": "wgan_gp", "d_norm": "layer", "gp_weight": 10.0},
        {"loss": "wgan_gp", "d_norm": "instance", "gp_weight": 10.0, "image_size": 64},
    ],
)
def test_one_step_of_each_loss_updates_both_and_is_finite(overrides):
    torch.manual_seed(0)
    cfg = tiny_cfg(**overrides)
    G, D = build_gan(cfg)
    ema = EMA(G, decay=cfg.ema_decay)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.999))
    g0, d0, e0 = _snapshot(G), _snapshot(D), _snapshot(ema.module)
    m = gan_train_step(G, D, real_batch(size=cfg.image_size), opt_g, opt_d, loss=cfg.loss, n_critic=1,
                       gp_weight=cfg.gp_weight, ema=ema, step=0)
    assert set(m) == {"d_loss", "gp", "d_real", "d_fake", "g_loss", "g_updated"}
    assert all(math.isfinite(v) for v in m.values())
    assert m["g_updated"] == 1.0
    assert (m["gp"] > 0) == (cfg.gp_weight > 0)
    assert _changed(G, g0) and _changed(D, d0) and _changed(ema.module, e0)
    assert ema.num_updates == 1


def test_n_critic_updates_d_every_call_and_g_every_n_calls():
    torch.manual_seed(0)
    cfg = tiny_cfg(loss="wgan_gp", d_norm="layer", gp_weight=10.0, n_critic=3)
    G, D = build_gan(cfg)
    ema = EMA(G, decay=0.5)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-3, lr_d=1e-3, betas=(0.0, 0.9))
    g_updates = []
    for step in range(6):
        g0, d0 = _snapshot(G), _snapshot(D)
        m = gan_train_step(G, D, real_batch(seed=step), opt_g, opt_d, loss=cfg.loss, n_critic=cfg.n_critic,
                           gp_weight=cfg.gp_weight, ema=ema, step=step)
        assert _changed(D, d0)
        assert _changed(G, g0) == bool(m["g_updated"]) == ("g_loss" in m)
        if m["g_updated"]:
            g_updates.append(step)
    assert g_updates == [2, 5]
    assert ema.num_updates == 2


def _two_steps(seed: int) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    cfg = tiny_cfg(loss="hinge", spectral_norm=True, d_norm="none")
    G, D = build_gan(cfg)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    for step in range(2):
        gan_train_step(G, D, real_batch(seed=step), opt_g, opt_d, loss=cfg.loss, n_critic=1, gp_weight=0.0,
                       ema=None, step=step, generator=g)
    return G.state_dict(), D.state_dict()


def test_same_seed_gives_identical_params_after_two_steps():
    (ga, da), (gb, db), (gc, _) = _two_steps(1), _two_steps(1), _two_steps(2)
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert all(torch.equal(da[k], db[k]) for k in da)  # spectral-norm u, v included
    assert not all(torch.equal(ga[k], gc[k]) for k in ga)


def test_ema_update_math():
    src = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(src, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
        src[1].running_mean.fill_(3.0)
    ema.update(src)
    new = dict(src.named_parameters())
    for name, p in ema.module.named_parameters():
        torch.testing.assert_close(p, 0.9 * old[name] + 0.1 * new[name].detach())
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers copied
    # a fixed point stays put; state round-trips
    ema2 = EMA(src, decay=0.9)
    ema2.update(src)
    assert all(torch.equal(a, b) for a, b in zip(ema2.module.parameters(), src.parameters()))
    restored = EMA(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.9 and restored.num_updates == 1
    assert all(torch.equal(a, b) for a, b in zip(restored.module.parameters(), ema.module.parameters()))
    with pytest.raises(ValueError):
        EMA(src, decay=1.0)


def test_loss_registry_accepts_an_object():
    torch.manual_seed(0)
    G, D = build_gan(tiny_cfg())
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.999))
    m = gan_train_step(G, D, real_batch(), opt_g, opt_d, loss=GAN_LOSSES["hinge"], n_critic=1, gp_weight=0.0,
                       ema=None, step=0)
    assert math.isfinite(m["d_loss"])


def test_recalibrate_batchnorm_sets_running_stats_to_the_mean_batch_statistics():
    torch.manual_seed(0)
    G, _ = build_gan(tiny_cfg())
    G.eval()
    momentum = G.net[1].momentum
    recalibrate_batchnorm(G, num_batches=3, batch_size=5, seed=4)
    assert not G.training and G.net[1].momentum == momentum
    rng = torch.Generator().manual_seed(4)
    first_bn_inputs = [G.net[0](torch.randn(5, 8, generator=rng)[:, :, None, None]) for _ in range(3)]  # (5, C, 4, 4)
    expected = torch.stack([h.mean(dim=(0, 2, 3)) for h in first_bn_inputs]).mean(dim=0)
    torch.testing.assert_close(G.net[1].running_mean, expected)
    assert int(G.net[1].num_batches_tracked) == 3
