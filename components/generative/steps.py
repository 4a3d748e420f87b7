"""One optimisation step of each model: typed, Ray-free, testable on CPU.

The training loop (the stage's Ray Train ``train_loop_per_worker``) owns the
data, the optimisers, the step counter, checkpoints and reporting; it calls
these once per batch. Models may be ``DistributedDataParallel``-wrapped: the
steps only call their ``forward`` and read attributes through :func:`unwrap`.

Every step returns plain floats (one device sync per step), ready for
the divergence guard (:mod:`components.train.guard`) and ``ray.train.report``; they are batch means, so weight by
batch size when averaging over an epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from components.generative.augment import Augmentation
from components.generative.common import standard_normal, unwrap
from components.generative.ema import EMA
from components.generative.losses import GAN_LOSSES, GANLoss, bits_per_dim, gradient_penalty
from components.generative.vae import elbo_terms, iwae_log_likelihood


def _floats(metrics: dict[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
    return dict(zip(metrics, values))


def vae_train_step(model: nn.Module, batch: Tensor, opt: torch.optim.Optimizer, *,
                   generator: torch.Generator | None = None,
                   grad_clip: float | None = None) -> dict[str, float]:
    """One gradient step on the beta-VAE loss ``recon_nll + beta * kl``.

    Args:
        model: A ``VAE`` (possibly DDP-wrapped); put in train mode.
        batch: ``(B, 3, H, W)`` images in ``[0, 1]`` on the model's device.
        opt: Its optimiser.
        generator: RNG for the reparameterisation noise (default: global).
        grad_clip: Clip the global gradient norm to this value when set.

    Returns:
        dict[str, float]: ``loss``, ``recon_nll``, ``kl``, ``elbo`` (nats per
        image), ``bits_per_dim``, ``grad_norm`` (before clipping), and
        ``gaussian_std`` for the Gaussian likelihood.
    """
    vae = unwrap(model)
    model.train()
    out = model(batch, generator=generator)
    terms = elbo_terms(out, beta=vae.beta, num_dims=vae.num_dims)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    max_norm = grad_clip if grad_clip is not None else float("inf")
    terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    metrics = _floats(terms)
    if hasattr(vae.likelihood, "std"):  # the Gaussian's, after this step
        metrics["gaussian_std"] = vae.likelihood.std
    return metrics


@torch.no_grad()
def vae_eval_step(model: nn.Module, batch: Tensor, *, iw_samples: int = 0,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """Loss terms on a held-out batch (eval mode), optionally the IWAE estimate.

    Args:
        model: A ``VAE`` (possibly DDP-wrapped).
        batch: ``(B, 3, H, W)`` images in ``[0, 1]``.
        iw_samples: ``k`` of the importance-weighted NLL (Burda et al. 2016);
            0 skips it. Costs ``k`` decoder passes per image.
        generator: RNG for the noise.

    Returns:
        dict[str, float]: as :func:`vae_train_step` (no ``grad_norm``), plus
        ``iwae_nll`` (nats per image, an upper bound on the NLL in
        expectation) and ``iwae_bits_per_dim`` when ``iw_samples > 0``.
    """
    vae = unwrap(model)
    was_training = vae.training
    vae.eval()
    try:
        terms = elbo_terms(vae(batch, generator=generator), beta=vae.beta, num_dims=vae.num_dims)
        if iw_samples > 0:
            nll = -iwae_log_likelihood(vae, batch, k=iw_samples, generator=generator).mean()
            terms["iwae_nll"] = nll
            terms["iwae_bits_per_dim"] = bits_per_dim(nll, vae.num_dims)
    finally:
        vae.train(was_training)
    return _floats(terms)


def make_gan_optimizers(G: nn.Module, D: nn.Module, *, lr_g: float, lr_d: float,
                        betas: tuple[float, float]) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Two Adam optimisers, one per network, so each has its own learning rate.

    Separate rates are the two time-scale update rule (TTUR, Heusel et al.
    2017), e.g. ``lr_d = 4e-4, lr_g = 1e-4``. DCGAN uses ``2e-4`` for both and
    ``betas = (0.5, 0.999)``; WGAN-GP ``1e-4`` and ``(0.0, 0.9)``.

    Args:
        G: Generator (possibly DDP-wrapped).
        D: Discriminator (possibly DDP-wrapped).
        lr_g: Generator learning rate.
        lr_d: Discriminator learning rate.
        betas: Adam's ``(beta1, beta2)``, shared.

    Returns:
        tuple[Adam, Adam]: ``(opt_g, opt_d)``.
    """
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=lr_d, betas=betas)
    return opt_g, opt_d


