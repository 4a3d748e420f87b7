"""Pure losses of the VAE and GAN, each checked by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from components.generative import losses
from components.generative.losses import GAN_LOSSES


def test_kl_of_standard_normal_is_zero():
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert torch.equal(losses.gaussian_kl(mu, logvar), torch.zeros(3))


def test_kl_closed_form_by_hand_and_against_monte_carlo():
    # one dimension: KL(N(1, e^0.5) || N(0, 1)) = 0.5 * (1 + e^0.5 - 1 - 0.5)
    kl = losses.gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[0.5]]))
    assert kl.item() == pytest.approx(0.5 * (1 + math.exp(0.5) - 1 - 0.5), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64)
    logvar = torch.tensor([[-0.4, 0.6, 0.1]], dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    mc = (losses.diag_gaussian_log_prob(z, mu, logvar) - losses.std_normal_log_prob(z)).mean()
    assert mc.item() == pytest.approx(losses.gaussian_kl(mu, logvar).item(), abs=0.01)


def test_gaussian_log_densities_match_torch_distributions():
    z, mu, logvar = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(losses.diag_gaussian_log_prob(z, mu, logvar), ref)
    ref0 = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(losses.std_normal_log_prob(z), ref0)


def test_bernoulli_nll_is_binary_cross_entropy_summed_per_image():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    x = torch.rand(2, 3, 4, 4, generator=g)
    nll = -losses.sum_per_image(losses.bernoulli_log_prob(logits, x))  # (2,)
    for i in range(2):
        ref = F.binary_cross_entropy(torch.sigmoid(logits[i]), x[i], reduction="sum")
        assert nll[i].item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("mean,std", [(0.5, 0.1), (0.0, 0.02), (1.02, 0.3), (0.37, 1e-3), (-3.0, 0.05)])
def test_discretized_gaussian_is_a_pmf_over_256_levels(mean, std):
    x = (torch.arange(256, dtype=torch.float32) / 255).view(1, 1, 1, 256)
    logp = losses.discretized_gaussian_log_prob(x, torch.full_like(x, mean), torch.tensor(math.log(std)))
    assert torch.all(logp <= 1e-6)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_discretized_gaussian_interior_and_edge_bins_by_hand():
    cdf = torch.distributions.Normal(torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64)).cdf
    phi = lambda v: cdf(torch.tensor(v, dtype=torch.float64)).item()  # noqa: E731
    h = 0.5 / 255
    levels = torch.tensor([0, 100, 255], dtype=torch.float32).view(1, 1, 1, 3) / 255
    logp = losses.discretized_gaussian_log_prob(levels, torch.full_like(levels, 0.5), torch.tensor(math.log(0.1)))
    x = 100 / 255
    expected = [math.log(phi(h)), math.log(phi(x + h) - phi(x - h)), math.log(1 - phi(1 - h))]
    assert logp.flatten().tolist() == pytest.approx(expected, rel=1e-4)


def test_discretized_gaussian_gradient_is_finite_far_in_the_tail():
    x = torch.full((1, 1, 1, 1), 128 / 255)
    mean = torch.full((1, 1, 1, 1), 0.9, requires_grad=True)
    log_std = torch.tensor(math.log(1e-3), requires_grad=True)
    logp = losses.discretized_gaussian_log_prob(x, mean, log_std).sum()
    logp.backward()
    assert torch.isfinite(logp) and torch.isfinite(mean.grad).all() and torch.isfinite(log_std.grad)
    assert mean.grad.item() < 0  # pulls the mean down towards x


def test_bits_per_dim_conversion():
    d = 3 * 32 * 32
    assert losses.bits_per_dim(d * math.log(2) * 3.5, d) == pytest.approx(3.5)
    assert losses.bits_per_dim(torch.tensor(d * math.log(256.0)), d).item() == pytest.approx(8.0)


def test_gan_losses_on_given_logits():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    sp = lambda v: math.log1p(math.exp(v))  # softplus  # noqa: E731
    ns = GAN_LOSSES["non_saturating"]
    assert ns.d_loss(real, fake).item() == pytest.approx((sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2, rel=1e-6)
    assert ns.g_loss(fake).item() == pytest.approx((sp(-0.5) + sp(3)) / 2, rel=1e-6)
    # the NS D loss is binary cross-entropy with labels 1 (real) and 0 (fake)
    bce = (F.binary_cross_entropy_with_logits(real, torch.ones(2))
           + F.binary_cross_entropy_with_logits(fake, torch.zeros(2)))
    assert ns.d_loss(real, fake).item() == pytest.approx(bce.item(), rel=1e-6)
    hinge = GAN_LOSSES["hinge"]
    # relu(1 - [2, -1]) = [0, 2]; relu(1 + [0.5, -3]) = [1.5, 0]
    assert hinge.d_loss(real, fake).item() == pytest.approx(1.0 + 0.75)
    assert hinge.g_loss(fake).item() == pytest.approx(1.25)
    w = GAN_LOSSES["wgan_gp"]
    assert w.d_loss(real, fake).item() == pytest.approx(-1.25 - 0.5)
    assert w.g_loss(fake).item() == pytest.approx(1.25)
    assert w.needs_gradient_penalty and not ns.needs_gradient_penalty and not hinge.needs_gradient_penalty


def _linear_critic(w):
    return lambda x: (x * w).flatten(start_dim=1).sum(dim=1)  # (B,)


def test_gradient_penalty_zero_for_unit_norm_linear_critic_and_exact_otherwise():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    w = torch.randn(1, 3, 2, 2, generator=g)
    w = w / w.norm()
    assert losses.gradient_penalty(_linear_critic(w), real, fake, weight=10.0).item() == pytest.approx(0.0, abs=1e-10)
    # ||grad|| = 2 everywhere -> lambda * (2 - 1)^2
    gp = losses.gradient_penalty(_linear_critic(2 * w), real, fake, weight=10.0)
    assert gp.item() == pytest.approx(10.0, rel=1e-5)
    # two-sided: a too-small gradient is penalised as well, (0.5 - 1)^2 = 0.25
    gp = losses.gradient_penalty(_linear_critic(0.5 * w), real, fake, weight=10.0)
    assert gp.item() == pytest.approx(2.5, rel=1e-5)


def test_gradient_penalty_is_differentiable_in_the_critic_parameters():
    w = torch.full((1, 3, 2, 2), 0.5, requires_grad=True)  # ||w|| = sqrt(12) * 0.5
    gp = losses.gradient_penalty(_linear_critic(w), torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2), weight=1.0)
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    n = math.sqrt(12) * 0.5
    torch.testing.assert_close(w.grad, torch.full_like(w, 2 * (n - 1) * 0.5 / n))
