"""Metrics for generative models: Frechet distance / FID, KID, precision/recall, inception score, mode coverage.

Formulas (a = real features, b = generated features, rows are samples):
- Frechet distance between N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017, https://arxiv.org/abs/1706.08500, eq. 6):
      d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  Tr((S1 S2)^(1/2)) without scipy.linalg.sqrtm: with factors S = F F^T (Cholesky; U diag(sqrt l) from eigh when S is
  singular) and B = F1^T F2, S1 S2 has the eigenvalues of the symmetric PSD B B^T (= F1^T S2 F1, similar to
  S1^(1/2) S2 S1^(1/2)), so Tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(B B^T)): two Cholesky factorizations, two matmuls
  and one eigvalsh, in float64.
  For non-singular covariances this is the same value as pytorch-fid's `calculate_frechet_distance` (agreement to 1e-6
  relative is tested); `python fid.py bench-sqrt` measures the speed. Singular covariances (rank-deficient, e.g.
  fewer samples than dimensions) are where it departs: pytorch-fid's sqrtm of the singular product is ill-conditioned,
  and when it returns non-finite values pytorch-fid adds 1e-6 I to both covariances, which shifts the result; here the
  eigenvalues below the rank tolerance (round-off, at most d eps lambda_max) are set to 0 before their square roots
  are taken, so the PSD formula is evaluated exactly: e.g. rank one, S1 = v v^T, S2 = w w^T, gives
  Tr((S1 S2)^(1/2)) = |v.w| and d^2 = ||mu1 - mu2||^2 + |v|^2 + |w|^2 - 2 |v.w| to round-off (the square roots of
  round-off eigenvalues would otherwise add errors of order sqrt(eps) |v| |w|, ~1e-8 relative).
- KID (Binkowski et al. 2018, https://arxiv.org/abs/1801.01401): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3,
      MMD^2_u = sum_{i!=j} k(a_i,a_j)/(m(m-1)) + sum_{i!=j} k(b_i,b_j)/(m(m-1)) - 2 sum_{i,j} k(a_i,b_j)/m^2,
  averaged over random subsets of m samples; we report the mean and the std over subsets. When m is a whole set
  (subset_size >= N), every subset of that side is the same set, so the std only reflects the other side's
  subsampling: `kid` warns.
- Precision / recall (Kynkaanniemi et al. 2019, https://arxiv.org/abs/1904.06991): the manifold of a set is the union of
  balls around its samples with radius = distance to the k-th nearest neighbour (k = 3). precision = fraction of
  generated samples inside the real manifold; recall = fraction of real samples inside the generated manifold.
- Inception score (Salimans et al. 2016, https://arxiv.org/abs/1606.03498): IS = exp(E_x KL(p(y|x) || p(y))), per split,
  mean and std over splits (10). Here p(y|x) comes from the shipped MNIST classifier (`classify`); 1 <= IS <= classes.
- Mode coverage (PacGAN, Lin et al. 2018, https://arxiv.org/abs/1712.04086): a sample is high quality (hq) if it lies
  within 3 std of its nearest mode; a mode is covered if at least one hq sample is nearest to it.
- Class coverage on MNIST-like images: histogram of predicted classes, number of classes hit, KL(histogram || uniform).

Features (`features`): "points" = raw coordinates; "mnist" = the 128-d penultimate layer (pre-activation, standardized
on mnist5k train) of a small CNN trained by `python fid.py train-features` (weights in assets/mnist_classifier.pt);
"inception" = pytorch-fid's InceptionV3 pool3 (2048-d), only if pytorch-fid and its weights are installed.
`score(fake, real)` computes every metric that applies and returns them with a provenance record (N real, N generated,
reference, extractor with the classifier's sha256, square-root method).

Commands:
    python fid.py score samples.npz mnist5k:test          # FID, KID, P/R, IS, class coverage + provenance
    python fid.py score samples.npz grid25:test           # points: Frechet distance on coordinates + modes/hq
    python fid.py train-features                          # retrain the MNIST feature network (~2 min CPU)
    python fid.py bench-sqrt --dim 2048                   # this square root vs scipy sqrtm, timed in one run
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
SQRT_METHOD = "eigvalsh: Tr((S1 S2)^1/2) = sum sqrt eig(B B^T), B = F1^T F2, S = F F^T (Cholesky), float64"


class MetricError(ValueError):
    """Bad input to a metric (NaN/inf, mismatched dimensions, too few samples, unreadable file): one clear message."""


class BiasedEstimateWarning(UserWarning):
    """The covariance is singular (fewer samples than dimensions): the Frechet distance is finite but biased."""


# ----------------------------------------------------------------------------------------------------- input checks
def as_features(x, name: str = "features", min_n: int = 2) -> np.ndarray:
    """numpy or torch [N, D] -> float64 numpy, rejecting NaN/inf, wrong rank and fewer than `min_n` rows."""
    try:
        x = np.asarray(x.detach().cpu().double() if torch.is_tensor(x) else x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise MetricError(f"{name}: cannot convert to a float array ({e})") from None
    if x.ndim != 2:
        raise MetricError(f"{name}: expected an array [N, D], got shape {tuple(x.shape)}"
                          + (" (images: pass features(x), or use score())" if x.ndim == 4 else ""))
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
def _factor(S: torch.Tensor) -> torch.Tensor:
    """F with S = F F^T: the Cholesky factor when S is clearly positive definite (cheap), else U diag(sqrt l) from eigh
    with the round-off eigenvalues set to 0, so that a rank-r S gives a factor of exactly rank r."""
    eps, d = torch.finfo(torch.float64).eps, len(S)
    L, info = torch.linalg.cholesky_ex(S)
    # a singular S can pass Cholesky with a round-off pivot L_jj^2 ~ eps |S|, whose square root (~sqrt(eps)) would
    # leak into Tr((S1 S2)^(1/2)); every pivot is >= lambda_min(S), so pivots well above round-off keep Cholesky
    if info == 0 and L.diagonal().square().min() > 100 * d * eps * S.diagonal().max():
        return L
    l, U = torch.linalg.eigh(S)  # singular S (fewer samples than dims): S = U diag(l) U^T, l >= 0 up to round-off
    tol = l.abs().max() * d * eps  # numpy.linalg.matrix_rank's tolerance: smaller eigenvalues are round-off
    return U * torch.where(l > tol, l, 0.0).sqrt()


def sqrt_trace(sigma1, sigma2) -> tuple[float, bool]:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, and whether S1 S2 is (numerically) singular."""
    S1, S2 = (torch.as_tensor(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    F1, F2 = _factor((S1 + S1.mT) / 2), _factor((S2 + S2.mT) / 2)  # symmetrize the round-off of np.cov
    B = F1.mT @ F2  # eig(XY) = eig(YX) with X = F1, Y = F1^T S2: eig(S1 S2) = eig(F1^T S2 F1) = eig(B B^T)
    lam = torch.linalg.eigvalsh(B @ B.mT)  # symmetric PSD: real eigenvalues >= 0 (up to round-off)
    tol = lam.abs().max() * len(lam) * torch.finfo(torch.float64).eps  # numpy.linalg.matrix_rank's tolerance
    # eigenvalues <= tol are round-off of zeros (singular S1 S2): 0, not sqrt(round-off) ~ sqrt(eps) lambda_max^(1/2)
    return float(torch.where(lam > tol, lam, 0.0).sqrt().sum()), bool(lam.min() <= tol)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, eq. 6), float64, >= 0.
    Equal to pytorch-fid's value for non-singular covariances. A singular covariance gives the exact value of the
    formula (pytorch-fid would add 1e-6 I when its sqrtm fails; see the module docstring) and a
    BiasedEstimateWarning, never an exception."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    d = len(mu1)
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                          f"sigma2 {sigma2.shape}")
    if not all(np.isfinite(v).all() for v in (mu1, sigma1, mu2, sigma2)):
        raise MetricError("the means or covariances contain NaN/inf values")
    tr_sqrt, singular = sqrt_trace(sigma1, sigma2)
    if singular:
        warnings.warn(f"singular covariance ({d} dims): the Frechet distance is finite but biased; use more samples "
                      f"than feature dimensions (ideally 10x)", BiasedEstimateWarning, stacklevel=2)
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt
    return float(max(value, 0.0))  # a squared Wasserstein-2 distance: a negative value is round-off


