"""fid.py: the metrics' invariants (hypothesis), agreement with the scipy sqrtm recipe, the shipped classifier's
accuracy, the CLI, and bad input."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import data
import fid
from conftest import assert_one_line_error, run_cli

seeds = st.integers(0, 2**32 - 1)


def gaussian(seed, n, d, shift=0.0, scale=1.0):
    """n samples of a random correlated Gaussian in d dims (covariance A A^T, A with a spread of scales)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) * rng.uniform(0.2, 2.0, d)
    return (rng.standard_normal((n, d)) @ A.T) * scale + shift


def sqrtm_reference(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance recipe: scipy sqrtm of the product, real part."""
    covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
    return (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


# ----------------------------------------------------------------------------------------------------- Frechet distance
@given(seed=seeds, n=st.integers(3, 80), d=st.integers(1, 12))
def test_fid_of_a_set_with_itself_is_zero(seed, n, d):
    x = gaussian(seed, n, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fid.BiasedEstimateWarning)  # n <= d cases are fine here
        value = fid.fid(x, x)
    assert 0 <= value <= 1e-9 * (1 + np.trace(fid.gaussian_stats(x)[1]))


@given(seed=seeds, d=st.integers(1, 10), shift=st.floats(-3, 3), scale=st.floats(0.3, 3))
def test_fid_is_symmetric_and_non_negative(seed, d, shift, scale):
    a, b = gaussian(seed, 60, d), gaussian(seed + 1, 50, d, shift, scale)
    ab, ba = fid.fid(a, b), fid.fid(torch.as_tensor(b), torch.as_tensor(a))  # numpy and torch inputs
    assert ab >= 0 and ab == pytest.approx(ba, rel=1e-9, abs=1e-9)
    assert isinstance(ab, float)


@given(seed=seeds, d=st.integers(1, 16))
def test_closed_form_for_diagonal_gaussians(seed, d):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(0, 2, d), rng.normal(0, 2, d)
    s1, s2 = rng.uniform(0.01, 3, d), rng.uniform(0.01, 3, d)  # standard deviations
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)  # ||dmu||^2 + sum (s1 - s2)^2
    assert fid.frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-9,
                                                                                            abs=1e-12)


@given(seed=seeds, d=st.integers(2, 8))
def test_invariant_under_the_same_rotation_and_translation(seed, d):
    rng = np.random.default_rng(seed)
    a, b = gaussian(seed, 100, d), gaussian(seed + 7, 90, d, shift=1.0, scale=1.5)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # a random orthogonal matrix
    t = rng.normal(0, 5, d)
    assert fid.fid(a @ Q.T + t, b @ Q.T + t) == pytest.approx(fid.fid(a, b), rel=1e-7, abs=1e-9)


@settings(max_examples=15)
@given(seed=seeds, d=st.integers(2, 64), shift=st.floats(0, 1), scale=st.floats(0.8, 1.5))
def test_agrees_with_the_scipy_sqrtm_recipe(seed, d, shift, scale):
    a, b = gaussian(seed, 4 * d + 20, d), gaussian(seed + 3, 3 * d + 30, d, shift, scale)
    (mu1, s1), (mu2, s2) = fid.gaussian_stats(a), fid.gaussian_stats(b)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(sqrtm_reference(mu1, s1, mu2, s2), rel=1e-6)


def test_agrees_with_sqrtm_on_mnist_features():
    """The case that matters: real digits against other real digits, 128-d classifier features."""
    x = data.load("mnist5k", "test").x
    f1, f2 = fid.features(x[::2]), fid.features(x[1::2])
    (mu1, s1), (mu2, s2) = fid.gaussian_stats(f1), fid.gaussian_stats(f2)
    assert fid.fid(f1, f2) == pytest.approx(sqrtm_reference(mu1, s1, mu2, s2), rel=1e-6)


@given(seed=seeds, d=st.integers(1, 24), kind=st.sampled_from(["general", "parallel", "orthogonal"]),
       scale=st.floats(1e-3, 1e3))
def test_closed_form_for_rank_one_covariances(seed, d, kind, scale):
    """S1 = v v^T, S2 = w w^T: S1 S2 = (v.w) v w^T has the single non-zero eigenvalue (v.w)^2, so
    Tr((S1 S2)^(1/2)) = |v.w| and d^2 = ||mu1 - mu2||^2 + |v|^2 + |w|^2 - 2 |v.w|. Singular in every d >= 2: the
    square roots of round-off eigenvalues would add ~1e-8 relative error; the code must drop them (~1e-15)."""
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(0, 1, d), rng.normal(0, 1, d)
    v, w = rng.normal(0, scale, d), rng.normal(0, 1, d) * rng.uniform(0.1, 3)
    if kind == "parallel":  # w = c v: d^2 = ||dmu||^2 + (|v| - |w|)^2
        w = rng.uniform(-3, 3) * v
    elif kind == "orthogonal" and d > 1:  # v.w = 0: S1 S2 = 0, d^2 = ||dmu||^2 + |v|^2 + |w|^2
        w = w - (w @ v) / (v @ v) * v
    expected = (mu1 - mu2) @ (mu1 - mu2) + v @ v + w @ w - 2 * abs(v @ w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fid.BiasedEstimateWarning)  # singular on purpose
        got = fid.frechet_distance(mu1, np.outer(v, v), mu2, np.outer(w, w))
        swapped = fid.frechet_distance(mu2, np.outer(w, w), mu1, np.outer(v, v))
    size = (mu1 - mu2) @ (mu1 - mu2) + v @ v + w @ w  # the scale of the terms that cancel
    assert got == pytest.approx(expected, abs=1e-12 * size)
    assert swapped == pytest.approx(expected, abs=1e-12 * size)


@given(seed=seeds, d=st.integers(1, 24))
def test_closed_form_for_one_rank_one_covariance(seed, d):
    """S1 full rank, S2 = w w^T: S1 S2 = (S1 w) w^T has the single non-zero eigenvalue w^T S1 w, so
    d^2 = ||mu1 - mu2||^2 + Tr S1 + |w|^2 - 2 sqrt(w^T S1 w). Here S1 passes Cholesky and the product's zero
    eigenvalues come out of eigvalsh as round-off, whose square roots must not be summed."""
    rng = np.random.default_rng(seed)
    A, w = rng.normal(0, 1, (d, d)) * rng.uniform(0.2, 2, d), rng.normal(0, 1, d) * rng.uniform(0.1, 3)
    S1, mu1, mu2 = A @ A.T + 0.1 * np.eye(d), rng.normal(0, 1, d), rng.normal(0, 1, d)
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(S1) + w @ w - 2 * np.sqrt(w @ S1 @ w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fid.BiasedEstimateWarning)
        got = fid.frechet_distance(mu1, S1, mu2, np.outer(w, w))
    assert got == pytest.approx(expected, abs=1e-12 * ((mu1 - mu2) @ (mu1 - mu2) + np.trace(S1) + w @ w))


def test_rank_one_by_hand():
    """v = (3, 4), w = (0, 2) in 2-D, equal means: |v|^2 = 25, |w|^2 = 4, v.w = 8 -> 25 + 4 - 16 = 13.
    v = (0.1, 0.7), w = (-0.7, 0.1): v.w = 0 exactly in floating point, so d^2 = |v|^2 + |w|^2 = 1. Cholesky accepts
    this singular v v^T (the second pivot is round-off, L_22 ~ 1e-8); used as the factor, that pivot alone would give
    Tr((S1 S2)^(1/2)) ~ 1e-8 instead of 0."""
    v, w, mu = np.array([3.0, 4.0]), np.array([0.0, 2.0]), np.zeros(2)
    with pytest.warns(fid.BiasedEstimateWarning):
        assert fid.frechet_distance(mu, np.outer(v, v), mu, np.outer(w, w)) == pytest.approx(13.0, abs=1e-12)
    v, w = np.array([0.1, 0.7]), np.array([-0.7, 0.1])
    with pytest.warns(fid.BiasedEstimateWarning):
        assert fid.frechet_distance(mu, np.outer(v, v), mu + 1, np.outer(w, w)) == pytest.approx(3.0, abs=1e-14)


@given(seed=seeds, n=st.integers(2, 20), d=st.integers(21, 40))
def test_fewer_samples_than_dims_warns_and_stays_finite(seed, n, d):
    a, b = gaussian(seed, n, d), gaussian(seed + 1, n, d, shift=0.5)
    with pytest.warns(fid.BiasedEstimateWarning, match="biased"):
        value = fid.fid(a, b)
    assert np.isfinite(value) and value >= 0
    (mu1, s1), (mu2, s2) = fid.gaussian_stats(a), fid.gaussian_stats(b)
    with pytest.warns(fid.BiasedEstimateWarning, match="biased"):
        assert fid.frechet_distance(mu1, s1, mu2, s2) >= 0


@given(seed=seeds, n=st.integers(2, 30), d=st.integers(1, 20))
def test_factor_reproduces_the_covariance_singular_or_not(seed, n, d):
    """S = F F^T from Cholesky (n > d, positive definite) or from eigh (n <= d, singular)."""
    S = torch.as_tensor(fid.gaussian_stats(gaussian(seed, n, d))[1])
    F = fid._factor(S)
    assert torch.allclose(F @ F.mT, S, rtol=1e-7, atol=1e-9 * float(S.diagonal().max()))


# ----------------------------------------------------------------------------------------------------- KID, P/R
@settings(max_examples=6)
@given(seed=seeds, d=st.integers(2, 16))
def test_kid_near_zero_for_one_distribution_and_positive_between_two(seed, d):
    rng = np.random.default_rng(seed)
    a, b, c = rng.standard_normal((3, 1000, d))  # unit-scale features, like standardized network features
    same = fid.kid(a, b, subsets=20, subset_size=200)
    other = fid.kid(a, c + 0.5, subsets=20, subset_size=200)  # mean shifted by half a std in every dimension
    assert abs(same["mean"]) <= same["std"] and abs(same["mean"]) < 0.05 * other["mean"]  # unbiased: ~0


def test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set():
    """a = {(0,0), (1,1)}, b = {(1,1), (2,2)}, d = 2, k(x, y) = (x.y/2 + 1)^3:
    k(a1,a2) = (0 + 1)^3 = 1; k(b1,b2) = (4/2 + 1)^3 = 27; cross: k(a1,.) = 1, 1; k(a2,b1) = (2/2 + 1)^3 = 8,
    k(a2,b2) = 27. MMD^2_u = 2*1/(2*1) + 2*27/(2*1) - 2 (1 + 1 + 8 + 27)/4 = 1 + 27 - 18.5 = 9.5.
    m = 2 is the whole of both sets: every subset is the same pair, std 0, and kid warns about it."""
    a, b = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 1.0], [2.0, 2.0]])
    with pytest.warns(UserWarning, match="whole first set.*whole second set"):
        r = fid.kid(a, b, subsets=5, subset_size=10)
    assert r["mean"] == pytest.approx(9.5, abs=1e-12) and r["std"] == pytest.approx(0.0, abs=1e-12)
    with pytest.warns(UserWarning, match="whole second set") as record:  # only the smaller side is whole
        fid.kid(np.vstack([a, a + 0.5]), b, subsets=3, subset_size=10)
    assert not any("first set" in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # subsets smaller than both sets: no warning
        fid.kid(np.vstack([a, a + 0.5]), np.vstack([b, b - 0.5]), subsets=3, subset_size=3)


def test_precision_recall_by_hand_pins_the_kth_neighbour():
    """1-D, k = 3. real = {0, 1, 2, 4, 8}; distances to the other real points, sorted, and the 3rd (the radius):
        0: 1 2 4 8 -> 4      1: 1 1 3 7 -> 3      2: 1 2 2 6 -> 2      4: 2 3 4 4 -> 4      8: 4 6 7 8 -> 7
    real manifold = [-4,4] u [-2,4] u [0,4] u [0,8] u [1,15] = [-4, 15] (closed balls: d <= radius counts).
    fake = {-5, -4, 5, 15, 15.5}: inside are -4 (on the edge of 0's ball), 5, 15 (on the edge of 8's) -> precision 3/5.
    Off by one: the 2nd neighbour (k - 1, or the point counted as its own neighbour) gives radii 2 1 2 3 6, manifold
    [-2, 14], precision 1/5; the 4th gives 8 7 6 4 8, manifold [-8, 16], precision 1; d < radius gives 1/5.
    recall: fake radii (3rd neighbour among fake) 20 19 10 19 19.5 cover every real point -> 1.
    Swapping the roles swaps the two numbers."""
    real = np.array([0.0, 1, 2, 4, 8])[:, None]
    fake = np.array([-5.0, -4, 5, 15, 15.5])[:, None]
    assert fid.precision_recall(real, fake, k=3) == {"precision": pytest.approx(0.6), "recall": 1.0}
    assert fid.precision_recall(fake, real, k=3) == {"precision": 1.0, "recall": pytest.approx(0.6)}
    assert fid.precision_recall(real, fake, k=2)["precision"] == pytest.approx(0.2)  # the k - 1 manifold above


@given(seed=seeds, n=st.integers(4, 200), d=st.integers(1, 10))
def test_precision_recall_identical_and_far_apart(seed, n, d):
    x = gaussian(seed, n, d)
    assert fid.precision_recall(x, x.copy()) == {"precision": 1.0, "recall": 1.0}
    far = x + 1e3 * (np.abs(x).max() + 1)
    assert fid.precision_recall(x, far) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_sees_mode_dropping():
    """Generated samples on half the real modes: precision stays 1, recall drops to about a half."""
    centers, std = data.MODES["grid25"]
    real = data.load("grid25", "test").x
    fake = real[(real[:, 0] < -1).numpy()]  # the 10 modes with x = -4 or -2, from the real points
    pr = fid.precision_recall(real, fake)
    assert pr["precision"] == 1.0 and 0.3 < pr["recall"] < 0.5


# --------------------------------------------------------------------------------------------------- IS, modes, classes
@given(seed=seeds, c=st.integers(2, 12), n=st.integers(10, 300), alpha=st.floats(0.01, 10))
def test_inception_score_between_one_and_classes(seed, c, n, alpha):
    p = np.random.default_rng(seed).dirichlet(np.full(c, alpha), n)
    s = fid.inception_score(p, splits=10)
    assert 1.0 <= s["mean"] <= c and s["std"] >= 0


def test_inception_score_extremes():
    c = 10
    assert fid.inception_score(np.full((100, c), 1 / c))["mean"] == pytest.approx(1.0)  # no confidence
    one_hot = np.eye(c)[np.arange(1000) % c]  # confident and balanced
    assert fid.inception_score(one_hot, splits=1)["mean"] == pytest.approx(c)
    assert fid.inception_score(one_hot)["mean"] > 0.9 * c  # splits are random 100s: nearly balanced
    sorted_by_class = np.eye(c)[np.arange(1000) // 100]  # e.g. a class-conditional sampler's output
    assert fid.inception_score(sorted_by_class)["mean"] > 0.9 * c  # the shuffle keeps splits from being one class


@given(seed=seeds, name=st.sampled_from(["grid25", "ring8"]), data_=st.data())
def test_mode_coverage_exact_on_synthetic_samples(seed, name, data_):
    centers, std = data.MODES[name]
    k = len(centers)
    chosen = data_.draw(st.lists(st.integers(0, k - 1), min_size=0, max_size=k, unique=True))
    n_hq, n_bad = data_.draw(st.integers(1, 5)), data_.draw(st.integers(0, 20))
    rng = np.random.default_rng(seed)
    hq = [centers[i].numpy() + 2.9 * std * u / np.linalg.norm(u) * rng.uniform(0, 1)  # within 3 std
          for i in chosen for u in rng.standard_normal((n_hq, 2))]
    bad = [centers[rng.integers(k)].numpy() + 3.5 * std * u / np.linalg.norm(u)  # just outside 3 std
           for u in rng.standard_normal((n_bad, 2))]
    pts = np.array(hq + bad).reshape(-1, 2)
    if len(pts) == 0:
        return
    r = fid.mode_coverage(pts, centers, std)
    assert r == {"modes": len(chosen), "hq": pytest.approx(len(hq) / len(pts))}
    assert isinstance(r["modes"], int) and isinstance(r["hq"], float)


def test_mode_coverage_of_the_test_split_is_complete():
    for name in ("grid25", "ring8"):
        r = fid.mode_coverage(data.load(name, "test").x, *data.MODES[name])
        assert r["modes"] == len(data.MODES[name][0])
        assert r["hq"] == pytest.approx(1 - np.exp(-4.5), abs=0.006)  # P(|z| <= 3) for a 2-D Gaussian = 98.9%


def test_class_coverage():
    uniform = fid.class_coverage(np.arange(1000) % 10)
    assert uniform["classes"] == 10 and uniform["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    collapsed = fid.class_coverage(torch.full((50,), 3))
    assert collapsed["classes"] == 1 and collapsed["kl_uniform"] == pytest.approx(np.log(10))
    probs = np.eye(10)[[0, 0, 1, 2]] * 0.9 + 0.01
    assert fid.class_coverage(probs)["histogram"] == [2, 1, 1, 0, 0, 0, 0, 0, 0, 0]


# ----------------------------------------------------------------------------------------------------- classifier
def test_shipped_classifier_accuracy_and_outputs():
    test = data.load("mnist5k", "test")
    p = fid.classify(test.x)
    assert p.shape == (1000, 10) and torch.allclose(p.sum(1), torch.ones(1000), atol=1e-5)
    accuracy = float((p.argmax(1) == test.y).float().mean())
    assert accuracy >= 0.97, accuracy
    assert fid.classifier() is fid.classifier()  # cached
    assert sum(t.numel() * t.element_size() for t in fid.classifier().state_dict().values()) < 1e6
    assert fid.CLASSIFIER_PATH.stat().st_size < 1e6
    padded = torch.nn.functional.pad(test.x[:50], (2, 2, 2, 2), value=-1.0)  # a model that pads to 32x32
    assert np.allclose(fid.features(padded), fid.features(test.x[:50]))
    assert fid.features(test.x[:5]).shape == (5, 128)


def test_real_digits_score_well_and_collapse_is_seen():
    train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    good = fid.score(train.x[::8], test.x, reference="mnist5k:test", kid_subsets=5)
    ones = fid.score(train.x[train.y == 1], test.x, reference="mnist5k:test", kid_subsets=5)  # a collapsed "generator"
    assert good["fid"] < ones["fid"] and good["recall"] > ones["recall"]
    assert good["classes"] == 10 and good["kl_uniform"] < 0.05 and ones["kl_uniform"] > 2.0  # log 10 = 2.30
    assert good["is"] > 8 and ones["is"] < 1.5
    assert good["provenance"]["n_real"] == 1000 and good["provenance"]["n_fake"] == 500
    assert "sha256" in good["provenance"]["extractor"] and "Cholesky" in good["provenance"]["sqrt"]


# ----------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("a, b, match", [
    (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
    (np.zeros((5, 3)), np.array([[0, 1, np.inf]] * 5), "inf"),
    (np.zeros((5, 3)), np.zeros((5, 4)), "dimensions differ"),
    (np.zeros((1, 3)), np.zeros((5, 3)), "need at least"),
    (np.zeros(5), np.zeros(5), r"\[N, D\]"),
])
def test_bad_input_is_one_clear_value_error(a, b, match):
    for f in (fid.fid, fid.kid, fid.precision_recall):
        with pytest.raises(fid.MetricError, match=match):
            f(a, b)
    assert issubclass(fid.MetricError, ValueError)
    with pytest.raises(fid.MetricError, match="must be in"):
        fid.features(torch.full((2, 1, 28, 28), 255.0))  # images in 0..255, not [-1, 1]


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_scores_images_and_points(tmp_path):
    test = data.load("mnist5k", "train")
    np.savez(tmp_path / "digits.npz", x=test.x[:300].numpy())
    proc = run_cli("fid.py", "score", tmp_path / "digits.npz", "mnist5k:test", "--kid-subsets", "5")
    assert proc.returncode == 0, proc.stderr
    for word in ("FID", "KID", "precision", "recall", "inception score", "classes covered", "provenance",
                 "n_real=1000", "n_fake=300", "sha256"):
        assert word in proc.stdout, word
    pts = data.load("grid25", "train").x[:2000]
    torch.save(pts[pts[:, 0] > 1], tmp_path / "pts.pt")  # two columns of modes: 10 of 25
    proc = run_cli("fid.py", "score", tmp_path / "pts.pt", "grid25:test", "--kid-subsets", "5")
    assert proc.returncode == 0, proc.stderr
    assert "10/25" in proc.stdout and "Frechet distance" in proc.stdout


def test_cli_bad_input_is_one_line(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "nan.npz", x=np.full((10, 2), np.nan))
    for args in ([tmp_path / "junk.npz", "grid25:test"], [tmp_path / "nan.npz", "grid25:test"],
                 ["grid25:test", "mnist5k:test"]):  # an unreadable file, NaN samples, points vs images
        assert_one_line_error(run_cli("fid.py", "score", *args))


def test_load_samples_reads_png_folders_npz_pt_and_dataset_names(tmp_path):
    from PIL import Image

    x = data.load("mnist5k", "test").x[:12]
    for i, img in enumerate(data.to_uint8(x)):
        Image.fromarray(img[..., 0]).save(tmp_path / f"{i:03d}.png")
    got, desc, _ = fid.load_samples(str(tmp_path))
    assert got.shape == (12, 1, 28, 28) and torch.allclose(got, x, atol=1 / 127.5) and "(12)" in desc
    torch.save({"x": x}, tmp_path / "s.pt")
    assert torch.equal(fid.load_samples(str(tmp_path / "s.pt"))[0], x)
    ring, _, name = fid.load_samples("ring8")  # default split: test
    assert name == "ring8" and ring.shape == (5000, 2)
    with pytest.raises(ValueError, match="cannot read"):
        (tmp_path / "bad.pt").write_bytes(b"garbage")
        fid.load_samples(str(tmp_path / "bad.pt"))
