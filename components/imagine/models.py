"""Caption-conditioned generators, a GAN and a conditional VAE: text in, image out.

* :class:`TextEncoder`: word embeddings over the project's vocabulary and a
  one-layer GRU; the caption's embedding is the GRU state after its last word
  ``(B, H)``. Each network has its own: trained from scratch with its player's
  loss. (Not the captioner's word embeddings: they are trained to predict the
  next word, and reading them would make this stage wait for, and rerun with,
  ``train_captioner``; a 30-word vocabulary is learnt within an epoch.)
* :class:`ConditionalGenerator`: DCGAN-shaped, ``[z; e]`` -> 4x4 -> stride-2
  transposed convolutions, every BatchNorm conditional on the caption
  (FiLM, Perez et al. 2018: ``BN(x) * (1 + gamma(e)) + beta(e)``), so the
  caption steers every scale. ``tanh`` output in ``[-1, 1]``.
* :class:`ProjectionDiscriminator`: spectrally normalised convolutions
  (Miyato et al. 2018), the 4x4 map flattened (positions kept: captions say
  *left of*) to a feature ``h``; logit ``w . h + <V e, h>``, the projection
  discriminator of Miyato & Koyama 2018.
* :class:`ConditionalDecoder` and :class:`ConditionalEncoder` (``kind: cvae``):
  the conditional VAE (Sohn et al. 2015). The decoder p(x|z, c) is the
  generator: ``[z; e]`` -> 4x4, then per stage nearest upsampling and a 3x3
  convolution that also reads a *caption map* (a few channels computed from
  ``e`` at 4x4, upsampled to the stage: where the caption puts things, as
  captions say *left of*), GroupNorm (per example) FiLM-conditioned on ``e``
  and SiLU; its output is the mean of a discretized Gaussian with one learned
  std (``log_std``, the sigma-VAE's shared variance, Rybkin et al. 2021,
  :func:`components.generative.losses.discretized_gaussian_log_prob`). The
  encoder q(z|x, c) is strided convolutions to 4x4, flattened with ``e``, to
  ``(mu, logvar)``. :class:`CVAE` holds both and returns the loss terms.
  Sampling draws z from the prior N(0, I).

Shapes: images ``(B, 3, S, S)``; caption tokens ``(B, T)`` word ids (no
``<start>``/``<end>``), right-padded with ``<pad>``; lengths ``(B,)`` >= 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from components.data.ptb import vocab_tokens
from components.data.text import Vocab
from components.imagine.data import pad
from components.generative import losses
from components.generative.gan import dcgan_init_
from components.generative.vae import num_stages
from components.imagine.config import ImagineConfig

VALUE_RANGE = (-1.0, 1.0)  # the generator's output and the discriminator's input


class CaptionError(ValueError):
    """A caption the model cannot read: empty, too long, or with words outside its vocabulary."""


def encode_captions(captions: Sequence[str], vocab: Vocab) -> tuple[Tensor, Tensor]:
    """Captions as padded word ids ``(B, T)`` and lengths ``(B,)``, refusing what the model cannot read.

    Raises:
        CaptionError: An empty caption, one longer than ``vocab.max_caption_length``
            words, or words outside the vocabulary (all listed).
    """
    rows = []
    for caption in captions:
        words = vocab_tokens(caption)  # the prepare stage's tokens (PTB, as the vocabulary)
        if not words:
            raise CaptionError(f"empty caption {caption!r}")
        if len(words) > vocab.max_caption_length:
            raise CaptionError(f"caption of {len(words)} words, more than the {vocab.max_caption_length} "
                               f"the model was trained with: {caption!r}")
        unknown = sorted({w for w in words if vocab.id(w) == vocab.unk_id})
        if unknown:
            raise CaptionError(f"words outside the vocabulary: {', '.join(unknown)} (in {caption!r}; "
                               f"known: {', '.join(vocab.tokens[4:])})")
        rows.append([vocab.id(w) for w in words])
    return pad(rows)


class TextEncoder(nn.Module):
    """Word ids ``(B, T)`` and lengths ``(B,)`` -> caption embedding ``(B, text_dim)``."""

    def __init__(self, *, vocab_size: int, word_dim: int, text_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=Vocab.pad_id)
        self.gru = nn.GRU(word_dim, text_dim, batch_first=True)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        states, _ = self.gru(self.embed(tokens))  # (B, T, H)
        last = (lengths - 1).clamp(min=0).to(states.device)  # the state after each caption's last word
        return states[torch.arange(tokens.shape[0], device=states.device), last]  # (B, H)


class FiLMBatchNorm(nn.Module):
    """BatchNorm without its own affine, scaled and shifted per example by the caption embedding."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.film = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)  # starts as plain BatchNorm
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.film(e)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return self.norm(x) * (1 + gamma) + beta


