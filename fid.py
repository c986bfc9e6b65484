"""Metrics for generative models: Frechet distance / FID, KID, precision/recall, inception score, mode coverage.

Formulas (a = real features, b = generated features, rows are samples):
- Frechet distance between N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017, https://arxiv.org/abs/1706.08500, eq. 6):
      d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  Tr((S1 S2)^(1/2)) without scipy.linalg.sqrtm: S1 S2 is similar to the symmetric PSD matrix
  M = S1^(1/2) S2 S1^(1/2) (conjugate by S1^(1/2)), so Tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(M)). With S1 = U diag(l) U^T,
  M ~ diag(sqrt l) U^T S2 U diag(sqrt l): one eigh, two matmuls and one eigvalsh, all symmetric, in float64.
  Same value as pytorch-fid's `calculate_frechet_distance`; `python fid.py bench-sqrt` measures the speed.
- KID (Binkowski et al. 2018, https://arxiv.org/abs/1801.01401): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3,
      MMD^2_u = sum_{i!=j} k(a_i,a_j)/(m(m-1)) + sum_{i!=j} k(b_i,b_j)/(m(m-1)) - 2 sum_{i,j} k(a_i,b_j)/m^2,
  averaged over random subsets of m samples; we report the mean and the std over subsets.
- Precision / recall (Kynkaanniemi et al. 2019, https://arxiv.org/abs/1904.06991): the manifold of a set is the union of
  balls around its samples with radius = distance to the k-th nearest neighbour (k = 3). precision = fraction of
  generated samples inside the real manifold; recall = fraction of real samples inside the generated manifold.
- Inception score (Salimans et al. 2016, https://arxiv.org/abs/1606.03498): IS = exp(E_x KL(p(y|x) || p(y))), per split,
  mean and std over splits (10). Here p(y|x) comes from the shipped MNIST classifier (`classify`); 1 <= IS <= classes.
- Mode coverage (PacGAN, Lin et al. 2018, https://arxiv.org/abs/1712.04086): a sample is high quality (hq) if it lies
  within 3 std of its nearest mode; a mode is covered if at least one hq sample is nearest to it.
- Class coverage on MNIST-like images: histogram of predicted classes, number of classes hit, KL(histogram || uniform).

Features (`features`): "points" = raw 2-D coordinates; "mnist" = the penultimate layer (pre-activation, 128-d) of a small
CNN trained by `python fid.py train-features` on mnist5k (weights shipped in assets/mnist_classifier.pt); "inception" =
pytorch-fid's InceptionV3 pool3 (2048-d), only if pytorch-fid and its weights are installed.

Commands:
    python fid.py score samples.npz mnist5k:test          # FID, KID, P/R, IS, class coverage + provenance
    python fid.py score samples.npz grid25:test           # points: Frechet distance on coordinates + modes/hq
    python fid.py train-features                          # retrain the MNIST feature network (~2 min CPU)
    python fid.py bench-sqrt --dim 2048                   # eigh square root vs scipy sqrtm, timed in one run
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ASSETS = Path(__file__).resolve().parent / "assets"
CLASSIFIER_PATH = ASSETS / "mnist_classifier.pt"
SQRT_METHOD = "eigh: Tr((S1 S2)^1/2) = sum sqrt eig(S1^1/2 S2 S1^1/2), float64"


class MetricError(ValueError):
    """Bad input to a metric (NaN/inf, mismatched dimensions, too few samples, unreadable file): one clear message."""


class BiasedEstimateWarning(UserWarning):
    """The covariance is singular (fewer samples than dimensions): the Frechet distance is finite but biased."""


# ----------------------------------------------------------------------------------------------------- input checks
def as_features(x, name: str = "features", min_n: int = 2) -> np.ndarray:
    """numpy or torch [N, D] -> float64 numpy, rejecting NaN/inf, wrong rank and fewer than `min_n` rows."""
    if torch.is_tensor(x):
        x = x.detach().cpu().double().numpy()
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise MetricError(f"{name}: cannot convert to a float array ({e})") from None
    if x.ndim != 2:
        raise MetricError(f"{name}: expected an array [N, D], got shape {tuple(x.shape)}")
    if len(x) < min_n:
        raise MetricError(f"{name}: need at least {min_n} samples, got {len(x)}")
    if not np.isfinite(x).all():
        raise MetricError(f"{name}: contains {int((~np.isfinite(x)).sum())} NaN/inf values")
    return x


def _pair(a, b, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_features(a, "first set", min_n), as_features(b, "second set", min_n)
    if a.shape[1] != b.shape[1]:
        raise MetricError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return a, b


# ----------------------------------------------------------------------------------------------------- Frechet distance
def sqrt_trace(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[float, bool]:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, and whether S1 S2 is (numerically) singular."""
    S1 = torch.as_tensor(np.asarray(sigma1, np.float64))
    S2 = torch.as_tensor(np.asarray(sigma2, np.float64))
    S1, S2 = (S1 + S1.mT) / 2, (S2 + S2.mT) / 2  # symmetrize: round-off in np.cov
    l, U = torch.linalg.eigh(S1)  # S1 = U diag(l) U^T
    s = l.clamp_min(0).sqrt()  # eigenvalues of S1^(1/2); tiny negative round-off -> 0
    M = s[:, None] * (U.mT @ S2 @ U) * s[None, :]  # U^T M U = diag(s) U^T S2 U diag(s), same eigenvalues as S1 S2
    lam = torch.linalg.eigvalsh((M + M.mT) / 2)
    tol = lam.abs().max() * len(lam) * torch.finfo(torch.float64).eps  # numpy.linalg.matrix_rank's tolerance
    singular = bool(lam.min() <= tol)
    return float(lam.clamp_min(0).sqrt().sum()), singular


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, eq. 6), float64, >= 0.
    A singular covariance gives a finite value and a BiasedEstimateWarning, never an exception."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = len(mu1)
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                          f"sigma2 {sigma2.shape}")
    for v, name in ((mu1, "mu1"), (sigma1, "sigma1"), (mu2, "mu2"), (sigma2, "sigma2")):
        if not np.isfinite(v).all():
            raise MetricError(f"{name} contains NaN/inf values")
    tr_sqrt, singular = sqrt_trace(sigma1, sigma2)
    if singular:
        warnings.warn(f"singular covariance ({d} dims): the Frechet distance is finite but biased; use more samples "
                      f"than feature dimensions (ideally 10x)", BiasedEstimateWarning, stacklevel=2)
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt
    return float(max(value, 0.0))  # it is a squared Wasserstein-2 distance: negatives are round-off


