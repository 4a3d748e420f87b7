"""Self-critical sequence training: the advantage and the policy-gradient loss.

For K captions sampled per image (multinomial, temperature 1) with rewards
``r_ik``, the loss is ``-mean_ik (r_ik - b_ik) * sum_t log p(w_ikt)``, the
REINFORCE estimate of the expected reward's gradient with a baseline ``b``
that does not depend on the sample (so the estimate stays unbiased):

``greedy``  ``b_ik`` = the reward of the image's greedy caption (Rennie et
            al. 2017): a sample is pushed up when it beats what the model
            would output at test time.
``mean``    ``b_ik`` = the mean reward of the image's *other* K - 1 samples
            (Luo 2020, "a better variant of SCST"): no extra decode, and
            lower variance than greedy for K >= 4.

Rewards and baselines come in as plain arrays (computed without gradients);
only the log-probabilities carry gradients.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BASELINES = ("greedy", "mean")


def advantages(rewards: np.ndarray, *, baseline: str, greedy: np.ndarray | None = None) -> np.ndarray:
    """``(B, K)`` rewards minus the baseline.

    Args:
        rewards: ``(B, K)`` rewards of K samples for each of B images.
        baseline: ``greedy`` or ``mean`` (module doc).
        greedy: ``(B,)`` rewards of the greedy captions (``greedy`` only).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (images, samples), got shape {rewards.shape}")
    if baseline == "greedy":
        if greedy is None or np.shape(greedy) != rewards.shape[:1]:
            raise ValueError(f"baseline 'greedy' needs one greedy reward per image, shape ({rewards.shape[0]},)")
        return rewards - np.asarray(greedy, dtype=np.float64)[:, None]
    if baseline == "mean":
        k = rewards.shape[1]
        if k < 2:
            raise ValueError("baseline 'mean' needs at least 2 samples per image")
        others = (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)
        return rewards - others
    raise ValueError(f"unknown baseline '{baseline}'; known: {', '.join(BASELINES)}")


def policy_loss(token_logprobs: Tensor, mask: Tensor, advantage: Tensor) -> Tensor:
    """``-mean_i advantage_i * sum_t mask_it * log p_it``.

    Args:
        token_logprobs: ``(N, T)`` log-probability of each sampled token (with gradients).
        mask: ``(N, T)`` 1 for the tokens of the sample (its end token included), 0 after.
        advantage: ``(N,)`` advantages (no gradients).
    """
    sequence_logprob = (token_logprobs * mask).sum(dim=1)
    return -(advantage.detach().to(sequence_logprob.dtype) * sequence_logprob).mean()


def entropy_bonus(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean per-token entropy of the sampling distributions over the masked steps (an optional guard).

    Args:
        logits: ``(N, T, V)`` the decoder's logits at each sampled step; ``-inf`` for banned ids
            (they have probability 0 and add nothing, nor a NaN gradient).
        mask: ``(N, T)`` as for :func:`policy_loss`.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    finite_logp = logp.masked_fill(torch.isinf(logp), 0.0)  # 0 * -inf would be NaN, in the value and the gradient
    entropy = -(logp.exp() * finite_logp).sum(dim=-1)  # (N, T)
    return (entropy * mask).sum() / mask.sum().clamp_min(1)