class ConditionalGenerator(nn.Module):
    """``z (B, L)``, caption ``(tokens, lengths)`` -> images ``(B, 3, S, S)`` in ``[-1, 1]``."""

    value_range = VALUE_RANGE

    def __init__(self, cfg: ImagineConfig, vocab_size: int):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.image_size = cfg.image_size
        self.text = TextEncoder(vocab_size=vocab_size, word_dim=cfg.word_dim, text_dim=cfg.text_dim)
        n = num_stages(cfg.image_size)
        c = cfg.g_channels * 2 ** (n - 1)
        self.stem = nn.Linear(cfg.latent_dim + cfg.text_dim, c * 16)
        self.stem_norm = FiLMBatchNorm(c, cfg.text_dim)
        self.ups = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(n - 1):
            self.ups.append(nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False))
            self.norms.append(FiLMBatchNorm(c // 2, cfg.text_dim))
            c //= 2
        self.out = nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1)
        self.apply(dcgan_init_)

    def forward(self, z: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        e = self.text(tokens, lengths)  # (B, H)
        x = self.stem(torch.cat([z, e], dim=1)).view(z.shape[0], -1, 4, 4)  # (B, C, 4, 4)
        x = torch.relu(self.stem_norm(x, e))
        for up, norm in zip(self.ups, self.norms):
            x = torch.relu(norm(up(x), e))  # (B, C/2, 2H, 2W)
        return torch.tanh(self.out(x))  # (B, 3, S, S)


class ProjectionDiscriminator(nn.Module):
    """Images ``(k*B, 3, S, S)`` in ``[-1, 1]`` and ``B`` captions -> logits ``(k*B,)``.

    The images come as ``k`` chunks of ``B``; chunk ``i`` is scored against
    the captions rolled by ``shifts[i]`` along the batch (1: each image with
    its neighbour's caption, the "real image, wrong caption" case). One
    forward for every term keeps DDP's gradient hooks in charge.
    """

    def __init__(self, cfg: ImagineConfig, vocab_size: int):
        super().__init__()
        self.text = TextEncoder(vocab_size=vocab_size, word_dim=cfg.word_dim, text_dim=cfg.text_dim)
        n = num_stages(cfg.image_size)
        c = cfg.d_channels
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        for _ in range(n - 1):
            layers += [spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c *= 2
        self.convs = nn.Sequential(*layers)  # (B, c, 4, 4)
        features = 4 * cfg.d_channels
        self.hidden = spectral_norm(nn.Linear(c * 16, features))
        self.linear = spectral_norm(nn.Linear(features, 1))
        self.project = spectral_norm(nn.Linear(cfg.text_dim, features))

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor, shifts: Sequence[int] = (0,)) -> Tensor:
        e = self.text(tokens, lengths)  # (B, H)
        e = torch.cat([e.roll(s, dims=0) for s in shifts])  # (k*B, H)
        h = nn.functional.leaky_relu(self.hidden(self.convs(images).flatten(1)), 0.2)  # (k*B, F)
        return self.linear(h).squeeze(1) + (self.project(e) * h).sum(1)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels, affine=False)


class FiLMGroupNorm(nn.Module):
    """GroupNorm (per example: an image does not depend on its batch) scaled and shifted by the caption."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.film = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.film(e)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return self.norm(x) * (1 + gamma) + beta


CAPTION_MAP_CHANNELS = 8  # channels of the decoder's spatial caption map
MIN_LOG_STD = math.log(1e-3)  # the learned pixel std stays above this (data in [0, 1])


class ConditionalDecoder(nn.Module):
    """p(x|z, c): ``z (B, L)``, caption ``(tokens, lengths)`` -> the Gaussian mean ``(B, 3, S, S)`` in ``[-1, 1]``
    units (the generator of ``kind: cvae``; :func:`imagine` clips it)."""

    value_range = VALUE_RANGE

    def __init__(self, cfg: ImagineConfig, vocab_size: int):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.image_size = cfg.image_size
        self.text = TextEncoder(vocab_size=vocab_size, word_dim=cfg.word_dim, text_dim=cfg.text_dim)
        n = num_stages(cfg.image_size)
        c = cfg.g_channels * 2 ** (n - 1)
        m = CAPTION_MAP_CHANNELS
        self.stem = nn.Linear(cfg.latent_dim + cfg.text_dim, c * 16)
        self.caption_map = nn.Linear(cfg.text_dim, m * 16)
        self.stem_norm = FiLMGroupNorm(c, cfg.text_dim)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(n):
            out = max(c // 2, cfg.g_channels // 2)
            self.convs.append(nn.Conv2d(c + m, out, 3, padding=1))
            self.norms.append(FiLMGroupNorm(out, cfg.text_dim))
            c = out
        self.out = nn.Conv2d(c, 3, 3, padding=1)
        self.log_std = nn.Parameter(torch.tensor(math.log(0.1)))  # of the pixels in [0, 1]

    def forward(self, z: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        e = self.text(tokens, lengths)  # (B, H)
        b = z.shape[0]
        x = self.stem(torch.cat([z, e], dim=1)).view(b, -1, 4, 4)  # (B, C, 4, 4)
        x = nn.functional.silu(self.stem_norm(x, e))
        where = self.caption_map(e).view(b, -1, 4, 4)  # (B, M, 4, 4)
        for conv, norm in zip(self.convs, self.norms):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
            m = nn.functional.interpolate(where, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = nn.functional.silu(norm(conv(torch.cat([x, m], dim=1)), e))  # (B, C', 2H, 2W)
        return self.out(x)  # (B, 3, S, S), the mean in [-1, 1] units (unclipped)


class ConditionalEncoder(nn.Module):
    """q(z|x, c): images ``(B, 3, S, S)`` in ``[-1, 1]`` and their captions -> ``(mu, logvar)``, ``(B, L)`` each."""

    def __init__(self, cfg: ImagineConfig, vocab_size: int):
        super().__init__()
        self.text = TextEncoder(vocab_size=vocab_size, word_dim=cfg.word_dim, text_dim=cfg.text_dim)
        layers: list[nn.Module] = []
        c_in, c = 3, cfg.d_channels
        for _ in range(num_stages(cfg.image_size)):
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), _group_norm(c), nn.SiLU()]
            c_in, c = c, 2 * c
        self.convs = nn.Sequential(*layers)  # (B, c_in, 4, 4)
        self.head = nn.Sequential(nn.Linear(c_in * 16 + cfg.text_dim, 4 * cfg.d_channels), nn.SiLU(),
                                  nn.Linear(4 * cfg.d_channels, 2 * cfg.latent_dim))

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.cat([self.convs(images).flatten(1), self.text(tokens, lengths)], dim=1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)


class CVAE(nn.Module):
    """Encoder and decoder as one module (one DDP wrapper); ``forward`` returns the per-image loss terms.

    ``recon_nll = -log p(x|z, c)`` of the 8-bit images (discretized Gaussian,
    the decoder's learned shared std; one reparameterised z), ``kl`` in
    closed form, ``loss = recon_nll + kl_weight * kl``, averaged over the
    batch, in nats per image.
    """

    def __init__(self, encoder: ConditionalEncoder, decoder: ConditionalDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor, eps: Tensor, *,
                kl_weight: float) -> dict[str, Tensor]:
        mu, logvar = self.encoder(images, tokens, lengths)
        z = mu + eps * torch.exp(0.5 * logvar)
        mean = self.decoder(z, tokens, lengths).float()
        log_std = self.decoder.log_std.clamp_min(MIN_LOG_STD)
        x01, mean01 = (images.float() + 1) / 2, (mean + 1) / 2  # the likelihood's units: [0, 1]
        recon = -losses.sum_per_image(losses.discretized_gaussian_log_prob(x01, mean01, log_std)).mean()
        kl = losses.gaussian_kl(mu.float(), logvar.float()).mean()
        return {"loss": recon + kl_weight * kl, "recon_nll": recon, "kl": kl}


def build_parts(cfg: ImagineConfig, vocab_size: int) -> dict[str, nn.Module]:
    """Every part a model folder holds, with random weights: generator, its EMA copy and the discriminator
    (``gan``) or the encoder (``cvae``, whose generator is the decoder)."""
    if cfg.kind == "cvae":
        return {"generator": ConditionalDecoder(cfg, vocab_size), "generator_ema": ConditionalDecoder(cfg, vocab_size),
                "encoder": ConditionalEncoder(cfg, vocab_size)}
    return {"generator": ConditionalGenerator(cfg, vocab_size), "generator_ema": ConditionalGenerator(cfg, vocab_size),
            "discriminator": ProjectionDiscriminator(cfg, vocab_size)}


@torch.no_grad()
def imagine(generator: nn.Module, tokens: Tensor, lengths: Tensor, n: int, seed: int, *,
            batch_size: int = 256) -> Tensor:
    """``n`` images per caption: uint8 ``(B, n, S, S, 3)``.

    The noise of caption ``i``'s ``j``-th image is the ``i * n + j``-th draw of
    one generator seeded with ``seed``: the same call gives the same bytes.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(tokens.shape[0] * n, generator.latent_dim, generator=rng)  # (B*n, L)
    rows = torch.arange(tokens.shape[0]).repeat_interleave(n)  # (B*n,)
    out = []
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        x = generator(z[start : start + batch_size].to(device), tokens[idx].to(device), lengths[idx])
        out.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
    generator.train(was_training)
    size = generator.image_size
    return torch.cat(out).reshape(tokens.shape[0], n, size, size, 3)


__all__ = ["CVAE", "CaptionError", "ConditionalDecoder", "ConditionalEncoder", "ConditionalGenerator", "FiLMGroupNorm", "FiLMBatchNorm", "ProjectionDiscriminator", "TextEncoder",
           "VALUE_RANGE", "build_parts", "encode_captions", "imagine"]
