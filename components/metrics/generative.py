"""Generative metrics on image features: FID, KID, improved precision/recall, Inception Score.

The statistics work on any ``(N, D)`` feature arrays; :func:`feature_network`
picks the network that makes them:

``inception``
    Inception-v3 pool features (2048-d) with the standard FID weights,
    ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's port of the
    TensorFlow FID graph), read from ``inception_weights`` or the torch hub
    cache (``torch.hub.get_dir()/checkpoints``); never downloaded. The
    network is torchvision's ``inception_v3`` with pytorch-fid's changes to
    its blocks (average pools that exclude padding; a max pool in the last
    block), images resized to 299 px (bilinear) and scaled to [-1, 1]. Only
    these numbers are "FID" in the usual sense, and only this network gives
    an Inception Score.
``in_domain``
    when those weights are absent: the features stage's seeded random
    ResNet-18 trunk (torchvision init from ``seed``, BatchNorm calibrated on
    seeded noise; :func:`components.features.weights.random_backbone`) up to
    stage 3, global-average pooled (256-d), on images resized to
    ``input_size`` px. Deterministic, offline and sensitive to the colours,
    sizes and shapes of the synthetic scenes, but its numbers are on their
    own scale: they rank models on this data; they are not Inception FID and
    are labelled ``in_domain:<name>``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor, nn
from torchvision.models import inception as tv_inception

from components.features.backbones import get_spec
from components.features.weights import random_backbone

INCEPTION_FILE_PREFIX = "pt_inception-2015-12-05"
IN_DOMAIN_BACKBONE = "resnet18"
IN_DOMAIN_STAGE = 3


# --------------------------------------------------------------------------- statistics


def _as_2d(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {x.shape}")
    return x


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID: ``|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` of two feature sets.

    ``Tr((S_r S_f)^(1/2))`` is computed as the sum of the square roots of the
    eigenvalues of the symmetric ``S_r^(1/2) S_f S_r^(1/2)``, which has the
    same eigenvalues as ``S_r S_f``: two symmetric eigendecompositions instead
    of pytorch-fid's general ``scipy.linalg.sqrtm`` of the non-symmetric
    product. Equal to it where that one is well defined (a test checks 1e-6),
    real and non-negative by construction when a covariance is singular (fewer
    samples than dimensions), where ``sqrtm`` turns complex and pytorch-fid
    adds ``1e-6`` to the diagonals; and no deprecated SciPy arguments.

    Args:
        real: ``(N, D)`` features of real images.
        fake: ``(M, D)`` features of generated images.

    Returns:
        float: the distance (>= 0 up to rounding).
    """
    a, b = _as_2d(real), _as_2d(fake)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eigval_a, eigvec_a = linalg.eigh(cov_a)
    sqrt_a = (eigvec_a * np.sqrt(np.clip(eigval_a, 0.0, None))) @ eigvec_a.T  # S_r^(1/2), symmetric PSD
    inner = linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_covmean = np.sqrt(np.clip(inner, 0.0, None)).sum()
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_covmean, 0.0))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``.

    Averaged over ``num_subsets`` random subsets of ``min(subset_size, N, M)``
    features of each set (as in their code and torch-fidelity).

    Returns:
        tuple[float, float]: the mean and the standard deviation over subsets.
    """
    a, b = _as_2d(real), _as_2d(fake)
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    values = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        mmd = ((k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))) / (m * (m - 1)) - 2 * k_xy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def _kth_neighbour_radii(x: Tensor, k: int) -> Tensor:
    """(N,) distance of each row of ``x`` to its k-th nearest other row."""
    d = torch.cdist(x, x)  # (N, N), zero diagonal
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is its nearest


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points, of radius the
    distance to the point's k-th nearest neighbour in the same set. Precision:
    the share of fake points inside the real manifold (fidelity); recall: the
    share of real points inside the fake manifold (coverage).

    Returns:
        tuple[float, float]: precision, recall, each in [0, 1].
    """
    a = torch.as_tensor(_as_2d(real))
    b = torch.as_tensor(_as_2d(fake))
    if min(len(a), len(b)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set")

    def inside(points: Tensor, centres: Tensor) -> float:
        radii = _kth_neighbour_radii(centres, k)  # (C,)
        return float((torch.cdist(points, centres) <= radii[None, :]).any(dim=1).double().mean())

    return inside(b, a), inside(a, b)


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` folds; mean and std.

    ``logits`` are the classifier's unbiased logits (pool features times the
    last layer's weights, without its bias), as torch-fidelity and torchmetrics
    (``logits_unbiased``) compute them: :meth:`FeatureNetwork.__call__` returns
    those. Folds are consecutive chunks, not shuffled.
    """
    log_p = torch.log_softmax(torch.as_tensor(np.asarray(logits, dtype=np.float64)), dim=1)  # (N, C)
    scores = []
    for part in torch.chunk(log_p, splits):
        log_marginal = torch.logsumexp(part, dim=0, keepdim=True) - math.log(len(part))  # log mean_x p(y|x)
        kl = (part.exp() * (part - log_marginal)).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- feature networks


class _ExcludePadding(nn.Module):
    """Turns a 3x3/stride-1/pad-1 average pool that counted the padding into one that does not.

    torchvision's Inception blocks call ``F.avg_pool2d(..., count_include_pad=True)``
    before ``branch_pool``; the FID graph excludes the padding. Dividing by the
    pooled all-ones map (the share of each window inside the image) converts one
    into the other exactly, so the block's own forward is reused.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, pooled: Tensor) -> Tensor:
        ones = torch.ones_like(pooled[:1, :1])  # (1, 1, H, W)
        return self.inner(pooled / F.avg_pool2d(ones, kernel_size=3, stride=1, padding=1))


class _FIDInceptionE2(tv_inception.InceptionE):
    """The last Inception block as in the FID graph: a max pool in its pool branch."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pool = self.branch_pool(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [self.branch1x1(x), b3, bd, pool]


def fid_inception(state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """torchvision's Inception-v3 (1008 classes, no aux head) changed as in the FID graph.

    Args:
        state_dict: The ``pt_inception-2015-12-05`` weights; None keeps the
            random init (tests only).
    """
    net = tv_inception.inception_v3(weights=None, aux_logits=False, init_weights=state_dict is None,
                                    num_classes=1008, transform_input=False)
    last = _FIDInceptionE2(2048)
    net.Mixed_7c = last
    if state_dict is not None:
        net.load_state_dict(state_dict)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b"):
        block = getattr(net, name)
        block.branch_pool = _ExcludePadding(block.branch_pool)
    return net.eval()


def find_inception_weights(path: str = "") -> Path | None:
    """The FID Inception weights file: ``path`` if given (must exist), else the torch hub cache, else None."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Inception weights file not found: {path}")
        return Path(path)
    found = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{INCEPTION_FILE_PREFIX}*.pth"))
    return found[0] if found else None


@dataclasses.dataclass
class FeatureNetwork:
    """A frozen network that maps uint8 images to feature vectors (and, for Inception, logits).

    Attributes:
        name: ``inception:pt_inception-2015-12-05`` or ``in_domain:<backbone>...``: recorded with every number.
        module: The network (eval mode).
        input_size: Images are resized to this side (bilinear) first.
        is_inception: Whether the numbers are standard Inception FID/KID/IS.
    """

    name: str
    module: nn.Module
    input_size: int
    is_inception: bool

    def _prepare(self, images: np.ndarray) -> Tensor:
        x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x * 2 - 1 if self.is_inception else x

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, 3, S, S) -> pooled features (B, D) and, for Inception, unbiased logits (B, 1008).

        Unbiased: ``features @ fc.weight.T`` without ``fc.bias``, the logits the
        Inception Score references (torch-fidelity, torchmetrics) use.
        """
        if not self.is_inception:
            return self.module.extract(x)[1], None
        net = self.module
        features = torch.flatten(net.avgpool(_inception_trunk(net, x)), 1)  # (B, 2048)
        return features, features @ net.fc.weight.T

    @torch.no_grad()
    def __call__(self, images: np.ndarray, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 ``(N, H, W, 3)`` -> float64 features ``(N, D)`` and logits ``(N, C)`` (Inception) or None."""
        feats, logits = [], []
        for start in range(0, len(images), batch_size):
            device = next(self.module.parameters()).device
            f, lg = self._forward(self._prepare(images[start:start + batch_size]).to(device))
            feats.append(f.double().cpu().numpy())
            if lg is not None:
                logits.append(lg.double().cpu().numpy())
        return np.concatenate(feats), (np.concatenate(logits) if logits else None)


def _inception_trunk(net: nn.Module, x: Tensor) -> Tensor:
    """Inception-v3's layers up to (not including) the average pool: (B, 3, 299, 299) -> (B, 2048, 8, 8)."""
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
        x = getattr(net, name)(x)
    return x


def in_domain_network(*, seed: int, input_size: int) -> FeatureNetwork:
    """The documented stand-in: seeded random ResNet-18 up to stage 3, pooled (256-d)."""
    backbone = random_backbone(get_spec(IN_DOMAIN_BACKBONE), seed=seed, grid_size=1, stage=IN_DOMAIN_STAGE).eval()
    name = f"in_domain:{IN_DOMAIN_BACKBONE}-random-seed{seed}-stage{IN_DOMAIN_STAGE}-{input_size}px"
    return FeatureNetwork(name=name, module=backbone, input_size=input_size, is_inception=False)


def feature_network(choice: str, *, inception_weights: str = "", seed: int = 0, input_size: int = 64,
                    device: str | torch.device = "cpu") -> FeatureNetwork:
    """The feature network for ``choice``: ``auto`` | ``inception`` | ``in_domain``, on ``device``.

    ``auto`` takes Inception when its weights are on disk, else the in-domain
    network. ``inception`` without the weights is an error naming where they
    were looked for. Features are computed in float32 on any device.
    """
    if choice not in ("auto", "inception", "in_domain"):
        raise ValueError(f"unknown feature network {choice!r} (auto | inception | in_domain)")
    weights = find_inception_weights(inception_weights) if choice != "in_domain" else None
    if weights is None and choice == "inception":
        raise FileNotFoundError(
            f"no Inception FID weights ({INCEPTION_FILE_PREFIX}-*.pth) in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}; place the file there or set evaluate.inception_weights")
    if weights is None:
        net = in_domain_network(seed=seed, input_size=input_size)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net = FeatureNetwork(name=f"inception:{INCEPTION_FILE_PREFIX}", module=fid_inception(state),
                             input_size=299, is_inception=True)
    net.module.to(device)
    return net


def generative_scores(net: FeatureNetwork, real: np.ndarray, fake: np.ndarray, *, kid_subsets: int = 100,
                      kid_subset_size: int = 1000, pr_k: int = 3, seed: int = 0) -> dict:
    """FID, KID, precision/recall (and the Inception Score with Inception) of ``fake`` against ``real``.

    Args:
        net: The feature network.
        real: uint8 ``(N, H, W, 3)`` real images.
        fake: uint8 ``(M, H, W, 3)`` generated images.

    Returns:
        ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``,
        ``inception_score`` (None without Inception), ``feature_network``,
        ``n_real``, ``n_fake``.
    """
    real_f, _ = net(real)
    fake_f, fake_logits = net(fake)
    kid, kid_std = kernel_inception_distance(real_f, fake_f, num_subsets=kid_subsets,
                                             subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(real_f, fake_f, k=pr_k)
    return {
        "fid": frechet_distance(real_f, fake_f),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "inception_score": inception_score(fake_logits)[0] if fake_logits is not None else None,
        "feature_network": net.name,
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
    }

