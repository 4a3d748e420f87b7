"""The divergence guard every training loop calls on its step losses."""

from __future__ import annotations

import pytest
import torch

from components.train.guard import NonFiniteLossError, TrainingDivergedError, check_finite, guard


def test_check_finite_names_term_and_step():
    check_finite({"loss": 1.0, "kl": torch.tensor(0.5)}, step=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite kl = nan at step 12") as info:
        check_finite({"loss": 1.0, "kl": float("nan")}, step=12)
    assert info.value.term == "kl" and info.value.step == 12
    with pytest.raises(NonFiniteLossError, match="d_loss = inf at step 0"):
        check_finite({"d_loss": torch.tensor(float("inf"))}, step=0)


def test_guard_names_the_epoch_and_the_last_good_checkpoint():
    guard({"loss": 0.5}, step=4, epoch=1, last_good_epoch=0)
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss = nan at step 4 \(epoch 2\): training stopped; "
                                                    r"last good checkpoint: epoch 1$"):
        guard({"loss": float("nan")}, step=4, epoch=2, last_good_epoch=1)
    with pytest.raises(TrainingDivergedError, match=r"last good checkpoint: none \(no epoch completed\)"):
        guard({"loss": float("-inf")}, step=0, epoch=0, last_good_epoch=-1)
