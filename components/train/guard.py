"""The divergence guard of every training loop: a NaN or infinite loss stops the run at once.

A loop calls :func:`guard` on each train step's losses. The first non-finite
term raises :class:`TrainingDivergedError`, naming the term, the step, the
epoch and the last epoch whose checkpoint is good, so the stage can say where
to look (``dvc repro`` after a fix resumes nothing: a code change is a new run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; names the term and the step."""

    def __init__(self, term: str, step: int, value: float):
        super().__init__(f"non-finite {term} = {value} at step {step}")
        self.term = term
        self.step = step
        self.value = value


class TrainingDivergedError(FloatingPointError):
    """A loss went NaN or infinite; the message says where and which checkpoint is the last good one."""


def check_finite(metrics: Mapping[str, float | torch.Tensor], step: int) -> None:
    """Raise if any metric is NaN or +-inf.

    Args:
        metrics: Name -> scalar (float or 0-d tensor), e.g. a train step's output.
        step: The step the metrics come from, for the message.

    Raises:
        NonFiniteLossError: For the first non-finite term, naming it and ``step``.
    """
    for term, value in metrics.items():
        v = float(value)
        if not math.isfinite(v):
            raise NonFiniteLossError(term, step, v)


def guard(metrics: Mapping[str, float | torch.Tensor], *, step: int, epoch: int, last_good_epoch: int) -> None:
    """:func:`check_finite`, raised as :class:`TrainingDivergedError` with the epoch and the last good checkpoint.

    Args:
        metrics: The losses of one train step.
        step: Its step (per epoch or global, as the loop counts).
        epoch: The epoch being trained.
        last_good_epoch: The last epoch checkpointed (-1: none yet).
    """
    try:
        check_finite(metrics, step)
    except NonFiniteLossError as err:
        kept = f"epoch {last_good_epoch}" if last_good_epoch >= 0 else "none (no epoch completed)"
        raise TrainingDivergedError(f"{err} (epoch {epoch}): training stopped; last good checkpoint: {kept}") from None


__all__ = ["NonFiniteLossError", "TrainingDivergedError", "check_finite", "guard"]
