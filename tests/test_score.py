"""score.py: the DSM target and loss against analytic Gaussian scores, annealed Langevin on an exact mixture score,
Tweedie's formula, and the commands (smoke runs, exact resume, one-line errors)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import score
from conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def gaussian_score(mu, var):
    """Score of N(mu, var I): -(x - mu) / var; sigma-independent wrapper for tests that fix the noise."""
    return lambda x, sigma=None: -(x - mu) / var


@given(mu=st.floats(-2, 2), s=st.floats(0.2, 2.0), ratio=st.floats(1 / 3, 3.0), seed=st.integers(0, 2 ** 16))
@settings(max_examples=15)
def test_dsm_target_has_the_analytic_score_as_conditional_mean(mu, s, ratio, seed):
    """x ~ N(mu, s^2): E[target | x~] is linear in x~ with slope -1 / (s^2 + sigma^2) and value mu / (s^2 + sigma^2)
    at 0, i.e. the score of N(mu, (s^2 + sigma^2) I). Checked by least squares over 200,000 scalar pairs."""
    g = torch.Generator().manual_seed(seed)
    sigma = ratio * s
    x = (mu + s * torch.randn(50_000, 4, generator=g, dtype=torch.float64))
    x_tilde, target = score.perturb(x, torch.full((50_000,), sigma, dtype=torch.float64), g)
    a = torch.stack([x_tilde.flatten(), torch.ones(x.numel(), dtype=torch.float64)], 1)
    slope, intercept = torch.linalg.lstsq(a, target.flatten()[:, None]).solution.flatten().tolist()
    v = s ** 2 + sigma ** 2
    assert slope == pytest.approx(-1 / v, rel=0.04)
    assert intercept == pytest.approx(mu / v, abs=0.04 / v + 0.01 * abs(mu) / v)


@given(s=st.floats(0.3, 2.0), seed=st.integers(0, 2 ** 16), kappa=st.sampled_from([0.8, 0.9, 1.1, 1.25]),
       shift=st.sampled_from([-0.3, 0.3]))
@settings(max_examples=10)
def test_dsm_loss_is_minimized_by_the_analytic_score(s, seed, kappa, shift):
    """With the same data and noise (common random numbers), the analytic score of each noised Gaussian gives a
    lower sigma^2-weighted DSM loss than a scaled or shifted one."""
    mu = torch.tensor([0.5, -1.0])
    sigmas = score.geometric_sigmas(2 * s, 0.5 * s, 4)
    x = mu + s * torch.randn(50_000, 2, generator=torch.Generator().manual_seed(seed))

    def analytic(x_t, sigma):
        return -(x_t - mu) / (s ** 2 + sigma[:, None] ** 2)

    def loss(fn):
        return float(score.dsm_loss(fn, x, sigmas, torch.Generator().manual_seed(seed + 1)))

    best = loss(analytic)
    assert best < loss(lambda x_t, sigma: kappa * analytic(x_t, sigma))
    assert best < loss(lambda x_t, sigma: analytic(x_t, sigma) + shift / sigma[:, None])


def dsm_closed_form(s, delta, gamma, sigmas, d):
    """Mean and variance of one example's loss 1/2 sigma^2 || s(x~, sigma) + (x~ - x) / sigma^2 ||^2 for
    x ~ N(mu, s^2 I_d), x~ = x + sigma z, the level sigma uniform over `sigmas`, and the linear score
    s(x~, sigma) = -c (x~ - m), c = gamma / (s^2 + sigma^2), m = mu + delta (every coordinate).
    sigma s + z = -sigma c (x - mu) + sigma c delta + (1 - sigma^2 c) z: per coordinate Y ~ N(a, tau^2) with
    a = sigma c delta, tau^2 = sigma^2 c^2 s^2 + (1 - sigma^2 c)^2, so E[loss | sigma] = d/2 (a^2 + tau^2) and
    Var[loss | sigma] = d/4 (2 tau^4 + 4 a^2 tau^2) (Var Y^2 for a normal Y)."""
    sig = sigmas.double()
    c = gamma / (s ** 2 + sig ** 2)
    a, tau2 = sig * c * delta, sig ** 2 * c ** 2 * s ** 2 + (1 - sig ** 2 * c) ** 2
    mean_l, var_l = d / 2 * (a ** 2 + tau2), d / 4 * (2 * tau2 ** 2 + 4 * a ** 2 * tau2)
    return float(mean_l.mean()), float(var_l.mean() + mean_l.var(unbiased=False))  # total variance over levels


@given(mu=st.floats(-2, 2), s=st.floats(0.2, 2.0), gamma=st.floats(0.5, 1.5), delta=st.floats(-1, 1),
       hi=st.floats(1.5, 4.0), levels=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
@settings(max_examples=15)
def test_dsm_loss_equals_its_closed_form_for_gaussian_data(mu, s, gamma, delta, hi, levels, seed):
    """dsm_loss with a linear score function plugged in, averaged over N examples, equals the closed form of
    dsm_closed_form within 5 standard errors (the error computed exactly, not estimated). Pins the weight
    lambda(sigma) = sigma^2, the 1/2, the sum over dimensions, the sign and scale of the target -z / sigma, the
    perturbation x + sigma z and the uniform choice of level."""
    n, d = 40_000, 3
    sigmas = score.geometric_sigmas(hi * s, 0.3 * s, levels)  # sigma_L = 0.3 s .. sigma_1 = 1.5-4 s: lambda != const
    x = mu + s * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def linear(x_t, sigma):
        return -gamma / (s ** 2 + sigma[:, None] ** 2) * (x_t - (mu + delta))

    got = float(score.dsm_loss(linear, x, sigmas, torch.Generator().manual_seed(seed + 1)))
    mean, var = dsm_closed_form(s, delta, gamma, sigmas, d)
    assert abs(got - mean) < 5 * math.sqrt(var / n) + 1e-6 * mean


def test_dsm_loss_of_the_exact_score():
    """The exact score of q_sigma = N(mu, (s^2 + sigma^2) I) gives the sigma^2-weighted DSM loss
    d/2 * s^2 / (s^2 + sigma^2) at each level (the irreducible part: the target's variance given x~ times sigma^2),
    so with one level per test: d = 4, s = 1, sigma = 1 -> 1; sigma = 3 -> 0.2; sigma = 1/3 -> 1.8."""
    mu, s, n, d = 0.7, 1.0, 100_000, 4
    for sigma, expected in [(1.0, 1.0), (3.0, 0.2), (1 / 3, 1.8)]:
        x = mu + s * torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        exact = gaussian_score(mu, s ** 2 + sigma ** 2)
        got = float(score.dsm_loss(exact, x, torch.tensor([sigma]), torch.Generator().manual_seed(4)))
        # Y ~ N(0, tau^2), tau^2 = s^2 / (s^2 + sigma^2): Var(loss) = d/2 tau^4, standard error sqrt(d / 2 / n) tau^2
        assert got == pytest.approx(expected, abs=5 * math.sqrt(d / 2 / n) * expected / (d / 2))


@given(eps=st.floats(1e-3, 1e-2), steps=st.integers(1, 8), seed=st.integers(0, 2 ** 16))
@settings(max_examples=10)
def test_annealed_langevin_steps_are_algorithm_1(eps, steps, seed):
    """With a score that does not depend on x, s(x, sigma) = sigma b, Algorithm 1 is a Gaussian random walk:
        x_final - x_0 = sum_i T alpha_i / 2 * sigma_i b  +  N(0, sum_i T alpha_i I),  alpha_i = eps sigma_i^2 / sigma_L^2.
    Pins the drift alpha / 2 (not the official code's alpha), the noise sqrt(alpha) (not sqrt(2 alpha)), the step
    schedule sigma_i^2 / sigma_L^2 and that level i's sigma is what the score is given."""
    n, b = 40_000, torch.tensor([1.0, -2.0], dtype=torch.float64)
    sigmas = [2.0, 1.0, 0.5]
    alphas = [eps * sig ** 2 / sigmas[-1] ** 2 for sig in sigmas]  # 16 eps, 4 eps, eps
    drift = sum(steps * a / 2 * sig for a, sig in zip(alphas, sigmas)) * b  # [2]
    var = sum(steps * a for a in alphas)
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    x = score.annealed_langevin(lambda x_, sigma: sigma[:, None].double() * b, x0, sigmas, steps, eps,
                                generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(x.mean(0), drift, atol=5 * math.sqrt(var / n))
    assert x.var(0).tolist() == pytest.approx([var, var], rel=5 * math.sqrt(2 / n))


@given(w=st.floats(0.2, 0.8), c=st.floats(1.5, 3.0), std=st.floats(0.05, 0.2), seed=st.integers(0, 2 ** 16))
@settings(max_examples=5)
def test_annealed_langevin_reproduces_mixture_modes_and_weights(w, c, std, seed):
    """Fed the exact score of the noised mixture w N(-c e1, std^2) + (1-w) N(c e1, std^2) (component variance
    std^2 + sigma^2 at level sigma), Algorithm 1 from uniform noise puts mass w near -c e1, 1-w near +c e1, with
    the spread of the last level."""
    centers = torch.tensor([[-c, 0.0], [c, 0.0]])
    log_w = torch.tensor([w, 1 - w]).log()

    def mixture_score(x, sigma):
        v = (std ** 2 + sigma ** 2)[:, None]  # [B, 1]
        d = centers[None] - x[:, None]  # [B, 2, 2]: mu_k - x
        r = (log_w - (d ** 2).sum(-1) / (2 * v)).softmax(1)  # responsibilities [B, 2]
        return (r[..., None] * d).sum(1) / v

    sigma_l = std / 2
    sigmas = score.geometric_sigmas(3 * c, sigma_l, 10)  # sigma_1 ~ the largest distance (NCSNv2 technique 1)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2000, 2, generator=g) * 2 - 1
    x = score.annealed_langevin(mixture_score, x0, sigmas, 100, eps=0.05 * std ** 2, generator=g)
    left = x[:, 0] < 0
    assert float(left.float().mean()) == pytest.approx(w, abs=0.05)
    for k, part in enumerate([x[left], x[~left]]):
        assert torch.allclose(part.mean(0), centers[k], atol=0.1 * std + 0.02)
        assert float(part.std(0).mean()) == pytest.approx(math.sqrt(std ** 2 + sigma_l ** 2), rel=0.15)


@given(mu=st.floats(-2, 2), s=st.floats(0.1, 2.0), sigma=st.floats(0.01, 1.0))
def test_tweedie_step_is_the_posterior_mean(mu, s, sigma):
    """For x ~ N(mu, s^2 I): x~ + sigma^2 grad log q_sigma(x~) = mu + s^2 / (s^2 + sigma^2) (x~ - mu) = E[x | x~]."""
    x_tilde = torch.linspace(-3, 3, 50, dtype=torch.float64)[:, None].repeat(1, 2)
    out = score.tweedie_denoise(gaussian_score(mu, s ** 2 + sigma ** 2), x_tilde, sigma)
    assert torch.allclose(out, mu + s ** 2 / (s ** 2 + sigma ** 2) * (x_tilde - mu), atol=1e-9)


@given(box=st.floats(0.5, 3.0), sigma=st.floats(0.01, 4.0), gain=st.floats(-1e4, 1e4), seed=st.integers(0, 2 ** 16))
@settings(max_examples=20)
def test_clip_denoised_keeps_the_tweedie_estimate_in_the_box(box, sigma, gain, seed):
    """s_c = s + (clip(D) - D) / sigma^2 with D = x + sigma^2 s: its Tweedie estimate x + sigma^2 s_c is clip(D), in
    [-box, box] whatever the network says, and where D is inside the box s_c is s itself, bit for bit."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(500, 2, generator=g, dtype=torch.float64) * 4
    w = torch.randn(2, 2, generator=g, dtype=torch.float64)
    raw = lambda x_, sig: gain * torch.tanh(x_ @ w) * (x_.norm(dim=1, keepdim=True) > 2)  # noqa: E731  wild off the data
    sig = torch.full((500,), sigma, dtype=torch.float64)
    s, s_c = raw(x, sig), score.clip_denoised(raw, box)(x, sig)
    d, d_c = x + sigma ** 2 * s, x + sigma ** 2 * s_c
    assert torch.allclose(d_c, d.clamp(-box, box), atol=1e-9 * (1 + d.abs().max()))
    inside = (d.abs() <= box).all(1)
    assert torch.equal(s_c[inside], s[inside])


def test_clipped_chains_survive_a_score_that_explodes_off_the_data():
    """The failure clip_denoised is for: a score that is right near the data (here the exact score of N(0, 1 + sigma^2))
    and explodes outward beyond |x| > 6, where the network never trained. Chains started out there diverge under
    Algorithm 1 as written; with the clipped score they come back, and the Tweedie step puts every sample in the box."""
    def exploding(x, sigma):
        exact = -x / (1 + sigma[:, None] ** 2)
        return torch.where(x.norm(dim=1, keepdim=True) > 6, 1e4 * x, exact)

    sigmas = score.geometric_sigmas(4.0, 0.01, 10)
    x0 = torch.tensor([[8.0, 0.0], [0.0, -7.0], [0.5, 0.5]]).repeat(100, 1)
    raw = score.annealed_langevin(exploding, x0, sigmas, 20, 2e-5, generator=torch.Generator().manual_seed(0))
    assert not torch.isfinite(raw).all()
    clipped = score.clip_denoised(exploding, 3.0)
    x = score.annealed_langevin(clipped, x0, sigmas, 20, 2e-5, generator=torch.Generator().manual_seed(0))
    x = score.tweedie_denoise(clipped, x, float(sigmas[-1]))
    assert torch.isfinite(x).all() and float(x.abs().max()) <= 3.0 + 1e-5


def test_generate_clips_only_where_the_model_knows_its_box():
    """generate uses clip_denoised with the box train saved: a model whose network pushes everything outward gives
    samples inside the box (denormalized) with clip, far outside without; an old checkpoint without a box is not
    clipped."""
    cfg = dict(kind="points", shape=[2], hidden=8, levels=3, box=1.5)
    model = score.build(cfg)
    model.sigmas.copy_(score.geometric_sigmas(2.0, 0.05, 3))
    model.shift.fill_(10.0)
    class Outward(torch.nn.Module):  # a score with the wrong sign, pushing every chain away
        def forward(self, x, sigma):
            return 50 * x / sigma[:, None]

    model.net = Outward()
    kw = dict(steps_per_level=5, generator=torch.Generator().manual_seed(0))
    x = model.normalize(score.generate(model, 50, **kw))
    assert float(x.abs().max()) <= 1.5 + 1e-4
    assert float(model.normalize(score.generate(model, 50, clip=False, **kw)).abs().max()) > 10
    assert score.build({k: v for k, v in cfg.items() if k != "box"}).box is None


@given(hi=st.floats(0.5, 50), ratio=st.floats(2, 1e4), levels=st.integers(2, 30))
def test_geometric_sigmas(hi, ratio, levels):
    sig = score.geometric_sigmas(hi, hi / ratio, levels).double()
    assert sig[0] == pytest.approx(hi, rel=1e-5) and sig[-1] == pytest.approx(hi / ratio, rel=1e-4)
    q = sig[1:] / sig[:-1]
    assert torch.allclose(q, q[0].expand_as(q), rtol=1e-4) and float(q.max()) < 1


def test_networks_are_conditioned_on_sigma():
    torch.manual_seed(0)
    for net, x in [(score.PointScore(2, 32), torch.randn(5, 2)), (score.ImageScore(1, 8), torch.randn(3, 1, 28, 28))]:
        a, b = net(x, torch.full((len(x),), 0.1)), net(x, torch.full((len(x),), 1.0))
        assert a.shape == x.shape and torch.isfinite(a).all()
        assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------------------------------- commands
TINY_POINTS = ["--data", "grid25", "--steps", "3", "--hidden", "16", "--levels", "3", "--steps-per-level", "2",
               "--batch-size", "32", "--device", "cpu"]


def test_cli_points_train_and_sample(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("score.py", "train", *TINY_POINTS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "ckpt.pt").is_file() and (out / "samples.png").is_file()
    proc = run_cli("score.py", "sample", "--ckpt", out / "ckpt.pt", "--n", "7", "--steps-per-level", "2",
                   "--out", tmp_path / "s.npz")
    assert proc.returncode == 0, proc.stderr
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (7, 2) and np.isfinite(x).all()


def test_images_train_sample_and_load(tmp_path):
    ckpt = score.train(data="mnist5k", steps=2, batch_size=4, ch=8, levels=2, steps_per_level=1, device="cpu",
                       out=str(tmp_path / "m"))
    model = score.load(ckpt)
    assert torch.allclose(model.sigmas, score.geometric_sigmas(1.0, 0.01, 2))  # images: sigma_1 = 1 by default
    score.sample(ckpt=str(ckpt), n=3, out=str(tmp_path / "m.npz"), steps_per_level=1, eps=2e-5, denoise=True,
                 seed=0, device="cpu")
    x = np.load(tmp_path / "m.npz")["x"]
    assert x.shape == (3, 1, 28, 28) and np.isfinite(x).all()
    x_gen = score.generate(model, 3, generator=torch.Generator().manual_seed(0), steps_per_level=1)  # --seed 0
    assert np.array_equal(x_gen.numpy(), x)


def test_points_sigma_max_follows_the_data_and_resume_is_exact(tmp_path):
    kw = dict(data="ring8", batch_size=16, hidden=16, levels=3, steps_per_level=1, device="cpu")
    full = score.load(score.train(steps=4, out=str(tmp_path / "a"), **kw))
    score.train(steps=2, out=str(tmp_path / "b"), **kw)
    resumed = score.load(score.train(steps=4, out=str(tmp_path / "b"), resume=True, **kw))
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    import data
    z = full.normalize(data.load("ring8").x)
    assert float(full.sigmas[0]) == pytest.approx(float(torch.cdist(z[:3000], z[:3000]).max()), rel=0.05)
    assert full.box == pytest.approx(float(z.abs().max()))  # clip_denoised's box, saved with the checkpoint


def cli(capsys, *args):
    """Run score's app in this process (as `python score.py ...` would) and capture its exit code and stderr."""
    capsys.readouterr()  # drop what earlier calls printed
    with pytest.raises(SystemExit) as e:
        score.app(args=[str(a) for a in args])
    return SimpleNamespace(returncode=e.value.code, stderr=capsys.readouterr().err)


def test_bad_input_fails_with_one_line(tmp_path, capsys):
    assert_one_line_error(run_cli("score.py", "train", "--steps", "-1"))
    assert_one_line_error(cli(capsys, "train", "--data", "nope", "--out", tmp_path / "x"))
    assert_one_line_error(cli(capsys, "train", *TINY_POINTS, "--sigma-min", "0", "--out", tmp_path / "x"))
    assert_one_line_error(cli(capsys, "train", *TINY_POINTS, "--sigma-max", "0.001", "--out", tmp_path / "x"))
    assert_one_line_error(cli(capsys, "sample", "--ckpt", tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(cli(capsys, "sample", "--ckpt", bad))
    assert_one_line_error(cli(capsys, "sample", "--ckpt", bad, "--out", tmp_path / "x.jpg"))
    assert_one_line_error(cli(capsys, "sample", "--ckpt", bad, "--n", "0"))


# ----------------------------------------------------------------------------------------------------- the surface
@pytest.fixture(scope="module")
def moons_ckpt(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENMODELS_QUIET", "1")
        return score.train(data="moons", steps=3, hidden=8, levels=3, steps_per_level=2, batch_size=16, device="cpu",
                           out=str(tmp_path_factory.mktemp("score") / "r"))


def test_generate_is_what_the_sample_command_writes(moons_ckpt, tmp_path):
    model = score.load(moons_ckpt)
    x = score.generate(model, 7, generator=torch.Generator().manual_seed(3), steps_per_level=2)
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
    assert torch.equal(x, score.generate(model, 7, generator=torch.Generator().manual_seed(3), steps_per_level=2))
    assert not torch.equal(x, score.generate(model, 7, generator=torch.Generator().manual_seed(4), steps_per_level=2))
    g = torch.Generator().manual_seed(3)  # by hand: x_0 uniform on [-1, 1]^2, Algorithm 1 and Tweedie with the
    x_0 = torch.rand(7, 2, generator=g) * 2 - 1  # clipped score, data space
    s_c = score.clip_denoised(model, model.box)
    x_L = score.annealed_langevin(s_c, x_0, model.sigmas, 2, 2e-5, generator=g)
    assert torch.equal(x, model.denormalize(score.tweedie_denoise(s_c, x_L, float(model.sigmas[-1]))))
    raw = score.generate(model, 7, generator=torch.Generator().manual_seed(3), steps_per_level=2, denoise=False)
    assert torch.equal(raw, model.denormalize(x_L))
    g = torch.Generator().manual_seed(3)  # --no-clip: Algorithm 1 as written
    x_L = score.annealed_langevin(model, torch.rand(7, 2, generator=g) * 2 - 1, model.sigmas, 2, 2e-5, generator=g)
    unclipped = score.generate(model, 7, generator=torch.Generator().manual_seed(3), steps_per_level=2, clip=False)
    assert torch.equal(unclipped, model.denormalize(score.tweedie_denoise(model, x_L, float(model.sigmas[-1]))))
    score.app(["sample", "--ckpt", str(moons_ckpt), "--n", "7", "--steps-per-level", "2", "--seed", "3",
               "--out", str(tmp_path / "s.npz"), "--device", "cpu"])
    assert np.array_equal(np.load(tmp_path / "s.npz")["x"], x.numpy())
    score.app(["sample", "--ckpt", str(moons_ckpt), "--n", "3", "--steps-per-level", "1"])  # default --out
    assert (moons_ckpt.parent / "sample.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unconditional"):
        score.generate(model, 2, y=torch.zeros(2, dtype=torch.long))
