"""DDPM: the laws of the forward process, the bound, the samplers (against an analytic oracle), and the commands."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
import nets
from conftest import CENTERS, STD, WEIGHTS, assert_one_line_error, mixture_stats, run_cli


def alpha_bar_of(schedule, T):
    return torch.tensor(np.cumprod(1 - ddpm.make_betas(schedule, T)), dtype=torch.float64)


# ------------------------------------------------------------------------------------------- forward process
@given(st.sampled_from(["linear", "cosine"]), st.integers(2, 2000))
def test_alpha_bar_decreasing_in_unit_interval(schedule, T):
    ab = alpha_bar_of(schedule, T)
    assert ab.shape == (T,)
    assert ((ab > 0) & (ab < 1)).all()
    assert (ab[1:] < ab[:-1]).all()


@given(st.sampled_from(["linear", "cosine"]), st.integers(1, 999), st.floats(-3, 3))
def test_closed_form_equals_t_one_step_kernels(schedule, t, x0):
    """q(x_t | x_0) from t applications of q(x_i | x_{i-1}) = N(sqrt(1 - beta_i) x_{i-1}, beta_i) matches eq. 4."""
    betas = ddpm.make_betas(schedule, 1000)
    mean, var = x0, 0.0
    for beta in betas[: t + 1]:  # index t holds alpha_bar_{t+1} in Ho et al.'s 1-based notation
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
    alpha_bar = np.cumprod(1 - betas)[t]  # float64 closed form
    assert math.sqrt(alpha_bar) * x0 == pytest.approx(mean, rel=1e-10, abs=1e-12)
    assert 1 - alpha_bar == pytest.approx(var, rel=1e-10)
    model = ddpm.DDPM(nets.MLP(1, 8, 1), 1000, schedule)  # the model's float32 buffers
    x = torch.tensor([[x0]])
    tt = torch.tensor([t])
    m = model.q_sample(x, tt, torch.zeros_like(x)).item()  # the mean of the closed form
    s = model.q_sample(x, tt, torch.ones_like(x)).item() - m  # its standard deviation
    assert m == pytest.approx(mean, rel=1e-5, abs=1e-6)
    assert s ** 2 == pytest.approx(var, rel=2e-3)  # float32: 1 - alpha_bar loses digits when alpha_bar ~ 1


@given(st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(-3, 3), st.floats(-3, 3))
def test_posterior_is_bayes_rule(a, b, x0, xt):
    """q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0): the product of two Gaussians in x_s."""
    ab_s, ab_t = max(a, b), min(a, b) * 0.999
    beta = 1 - ab_t / ab_s
    prec = 1 / (1 - ab_s) + (1 - beta) / beta  # precision of the product
    mean = (math.sqrt(ab_s) * x0 / (1 - ab_s) + math.sqrt(1 - beta) * xt / beta) / prec
    m, v = ddpm.posterior(torch.tensor(ab_t, dtype=torch.float64), torch.tensor(ab_s, dtype=torch.float64),
                          torch.tensor(xt, dtype=torch.float64), torch.tensor(x0, dtype=torch.float64))
    assert v.item() == pytest.approx(1 / prec, rel=1e-9)
    assert m.item() == pytest.approx(mean, rel=1e-7, abs=1e-9)


# ------------------------------------------------------------------------------------------- the bound
class LinearEps(torch.nn.Module):
    """eps(x_t, t) = a_t x_t + b_t: the whole reverse chain is linear-Gaussian, so p(x_0) is Gaussian."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, t, y=None):  # t: the steps as floats (the backbone contract of nets.py)
        t = t.long()
        return self.a[t].view(-1, 1) * x + self.b[t].view(-1, 1)


@settings(max_examples=10)
@given(st.integers(0, 10_000), st.floats(-2, 2))
def test_vlb_never_exceeds_exact_nll(seed, x0):
    T = 12
    g = torch.Generator().manual_seed(seed)
    a, b = 0.8 * torch.rand(T, generator=g), 0.5 * torch.randn(T, generator=g)
    model = ddpm.DDPM(LinearEps(a, b), T, "cosine").double()
    ab, betas = model.alpha_bar64, model.betas64
    # exact marginal: x_{T-1} ~ N(0, 1), then x_{s} = A x_t + c + N(0, var) down to the decoder N(x0_hat, beta_1)
    m, v = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for t in range(T - 1, -1, -1):
        # x0_hat = (x - sqrt(1-ab) (a x + b)) / sqrt(ab) = p x + q
        p = (1 - (1 - ab[t]).sqrt() * a[t]) / ab[t].sqrt()
        q = -(1 - ab[t]).sqrt() * b[t] / ab[t].sqrt()
        if t == 0:
            A, c, var = p, q, betas[0]
        else:
            beta = 1 - ab[t] / ab[t - 1]
            k0 = ab[t - 1].sqrt() * beta / (1 - ab[t])  # posterior mean = k0 x0_hat + kt x_t
            kt = (1 - beta).sqrt() * (1 - ab[t - 1]) / (1 - ab[t])
            A, c, var = k0 * p + kt, k0 * q, (1 - ab[t - 1]) / (1 - ab[t]) * beta
        m, v = A * m + c, A * A * v + var
    exact_nll = 0.5 * (x0 - m) ** 2 / v + 0.5 * torch.log(2 * math.pi * v)
    x = torch.full((4000, 1), x0, dtype=torch.float64)
    L = model.vlb(x, discrete=False, generator=torch.Generator().manual_seed(seed))
    assert L.mean() + 4 * L.std() / math.sqrt(len(L)) >= exact_nll.item()


# ------------------------------------------------------------------------------------------- samplers


