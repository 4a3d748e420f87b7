"""The VAE: shapes, ELBO bookkeeping, IWAE bound, train step, a short training run."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from components.config import ConfigError, build
from components.generative import losses
from components.generative.config import VAEConfig
from components.generative.models import MODELS, build_vae
from components.generative.steps import vae_eval_step, vae_train_step
from components.generative.vae import ResidualBlock, elbo_terms, iwae_log_likelihood, log_importance_weights


def tiny_cfg(**overrides) -> VAEConfig:
    base = dict(image_size=32, latent_dim=4, base_channels=8, decoder_res_blocks=0, likelihood="gaussian",
                gaussian_std=0.1, learn_std=True, beta=1.0)
    return VAEConfig(**{**base, **overrides})


def grid_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random images on the 8-bit grid, in [0, 1]: (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


def coloured_squares(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """One axis-aligned square of a random saturated colour on black: (n, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    palette = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        r, c = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        x[i, :, r:r + s, c:c + s] = palette[int(torch.randint(0, 4, (1,), generator=g))][:, None, None]
    return x


@pytest.mark.parametrize("res_blocks", [0, 2])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_shapes(size, likelihood, res_blocks):
    vae = build_vae(tiny_cfg(image_size=size, likelihood=likelihood, decoder_res_blocks=res_blocks))
    x = grid_images(2, size)
    out = vae(x)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, 4)
    assert out["params"].shape == (2, 3, size, size)
    assert out["log_px_z"].shape == out["kl"].shape == (2,)
    img = vae.generate(torch.randn(5, 4))
    assert img.shape == (5, 3, size, size) and img.min() >= 0 and img.max() <= 1
    assert vae.num_dims == 3 * size * size


def test_config_is_frozen_strict_and_validated():
    cfg = build(VAEConfig, dataclasses.asdict(tiny_cfg()))
    assert cfg == tiny_cfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.beta = 2.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown key 'betta'"):
        build(VAEConfig, {**dataclasses.asdict(cfg), "betta": 1.0})
    with pytest.raises(ConfigError, match="likelihood must be one of"):
        tiny_cfg(likelihood="poisson")
    with pytest.raises(ConfigError, match="image_size"):
        tiny_cfg(image_size=48)
    with pytest.raises(ConfigError, match="gaussian_std"):
        tiny_cfg(gaussian_std=0.0)
    with pytest.raises(ConfigError, match="decoder_res_blocks must be >= 0"):
        tiny_cfg(decoder_res_blocks=-1)
    assert MODELS["vae"].config_cls is VAEConfig and MODELS["vae"].value_range == (0.0, 1.0)


def test_decoder_residual_blocks_sit_after_each_inner_stage_and_train():
    plain = build_vae(tiny_cfg(image_size=64)).decoder
    deep = build_vae(tiny_cfg(image_size=64, decoder_res_blocks=2)).decoder
    assert not any(isinstance(m, ResidualBlock) for m in plain.net)
    # 64 px, base 8: inner stages at 8, 16 and 32 px with 32, 16 and 8 channels, 2 blocks each
    # (the last transposed conv makes the image and has none)
    blocks = [m for m in deep.net if isinstance(m, ResidualBlock)]
    assert [b.body[0].in_channels for b in blocks] == [32, 32, 16, 16, 8, 8]
    h = torch.randn(2, 16, 16, 16)
    block = blocks[2]
    assert block(h).shape == h.shape
    with torch.no_grad():  # with a zero residual branch the block is the activation alone
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
    assert torch.allclose(block(h), torch.nn.functional.silu(h))
    # every block gets a gradient through the likelihood
    vae = build_vae(tiny_cfg(decoder_res_blocks=1))
    (-vae(grid_images(2, 32))["log_px_z"].mean()).backward()
    trained = [m for m in vae.decoder.net if isinstance(m, ResidualBlock)]
    assert len(trained) == 2
    assert all(m.body[0].weight.grad is not None and m.body[0].weight.grad.abs().sum() > 0 for m in trained)


def test_learned_versus_fixed_std():
    learned = build_vae(tiny_cfg(learn_std=True))
    fixed = build_vae(tiny_cfg(learn_std=False))
    assert any(n == "likelihood.log_std" for n, _ in learned.named_parameters())
    assert not any(n == "likelihood.log_std" for n, _ in fixed.named_parameters())
    assert "likelihood.log_std" in fixed.state_dict()
    assert fixed.likelihood.std == pytest.approx(0.1)