def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (divisor N - 1, as pytorch-fid), float64."""
    x = as_features(x)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def fid(a, b) -> float:
    """Frechet distance between the Gaussians fitted to feature arrays a [N, D] and b [M, D] (numpy or torch)."""
    a, b = _pair(a, b)
    n, d = min(len(a), len(b)), a.shape[1]
    with warnings.catch_warnings():
        if n <= d:  # say why in words the user knows; silence the generic warning below
            warnings.warn(f"{n} samples for {d} feature dimensions: the covariance is singular and the FID estimate "
                          f"is biased", BiasedEstimateWarning, stacklevel=2)
            warnings.simplefilter("ignore", BiasedEstimateWarning)
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# ----------------------------------------------------------------------------------------------------- KID
def kid(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """Kernel inception distance: unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3 over `subsets` random subsets of
    m = min(subset_size, N, M) samples. Returns {"mean": float, "std": float} (std over subsets).
    Warns when m is a whole set: its subsets are all that set, so the std omits that side's sampling variance."""
    a, b = _pair(a, b)
    m, d = min(subset_size, len(a), len(b)), a.shape[1]
    whole = [f"{name} ({n})" for name, n in (("first set", len(a)), ("second set", len(b))) if n == m]
    if whole:
        warnings.warn(f"KID subsets of {m} are the whole {' and the whole '.join(whole)}: the std over subsets "
                      f"leaves out that side's sampling variance; use more samples than the subset size "
                      f"({subset_size})", stacklevel=2)
    rng = np.random.default_rng(seed)

    def kernel_sum(x, y, unbiased):  # sum_{i,j} k(x_i, y_j), leaving out i = j when x is y
        k = x @ y.T / d + 1
        k = k * k * k  # (x.y/d + 1)^3 [m, m]; k*k*k is several times faster than k**3 in numpy
        return k.sum() - np.trace(k) if unbiased else k.sum()

    mmd = np.empty(subsets)
    for s in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        mmd[s] = ((kernel_sum(x, x, True) + kernel_sum(y, y, True)) / (m * (m - 1))
                  - 2 * kernel_sum(x, y, False) / m**2)  # MMD^2_u (Binkowski et al. 2018, eq. 4)
    return {"mean": float(mmd.mean()), "std": float(mmd.std())}