def mixture_eps(alpha_bar, centers=CENTERS, weights=WEIGHTS, std=STD):
    """The optimal eps for a Gaussian mixture: x_t ~ sum_k w_k N(sqrt(ab) mu_k, ab std^2 + 1 - ab),
    eps*(x_t) = -sqrt(1 - ab) grad log p(x_t)."""
    def eps_fn(x, t):
        ab = alpha_bar[t].double()[:, None]  # [B, 1]
        v = ab * std ** 2 + 1 - ab
        d = x.double()[:, None, :] - ab.sqrt()[:, None] * centers[None]  # [B, K, 2]
        r = torch.softmax(weights.log()[None] - (d ** 2).sum(-1) / (2 * v), 1)  # responsibilities [B, K]
        score = -(r[..., None] * d).sum(1) / v
        return (-(1 - ab).sqrt() * score).to(x.dtype)
    return eps_fn


AB = alpha_bar_of("linear", 1000).float()


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.mark.parametrize("sampler,steps,eta,spacing", [
    ("ddpm", 1000, 0.0, "lambda"), ("ddpm", 100, 0.0, "lambda"), ("ddim", 50, 0.0, "lambda"), ("ddim", 50, 1.0, "lambda"),
    ("dpm++2m", 10, 0.0, "lambda"), ("dpm++2m", 20, 0.0, "lambda"), ("dpm++2m", 20, 0.0, "karras")])
def test_samplers_reproduce_mixture_from_exact_eps(sampler, steps, eta, spacing):
    """(karras with EDM's rho = 7: the images' default rho = 3 leaves too few calls at low noise for the exact noise
    of these sharp modes, 95% within 3 std at 20 calls; README)"""
    eps_fn = Counter(mixture_eps(AB))
    x_T = torch.randn(3000, 2, generator=torch.Generator().manual_seed(1))
    x = ddpm.sample(eps_fn, AB, x_T, sampler, steps, eta, torch.Generator().manual_seed(2), spacing, rho=7.0)
    assert eps_fn.calls == steps
    within, weights, spread = mixture_stats(x)
    assert within > 0.97  # 98.9% expected
    assert torch.allclose(weights, WEIGHTS, atol=0.04)
    assert ((spread > 0.8 * STD) & (spread < 1.25 * STD)).all(), spread


def test_dpmpp_10_calls_close_to_ddpm_1000():
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3))
    ref = ddpm.sample(mixture_eps(AB), AB, x_T, "ddpm", 1000, generator=torch.Generator().manual_seed(4))
    fast = ddpm.sample(mixture_eps(AB), AB, x_T, "dpm++2m", 10)
    for a, b in zip(mixture_stats(ref), mixture_stats(fast)):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=0.03, rtol=0.1), (a, b)


@given(st.integers(1, 60), st.sampled_from(ddpm.SAMPLERS))
@settings(max_examples=15)
def test_eps_fn_called_exactly_steps_times(steps, sampler):
    eps_fn = Counter(lambda x, t: torch.zeros_like(x))
    ddpm.sample(eps_fn, AB, torch.randn(4, 2), sampler, steps)
    assert eps_fn.calls == steps


def test_timesteps_strictly_decreasing_and_end_at_zero():
    for steps in [1, 2, 5, 10, 20, 50, 999, 1000]:
        for spacing, rho in [("lambda", 0), ("uniform", 0), ("karras", 1.0), ("karras", 3.0), ("karras", 7.0)]:
            ts = ddpm.timesteps(1000, steps, AB, spacing, rho)
            assert len(ts) == steps and ts[0] == 999 and (steps == 1 or ts[-1] == 0)
            assert all(a > b for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_karras_spacing_is_eq5_rounded_to_the_nearest_step(schedule):
    """Karras et al. eq. 5: sigma_i^(1/rho) evenly spaced from sigma_max to sigma_min, each rounded to the step with
    the nearest sigma; where those nearest steps are already distinct and decreasing, they are the timesteps."""
    ab = alpha_bar_of(schedule, 1000)
    sigma = ((1 - ab) / ab).sqrt().numpy()
    checked = 0
    for rho in [0.5, 1, 2, 3, 7, 10]:
        for steps in [2, 5, 10, 20, 40]:
            i = np.arange(steps) / (steps - 1)
            target = (sigma[-1] ** (1 / rho) + i * (sigma[0] ** (1 / rho) - sigma[-1] ** (1 / rho))) ** rho
            nearest = [int(np.abs(np.log(sigma) - np.log(s)).argmin()) for s in target]
            if all(a > b for a, b in zip(nearest, nearest[1:])):
                assert ddpm.timesteps(1000, steps, ab, "karras", rho) == nearest, (rho, steps)
                checked += 1
    assert checked >= 8  # of 30 cases, those without collisions (8 on cosine): the check is not vacuous


@given(st.integers(2, 60))
@settings(max_examples=10)
def test_karras_spacing_tends_to_lambda_spacing_as_rho_grows(steps):
    """sigma^(1/rho) ~ 1 + log(sigma) / rho for large rho: evenly spaced in sigma^(1/rho) is evenly spaced in
    log sigma = -lambda."""
    assert ddpm.timesteps(1000, steps, AB, "karras", 1e8) == ddpm.timesteps(1000, steps, AB, "lambda")


def gaussian_eps(alpha_bar, mu=0.5, s=0.3):
    """exact eps for data N(mu, s^2 I): linear in x_t."""
    def eps_fn(x, t):
        ab = alpha_bar[t].view(-1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s ** 2 + 1 - ab)
    return eps_fn


def test_ddim_eta0_is_deterministic_and_inversion_roundtrips():
    eps_fn = gaussian_eps(AB)
    x_T = torch.randn(500, 2)
    a = ddpm.sample(eps_fn, AB, x_T, "ddim", 30, 0.0, torch.Generator().manual_seed(0))
    b = ddpm.sample(eps_fn, AB, x_T, "ddim", 30, 0.0, torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    x_0 = 0.5 + 0.3 * torch.randn(500, 2)
    x_T = ddpm.ddim_invert(eps_fn, AB, x_0, 100)
    assert abs(x_T.std().item() - 1) < 0.1  # the encoder maps data to (nearly) standard normal noise
    x_rec = ddpm.sample(eps_fn, AB, x_T, "ddim", 100)
    assert (x_rec - x_0).pow(2).mean().sqrt() < 0.02


# ------------------------------------------------------------------------------------------- the formulas, one by one
# Each test below pins one formula against a value computed another way (by hand, by Bayes' rule, by a Monte Carlo
# of the definition); scripts/mutants.py checks that breaking the formula makes the test fail.
BETAS = np.array([0.05, 0.15, 0.3, 0.45, 0.6])  # a short schedule whose every term is O(1): alpha_bar_T = 0.124
AB5 = np.cumprod(1 - BETAS)  # float64, independent of the code under test


def Phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))  # standard normal CDF


