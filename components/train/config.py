"""The params group every training stage shares: ``train_<family>.scaling`` (Ray Train workers).

A leaf module (no torch), like the families' own params classes, so that
loading ``params.yaml`` imports no training code.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.config import ConfigError


Precision = Literal["auto", "bf16", "fp32"]
"""The ``precision`` param of every training group (and ``features``): bf16 autocast where the
hardware runs it fast (``auto``), always (``bf16``) or never (``fp32``); see
:mod:`components.train.precision`."""


@dataclasses.dataclass(frozen=True)
class ScalingParams:
    """Ray Train scaling of a training stage (``<stage>.scaling``)."""

    num_workers: int
    use_gpu: bool | None  # None: when the cluster has GPUs
    max_failures: int

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers must be >= 1, got {self.num_workers}")


__all__ = ["Precision", "ScalingParams"]
