"""Exponential moving average of a model's weights (for the GAN generator).

Averaging the generator's iterates gives markedly better samples than the last
iterate (Yazici et al. 2019, "The unusual effectiveness of averaging in GAN
training"; Karras et al. 2018/2019 sample from such an average).

BatchNorm caveat: the average's running statistics are copied from the live
generator, whose weights differ from the averaged ones. Before sampling or
saving, :func:`recalibrate_batchnorm` recomputes them for the averaged weights
("standing statistics", Brock et al. 2019, BigGAN appendix C.1).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from components.generative.common import unwrap


class EMA:
    """A frozen copy of a model whose weights follow an exponential moving average.

    After each :meth:`update`: ``ema = decay * ema + (1 - decay) * current``
    for every floating-point parameter; buffers (BatchNorm running statistics)
    are copied from the current model, not averaged.

    Args:
        model: The model to track (a DDP wrapper is unwrapped); it is
            deep-copied, so the copy starts equal to it.
        decay: Weight of the old average, in ``[0, 1)``; 0.999 is common.

    Attributes:
        module: The averaged copy (eval mode, no gradients): sample from it.
        num_updates: How many times :meth:`update` ran.
    """

    def __init__(self, model: nn.Module, *, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        current = unwrap(model)
        params = dict(current.named_parameters())
        for name, p_ema in self.module.named_parameters():
            p_ema.lerp_(params[name].detach(), 1.0 - self.decay)  # d * ema + (1 - d) * p
        buffers = dict(current.named_buffers())
        for name, b_ema in self.module.named_buffers():
            b_ema.copy_(buffers[name])
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """For training checkpoints: decay, update count and the averaged weights."""
        return {"decay": self.decay, "num_updates": self.num_updates,
                "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["module"])


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, *, num_batches: int = 16, batch_size: int = 64,
                          seed: int = 0) -> nn.Module:
    """Recompute a generator's BatchNorm running statistics from its own samples.

    Resets every BatchNorm layer and runs ``num_batches`` batches of prior
    samples in train mode with a cumulative average (``momentum=None``), so the
    running statistics become the mean of the per-batch statistics of *these*
    weights (Brock et al. 2019, "standing statistics"). A no-op without
    BatchNorm. Call it on ``ema.module`` after the last update (the next
    :meth:`EMA.update` copies the live generator's statistics back).

    Args:
        generator: A module with ``latent_dim`` taking ``z (B, L)``.
        num_batches: Batches to average.
        batch_size: Latents per batch (train-mode statistics depend on it;
            use the training batch size).
        seed: Seed of the latents (CPU generator).

    Returns:
        nn.Module: ``generator``, modified in place, its mode restored.
    """
    generator = unwrap(generator)
    norms = [m for m in generator.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return generator
    momenta = [m.momentum for m in norms]
    was_training = generator.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    generator.train()
    try:
        for _ in range(num_batches):
            generator(torch.randn(batch_size, generator.latent_dim, generator=rng).to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        generator.train(was_training)
    return generator