def test_bits_per_dim_hand_values():
    # uniform over the 256 values of each of D = 784 dims: -log p = 784 ln 256 nats = exactly 8 bits per dim
    assert ddpm.bits_per_dim(784 * math.log(256), 784) == pytest.approx(8.0, rel=1e-12)
    assert ddpm.bits_per_dim(3 * 1.0, 3) == pytest.approx(1.4426950408889634, rel=1e-12)  # 1 nat = log2(e) bits
    L = torch.tensor([1.0, 2.5], dtype=torch.float64) * 784 * math.log(2)  # per example -> per example
    assert torch.allclose(ddpm.bits_per_dim(L, 784), torch.tensor([1.0, 2.5], dtype=torch.float64), rtol=1e-12)


@given(st.floats(1e-3, 0.999), st.integers(0, 10_000))
def test_prior_term_is_kl_to_standard_normal(ab_T, seed):
    x_0 = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = torch.distributions.Normal(math.sqrt(ab_T) * x_0, math.sqrt(1 - ab_T))  # q(x_T | x_0), eq. 4
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    got = ddpm.prior_kl(x_0, torch.tensor(ab_T, dtype=torch.float64))
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-13)


def test_prior_term_hand_value():
    # x_0 = 1 in D = 2 dims, alpha_bar_T = 1/2: 2 * (1/2) (1/2 + 1/2 - 1 - ln(1/2)) = ln 2
    got = ddpm.prior_kl(torch.ones(1, 2, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    assert got.item() == pytest.approx(math.log(2), rel=1e-12)


@given(st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(0, 2))
def test_ddim_sigma_is_eta_times_posterior_std(a, b, eta):
    """eta = 1: sigma^2 is the variance of q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0), by Bayes' rule."""
    ab_s, ab_t = max(a, b), min(a, b) * 0.999
    alpha = ab_t / ab_s  # q(x_t | x_s) = N(sqrt(alpha) x_s, 1 - alpha)
    post_var = 1 / (1 / (1 - ab_s) + alpha / (1 - alpha))  # precisions add
    sigma = ddpm.ddim_sigma(torch.tensor(ab_t, dtype=torch.float64), torch.tensor(ab_s, dtype=torch.float64), eta)
    assert sigma.item() == pytest.approx(eta * math.sqrt(post_var), rel=1e-9, abs=1e-15)


def test_ddim_sigma_eta1_consecutive_is_beta_tilde():
    betas = ddpm.make_betas("linear", 1000)
    ab = np.cumprod(1 - betas)
    t = np.arange(1, 1000)
    beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]  # Ho et al. eq. 7
    sigma = ddpm.ddim_sigma(torch.tensor(ab[t]), torch.tensor(ab[t - 1]), 1.0).numpy()
    np.testing.assert_allclose(sigma ** 2, beta_tilde, rtol=1e-8)


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 0.5), ("ddim", 1.0), ("ddpm", 0.0)])
def test_stochastic_step_mean_and_spread(sampler, eta):
    """Two steps on the 5-step schedule (t = 4 -> 0 -> clean) with a constant eps_fn = c from a constant x_T: the
    first step is x_0' = sqrt(ab_0) x0_hat + sqrt(1 - ab_0 - sigma^2) c + sigma z, the second returns
    (x_0' - sqrt(1 - ab_0) c) / sqrt(ab_0), so the output is N(m, sigma^2 / ab_0) with m by hand."""
    e = 1.0 if sampler == "ddpm" else eta
    ab_t, ab_s, c, xT = AB5[4], AB5[0], 0.4, 0.7
    sigma = e * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))  # Song et al. eq. 16
    x0_hat = (xT - math.sqrt(1 - ab_t) * c) / math.sqrt(ab_t)
    m = x0_hat + (math.sqrt(1 - ab_s - sigma ** 2) - math.sqrt(1 - ab_s)) * c / math.sqrt(ab_s)
    sd = sigma / math.sqrt(ab_s)
    N = 20_000
    x = ddpm.sample(lambda x, t: torch.full_like(x, c), torch.tensor(AB5), torch.full((N, 1), xT, dtype=torch.float64),
                    sampler, 2, eta, torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - m) < 5 * sd / math.sqrt(N) + 1e-9
    assert x.std().item() == pytest.approx(sd, rel=5 / math.sqrt(2 * N), abs=1e-9)


