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


def _pytorch_fid(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's ``calculate_frechet_distance``, written out: ``sqrtm`` of ``S_a S_b``."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b).real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [2, 16, 64])
def test_fid_equals_the_pytorch_fid_formula(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(600, d)) @ rng.normal(size=(d, d))  # correlated features
    b = rng.normal(size=(500, d)) @ rng.normal(size=(d, d)) + 0.3
    want = _pytorch_fid(a, b)
    assert gm.frechet_distance(a, b) == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_fid_with_fewer_samples_than_dimensions_is_finite_and_real():
    # rank-deficient covariances: sqrtm of their product is ill-defined; the eigenvalue form is not
    a, b = _gaussian(20, d=64), _gaussian(20, d=64, seed=1, shift=0.2)
    fid = gm.frechet_distance(a, b)
    assert np.isfinite(fid) and fid > 0
    assert gm.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


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


def test_inception_score_equals_the_reference_formula():
    """torch-fidelity's ``isc``: exp(mean_x sum_y p(y|x) (log p(y|x) - log mean_x' p(y|x'))) per fold."""
    logits = np.random.default_rng(0).normal(scale=3.0, size=(200, 12))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = []
    for fold in np.split(p, 4):
        kl = (fold * (np.log(fold) - np.log(fold.mean(0, keepdims=True)))).sum(1).mean()
        want.append(np.exp(kl))
    mean, std = gm.inception_score(logits, splits=4)
    assert mean == pytest.approx(np.mean(want), rel=1e-9) and std == pytest.approx(np.std(want), rel=1e-9)


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
    state["fc.bias"] = torch.full((1008,), 1e6)  # a bias the Inception Score's logits must leave out
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    net = gm.feature_network("auto")
    assert net.is_inception and net.name == "inception:pt_inception-2015-12-05"
    feats, logits = net(_images(2, 0), batch_size=2)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    # the Inception Score's logits are unbiased: the last layer without its bias
    unbiased = feats @ net.module.fc.weight.detach().double().numpy().T
    assert np.abs(logits - unbiased).max() < 1e4  # float32 rounding of large random logits, far below the bias
