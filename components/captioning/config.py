"""The caption family's params groups: ``train_captioner`` and its ``model``, ``train``, ``decode`` parts.

A leaf module (no torch, no model code), so that loading ``params.yaml``
imports no training code: a stage's code identity
(:mod:`components.fingerprint`) and DVC deps stay its own.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.config import ConfigError, check_choices
from components.train.config import Precision, ScalingParams


# names of the model registries (``models.MODELS``, ``models.CELLS``, tested to agree), here so
# that this module imports no model code
Architecture = Literal["show_tell", "show_attend_tell"]
Cell = Literal["lstm", "gru"]


@dataclasses.dataclass(frozen=True)
class CaptionerModelParams:
    """The architecture keys of ``params.yaml``; the data supplies the rest."""

    architecture: Architecture
    cell: Cell
    embed_dim: int
    hidden_dim: int
    num_layers: int
    dropout: float
    attention_dim: int
    grid_layers: int
    position_embedding: bool

    def __post_init__(self) -> None:
        check_choices(self)


@dataclasses.dataclass(frozen=True)
class CaptionerTrainParams:
    """Optimisation keys of ``params.yaml`` (``train_captioner.train``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_schedule: Literal["constant", "cosine", "step"]
    grad_clip: float  # 0: no clipping
    label_smoothing: float
    attention_penalty: float  # lambda of Xu et al. 2015 eq. 14
    scheduled_sampling: float  # final probability, ramped linearly from 0 (Bengio et al. 2015)
    length_buckets: int  # batches per length bucket (LengthBucketBatches); 0: plain shuffled batches
    early_stopping_patience: int  # epochs without a better val CIDEr; 0: never stop early
    seed: int
    precision: Precision  # bf16 autocast: auto (where the hardware has it) | bf16 | fp32
    threads_per_worker: int  # torch intra-op threads (Ray sets 1 by default)
    fail_at_epoch: int  # failure injection for fault-tolerance tests; -1: off

    def __post_init__(self) -> None:
        check_choices(self)
        if self.length_buckets < 0:
            raise ConfigError(f"train_captioner.train.length_buckets must be >= 0, got {self.length_buckets}")


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    """How captions are generated for the predictions and metrics."""

    beam_size: int
    length_penalty: float

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"decode.beam_size must be >= 1, got {self.beam_size}")


@dataclasses.dataclass(frozen=True)
class CaptionerParams:
    """``train_captioner`` stage: cached features + captions → a caption model."""

    model: CaptionerModelParams
    train: CaptionerTrainParams
    decode: DecodeParams
    scaling: ScalingParams