class OracleNet(torch.nn.Module):
    """Knows the (constant) x_0 of the batch, so it recovers eps from x_t exactly and returns the target (eps, or
    v = cos(phi) eps - sin(phi) x_0 with alpha_bar = cos^2 phi, Salimans & Ho sec. 4) plus `delta`."""

    def __init__(self, x0, prediction, delta):
        super().__init__()
        self.x0, self.prediction, self.delta, self.ts = x0, prediction, delta, []

    def forward(self, x, t, y=None):
        t = t.long()  # DDPM passes its integer steps as floats
        self.ts.append(t.clone())
        ab = torch.tensor(AB5)[t].view(-1, 1)
        eps = (x.double() - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        phi = torch.arccos(ab.sqrt())
        target = eps if self.prediction == "eps" else phi.cos() * eps - phi.sin() * self.x0
        return (target + self.delta).to(x.dtype)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_loss_target_and_min_snr_weight(prediction, gamma):
    """A prediction off by delta everywhere costs delta^2 w(t): w = 1 (gamma = 0), min(SNR, gamma) / SNR for eps,
    min(SNR, gamma) / (SNR + 1) for v (Hang et al. 2023), SNR = alpha_bar / (1 - alpha_bar)."""
    x0, delta = 0.8, 0.5
    net = OracleNet(x0, prediction, delta)
    model = ddpm.DDPM(net, 5, BETAS, prediction, gamma)
    loss = model.loss(torch.full((256, 3), x0)).item()
    (t,) = net.ts
    snr = AB5[t.numpy()] / (1 - AB5[t.numpy()])
    if gamma == 0:
        w = np.ones_like(snr)
    else:
        w = np.minimum(snr, gamma) / (snr if prediction == "eps" else snr + 1)
        assert (snr > gamma).any() and (snr < gamma).any()  # both sides of the clamp are visited
    assert loss == pytest.approx(delta ** 2 * w.mean(), rel=1e-4)


@pytest.mark.parametrize("schedule,p_mean,t_uniform", [("linear", None, 0.0), ("cosine", None, 0.0), ("linear", 0.0, 0.0),
                                                      ("linear", -2.5, 0.2)])
def test_lognormal_t_sampling_matches_edm_noise_levels(schedule, p_mean, t_uniform):
    """t_sampling "lognormal": t is the first step with sigma_t >= sigma, ln sigma ~ N(P_mean, 1.2^2) (Karras et al.
    2022, Table 1: P_mean = -1.2), sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t). So P(t <= k) = Phi((ln sigma_k -
    P_mean) / 1.2); a fraction t_uniform of the draws uniform on the T steps adds t_uniform ((k + 1) / T - Phi)."""
    from scipy.stats import norm

    T, n = 1000, 40_000
    ab = np.cumprod(1 - ddpm.make_betas(schedule, T))
    seen = []
    model = ddpm.DDPM(lambda x, t, y=None: seen.append(t.long()) or torch.zeros_like(x), T, schedule,
                      t_sampling="lognormal", t_uniform=t_uniform, **({} if p_mean is None else {"p_mean": p_mean}))
    torch.manual_seed(0)
    model.loss(torch.zeros(n, 1))
    (t,) = seen
    log_sigma = 0.5 * np.log((1 - ab) / ab)
    mean = -1.2 if p_mean is None else p_mean
    for k in np.searchsorted(log_sigma, [-3.0, -2.0, -1.2, -0.5, 0.5, 1.5]):
        expected = (1 - t_uniform) * norm.cdf((log_sigma[k] - mean) / 1.2) + t_uniform * (k + 1) / T
        assert float((t <= k).double().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n))


def test_t_uniform_is_saved_and_rebuilt(tmp_path):
    path = ddpm.train(data="grid25", steps=2, hidden=8, depth=1, t_uniform=0.25, out=str(tmp_path / "run"), device="cpu")
    model = ddpm.load(path)
    assert model.t_sampling == "lognormal" and model.t_uniform == 0.25