# --------------------------------------------------------------------------------------------------- precision / recall
def _manifold_fraction(query: torch.Tensor, x: torch.Tensor, k: int, chunk: int = 1024) -> float:
    """Fraction of query rows inside the k-NN manifold of x: within radius_j of some x_j, where radius_j is the distance
    from x_j to its k-th nearest other row (the self-distance 0 comes first among the k+1 smallest)."""
    radius = torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])
    inside = [(torch.cdist(query[i:i + chunk], x) <= radius).any(1) for i in range(0, len(query), chunk)]  # [Q]
    return float(torch.cat(inside).double().mean())


def precision_recall(real, fake, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019), k-NN balls: {"precision": float, "recall": float}."""
    real, fake = (torch.as_tensor(v) for v in _pair(real, fake, min_n=k + 1))  # float64
    return {"precision": _manifold_fraction(fake, real, k),  # generated samples on the real manifold
            "recall": _manifold_fraction(real, fake, k)}  # real samples on the generated manifold


# --------------------------------------------------------------------------------------------------- IS, modes, classes
def inception_score(probs, splits: int = 10) -> dict:
    """IS = exp(mean_x KL(p(y|x) || p(y))) per split (Salimans et al. 2016); {"mean": float, "std": float}."""
    p = as_features(probs, "probabilities", min_n=splits)
    if (p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-4):
        raise MetricError("probabilities must be non-negative rows that sum to 1 (softmax outputs)")
    # departure: a fixed shuffle first, so that class-sorted samples (e.g. from CFG) do not make one-class splits
    p = p[np.random.default_rng(0).permutation(len(p))]
    scores = []
    for part in np.array_split(p, splits):
        p_y = part.mean(0, keepdims=True)  # marginal p(y) over the split
        kl = np.where(part > 0, part * (np.log(np.maximum(part, 1e-300)) - np.log(np.maximum(p_y, 1e-300))), 0).sum(1)
        # mean KL = I(x; y) lies in [0, log C]; clip the round-off so that 1 <= IS <= C holds exactly
        scores.append(math.exp(float(np.clip(kl.mean(), 0, math.log(p.shape[1])))))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores))}


def mode_coverage(points, centers, std: float) -> dict:
    """PacGAN metrics: {"modes": modes covered by >= 1 high-quality sample, "hq": fraction within 3 std of its mode}."""
    x, c = as_features(points, "points", min_n=1), as_features(centers, "centers", min_n=1)
    if x.shape[1] != c.shape[1] or not std > 0:
        raise MetricError(f"points have {x.shape[1]} dims, centers {c.shape[1]}, std {std} (must be > 0)")
    d_min, nearest = torch.cdist(torch.as_tensor(x), torch.as_tensor(c)).min(1)  # distances [N, K] -> nearest mode
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


# ----------------------------------------------------------------------------------------------------- MNIST features
class MnistNet(nn.Module):
    """Small CNN for 28x28 digits in [-1, 1]: conv16 -> pool -> conv32 -> pool -> conv32 -> pool -> fc 128 (features,
    taken before its ReLU) -> fc 10. 52k parameters (~215 kB in float32)."""

    def __init__(self, width: int = 16, feature_dim: int = 128):
        super().__init__()
        w = width
        self.conv = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, w, 14, 14]
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, 2w, 7, 7]
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, 2w, 3, 3]
            nn.Flatten())  # [N, 2w * 9]
        self.fc = nn.Linear(2 * w * 9, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(feature_dim, 10))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))  # set after training so that the features
        self.register_buffer("feature_std", torch.ones(feature_dim))  # of mnist5k train have mean 0 and std 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 128] standardized pre-activations: no dead ReLU units (full-rank covariance) and unit scale, as the
        KID kernel (x.y/d + 1)^3 assumes."""
        return (self.fc(self.conv(x)) - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.conv(x)))  # logits [N, 10]


