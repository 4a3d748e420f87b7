"""components.captioning.scst: baselines, the policy-gradient loss and its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.captioning import scst


def test_greedy_baseline_subtracts_the_images_greedy_reward():
    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.5, 1.0]])
    got = scst.advantages(rewards, baseline="greedy", greedy=np.array([2.0, 0.0]))
    np.testing.assert_array_equal(got, [[-1.0, 0.0, 1.0], [0.0, 0.5, 1.0]])


def test_mean_baseline_is_the_mean_of_the_other_samples_and_sums_to_zero_per_image():
    rewards = np.array([[1.0, 2.0, 3.0, 6.0]])
    got = scst.advantages(rewards, baseline="mean")
    np.testing.assert_allclose(got, [[1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3]])
    np.testing.assert_allclose(got.sum(axis=1), 0.0, atol=1e-12)  # K/(K-1) (r - mean r) sums to 0


def test_bad_baselines_are_named():
    with pytest.raises(ValueError, match="needs one greedy reward per image"):
        scst.advantages(np.zeros((2, 3)), baseline="greedy")
    with pytest.raises(ValueError, match="at least 2 samples"):
        scst.advantages(np.zeros((2, 1)), baseline="mean")
    with pytest.raises(ValueError, match="unknown baseline 'max'"):
        scst.advantages(np.zeros((2, 3)), baseline="max")


def test_policy_gradient_raises_the_logprob_of_a_sample_with_positive_advantage():
    logits = torch.zeros(2, 3, 4, requires_grad=True)  # 2 samples, 3 steps, vocab 4
    tokens = torch.tensor([[1, 2, 0], [3, 3, 0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # the 2nd sample ends after 1 token
    logp = torch.log_softmax(logits, -1).gather(2, tokens[..., None]).squeeze(-1)
    loss = scst.policy_loss(logp, mask, torch.tensor([1.0, -1.0]))
    # uniform over 4: each masked token has log p = log 1/4
    assert loss.item() == pytest.approx(-(1.0 * 2 * np.log(0.25) - 1.0 * np.log(0.25)) / 2)
    loss.backward()
    grad = logits.grad
    assert grad[0, 0, 1] < 0 and grad[1, 0, 3] > 0  # descent raises sample 0's tokens, lowers sample 1's
    assert torch.all(grad[0, 2] == 0) and torch.all(grad[1, 1:] == 0)  # masked steps get nothing


def test_entropy_of_uniform_logits_is_log_vocab():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert scst.entropy_bonus(torch.zeros(1, 3, 8), mask).item() == pytest.approx(np.log(8))