def test_v_prediction_converts_to_eps():
    """eps = sqrt(ab) v + sqrt(1 - ab) x_t: a network returning the true v yields the true eps."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (50,), generator=g)
    phi = torch.arccos(torch.tensor(AB5)[t].sqrt()).view(-1, 1)  # alpha_bar = cos^2 phi
    x_t = phi.cos() * x0 + phi.sin() * eps
    v = phi.cos() * eps - phi.sin() * x0
    model = ddpm.DDPM(lambda x, t, y=None: v, 5, BETAS, "v").double()
    assert torch.allclose(model.eps(x_t, t), eps, atol=1e-6)  # float32-rounded buffer alpha_bar


@given(st.floats(-1.5, 1.5), st.floats(0.003, 1.0))
def test_discretized_decoder_bins(mean, std):
    """Ho et al. sec. 3.3: 256 bins on [-1, 1], interior ones [x - 1/255, x + 1/255] (width 2/255, the grid step),
    the edge bins extended to -inf and +inf; their masses sum to 1."""
    x = (torch.arange(256, dtype=torch.float64) / 127.5 - 1)[:, None]  # the 8-bit grid, [256, 1]
    mass = (-ddpm.decoder_nll(x, torch.full_like(x, mean), torch.tensor(std, dtype=torch.float64), True)).exp()
    assert mass.sum().item() == pytest.approx(1.0, abs=1e-8)
    v = x[:, 0].tolist()
    expected = [Phi((v[0] + 1 / 255 - mean) / std)]
    expected += [Phi((xk + 1 / 255 - mean) / std) - Phi((xk - 1 / 255 - mean) / std) for xk in v[1:-1]]
    expected += [1 - Phi((v[-1] - 1 / 255 - mean) / std)]
    np.testing.assert_allclose(mass.numpy(), expected, rtol=1e-7, atol=1e-10)


class ConstX0(torch.nn.Module):
    """eps(x_t, t) = x_t / sqrt(1 - ab_t) + b_t: then x0_hat = -sqrt(1 - ab_t) b_t / sqrt(ab_t) = c_t whatever x_t,
    so every term of the bound is deterministic and computable by hand."""

    def __init__(self, ab, b):
        super().__init__()
        self.ab, self.b = torch.as_tensor(ab), b

    def forward(self, x, t, y=None):
        t = t.long()  # DDPM passes its integer steps as floats
        ab = self.ab[t].view(-1, 1)
        return x / (1 - ab).sqrt() + self.b[t]


def hand_vlb(x0, betas, b, discrete):
    """L_T + sum_{t>1} L_{t-1} + L_0 (Ho et al. eq. 5) for ConstX0, per example, from the betas alone."""
    ab = np.cumprod(1 - betas)
    c = -np.sqrt(1 - ab)[:, None] * b / np.sqrt(ab)[:, None]  # the constant x0_hat of each step [T, D]
    v = 1 - ab[-1]
    L = (0.5 * (v + ab[-1] * x0 ** 2 - 1 - np.log(v))).sum(1)  # KL(N(sqrt(ab_T) x_0, v) || N(0, 1))
    for t in range(1, len(betas)):
        k0 = np.sqrt(ab[t - 1]) * betas[t] / (1 - ab[t])  # coefficient of x_0 in the posterior mean (eq. 7)
        var = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]  # beta_tilde
        L = L + (k0 ** 2 * (x0 - c[t]) ** 2 / (2 * var)).sum(1)
    s = math.sqrt(betas[0])
    if discrete:
        def mass(xk, m):
            hi = 1.0 if xk > 1 - 1e-9 else Phi((xk + 1 / 255 - m) / s)
            lo = 0.0 if xk < -1 + 1e-9 else Phi((xk - 1 / 255 - m) / s)
            return hi - lo
        L = L - np.array([sum(math.log(mass(xk, m)) for xk, m in zip(row, c[0])) for row in x0])
    else:
        L = L + (0.5 * (x0 - c[0]) ** 2 / betas[0] + 0.5 * np.log(2 * math.pi * betas[0])).sum(1)
    return L


@pytest.mark.parametrize("discrete", [False, True])
def test_vlb_terms_by_hand(discrete):
    b = torch.tensor([[0.3, -0.2], [0.5, 0.1], [-0.4, 0.6], [0.2, -0.7], [0.9, 0.4]], dtype=torch.float64)
    x0 = torch.tensor([[-1.0, 1.0], [-1 + 57 / 127.5, 1 - 100 / 127.5], [1 - 1 / 127.5, 0.0039215686274509665]],
                      dtype=torch.float64)  # on the 8-bit grid, edges included
    model = ddpm.DDPM(ConstX0(AB5, b), 5, BETAS).double()
    L = model.vlb(x0, discrete=discrete, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(L.numpy(), hand_vlb(x0.numpy(), BETAS, b.numpy(), discrete), rtol=1e-9)


def test_vlb_of_float32_model_keeps_float64_schedule():
    """T = 1000 linear: beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} from float32 alpha_bar ~ 1 is off by ~1e-3
    relative; the bound must use the float64 schedule even when the model and data are float32."""
    betas = ddpm.make_betas("linear", 1000)
    b = torch.tensor(np.cos(np.arange(1000))[:, None] * 0.5)
    model = ddpm.DDPM(ConstX0(np.cumprod(1 - betas), b), 1000, "linear")
    x0 = torch.tensor([[0.5], [-1.0]])
    L = model.vlb(x0, discrete=False)
    np.testing.assert_allclose(L.numpy(), hand_vlb(x0.double().numpy(), betas, b.numpy(), False), rtol=1e-6)


def test_stratified_sum_over_t_is_unbiased():
    """n_t stratified timesteps (strata of non-integer width 11/4 here): the mean over seeds is the exact sum."""
    T = 12
    betas = np.linspace(0.02, 0.3, T)
    ab = np.cumprod(1 - betas)
    b = torch.tensor(np.sin(np.arange(T))[:, None] * np.array([[1.0, -0.5]]) + 0.3)  # terms that vary with t
    model = ddpm.DDPM(ConstX0(ab, b), T, betas).double()
    x0 = torch.tensor([[0.5, -0.3], [-0.8, 0.9]], dtype=torch.float64)
    exact = torch.tensor(hand_vlb(x0.numpy(), betas, b.numpy(), False))
    g = torch.Generator().manual_seed(0)
    est = torch.stack([model.vlb(x0, n_t=4, discrete=False, generator=g) for _ in range(3000)])  # [seeds, B]
    se = est.std(0) / math.sqrt(len(est))
    assert (est.std(0) > 0.01 * exact).all()  # the estimate does vary with the draw
    assert ((est.mean(0) - exact).abs() < 4 * se).all(), (est.mean(0), exact, se)


@pytest.mark.parametrize("discrete", [False, True])
def test_vlb_equals_monte_carlo_of_its_definition(discrete):
    """Two-sided: the bound is E_q[log q(x_1:T | x_0) - log p(x_0:T)] (eq. 5 before it is split into KLs). Estimate
    that expectation along forward trajectories x_0 -> x_1 -> ... -> x_T, with p(x_{t-1} | x_t) =
    N((x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t), beta_tilde_t) (eq. 11) and the optimal eps of Gaussian
    data N(mu, s^2); the bound's own value must agree within Monte Carlo error (a looser bound would fail)."""
    mu, s, N, T = 0.3, 0.5, 20_000, 5
    ab = torch.tensor(AB5)
    betas = torch.tensor(BETAS)

    def eps_opt(x, t):  # E[eps | x_t] for x_0 ~ N(mu, s^2): linear in x_t
        a = ab[t].view(-1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s ** 2 + 1 - a)

    def log_normal(x, m, var):
        return (-0.5 * (x - m) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(1)

    g = torch.Generator().manual_seed(0)
    x0 = mu + s * torch.randn(N, 1, generator=g, dtype=torch.float64)
    if discrete:
        x0 = (torch.round((x0.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1)
    model = ddpm.DDPM(lambda x, t, y=None: eps_opt(x, t.long()), T, BETAS).double()
    bound = model.vlb(x0, discrete=discrete, generator=torch.Generator().manual_seed(1))
    # log q(x_1:T | x_0) along a forward trajectory (code index t holds Ho et al.'s x_{t+1})
    zs, z, log_q = [], x0, 0
    for t in range(T):
        z_next = (1 - betas[t]).sqrt() * z + betas[t].sqrt() * torch.randn(N, 1, generator=g, dtype=torch.float64)
        log_q = log_q + log_normal(z_next, (1 - betas[t]).sqrt() * z, betas[t])
        zs.append(z_next)
        z = z_next
    log_p = log_normal(zs[-1], 0.0, torch.tensor(1.0))
    for t in range(T - 1, 0, -1):
        tt = torch.full((N,), t)
        mean = (zs[t] - betas[t] / (1 - ab[t]).sqrt() * eps_opt(zs[t], tt)) / (1 - betas[t]).sqrt()
        log_p = log_p + log_normal(zs[t - 1], mean, (1 - ab[t - 1]) / (1 - ab[t]) * betas[t])
    x0_hat = (zs[0] - (1 - ab[0]).sqrt() * eps_opt(zs[0], torch.zeros(N, dtype=torch.long))) / ab[0].sqrt()
    if discrete:
        d = torch.distributions.Normal(x0_hat, betas[0].sqrt())
        hi = torch.where(x0 > 1 - 1e-9, torch.ones_like(x0), d.cdf(x0 + 1 / 255))
        lo = torch.where(x0 < -1 + 1e-9, torch.zeros_like(x0), d.cdf(x0 - 1 / 255))
        log_p = log_p + (hi - lo).log().sum(1)
    else:
        log_p = log_p + log_normal(x0, x0_hat, betas[0])
    mc = log_q - log_p
    se = math.sqrt(bound.var().item() / N + mc.var().item() / N)
    assert abs(bound.mean().item() - mc.mean().item()) < 4 * se, (bound.mean(), mc.mean(), se)


# ------------------------------------------------------------------------------------------- commands
TINY_IMG = ["--ch", "8", "--ch-mult", "1,2", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def grid_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "grid"
    return ddpm.train(data="grid25", steps=30, hidden=32, depth=1, batch_size=64, out=str(out), device="cpu")


def test_cli_points_train_sample_nll_invert(tmp_path, grid_ckpt):
    r = run_cli("ddpm.py", "train", "--data", "grid25", "--steps", "20", "--hidden", "32", "--depth", "1",
                "--device", "cpu", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "ckpt.pt").exists() and (tmp_path / "run" / "samples.png").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("loss") >= 2
    r = run_cli("ddpm.py", "sample", "--ckpt", grid_ckpt, "--n", "100", "--steps", "10", "--out", tmp_path / "s.npz")
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (100, 2) and np.isfinite(x).all()
    r = run_cli("ddpm.py", "nll", "--ckpt", grid_ckpt, "--n", "50", "--n-t", "20")
    assert r.returncode == 0 and "nats" in r.stdout, r.stderr
    r = run_cli("ddpm.py", "invert", "--ckpt", grid_ckpt, "--n", "8", "--steps", "10")
    assert r.returncode == 0 and "RMSE" in r.stdout, r.stderr


def test_cli_images_train_sample_nll(tmp_path):
    r = run_cli("ddpm.py", "train", "--steps", "3", *TINY_IMG, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "run" / "ckpt.pt"
    for sampler in ddpm.SAMPLERS:
        r = run_cli("ddpm.py", "sample", "--ckpt", ckpt, "--n", "4", "--sampler", sampler, "--steps", "3",
                    "--out", tmp_path / f"{sampler}.npz", "--device", "cpu")
        assert r.returncode == 0, r.stderr
        x = np.load(tmp_path / f"{sampler}.npz")["x"]
        assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    r = run_cli("ddpm.py", "sample", "--ckpt", ckpt, "--n", "4", "--steps", "2", "--out", tmp_path / "g.png")
    assert r.returncode == 0 and (tmp_path / "g.png").stat().st_size > 100
    r = run_cli("ddpm.py", "nll", "--ckpt", ckpt, "--n", "4", "--n-t", "3")
    assert r.returncode == 0 and "bits/dim" in r.stdout, r.stderr
    value = float(r.stdout.split("bits/dim")[0].split()[-1])
    assert 0 < value < 20


# ------------------------------------------------------------------------------------------- the stable surface
def tiny_image_model(seed=0):
    """A randomly initialized DDPM on [1, 8, 8] images (T = 50), shaped as `load` returns it."""
    torch.manual_seed(seed)
    model = ddpm.DDPM(nets.UNet(1, 8, (1, 2), False), 50, "linear").eval()
    model.shape = (1, 8, 8)
    return model


@pytest.mark.usefixtures("single_thread")
def test_generate_is_x_T_then_sample_then_denormalize(grid_ckpt):
    """Points: n finite samples of the data's shape in data space, float32 on the CPU; per batch x_T first, then the
    sampler's noise, one generator running through (this order is what bench's numbers rest on)."""
    model = ddpm.load(grid_ckpt)
    assert float(model.scale.sub(1).abs().max()) > 0.1  # standardized toy: data space differs from the model's
    x = ddpm.generate(model, 7, generator=torch.Generator().manual_seed(1), method="ddim", steps=5, eta=1.0,
                      batch_size=4)
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
    g = torch.Generator().manual_seed(1)
    ref = []
    for b in (4, 3):
        x_T = torch.randn(b, 2, generator=g)
        ref.append(ddpm.sample(model.eps, model.alpha_bar64, x_T, "ddim", 5, 1.0, g, x0_clip=model.box) * model.scale
                   + model.shift)
    assert torch.equal(x, torch.cat(ref))
    again = ddpm.generate(model, 7, generator=torch.Generator().manual_seed(1), method="ddim", steps=5, eta=1.0,
                          batch_size=4)
    assert torch.equal(x, again)  # reproducible with a seeded generator
    other = ddpm.generate(model, 7, generator=torch.Generator().manual_seed(2), method="ddim", steps=5, eta=1.0)
    assert not torch.equal(x, other)
    # points: spacing "auto" is lambda for dpm++2m too (karras with rho 3 measured worse on grid25)
    fast = ddpm.generate(model, 7, generator=torch.Generator().manual_seed(1), steps=8)
    x_T = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    assert ddpm.timesteps(model.T, 8, model.alpha_bar64, "karras", 3.0) != ddpm.timesteps(model.T, 8, model.alpha_bar64)
    assert torch.equal(fast, ddpm.sample(model.eps, model.alpha_bar64, x_T, "dpm++2m", 8, x0_clip=model.box)
                       * model.scale + model.shift)
    free = ddpm.generate(model, 7, generator=torch.Generator().manual_seed(1), steps=8, x0_clip=None)
    assert torch.equal(free, ddpm.sample(model.eps, model.alpha_bar64, x_T, "dpm++2m", 8) * model.scale + model.shift)


def test_points_x0_is_clamped_to_the_saved_train_box(grid_ckpt):
    """train saves the box of the standardized train points; the samplers clamp the predicted x_0 to it, so even a
    network that predicts garbage (here eps pushing every sample outward) gives samples inside the box, while
    x0_clip=None leaves them far out; a checkpoint without a box (older ones) is not clamped."""
    import data

    model = ddpm.load(grid_ckpt)
    assert model.box == pytest.approx(ddpm.points_box(data.load("grid25").x)) and 1.0 < model.box < 3.0
    assert ddpm.x0_box(model, 1.0) == model.box and ddpm.x0_box(model, None) is None

    class Outward(torch.nn.Module):
        def forward(self, x, t, y=None):
            return -50 * x  # eps = -50 x: x_0 = (x + 50 sqrt(1 - alpha_bar) x) / sqrt(alpha_bar), far out

    model.net = Outward()
    for method in ("dpm++2m", "ddim"):
        x = model.normalize(ddpm.generate(model, 50, generator=torch.Generator().manual_seed(0), method=method,
                                          steps=10))
        assert float(x.abs().max()) <= model.box + 1e-4, method
        free = model.normalize(ddpm.generate(model, 50, generator=torch.Generator().manual_seed(0), method=method,
                                             steps=10, x0_clip=None))
        assert float(free.abs().max()) > 10 * model.box, method
    model.box = None
    assert ddpm.x0_box(model, 1.0) is None


@pytest.mark.usefixtures("single_thread")
def test_generate_images_clip_and_refusals():
    model = tiny_image_model()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x = ddpm.generate(model, 3, generator=g(), steps=6)  # dpm++2m with the predicted x_0 clamped to [-1, 1]
    assert x.shape == (3, 1, 8, 8) and x.abs().max() <= 1 and torch.isfinite(x).all()
    x_T = torch.randn(3, 1, 8, 8, generator=g())
    # images: spacing "auto" is karras with rho = 3, which here picks other steps than lambda
    ab = model.alpha_bar64
    assert ddpm.timesteps(model.T, 6, ab, "karras", 3.0) != ddpm.timesteps(model.T, 6, ab, "lambda")
    assert torch.equal(x, ddpm.sample(model.eps, ab, x_T, "dpm++2m", 6, x0_clip=1.0, spacing="karras", rho=3.0))
    free = ddpm.generate(model, 3, generator=g(), steps=6, x0_clip=None, spacing="lambda")
    assert torch.equal(free, ddpm.sample(model.eps, ab, x_T, "dpm++2m", 6))
    # other samplers keep lambda under "auto" (DDIM-50 measured slightly worse with karras)
    ddim = ddpm.generate(model, 3, generator=g(), method="ddim", steps=6)
    assert torch.equal(ddim, ddpm.sample(model.eps, ab, x_T, "ddim", 6, x0_clip=1.0))
    with pytest.raises(ValueError, match="unconditional"):
        ddpm.generate(model, 2, y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown sampler"):
        ddpm.generate(model, 2, method="euler")
    with pytest.raises(ValueError, match="steps"):
        ddpm.generate(model, 2, steps=51)


@pytest.mark.usefixtures("single_thread")
def test_likelihood_is_what_the_nll_command_reports(grid_ckpt, capsys):
    import data

    model = ddpm.load(grid_ckpt)
    test = data.load("grid25", "test").x
    x = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:30]]  # the command's examples
    r = ddpm.likelihood(model, x, n_t=10, seed=0)
    assert r["kind"] == "bound" and "nll_bpd" not in r and math.isfinite(r["nll_nats"])
    assert ddpm.nll(ckpt=str(grid_ckpt), n=30, n_t=10, device="cpu", seed=0) == r["nll_nats"]
    assert f"{r['nll_nats']:.3f} nats" in capsys.readouterr().out
    g = torch.Generator().manual_seed(0)  # by hand: mean bound in the normalized space + sum_d log scale_d
    L = model.vlb(model.normalize(x), 10, discrete=False, generator=g)
    assert r["nll_nats"] == pytest.approx(float(L.mean() + model.scale.log().sum()), rel=1e-12)
    again = ddpm.likelihood(model, x, n_t=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.pop("per_example"), r.pop("per_example")) and again == r


@pytest.mark.usefixtures("single_thread")
def test_likelihood_images_in_bits_per_dim():
    model = tiny_image_model()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).mul(255).round().div(127.5).sub(1)
    r = ddpm.likelihood(model, x, n_t=3, seed=4, batch_size=2)
    assert r["kind"] == "bound" and "nll_nats" not in r and r["nll_bpd"] > 0
    g = torch.Generator().manual_seed(4)
    L = torch.cat([model.vlb(xb, 3, discrete=True, generator=g) for xb in x.split(2)])
    assert r["nll_bpd"] == pytest.approx(float(L.mean()) / (64 * math.log(2)), rel=1e-12)


@pytest.mark.usefixtures("single_thread")
def test_bench_schema(grid_ckpt):
    """BENCH is data in the schema bench.py reads; every sampler setting runs through generate (points: the trained
    toy model; images: a tiny random one), the likelihood settings bind, and the network resolves."""
    import inspect

    B = ddpm.BENCH
    assert set(B) == {"claim", "kinds", "options", "quick", "settings", "quick_settings", "likelihood",
                      "quick_likelihood", "network", "batch", "samplers", "variants", "curve_sampler"}
    assert B["variants"] == {"dit": {"images": {"net": "dit"}}} and B["curve_sampler"] == "dpm++2m-20"
    assert B["claim"] == "high quality, slow sampling" and set(B["kinds"]) == {"points", "images"}
    assert isinstance(B["batch"], int) and B["batch"] > 0
    models = {"points": ddpm.load(grid_ckpt), "images": tiny_image_model()}
    for kind, model in models.items():
        for opts in (B["options"][kind], B["quick"][kind]):
            inspect.signature(ddpm.train).bind(**opts)
        settings = B["settings"][kind] + B["quick_settings"][kind] + (B["samplers"] if kind == "points" else [])
        ran = set()
        for s in settings:  # "sampler" is the row's label; generate's algorithm is "method"
            assert isinstance(s["sampler"], str) and s["sampler"]
            kw = {k: v for k, v in s.items() if k != "sampler"}
            inspect.signature(ddpm.generate).bind(model, 2, **kw)
            key = (kw["method"], kw["steps"], kw.get("eta", 0.0) if kw["method"] == "ddim" else None,
                   kw.get("spacing"), kw.get("rho"))
            if key in ran:
                continue  # (time) ddpm-1000 is in both lists (eta matters to ddim only)
            ran.add(key)
            if kind == "images":
                kw["steps"] = 2  # (time) the UNet runs the settings as given, on fewer steps
            x = ddpm.generate(model, 2, generator=torch.Generator().manual_seed(0), **kw)
            assert x.shape == (2, *model.shape) and torch.isfinite(x).all()
        for spec in (B["likelihood"][kind], B["quick_likelihood"][kind]):
            assert isinstance(spec["n"], int) and spec["n"] > 0
            inspect.signature(ddpm.likelihood).bind(model, None, **{k: v for k, v in spec.items() if k != "n"})
        assert isinstance(getattr(model, B["network"]), torch.nn.Module)
    assert "sampler" not in inspect.signature(ddpm.generate).parameters
    labels = [s["sampler"] for s in B["samplers"]]
    assert len(set(labels)) == len(labels) == 14 and labels[0] == "ddpm-1000" and "ddim-20-eta0" in labels
    assert "dpm++2m-20-karras3" in labels


@pytest.mark.parametrize("args", [
    ["train", "--steps", "-5", "--data", "grid25"],
    ["train", "--data", "nosuchdata"],
    ["train", "--data", "grid25", "--schedule", "quadratic"],
    ["train", "--data", "grid25", "--lr", "-1"],
    ["sample", "--ckpt", "does/not/exist.pt"],
    ["sample", "--steps", "0"],
    ["sample", "--n", "-3"],
    ["nll", "--ckpt", "does/not/exist.pt"],
])
def test_bad_input_one_line_exit_2(args, tmp_path):
    extra = ["--out", tmp_path / "run"] if args[0] == "train" else []
    assert_one_line_error(run_cli("ddpm.py", *args, *extra))


def test_bad_sampler_and_corrupt_checkpoint(tmp_path, grid_ckpt):
    assert_one_line_error(run_cli("ddpm.py", "sample", "--ckpt", grid_ckpt, "--sampler", "euler"))
    assert_one_line_error(run_cli("ddpm.py", "sample", "--ckpt", grid_ckpt, "--steps", "5000"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x80\x04 this is not a checkpoint" * 10)
    assert_one_line_error(run_cli("ddpm.py", "sample", "--ckpt", bad))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(grid_ckpt.read_bytes()[:1000])
    assert_one_line_error(run_cli("ddpm.py", "sample", "--ckpt", truncated))


class Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {Evil.marker}",))


def test_checkpoint_carrying_code_is_refused(tmp_path):
    Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "models": {}, "payload": Evil()}, path)
    r = run_cli("ddpm.py", "sample", "--ckpt", path)
    assert_one_line_error(r)
    assert not Evil.marker.exists()


def test_resume_is_exact(tmp_path):
    kw = dict(data="grid25", hidden=32, depth=1, batch_size=32, device="cpu", ckpt_every=7)
    a = ddpm.train(steps=40, out=str(tmp_path / "a"), **kw)
    ddpm.train(steps=20, out=str(tmp_path / "b"), **kw)
    b = ddpm.train(steps=40, out=str(tmp_path / "b"), resume=True, **kw)
    A, B = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert A["step"] == B["step"] == 40
    for part in ("models", "ema"):
        sa = A[part]["model"] if part == "models" else A[part]
        sb = B[part]["model"] if part == "models" else B[part]
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (part, k)


def test_torchrun_two_processes_on_cpu(tmp_path):
    r = run_cli("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "ddpm.py", "train",
                "--data", "grid25", "--steps", "6", "--hidden", "32", "--depth", "1", "--device", "cpu",
                "--out", tmp_path / "ddp", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)
    assert ck["step"] == 6
