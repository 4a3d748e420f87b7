"""components.metrics.generative: FID, KID, precision/recall, Inception Score, feature networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.metrics import generative as gm


def _gaussian(n: int, d: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
    x = _gaussian(500)
    assert gm.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # a mean shift of 1 in each of 16 dimensions adds |mu_a - mu_b|^2 = 16
    shifted = gm.frechet_distance(x, x + 1.0)
    assert shifted == pytest.approx(16.0, rel=1e-6)
    assert gm.frechet_distance(x, _gaussian(500, seed=1, shift=0.5)) > 2.0


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    # FID = |mu|^2 + sum (s_a + s_b - 2 sqrt(s_a s_b)) for diagonal covariances
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) * 2 + 1
    ca, cb = np.var(a, axis=0, ddof=1), np.var(b, axis=0, ddof=1)
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(ca + cb - 2 * np.sqrt(ca * cb))
    # off-diagonal sample covariances are small but not zero: agree to 1 %
    assert gm.frechet_distance(a, b) == pytest.approx(want, rel=1e-2)


def test_kid_is_near_zero_on_two_halves_of_one_set_and_positive_when_shifted():
    x = _gaussian(800)
    kid, std = gm.kernel_inception_distance(x[:400], x[400:], num_subsets=20, subset_size=200)
    far, _ = gm.kernel_inception_distance(x[:400], x[400:] + 1.0, num_subsets=20, subset_size=200)
    assert abs(kid) < 0.05 and std >= 0
    assert far > 1.0 > 20 * abs(kid)


def test_precision_recall_sanity():
    x = _gaussian(300, d=4)
    same = gm.precision_recall(x[:150], x[150:], k=3)
    assert min(same) > 0.8
    far = gm.precision_recall(x, x + 100.0, k=3)
    assert far == (0.0, 0.0)
    # fakes collapsed onto one real point: high precision, low recall
    collapsed = np.repeat(x[:1], 50, axis=0) + 1e-6 * _gaussian(50, d=4, seed=2)
    precision, recall = gm.precision_recall(x, collapsed, k=3)
    assert precision == 1.0 and recall < 0.1


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(100) % 10] * 50  # each class equally, each image certain
    assert gm.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    assert gm.inception_score(np.zeros((100, 10)), splits=1)[0] == pytest.approx(1.0)


def _images(n: int, seed: int, colour_shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, size=(n, 32, 32, 3)).astype(np.int64)
    images[:, 8:24, 8:24, 0] += 100 + colour_shift
    return np.clip(images, 0, 255).astype(np.uint8)


def test_in_domain_network_is_deterministic_and_labelled(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no Inception weights here
    net = gm.feature_network("auto", seed=0, input_size=32)
    assert net.name.startswith("in_domain:") and not net.is_inception
    images = _images(8, 0)
    a, logits = net(images)
    b, _ = gm.feature_network("in_domain", seed=0, input_size=32)(images)
    assert logits is None and a.shape == (8, 256)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        gm.feature_network("inception")


def test_generative_scores_on_images(monkeypatch, tmp_path):
    net = gm.in_domain_network(seed=0, input_size=32)
    real = _images(64, 0)
    scores = gm.generative_scores(net, real, _images(64, 1), kid_subsets=5, kid_subset_size=32)
    shifted = gm.generative_scores(net, real, _images(64, 1, colour_shift=-100), kid_subsets=5, kid_subset_size=32)
    assert shifted["fid"] > 1.5 * scores["fid"] and shifted["kid"] > scores["kid"]
    assert scores["inception_score"] is None and scores["n_real"] == scores["n_fake"] == 64
    assert scores["feature_network"] == net.name


def test_fid_inception_loads_its_weights_file(tmp_path, monkeypatch):
    """The FID Inception variant rebuilds from a state_dict file found in the hub cache."""
    torch.manual_seed(0)
    state = gm.fid_inception().state_dict()
    # the saved file has torchvision's keys (no wrapper in the names), as pytorch-fid's file does
    state = {k.replace("branch_pool.inner.", "branch_pool."): v for k, v in state.items()}
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    net = gm.feature_network("auto")
    assert net.is_inception and net.name == "inception:pt_inception-2015-12-05"
    feats, logits = net(_images(2, 0), batch_size=2)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