def test_elbo_terms_bookkeeping():
    torch.manual_seed(0)
    vae = build_vae(tiny_cfg(beta=4.0))
    x = grid_images(3, 32)
    out = vae(x)
    t = elbo_terms(out, beta=4.0, num_dims=vae.num_dims)
    assert t["recon_nll"].item() == pytest.approx(-out["log_px_z"].mean().item())
    assert t["kl"].item() == pytest.approx(out["kl"].mean().item())
    assert t["elbo"].item() == pytest.approx(-(t["recon_nll"] + t["kl"]).item())
    assert t["loss"].item() == pytest.approx((t["recon_nll"] + 4.0 * t["kl"]).item())
    assert t["bits_per_dim"].item() == pytest.approx(-t["elbo"].item() / (3 * 32 * 32 * math.log(2)))
    assert t["kl"].item() >= 0 and t["recon_nll"].item() >= 0  # a discrete likelihood: -log P >= 0


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    torch.manual_seed(0)
    vae = build_vae(tiny_cfg()).eval()
    x = grid_images(3, 32)
    eps = torch.randn(1, 3, 4)
    log_w = log_importance_weights(vae, x, eps)[0]  # (B,)
    with torch.no_grad():
        out = vae(x, eps=eps[0])
    mc_elbo = out["log_px_z"] + losses.std_normal_log_prob(out["z"]) - losses.diag_gaussian_log_prob(
        out["z"], out["mu"], out["logvar"])
    torch.testing.assert_close(log_w, mc_elbo)


def test_iwae_bound_k1_matches_elbo_in_expectation_and_k_gt_1_is_higher():
    torch.manual_seed(0)
    vae = build_vae(tiny_cfg()).eval()
    x = grid_images(2, 32)
    with torch.no_grad():
        analytic_elbo = elbo_terms(vae(x), beta=1.0, num_dims=vae.num_dims)["elbo"].item()
        # k = 1 averaged over many draws -> the ELBO (MC KL vs closed-form KL)
        eps = torch.randn(400, 2, 4, generator=torch.Generator().manual_seed(1))
        mc = log_importance_weights(vae, x, eps).mean().item()
    assert mc == pytest.approx(analytic_elbo, rel=0.01)
    iwae = iwae_log_likelihood(vae, x, k=64, generator=torch.Generator().manual_seed(2), chunk_size=16)
    assert iwae.shape == (2,)
    assert iwae.mean().item() > analytic_elbo


def test_iwae_is_logsumexp_of_the_weights_minus_log_k():
    torch.manual_seed(0)
    vae = build_vae(tiny_cfg()).eval()
    x = grid_images(2, 32)
    got = iwae_log_likelihood(vae, x, k=8, generator=torch.Generator().manual_seed(5), chunk_size=8)
    eps = torch.randn(8, 2, 4, generator=torch.Generator().manual_seed(5))
    log_w = log_importance_weights(vae, x, eps)  # (8, 2)
    expected = torch.log(torch.exp(log_w.double() - log_w.double().max(0).values).mean(0)) + log_w.double().max(0).values
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-3)


def test_train_step_changes_params_and_returns_finite_metrics():
    torch.manual_seed(0)
    vae = build_vae(tiny_cfg())
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    metrics = vae_train_step(vae, grid_images(4, 32), opt, grad_clip=100.0)
    assert set(metrics) == {"loss", "recon_nll", "kl", "elbo", "bits_per_dim", "grad_norm", "gaussian_std"}
    assert all(math.isfinite(v) for v in metrics.values())
    changed = [k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoder.features.0.weight" in changed and "decoder.net.2.weight" in changed
    assert "likelihood.log_std" in changed


def _two_steps(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    vae = build_vae(tiny_cfg(likelihood="bernoulli"))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(2):
        vae_train_step(vae, grid_images(4, 32), opt, generator=g)
    return vae.state_dict()


def test_same_seed_gives_identical_params_after_two_steps():
    a, b, c = _two_steps(3), _two_steps(3), _two_steps(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_eval_step_reports_iwae_and_restores_mode():
    torch.manual_seed(0)
    vae = build_vae(tiny_cfg())
    vae.train()
    m = vae_eval_step(vae, grid_images(2, 32), iw_samples=8, generator=torch.Generator().manual_seed(0))
    assert vae.training
    assert m["iwae_nll"] <= -m["elbo"] + 1.0  # tighter in expectation (noise allowed)
    assert m["iwae_bits_per_dim"] == pytest.approx(m["iwae_nll"] / (3 * 32 * 32 * math.log(2)))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_short_training_on_coloured_squares_reduces_loss(likelihood):
    torch.manual_seed(0)
    data = coloured_squares(64, 32)
    vae = build_vae(tiny_cfg(likelihood=likelihood, latent_dim=8))
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = vae_eval_step(vae, data, generator=g)["loss"]
    for step in range(100):
        idx = torch.randint(0, 64, (16,), generator=g)
        vae_train_step(vae, data[idx], opt, generator=g)
    end = vae_eval_step(vae, data, generator=g)["loss"]
    assert end < 0.5 * start
