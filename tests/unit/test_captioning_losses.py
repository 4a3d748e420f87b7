"""Caption losses, checked by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from components.captioning.losses import LossConfig, caption_loss, doubly_stochastic_penalty, masked_cross_entropy
from components.captioning.models import CaptionOutput


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# one caption, 3 target steps, vocabulary of 4; the last target is padding
LOGITS = torch.tensor([[[2.0, 0.0, 1.0, -1.0], [0.5, 0.5, 3.0, 1.0], [9.0, -9.0, 9.0, 1.0]]])
TARGETS = torch.tensor([[2, 1, 0]])


def log_softmax(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(x) for x in row))
    return [x - z for x in row]


def test_masked_cross_entropy_by_hand():
    lp0, lp1 = log_softmax([2.0, 0.0, 1.0, -1.0]), log_softmax([0.5, 0.5, 3.0, 1.0])
    expected = (-lp0[2] - lp1[1]) / 2  # the pad target (3rd step) carries no loss
    got = masked_cross_entropy(LOGITS, TARGETS, pad_id=0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_by_hand():
    eps = 0.1
    rows = [log_softmax([2.0, 0.0, 1.0, -1.0]), log_softmax([0.5, 0.5, 3.0, 1.0])]
    per_token = [(1 - eps) * -lp[y] + eps * sum(-x for x in lp) / 4 for lp, y in zip(rows, [2, 1])]
    got = masked_cross_entropy(LOGITS, TARGETS, pad_id=0, label_smoothing=eps)
    assert got.item() == pytest.approx(sum(per_token) / 2, rel=1e-6)
    assert got.item() != pytest.approx(masked_cross_entropy(LOGITS, TARGETS).item(), rel=1e-3)


def test_all_padding_gives_zero_not_nan():
    assert masked_cross_entropy(LOGITS, torch.zeros_like(TARGETS)).item() == 0.0


def test_doubly_stochastic_penalty_by_hand():
    alphas = torch.tensor([
        [[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]],
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
    ])  # (B=2, T=3, P=2)
    # no mask: sum_t alpha = [1.75, 1.25] and [2, 1] -> (0.5625 + 0.0625) and (1 + 0)
    assert doubly_stochastic_penalty(alphas).item() == pytest.approx((0.625 + 1.0) / 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # masked: [0.75, 1.25] -> 0.0625 + 0.0625; [1, 0] -> 0 + 1
    assert doubly_stochastic_penalty(alphas, mask).item() == pytest.approx((0.125 + 1.0) / 2)


def test_caption_loss_combines_terms():
    tokens = torch.tensor([[1, 2, 1, 0]])  # targets = TARGETS
    alphas = torch.tensor([[[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]]])
    cfg = LossConfig(label_smoothing=0.1, attention_penalty=0.5)
    terms = caption_loss(CaptionOutput(LOGITS, alphas), tokens, cfg=cfg)
    ce = masked_cross_entropy(LOGITS, TARGETS, label_smoothing=0.1)
    penalty = 0.0625 + 0.0625
    assert terms["loss"].item() == pytest.approx(ce.item() + 0.5 * penalty, rel=1e-6)
    assert terms["attention_penalty"].item() == pytest.approx(penalty)
    assert terms["nll"].item() == pytest.approx(masked_cross_entropy(LOGITS, TARGETS).item(), rel=1e-6)
    assert terms["num_tokens"].item() == 2
    plain = caption_loss(CaptionOutput(LOGITS, None), tokens, cfg=LossConfig())
    assert plain["attention_penalty"].item() == 0.0
    assert plain["loss"].item() == pytest.approx(plain["nll"].item())
    with pytest.raises(ValueError):
        LossConfig(label_smoothing=1.0)