_CLASSIFIER: dict = {}  # cache: {"net": MnistNet, "sha256": str}


def classifier() -> MnistNet:
    """The shipped MNIST feature network (assets/mnist_classifier.pt, a weights-only state_dict), loaded once."""
    if "net" not in _CLASSIFIER:
        if not CLASSIFIER_PATH.is_file():
            raise MetricError(f"{CLASSIFIER_PATH} not found; create it with: python fid.py train-features")
        try:
            state = torch.load(CLASSIFIER_PATH, map_location="cpu", weights_only=True)
            net = MnistNet(width=state["conv.0.weight"].shape[0], feature_dim=state["fc.weight"].shape[0])
            net.load_state_dict(state)
        except Exception as e:
            raise MetricError(f"cannot load {CLASSIFIER_PATH} ({type(e).__name__}); rebuild it with "
                              f"python fid.py train-features") from None
        _CLASSIFIER.update(net=net.eval(), sha256=hashlib.sha256(CLASSIFIER_PATH.read_bytes()).hexdigest())
    return _CLASSIFIER["net"]


def _mnist_input(x) -> torch.Tensor:
    """Images [N, 1, 28, 28] (or 32x32, center-cropped by 2 px: models that pad) in [-1, 1] -> float32 tensor."""
    x = torch.as_tensor(x).detach().cpu().float()
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) not in ((28, 28), (32, 32)) or len(x) == 0:
        raise MetricError(f"the mnist extractor needs images [N, 1, 28, 28] (or 32x32), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise MetricError("images contain NaN/inf values")
    if x.min() < -1.5 or x.max() > 1.5:
        raise MetricError(f"images must be in [-1, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    if x.shape[-1] == 32:
        x = x[:, :, 2:30, 2:30]  # [N, 1, 28, 28]
    return x.clamp(-1, 1)  # samplers overshoot a little; the data itself lies in [-1, 1]


@torch.no_grad()
def classify(x, batch_size: int = 1000) -> torch.Tensor:
    """Softmax class probabilities [N, 10] (float32, CPU) of MNIST-like images [N, 1, 28, 28] in [-1, 1]."""
    x, net = _mnist_input(x), classifier()
    return torch.cat([net(x[i:i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _inception_features(x, batch_size: int = 100) -> np.ndarray:
    """pytorch-fid's InceptionV3 pool3 features [N, 2048] of images [N, C, H, W] in [-1, 1] (C = 1 or 3)."""
    try:
        from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3
    except ImportError:
        raise MetricError("the inception extractor needs pytorch-fid (pip install pytorch-fid); "
                          "use --extractor mnist for digits") from None
    weights = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[-1]
    if not weights.is_file():
        raise MetricError(f"pytorch-fid's Inception weights are not in {weights}; download them once "
                          f"({FID_WEIGHTS_URL}) or use --extractor mnist")
    x = ((torch.as_tensor(x).float().clamp(-1, 1) + 1) / 2).expand(-1, 3, -1, -1)  # RGB in [0, 1]; gray -> 3 channels
    net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    return torch.cat([net(x[i:i + batch_size])[0].flatten(1) for i in range(0, len(x), batch_size)]).double().numpy()


def _auto(shape: tuple, extractor: str) -> str:
    """"auto" picks by shape: [N, D] -> points, [N, 1, H, W] -> mnist, [N, 3, H, W] -> inception."""
    if extractor != "auto":
        return extractor
    kind = "points" if len(shape) == 2 else {1: "mnist", 3: "inception"}.get(shape[1]) if len(shape) == 4 else None
    if kind is None:
        raise MetricError(f"cannot tell which extractor suits data of shape {shape}; expected [N, D] or [N, C, H, W]")
    return kind


@torch.no_grad()
def features(x, extractor: str = "auto", batch_size: int = 1000) -> np.ndarray:
    """Feature array [N, D] (float64 numpy) for the metrics. extractor: "points" (raw coordinates of [N, D] data),
    "mnist" (128-d penultimate layer of the shipped classifier), "inception" (pytorch-fid), "auto" (by shape)."""
    extractor = _auto(tuple(np.shape(x)), extractor)
    if extractor == "points":
        return as_features(x, "points")
    if extractor == "mnist":
        x, net = _mnist_input(x), classifier()
        return torch.cat([net.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()
    if extractor == "inception":
        return _inception_features(x)
    raise MetricError(f"unknown extractor {extractor!r}; use auto, points, mnist or inception")


def provenance(n_real: int, n_fake: int, reference: str, extractor: str, dim: int | None = None) -> dict:
    """The record that goes with every FID: sample counts, reference split, feature extractor (with the classifier's
    sha256 for mnist), square-root method."""
    if extractor == "mnist":
        classifier()
        extractor = f"mnist: {CLASSIFIER_PATH.name} sha256 {_CLASSIFIER['sha256'][:12]} (128-d)"
    elif extractor in ("points", "inception"):
        extractor = f"{extractor} ({dim}-d)" if dim else extractor
    return {"n_real": int(n_real), "n_fake": int(n_fake), "reference": reference, "extractor": extractor,
            "sqrt": SQRT_METHOD}


def score(fake, real, reference: str = "given array", extractor: str = "auto", modes=None, k: int = 3,
          kid_subsets: int = 100) -> dict:
    """Every metric that applies to generated `fake` against `real` (images [N,C,H,W] or points [N,2]):
    fid, kid (+ kid_std), precision, recall; for MNIST-like images is (+ is_std, is_real), classes, kl_uniform;
    with modes=(centers, std): modes, hq. Always a "provenance" record and the "warnings" raised on the way."""
    fake, real = torch.as_tensor(fake).float(), torch.as_tensor(real).float()
    if fake.dim() != real.dim() or (fake.dim() == 2 and fake.shape[1] != real.shape[1]):
        raise MetricError(f"the two sets differ in kind: shapes {tuple(fake.shape)} and {tuple(real.shape)}")
    extractor = _auto(tuple(fake.shape), extractor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BiasedEstimateWarning)
        f_fake, f_real = features(fake, extractor), features(real, extractor)
        out = {"fid": fid(f_real, f_fake)}
        kid_ = kid(f_real, f_fake, subsets=kid_subsets)
        out.update(kid=kid_["mean"], kid_std=kid_["std"], **precision_recall(f_real, f_fake, k))
    if extractor == "mnist":
        p_fake = classify(fake)
        is_, cov = inception_score(p_fake, splits=min(10, len(fake))), class_coverage(p_fake, 10)
        out.update({"is": is_["mean"], "is_std": is_["std"], "classes": cov["classes"],
                    "kl_uniform": cov["kl_uniform"],
                    "is_real": inception_score(classify(real), splits=min(10, len(real)))["mean"]})
    if modes is not None:
        out.update(mode_coverage(fake, *modes))
    out["provenance"] = provenance(len(real), len(fake), reference, extractor, f_real.shape[1])
    out["warnings"] = sorted({str(w.message) for w in caught})
    return out


# ----------------------------------------------------------------------------------------------------- commands
from typing import Annotated  # noqa: E402  (below: the CLI, which also uses data.py and training.py)

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="Metrics for generative models: FID, KID, precision/recall, IS, mode coverage.")


def _shift(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    """Random translation by -s..s px per image (pad with the background -1, crop back): [N,1,28,28] -> same."""
    n, size = len(x), x.shape[-1]
    xp = nn.functional.pad(x, (s,) * 4, value=-1.0)  # [N, 1, 28+2s, 28+2s]
    d = torch.randint(0, 2 * s + 1, (2, n), generator=g)
    rows = (d[0][:, None] + torch.arange(size))[:, :, None]  # [N, 28, 1]
    cols = (d[1][:, None] + torch.arange(size))[:, None, :]  # [N, 1, 28]
    return xp[torch.arange(n)[:, None, None], 0, rows, cols][:, None]  # [N, 1, 28, 28]


@app.command("train-features")
def train_features(
        epochs: Annotated[int, typer.Option(min=1, help="passes over the 4,000 mnist5k training digits")] = 10,
        batch_size: Annotated[int, typer.Option(min=1, max=4000, help="digits per step")] = 64,
        lr: Annotated[float, typer.Option(min=1e-8, help="peak learning rate of the one-cycle Adam schedule")] = 3e-3,
        shift: Annotated[int, typer.Option(min=0, max=8, help="augmentation: random shifts of up to this many px")] = 2,
        width: Annotated[int, typer.Option(min=1, help="channels of the first conv layer")] = 16,
        seed: Annotated[int, typer.Option(help="seeds the initialization, data order and shifts")] = 0,
        out: Annotated[Path, typer.Option(help="where the state_dict goes")] = CLASSIFIER_PATH) -> float:
    """Train the MNIST feature network on mnist5k train (fixed recipe); report its mnist5k test accuracy."""
    import data

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    net, steps = MnistNet(width=width), len(train) // batch_size  # steps per epoch
    opt = torch.optim.Adam(net.parameters(), lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps)
    t0, cpu0 = time.time(), time.process_time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(train), generator=g)
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = _shift(train.x[idx], shift, g) if shift else train.x[idx]
            loss = nn.functional.cross_entropy(net(x), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            acc = float((net.eval()(test.x).argmax(1) == test.y).float().mean())
        print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.4f}  test accuracy {acc:.4f}  {time.time() - t0:.0f}s")
    with torch.no_grad():  # standardize the features: mean 0, std 1 over the training digits
        z = net.eval().fc(net.conv(train.x))  # [N, 128] raw pre-activations
        net.feature_mean.copy_(z.mean(0))
        net.feature_std.copy_(z.std(0).clamp_min(1e-6))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    _CLASSIFIER.clear()
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"saved {out} ({out.stat().st_size / 1e3:.0f} kB, sha256 {sha}); mnist5k test accuracy {acc:.4f}; "
          f"{time.time() - t0:.0f}s wall, {time.process_time() - cpu0:.0f}s CPU, {torch.get_num_threads()} threads")
    return acc


def load_samples(spec: str) -> tuple[torch.Tensor, str, str]:
    """A .npz (key x), .pt tensor, folder of PNGs, or dataset "name[:split]" (default split test)
    -> (x float tensor, description, dataset name or "")."""
    import data
    from PIL import Image

    path, (name, _, split) = Path(spec), spec.partition(":")
    if not path.exists() and name in data.DATASETS:
        ds = data.load(name, split or "test")
        return ds.x, f"{name}:{split or 'test'} ({len(ds)})", name
    training.check(path.exists(), f"{spec}: no such file, folder or dataset (datasets: {', '.join(data.DATASETS)})")
    try:
        if path.is_dir():
            imgs = [Image.open(p) for p in sorted(path.glob("*.png"))]
            training.check(len(imgs) > 0, f"{spec}: the folder has no .png files")
            gray = all(im.mode in ("L", "1", "P") for im in imgs)
            x = np.stack([np.asarray(im.convert("L" if gray else "RGB")) for im in imgs])  # [N, H, W(, 3)]
            x = torch.as_tensor(x[:, None] if gray else x.transpose(0, 3, 1, 2)).float() / 127.5 - 1  # [N, C, H, W]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                key = "x" if "x" in f.files else f.files[0] if len(f.files) == 1 else None
                training.check(key is not None, f"{spec}: no array under key 'x' (keys: {', '.join(f.files)})")
                x = torch.as_tensor(f[key]).float()
        elif path.suffix == ".pt":
            x = torch.load(path, map_location="cpu", weights_only=True)
            x = x.get("x") if isinstance(x, dict) else x
            training.check(torch.is_tensor(x), f"{spec}: expected a tensor (or a dict with key 'x')")
        else:
            training.fail(f"{spec}: unsupported file type; use .npz (key x), .pt or a folder of .png")
    except training.UserError:
        raise
    except Exception as e:  # corrupt archive, truncated PNG, a pickle that is not weights-only
        raise training.UserError(f"cannot read {spec} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return x.float(), f"{path.name} ({len(x)})", ""


@app.command("score")
def score_cmd(
        a: Annotated[str, typer.Argument(help="generated samples: .npz (key x), .pt, folder of PNGs, or dataset")],
        b: Annotated[str, typer.Argument(help="reference: a dataset like mnist5k:test or grid25:test, or a file")],
        extractor: Annotated[str, typer.Option(help="auto | points | mnist | inception")] = "auto",
        modes: Annotated[str, typer.Option(help="grid25 | ring8: count covered modes (auto when B is one)")] = "",
        k: Annotated[int, typer.Option(min=1, help="neighbours for precision/recall")] = 3,
        kid_subsets: Annotated[int, typer.Option(min=1, help="random subsets of 1000 for KID")] = 100) -> dict:
    """Score generated samples A against reference B: FID, KID, precision, recall (+ IS, classes, modes)."""
    import data
    from rich.console import Console
    from rich.table import Table

    (x_a, desc_a, _), (x_b, desc_b, name_b) = load_samples(a), load_samples(b)
    modes = modes or (name_b if name_b in data.MODES else "")
    training.check(not modes or modes in data.MODES, f"--modes must be one of {', '.join(data.MODES)}, got {modes!r}")
    try:
        r = score(x_a, x_b, desc_b, extractor, data.MODES[modes] if modes else None, k, kid_subsets)
    except MetricError as e:
        raise training.UserError(str(e)) from None
    rows = [("FID" if r["provenance"]["extractor"].startswith("mnist") else "Frechet distance", f"{r['fid']:.4f}",
             f"{r['provenance']['extractor']}; lower is better"),
            ("KID", f"{r['kid']:.5f}", f"+- {r['kid_std']:.5f} (std over {kid_subsets} subsets)"),
            ("precision", f"{r['precision']:.3f}", f"k = {k}: generated samples on the reference manifold"),
            ("recall", f"{r['recall']:.3f}", f"k = {k}: reference samples on the generated manifold")]
    if "is" in r:
        rows += [("inception score", f"{r['is']:.3f}", f"+- {r['is_std']:.3f}; reference {r['is_real']:.3f}; max 10"),
                 ("classes covered", f"{r['classes']}/10", f"KL(class histogram || uniform) = {r['kl_uniform']:.4f}")]
    if "modes" in r:
        rows += [("modes", f"{r['modes']}/{len(data.MODES[modes][0])}", f"{modes}: >= 1 sample within 3 std"),
                 ("high quality", f"{r['hq']:.3f}", "fraction of samples within 3 std of their nearest mode")]
    table = Table("metric", "value", "note", title=f"{desc_a} vs {desc_b}")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print("provenance: " + ", ".join(f"{key}={v}" for key, v in r["provenance"].items()))
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    return r


@app.command("bench-sqrt")
def bench_sqrt(dim: Annotated[int, typer.Option(min=2, help="feature dimension")] = 2048,
               n: Annotated[int, typer.Option(min=3, help="samples per set")] = 4096,
               repeats: Annotated[int, typer.Option(min=1, help="timings per method; the best is kept")] = 2) -> dict:
    """Time the Frechet distance of this file vs scipy.linalg.sqrtm (pytorch-fid's recipe), in one run."""
    import scipy.linalg

    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(1 + np.arange(dim))  # a decaying spectrum, like real network features
    mu1, s1 = gaussian_stats(rng.standard_normal((n, dim)) * scale)
    mu2, s2 = gaussian_stats(rng.standard_normal((n, dim)) * scale * 1.1 + 0.01)

    def reference():  # pytorch-fid's calculate_frechet_distance: sqrtm of the product, real part
        return (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)

    times, values = {"ours": [], "sqrtm": []}, {}
    for _ in range(repeats):
        for method, f in (("ours", lambda: frechet_distance(mu1, s1, mu2, s2)), ("sqrtm", reference)):
            t0 = time.perf_counter()
            values[method] = float(f())
            times[method].append(time.perf_counter() - t0)
    t_ours, t_sqrtm = min(times["ours"]), min(times["sqrtm"])
    rel = abs(values["ours"] - values["sqrtm"]) / abs(values["sqrtm"])
    print(f"dim {dim}, n {n}: fid.py {t_ours:.2f}s, scipy sqrtm {t_sqrtm:.2f}s (best of {repeats}) -> "
          f"{t_sqrtm / t_ours:.1f}x faster; FID {values['ours']:.10g} vs {values['sqrtm']:.10g} "
          f"(relative difference {rel:.1e}); torch threads {torch.get_num_threads()}")
    return {"ours_s": t_ours, "sqrtm_s": t_sqrtm, "speedup": t_sqrtm / t_ours, "rel_diff": rel}


if __name__ == "__main__":
    app()