def gan_train_step(G: nn.Module, D: nn.Module, batch: Tensor, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer, *, loss: str | GANLoss, n_critic: int,
                   gp_weight: float, ema: EMA | None, step: int,
                   generator: torch.Generator | None = None,
                   augment: Augmentation | None = None) -> dict[str, float]:
    """One discriminator update, and a generator update every ``n_critic`` calls.

    Semantics of ``n_critic``: one call = one D update on ``batch``; the
    generator is updated (and the EMA with it) on the calls where
    ``(step + 1) % n_critic == 0``, i.e. after every ``n_critic`` D updates
    (Gulrajani et al. 2017, Alg. 1). ``step`` is the number of earlier calls
    (0-based), which the loop keeps and checkpoints; with ``n_critic = 1``
    both networks move on every call. So a run of ``T`` calls makes ``T`` D
    updates and ``T // n_critic`` G updates, and each real batch is seen once.

    D step: ``d_loss(D(x), D(G(z)))`` plus, when ``gp_weight > 0``, the
    gradient penalty (Gulrajani et al. 2017), with ``G(z)`` detached. Real and
    fake go through D as separate batches (per-batch BatchNorm statistics, as
    in DCGAN). G step: a fresh ``z``, ``g_loss(D(G(z)))``; D's gradients from
    it are discarded at the next D step.

    Args:
        G: Generator (possibly DDP-wrapped), output in ``[-1, 1]``.
        D: Discriminator (possibly DDP-wrapped).
        batch: ``(B, 3, H, W)`` real images in ``[-1, 1]``; G makes ``B`` fakes.
        opt_g: G's optimiser (see :func:`make_gan_optimizers`).
        opt_d: D's optimiser.
        loss: A key of ``GAN_LOSSES`` or a :class:`GANLoss`.
        n_critic: D updates per G update (>= 1).
        gp_weight: Gradient penalty lambda; 0 disables it.
        ema: Generator weight average, updated after each G step; or None.
        step: 0-based count of earlier calls.
        generator: RNG for z, the penalty's interpolation and the augmentation (default: global).
        augment: DiffAugment (:mod:`components.generative.augment`): applied to
            every image D sees, real and fake, in both updates (the penalty
            then interpolates augmented images); None: D sees the images as they are.

    Returns:
        dict[str, float]: ``d_loss`` (adversarial part), ``gp`` (weighted, 0
        when off), ``d_real`` and ``d_fake`` (mean logits), ``g_updated``
        (1.0 or 0.0), and ``g_loss`` only when G was updated.
    """
    loss_fns = GAN_LOSSES[loss] if isinstance(loss, str) else loss
    if n_critic < 1:
        raise ValueError(f"n_critic must be >= 1, got {n_critic}")
    G.train()
    D.train()
    b = batch.shape[0]
    latent_dim = unwrap(G).latent_dim

    def seen_by_d(x: Tensor) -> Tensor:  # what D gets of an image, real or fake
        return augment(x, generator) if augment is not None else x

    # Discriminator / critic update.
    z = standard_normal((b, latent_dim), generator=generator, like=batch)  # (B, L)
    with torch.no_grad():
        fake = seen_by_d(G(z))  # (B, 3, H, W)
    real = seen_by_d(batch)
    real_logits = D(real).float()  # (B,); losses in float32 under bf16 autocast
    fake_logits = D(fake).float()  # (B,)
    d_loss = loss_fns.d_loss(real_logits, fake_logits)
    gp = (gradient_penalty(D, real, fake, weight=gp_weight, generator=generator)
          if gp_weight > 0 else torch.zeros((), device=batch.device))
    opt_d.zero_grad(set_to_none=True)
    (d_loss + gp).backward()
    opt_d.step()
    metrics = {"d_loss": d_loss, "gp": gp, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}

    g_updated = (step + 1) % n_critic == 0
    if g_updated:
        z = standard_normal((b, latent_dim), generator=generator, like=batch)  # (B, L)
        g_loss = loss_fns.g_loss(D(seen_by_d(G(z))).float())
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        opt_d.zero_grad(set_to_none=True)  # D's gradients from the G step are not used
        metrics["g_loss"] = g_loss
        if ema is not None:
            ema.update(G)
    out = _floats(metrics)
    out["g_updated"] = float(g_updated)
    return out
