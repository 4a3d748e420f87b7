"""DCGAN generator and discriminator (Radford et al. 2016), sized by image side.

Data convention: the generator outputs ``tanh`` images in ``[-1, 1]`` and the
discriminator reads that range (``ImageTensorDataset(value_range=(-1, 1))``);
:meth:`Generator.generate` maps back to ``[0, 1]`` for sampling utilities.

Layout for side ``S = 4 * 2**n`` (n = 3 for 32 px, 4 for 64 px):

* G: ``z (B, L)`` -> ConvT(4, stride 1) to ``(g * 2**(n-1), 4, 4)`` -> n - 1
  ConvT(4, stride 2) + BN + ReLU stages halving channels -> ConvT to 3 channels
  + tanh. At 64 px with ``g = 64`` this is the paper's generator exactly.
* D: Conv(4, stride 2) + LeakyReLU(0.2) without norm, n - 1 Conv + norm +
  LeakyReLU stages doubling channels, a final 4x4 conv to one logit ``(B,)``.

The discriminator's normalisation is a registry (:data:`D_NORMS`): ``batch``
(the DCGAN default), ``layer`` (``GroupNorm(1, C)``: per-example over C, H, W,
as Gulrajani et al. 2017 recommend for the critic), ``instance`` or ``none``.
With a gradient penalty the config refuses ``batch``: the penalty is a
per-example gradient norm, which batch statistics make ill-defined
(Gulrajani et al. 2017, section 4). ``spectral_norm`` wraps every
discriminator conv in ``torch.nn.utils.parametrizations.spectral_norm``
(Miyato et al. 2018); it is usually paired with ``d_norm: none``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from components.generative.vae import num_stages

D_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "layer": lambda c: nn.GroupNorm(1, c),
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "none": lambda c: nn.Identity(),
}


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0.

    Radford et al. 2016, section 4. Apply with ``model.apply(dcgan_init_)``.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """DCGAN generator ``z (B, L) -> images (B, 3, S, S)`` in ``[-1, 1]``.

    Args:
        image_size: S, a power of two (32 or 64).
        latent_dim: L.
        channels: Channels of the last hidden stage (the paper's ``ngf``).
    """

    value_range = (-1.0, 1.0)

    def __init__(self, *, image_size: int, latent_dim: int, channels: int):
        super().__init__()
        self.image_size = image_size
        self.latent_dim = latent_dim
        n = num_stages(image_size)
        c = channels * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, c, 4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, z: Tensor) -> Tensor:
        """``z (B, L)`` -> ``(B, 3, S, S)`` in ``[-1, 1]``."""
        return self.net(z[:, :, None, None])  # (B, L, 1, 1) -> (B, 3, S, S)

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """Images in ``[0, 1]`` for the sampling utilities: ``(B, L) -> (B, 3, S, S)``."""
        return (self(z) + 1.0) / 2.0


class Discriminator(nn.Module):
    """DCGAN discriminator (critic) ``(B, 3, S, S)`` in ``[-1, 1]`` -> logits ``(B,)``.

    Args:
        image_size: S, a power of two (32 or 64).
        channels: Channels of the first stage (the paper's ``ndf``).
        norm: Key of :data:`D_NORMS`.
        spectral_norm: Spectrally normalise every conv (Miyato et al. 2018).
    """

    def __init__(self, *, image_size: int, channels: int, norm: str, spectral_norm: bool):
        super().__init__()
        make_norm = D_NORMS[norm]
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        n = num_stages(image_size)
        c = channels
        layers: list[nn.Module] = [wrap(nn.Conv2d(3, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        for _ in range(n - 1):
            layers += [wrap(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), make_norm(2 * c),
                       nn.LeakyReLU(0.2)]
            c *= 2
        layers.append(wrap(nn.Conv2d(c, 1, 4, stride=1, padding=0)))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        if not spectral_norm:  # spectral norm rescales the weights anyway
            self.apply(dcgan_init_)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> logits ``(B,)``."""
        return self.net(x).flatten()
