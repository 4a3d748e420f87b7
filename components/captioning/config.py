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
AttentionKind = Literal["additive", "dot"]


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
    grid_stride: int
    grid_self_attention: int
    attention: AttentionKind

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
    grid_shift: int  # augmentation: each training grid moved by up to this many cells (train.shift_grids); 0: off
    early_stopping_patience: int  # epochs without a better val CIDEr; 0: never stop early
    seed: int
    precision: Precision  # bf16 autocast: auto (where the hardware has it) | bf16 | fp32
    threads_per_worker: int  # torch intra-op threads (Ray sets 1 by default)
    fail_at_epoch: int  # failure injection for fault-tolerance tests; -1: off

    def __post_init__(self) -> None:
        check_choices(self)
        if self.length_buckets < 0:
            raise ConfigError(f"train_captioner.train.length_buckets must be >= 0, got {self.length_buckets}")
        if self.grid_shift < 0:
            raise ConfigError(f"train_captioner.train.grid_shift must be >= 0, got {self.grid_shift}")


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


# the baselines of ``scst.BASELINES`` (tested to agree); the reward is any name of the rewards registry
# (``rewards.REWARDS``, open to new ones: checked when the loop builds it)
Baseline = Literal["greedy", "mean"]


@dataclasses.dataclass(frozen=True)
class SCSTTrainParams:
    """Self-critical fine-tuning keys of ``params.yaml`` (``finetune_captioner.train``)."""

    epochs: int
    batch_size: int  # images per step; each gets samples_per_image sampled captions
    samples_per_image: int  # K
    lr: float
    reward: str  # a name of components.captioning.rewards.REWARDS: cider_d | scene | mix | a registered one
    mix_weight: float  # lambda of reward mix: lambda * cider_d / cider_scale + (1 - lambda) * scene
    cider_scale: float
    baseline: Baseline
    entropy_weight: float  # loss - entropy_weight * mean entropy of the sampling distributions (0: off)
    temperature: float  # of the sampling distribution (1: the model's own)
    max_length: int  # tokens sampled per caption, <end> included; 0: the vocabulary's caption length + 1
    grad_clip: float  # 0: no clipping
    seed: int
    precision: Precision
    threads_per_worker: int
    fail_at_epoch: int  # failure injection for fault-tolerance tests; -1: off

    def __post_init__(self) -> None:
        check_choices(self)
        where = "finetune_captioner.train"
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"{where}: epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.samples_per_image < 1 or (self.baseline == "mean" and self.samples_per_image < 2):
            raise ConfigError(f"{where}.samples_per_image must be >= 1 (>= 2 with baseline 'mean'), got "
                              f"{self.samples_per_image}")
        if self.lr <= 0 or self.temperature <= 0 or self.cider_scale <= 0:
            raise ConfigError(f"{where}: lr, temperature and cider_scale must be > 0")
        if not 0.0 <= self.mix_weight <= 1.0:
            raise ConfigError(f"{where}.mix_weight must be in [0, 1], got {self.mix_weight}")
        if self.entropy_weight < 0 or self.grad_clip < 0 or self.max_length < 0:
            raise ConfigError(f"{where}: entropy_weight, grad_clip and max_length must be >= 0")


@dataclasses.dataclass(frozen=True)
class SCSTParams:
    """``finetune_captioner`` stage: the cross-entropy captioner → fine-tuned by self-critical sequence training."""

    train: SCSTTrainParams
    decode: DecodeParams
    scaling: ScalingParams
