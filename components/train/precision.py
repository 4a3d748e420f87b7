"""Which float precision a stage computes in: the ``precision`` param of every training group
and of ``features``.

``auto`` (the default) uses bfloat16 autocast where the hardware runs it fast: a CUDA GPU
with bf16 support, or a CPU with AMX or AVX-512 BF16 (``lscpu``: ``amx_bf16``,
``avx512_bf16``); elsewhere float32. ``bf16`` forces autocast (a CPU without those units
emulates it, slowly); ``fp32`` turns it off. Autocast covers the forward passes; losses,
optimiser state, weights, metric sums and FID statistics stay float32 (each loop casts its
loss inputs with ``.float()``). The resolved choice is recorded with the run
(``bf16_autocast`` per epoch; ``precision`` in ``metrics/train_<family>.json`` and the MLflow
tag ``capsynth.precision``; ``compute.precision`` in the features' ``meta.json``).

Measured on this project's 2-core CPU (``bench.captioner train --precision``,
``bench.generative --precision``, ``bench.features --precision``; README §Speed).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from components.train.config import Precision

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has AMX or AVX-512 BF16 units (Linux: the flags of ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def resolve(precision: Precision, device: torch.device | str) -> Literal["bf16", "fp32"]:
    """The precision ``precision`` means on ``device``: ``bf16`` or ``fp32``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto | bf16 | fp32, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast_dtype(precision: Precision, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: ``torch.bfloat16``, or None (float32)."""
    return torch.bfloat16 if resolve(precision, device) == "bf16" else None


def memory_format(channels_last: bool) -> torch.memory_format:
    """The memory format of the ``channels_last`` param of the image loops (VAE, GAN, imagine).

    Channels-last is the same arithmetic in another layout (NHWC): oneDNN's and cuDNN's
    convolutions often run faster on it. Whether it pays depends on the model, the precision and
    the CPU, so it is a param of each loop, measured with ``bench.generative --channels-last``
    (README §Speed). Weights, optimiser state and checkpoints keep the layout the model has;
    a saved model loads into a model of either layout (``load_state_dict`` copies the values).
    """
    return torch.channels_last if channels_last else torch.contiguous_format


__all__ = ["Precision", "autocast_dtype", "cpu_has_fast_bf16", "memory_format", "resolve"]