def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (divisor N - 1, as pytorch-fid), float64."""
    x = as_features(x)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def fid(a, b) -> float:
    """Frechet distance between the Gaussians fitted to feature arrays a [N, D] and b [M, D] (numpy or torch)."""
    a, b = _pair(a, b)
    if min(len(a), len(b)) <= a.shape[1]:
        warnings.warn(f"{min(len(a), len(b))} samples for {a.shape[1]} feature dimensions: the covariance is singular "
                      f"and the FID estimate is biased", BiasedEstimateWarning, stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasedEstimateWarning)  # said above, once
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# ----------------------------------------------------------------------------------------------------- KID
def kid(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """Kernel inception distance: unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3 over `subsets` random subsets of
    m = min(subset_size, N, M) samples. Returns {"mean": float, "std": float} (std over subsets)."""
    a, b = _pair(a, b)
    m, d = min(subset_size, len(a), len(b)), a.shape[1]
    rng = np.random.default_rng(seed)
    mmd = np.empty(subsets)
    for s in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        mmd[s] = ((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                  - 2 * k_xy.mean())  # unbiased: diagonal terms k(x_i, x_i) left out
    return {"mean": float(mmd.mean()), "std": float(mmd.std())}


# ----------------------------------------------------------------------------------------------------- precision / recall
def _knn_radius(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row [N] (the self-distance 0 is the first of k+1)."""
    return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])


def _inside(query: torch.Tensor, x: torch.Tensor, radius: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query row: is it within radius_j of some x_j (inside the k-NN manifold of x)?  bool [Q]"""
    return torch.cat([(torch.cdist(query[i:i + chunk], x) <= radius[None, :]).any(1)
                      for i in range(0, len(query), chunk)])


def precision_recall(real, fake, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls; {"precision": float, "recall": float}."""
    real, fake = _pair(real, fake, min_n=k + 1)
    r, f = torch.as_tensor(real), torch.as_tensor(fake)  # float64
    precision = _inside(f, r, _knn_radius(r, k)).double().mean()  # generated samples on the real manifold
    recall = _inside(r, f, _knn_radius(f, k)).double().mean()  # real samples on the generated manifold
    return {"precision": float(precision), "recall": float(recall)}


# ----------------------------------------------------------------------------------------------------- IS, modes, classes
def inception_score(probs, splits: int = 10) -> dict:
    """IS = exp(mean_x KL(p(y|x) || p(y))) per split (Salimans et al. 2016); {"mean": float, "std": float}."""
    p = as_features(probs, "probabilities", min_n=splits)
    if (p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-4):
        raise MetricError("probabilities must be non-negative rows that sum to 1 (softmax outputs)")
    scores = []
    for part in np.array_split(p, splits):
        p_y = part.mean(0, keepdims=True)  # marginal p(y) over the split
        kl = np.where(part > 0, part * (np.log(np.maximum(part, 1e-300)) - np.log(np.maximum(p_y, 1e-300))), 0).sum(1)
        # mean KL = I(x; y) lies in [0, log C]; clip the round-off so that 1 <= IS <= C holds exactly
        scores.append(math.exp(float(np.clip(kl.mean(), 0, math.log(p.shape[1])))))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores))}


def mode_coverage(points, centers, std: float) -> dict:
    """PacGAN metrics: {"modes": modes covered by >= 1 high-quality sample, "hq": fraction within 3 std of its mode}."""
    x = as_features(points, "points", min_n=1)
    c = as_features(centers, "centers", min_n=1)
    if x.shape[1] != c.shape[1]:
        raise MetricError(f"points have {x.shape[1]} dims, centers {c.shape[1]}")
    if not std > 0:
        raise MetricError(f"std must be positive, got {std}")
    dist = torch.cdist(torch.as_tensor(x), torch.as_tensor(c))  # [N, K]
    d_min, nearest = dist.min(1)
    hq = d_min <= 3 * std
    return {"modes": int(nearest[hq].unique().numel()), "hq": float(hq.double().mean())}


def class_coverage(probs_or_labels, num_classes: int = 10) -> dict:
    """Histogram of (predicted) classes: {"classes": how many are hit, "kl_uniform": KL(hist || uniform) in nats,
    "histogram": counts}. Accepts probabilities [N, C] (argmax) or integer labels [N]."""
    y = probs_or_labels.detach().cpu().numpy() if torch.is_tensor(probs_or_labels) else np.asarray(probs_or_labels)
    if y.ndim == 2:
        y = as_features(y, "probabilities", min_n=1).argmax(1)
    if y.ndim != 1 or len(y) == 0 or (y < 0).any() or (y >= num_classes).any() or not np.all(y == np.round(y)):
        raise MetricError(f"expected labels in 0..{num_classes - 1} [N] or probabilities [N, {num_classes}]")
    counts = np.bincount(y.astype(np.int64), minlength=num_classes)
    h = counts / counts.sum()
    kl = float(np.sum(h[h > 0] * np.log(h[h > 0] * num_classes)))  # KL(h || 1/C) = sum h log(h C)
    return {"classes": int((counts > 0).sum()), "kl_uniform": kl, "histogram": counts.tolist()}
