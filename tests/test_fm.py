"""fm.py: the straight path and its target, the ODE samplers against analytic oracles (a Gaussian mixture's marginal
velocity; Gaussian to Gaussian, where the flow is known exactly), the likelihood (exact trace and Hutchinson) against
closed-form densities, the OT coupling against brute force, straightness, guidance, and the commands."""
import itertools
import json
import math
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import flow
import fm
import nets
from conftest import CENTERS, STD, WEIGHTS, assert_one_line_error, mixture_stats, run_app

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- oracles


def mixture_velocity(centers=CENTERS, weights=WEIGHTS, std=STD):
    """E[x_1 - x_0 | x_t = x] for x_0 ~ N(0, I), x_1 ~ sum_k w_k N(mu_k, std^2 I). Given the component k, (x_t, u) is
    jointly Gaussian: x_t ~ N(t mu_k, var_t I) with var_t = (1 - t)^2 + t^2 std^2 and Cov(u, x_t) = (t std^2 - (1 - t)) I,
    so E[u | x_t, k] = mu_k + (t std^2 - (1 - t)) / var_t (x_t - t mu_k), weighted by the responsibilities of x_t."""
    def v_fn(x, t):
        t = t.double()[:, None, None]  # [B, 1, 1]
        var = (1 - t) ** 2 + t ** 2 * std ** 2
        d = x.double()[:, None, :] - t * centers[None]  # [B, K, 2]
        r = torch.softmax(weights.log()[None] - (d ** 2).sum(-1) / (2 * var[..., 0]), 1)  # [B, K]
        return (r[..., None] * (centers[None] + (t * std ** 2 - (1 - t)) / var * d)).sum(1).to(x.dtype)
    return v_fn


def gaussian_velocity(m, s):
    """x_1 ~ N(m, diag(s^2)): the flow is x_t = t m + sigma_t x_0 with sigma_t = sqrt((1 - t)^2 + t^2 s^2), and
    v(x, t) = m + sigma_t' / sigma_t (x - t m), sigma_t' sigma_t = t s^2 - (1 - t)."""
    def v_fn(x, t):
        t = t.double()[:, None]
        return (m + (t * s ** 2 - (1 - t)) / ((1 - t) ** 2 + t ** 2 * s ** 2) * (x.double() - t * m)).to(x.dtype)
    return v_fn


def log_normal(x, m, s):
    return (-0.5 * ((x - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)


class Counter:
    def __init__(self, fn):
        self.fn, self.calls, self.times = fn, 0, []

    def __call__(self, x, t):
        self.calls += 1
        self.times.append(float(t[0]))
        return self.fn(x, t)


vectors = st.lists(st.floats(-2, 2), min_size=2, max_size=3)


# ------------------------------------------------------------------------------------------- path, target, t, coupling
class Recorder(torch.nn.Module):
    """A stand-in network: records what it is called with, returns a fixed function of (x, t)."""

    num_classes = 0

    def forward(self, x, t, y=None):
        self.x, self.t = x.clone(), t.clone()
        return torch.sin(x) * t.view(-1, 1) / 1000


@given(st.integers(1, 6), st.integers(0, 10_000))
def test_loss_is_the_straight_path_target(B, seed):
    """Given (x_0, t): the network sees x_t = (1 - t) x_0 + t x_1 and 1000 t, and the loss is ||v - (x_1 - x_0)||^2 / D."""
    g = torch.Generator().manual_seed(seed)
    x_0, x_1, t = torch.randn(B, 3, generator=g), torch.randn(B, 3, generator=g), torch.rand(B, generator=g)
    model = fm.FM(Recorder())
    mse, t_seen = model.loss(x_1, x_0=x_0, t=t)
    x_t = (1 - t[:, None]) * x_0 + t[:, None] * x_1
    torch.testing.assert_close(model.net.x, x_t)
    torch.testing.assert_close(model.net.t, 1000 * t)
    torch.testing.assert_close(mse, ((torch.sin(x_t) * t[:, None] - (x_1 - x_0)) ** 2).mean(1))
    assert torch.equal(t_seen, t)


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_loss_draws_noise_then_couples_then_t(coupling):
    """x_0 None: x_0 ~ N(0, I) from the global RNG, reordered by OT with `ot`, then t ~ U[0, 1]."""
    x_1 = torch.randn(16, 2) * 3
    model = fm.FM(Recorder(), coupling=coupling)
    torch.manual_seed(5)
    mse, t = model.loss(x_1)
    torch.manual_seed(5)
    x_0 = torch.randn_like(x_1)
    if coupling == "ot":
        x_0 = x_0[fm.ot_permutation(x_0, x_1)]
    t_ref = torch.rand(16)
    assert torch.equal(t, t_ref)
    torch.testing.assert_close(model.net.x, (1 - t[:, None]) * x_0 + t[:, None] * x_1)


def test_t_sampling_distributions():
    g = torch.Generator().manual_seed(0)
    u = fm.sample_t(40_000, "uniform", g)
    assert 0 <= u.min() and u.max() <= 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    t = fm.sample_t(40_000, "logit-normal", g)
    z = torch.log(t / (1 - t))  # logit(t) ~ N(0, 1) (Esser et al. with m = 0, s = 1)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    t = fm.sample_t(40_000, "logit-normal", g, m=2.5, s=1.2)  # the toy recipe: ln sigma = -logit(t) ~ N(-2.5, 1.2^2)
    z = torch.log(t.double() / (1 - t.double()))
    assert abs(z.mean() - 2.5) < 0.03 and abs(z.std() - 1.2) < 0.03
    # a fraction u uniform: P(t <= a) = (1 - u) Phi((logit a - m) / s) + u a
    from scipy.stats import norm
    t = fm.sample_t(40_000, "logit-normal", g, m=2.5, s=1.2, uniform=0.2)
    for a in (0.1, 0.5, 0.9, 0.99):
        expected = 0.8 * norm.cdf((math.log(a / (1 - a)) - 2.5) / 1.2) + 0.2 * a
        assert float((t <= a).double().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / 40_000))
    with pytest.raises(ValueError, match="unknown"):
        fm.sample_t(3, "beta")
    # the loss draws t with the model's m and s (train saves them; build restores them)
    model = fm.build({"hidden": 8, "depth": 1, "t_sampling": "logit-normal", "coupling": "independent",
                      "t_mean": 2.5, "t_std": 0.5}, (2,))
    torch.manual_seed(0)
    _, t = model.loss(torch.zeros(4000, 2))
    z = torch.log(t.double() / (1 - t.double()))
    assert abs(z.mean() - 2.5) < 0.05 and abs(z.std() - 0.5) < 0.05
    model.t_mean, model.t_std, model.t_uniform = 5.0, 0.1, 0.5  # logit-normal t > 0.99, half of it uniform
    _, t = model.loss(torch.zeros(4000, 2))
    assert float((t < 0.9).double().mean()) == pytest.approx(0.5 * 0.9, abs=0.03)


def test_bench_toy_recipe_is_saved_and_rebuilt(tmp_path):
    """bench's points options (the toy noise levels as logit-normal t) reach the loaded model."""
    path = fm.train(data="grid25", steps=2, hidden=8, depth=1, out=str(tmp_path / "run"), device="cpu",
                    **fm.BENCH["options"]["points"])
    model = fm.load(path)
    assert (model.t_sampling, model.t_mean, model.t_std, model.t_uniform) == ("logit-normal", 2.5, 1.2, 0.1)


def test_image_noise_levels_are_ddpm_s():
    """On images, fm.train's defaults and bench's options draw ddpm.py's image noise levels (those of its train
    defaults and of its bench options): ln sigma ~ N(P_mean, 1.2^2), i.e. logit(t) = -ln sigma ~ N(-P_mean, 1.2^2)."""
    import inspect

    import ddpm
    ddpm_defaults = {k: v.default for k, v in inspect.signature(ddpm.train).parameters.items()}
    fm_defaults = {k: v.default for k, v in inspect.signature(fm.train).parameters.items()}
    for opts, p_mean in ((fm_defaults, ddpm_defaults["p_mean"]),
                         ({**fm_defaults, **fm.BENCH["options"]["images"]},
                          {**ddpm_defaults, **ddpm.BENCH["options"]["images"]}["p_mean"])):
        assert opts["t_sampling"] == "logit-normal"
        t = fm.sample_t(40_000, "logit-normal", generator=torch.Generator().manual_seed(0), m=opts["t_mean"],
                        s=opts["t_std"], uniform=opts["t_uniform"])
        log_sigma = torch.log((1 - t.double()) / t.double())  # fm's sigma = (1 - t) / t (t = 1 is data)
        assert abs(log_sigma.mean() - p_mean) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03


@given(st.integers(2, 6), st.integers(1, 3), st.integers(0, 10_000))
def test_ot_coupling_is_the_optimal_permutation(n, D, seed):
    """The Hungarian solution equals the brute-force minimum over all n! pairings, so it never costs more than the
    identity pairing (the independent coupling)."""
    g = torch.Generator().manual_seed(seed)
    x_0, x_1 = torch.randn(n, D, generator=g), 2 * torch.randn(n, D, generator=g)
    p = fm.ot_permutation(x_0, x_1)
    assert sorted(p.tolist()) == list(range(n))
    cost = lambda q: float(((x_0[list(q)] - x_1) ** 2).sum())  # noqa: E731
    best = min(cost(q) for q in itertools.permutations(range(n)))
    assert cost(p.tolist()) <= cost(range(n)) + 1e-9
    assert cost(p.tolist()) == pytest.approx(best, rel=1e-9, abs=1e-9)


@given(st.floats(0.05, 0.5), st.integers(0, 10_000))
@settings(max_examples=10)
def test_label_dropout_rate_is_p_uncond(p, seed):
    torch.manual_seed(seed)
    y = torch.randint(0, 7, (20_000,))
    dropped = fm.drop_labels(y, 7, p)
    null = dropped == 7
    assert abs(null.double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / len(y))
    assert torch.equal(dropped[~null], y[~null])


# ------------------------------------------------------------------------------------------- samplers
@given(st.sampled_from(fm.METHODS), st.integers(1, 40))
@settings(max_examples=15)
def test_network_calls_are_counted(method, steps):
    v = Counter(lambda x, t: torch.zeros_like(x))
    fm.sample(v, torch.randn(3, 2), steps, method)
    assert v.calls == fm.nfe(method, steps) == steps * (1 if method == "euler" else 2)
    h = 1 / steps
    expected = {"euler": [k * h for k in range(steps)],
                "midpoint": [s for k in range(steps) for s in (k * h, (k + 0.5) * h)],
                "heun": [s for k in range(steps) for s in (k * h, (k + 1) * h)]}[method]
    np.testing.assert_allclose(v.times, expected, atol=1e-6)


@pytest.mark.parametrize("method", fm.METHODS)
def test_one_step_on_a_linear_ode_by_hand(method):
    """dx/dt = lam x: Euler gives (1 + lam h) x; midpoint and Heun the second-order Taylor (1 + lam h + (lam h)^2 / 2)."""
    lam, h, x = -1.7, 0.3, torch.tensor([[0.8, -2.0]], dtype=torch.float64)
    out = fm.STEPPERS[method](lambda x, t: lam * x, x, 0.0, h)
    factor = 1 + lam * h + (0 if method == "euler" else (lam * h) ** 2 / 2)
    torch.testing.assert_close(out, factor * x)


@pytest.mark.parametrize("method,steps", [("euler", 200), ("midpoint", 20), ("heun", 20), ("heun", 8)])
def test_samplers_reproduce_the_mixture_from_its_marginal_velocity(method, steps):
    x_0 = torch.randn(3000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    within, weights, spread = mixture_stats(fm.sample(mixture_velocity(), x_0, steps, method))
    assert within > 0.97  # 98.9% expected
    assert torch.allclose(weights, WEIGHTS, atol=0.04)
    assert ((spread > 0.8 * STD) & (spread < 1.25 * STD)).all(), spread


def test_heun_at_few_steps_is_close_to_euler_at_many():
    x_0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = mixture_stats(fm.sample(mixture_velocity(), x_0, 500, "euler"))
    fast = mixture_stats(fm.sample(mixture_velocity(), x_0, 10, "heun"))
    for a, b in zip(ref, fast):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=0.02, rtol=0.1), (a, b)


@given(vectors, st.lists(st.sampled_from([0.3, 0.5, 1.8, 2.5, 3.5]), min_size=3, max_size=3), st.integers(0, 999))
@settings(max_examples=8)
def test_error_falls_2x_for_euler_and_4x_for_heun_when_steps_double(m, s, seed):
    """Gaussian to Gaussian: x_1 = m + s x_0 exactly. Euler is first order and Heun second order; midpoint is second
    order too (on this flow its error at t = 1 even falls 8x: the t^2 error terms cancel)."""
    D = len(m)
    m, s = torch.tensor(m, dtype=torch.float64), torch.tensor(s[:D], dtype=torch.float64)
    x_0 = torch.randn(32, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    exact = m + s * x_0
    for method, low, high in (("euler", 1.7, 2.3), ("heun", 3.4, 4.6), ("midpoint", 3.4, 9)):
        err = [(fm.sample(gaussian_velocity(m, s), x_0, k, method) - exact).abs().max().item() for k in (32, 64)]
        assert low < err[0] / err[1] < high, (method, err)


# ------------------------------------------------------------------------------------------- likelihood
def test_time_grids():
    assert fm.time_grid(4) == [0, 0.25, 0.5, 0.75, 1]
    ts = torch.tensor(fm.time_grid(9, "logit", lam=6.0), dtype=torch.float64)
    assert ts[0] == 0 and ts[-1] == 1 and (ts.diff() > 0).all()
    torch.testing.assert_close(torch.logit(ts[1:-1]), torch.linspace(-6, 6, 8, dtype=torch.float64))  # uniform log-SNR
    torch.testing.assert_close(ts, 1 - ts.flip(0))


@given(vectors, st.lists(st.floats(0.5, 3), min_size=3, max_size=3), st.integers(0, 999),
       st.sampled_from(["uniform", "logit"]))
@settings(max_examples=6, phases=(Phase.explicit, Phase.reuse, Phase.generate))  # no shrinking: 0.1 s an example
def test_log_likelihood_of_the_exact_velocity_is_the_gaussian_density(m, s, seed, spacing):
    D = len(m)
    m, s = torch.tensor(m, dtype=torch.float64), torch.tensor(s[:D], dtype=torch.float64)
    x_1 = m + s * 1.5 * torch.randn(8, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logp = fm.log_likelihood(gaussian_velocity(m, s), x_1, 120, "heun", exact=True, spacing=spacing)  # error ~ h^2
    torch.testing.assert_close(logp, log_normal(x_1, m, s), atol=1e-3, rtol=1e-3)


def nonlinear_field(A):
    return lambda x, t: torch.tanh(x @ A) * (1 + t[:, None]) + x.roll(1, 1) ** 2


@given(st.integers(2, 4), st.integers(0, 10_000))
@settings(max_examples=12)
def test_divergence_exact_trace_and_hutchinson_mean_over_every_probe(D, seed):
    """The exact divergence is the Jacobian's trace; Hutchinson's eps^T J eps averaged over all 2^D Rademacher probes
    is that trace exactly (E[eps_i eps_j] = delta_ij): the estimator is unbiased."""
    g = torch.Generator().manual_seed(seed)
    A, x, t = torch.randn(D, D, generator=g, dtype=torch.float64), torch.randn(3, D, generator=g, dtype=torch.float64), \
        torch.rand(3, generator=g, dtype=torch.float64)
    v_fn = nonlinear_field(A)
    _, div = fm.divergence(v_fn, x, t)
    trace = torch.stack([torch.autograd.functional.jacobian(lambda z: v_fn(z[None], t[i:i + 1])[0], x[i]).trace()
                         for i in range(3)])
    torch.testing.assert_close(div, trace)
    probes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=D)), dtype=torch.float64)  # [2^D, D]
    est = torch.stack([fm.divergence(v_fn, x, t, eps.expand(3, D))[1] for eps in probes])
    torch.testing.assert_close(est.mean(0), trace)


def test_hutchinson_log_likelihood_is_unbiased():
    """A full-covariance Gaussian target (the Hutchinson estimate is not exact there): the mean over 4000 probes of
    the Hutchinson log-likelihood equals the exact one within its standard error, and both equal the density."""
    L = torch.tensor([[1.5, 0.0], [-1.2, 0.6]], dtype=torch.float64)
    Sigma, m = L @ L.T, torch.tensor([0.5, -1.0], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)

    def v_fn(x, t):  # m + C_t Sigma_t^-1 (x - t m), C_t = t Sigma - (1 - t) I, Sigma_t = (1 - t)^2 I + t^2 Sigma
        t = float(t[0])
        M = (t * Sigma - (1 - t) * eye) @ torch.linalg.inv((1 - t) ** 2 * eye + t ** 2 * Sigma)
        return m + (x - t * m) @ M.T

    x_1 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    exact = fm.log_likelihood(v_fn, x_1, 100, "heun", exact=True, spacing="uniform")
    density = torch.distributions.MultivariateNormal(m, Sigma).log_prob(x_1)
    torch.testing.assert_close(exact, density, atol=1e-3, rtol=0)
    est = fm.log_likelihood(v_fn, x_1.expand(4000, 2), 100, "heun", exact=False,
                            generator=torch.Generator().manual_seed(0), spacing="uniform")
    assert est.std() > 0.05  # the probes matter here
    assert abs(est.mean() - exact[0]) < 4 * est.std() / math.sqrt(len(est))


def test_dequantization_and_bits_per_dim_are_flows_protocol():
    """z = dequantize(x) is flow.py's y = (k + u) / 256 under z = (256 y - 1/2) / 127.5 - 1, and bits_per_dim is
    flow.py's bpd with log p(y) = log p(z) + D log(256 / 127.5)."""
    k = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float()
    x = k / 127.5 - 1  # data.py's scaling
    y, z = flow.dequantize(x, torch.Generator().manual_seed(1)), fm.dequantize(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(z, (256 * y - 0.5) / 127.5 - 1)
    assert ((z - x) * 127.5).abs().max() <= 0.5
    log_p_z, D = torch.tensor([-3.0, 10.0]), 16
    torch.testing.assert_close(fm.bits_per_dim(log_p_z, D), flow.bits_per_dim(log_p_z + D * math.log(256 / 127.5), D))
    assert fm.bits_per_dim(torch.tensor(0.0), 4).item() == pytest.approx(math.log2(127.5))


class Zero(torch.nn.Module):
    """v = 0 (but a function of x, so autograd sees it): x_1 = x_0, p_1 = N(0, I) in the normalized space."""

    num_classes = 0

    def forward(self, x, t, y=None):
        return 0 * x


def test_likelihood_in_data_space():
    """Zero velocity: points z = (x - shift) / scale ~ N(0, I), so -log p(x) = -log N(x; shift, scale^2); images:
    bits/dim of z = dequantize(x) under N(0, I), the dequantization drawn first from the seeded generator."""
    model = fm.FM(Zero(), shift=torch.tensor([1.0, -2.0]), scale=torch.tensor([3.0, 0.5]))
    model.shape = (2,)
    x = torch.randn(50, 2) * 2
    r = fm.likelihood(model, x, steps=3)
    expected = -log_normal(x.double(), model.shift.double(), model.scale.double()).mean()
    assert r["kind"] == "exact" and r["nll_nats"] == pytest.approx(float(expected), rel=1e-5)
    model = fm.FM(Zero())
    model.shape = (1, 4, 4)
    x = torch.randint(0, 256, (6, 1, 4, 4)).float() / 127.5 - 1
    r = fm.likelihood(model, x, steps=2, seed=3)
    z = fm.dequantize(x, torch.Generator().manual_seed(3)).double()
    log_p = -0.5 * (z ** 2).flatten(1).sum(1) - 8 * math.log(2 * math.pi)
    assert r["divergence"] == "hutchinson" and r["nll_bpd"] == pytest.approx(float(fm.bits_per_dim(log_p, 16).mean()))


# ------------------------------------------------------------------------------------------- straightness, guidance
def test_straightness_against_the_gaussian_flow():
    """S = 0 for a constant velocity. Gaussian to Gaussian: dZ_t/dt - (Z_1 - Z_0) = (sigma_t' - (s - 1)) Z_0, so
    S = sum_d E[Z_0d^2] int_0^1 (sigma_t' - (s_d - 1))^2 dt."""
    x_0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert fm.straightness(lambda x, t: torch.ones_like(x), x_0, 10) == pytest.approx((0, 2), abs=1e-12)
    m, s = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([0.3, 2.5], dtype=torch.float64)
    t = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    ds = (t * s ** 2 - (1 - t)) / ((1 - t) ** 2 + t ** 2 * s ** 2).sqrt()  # sigma_t'
    S = ((x_0 ** 2).mean(0) * torch.trapezoid((ds - (s - 1)) ** 2, t[:, 0], dim=0)).sum()
    S_fm, dist = fm.straightness(gaussian_velocity(m, s), x_0, 1000)
    assert S_fm == pytest.approx(float(S), rel=0.01)
    assert dist == pytest.approx(float(((m + (s - 1) * x_0) ** 2).sum(1).mean()), rel=0.01)  # Z_1 - Z_0


class Labelled(torch.nn.Module):
    """A conditional stand-in: v = x + 10 y (y = num_classes is the null label), counting the rows it sees."""

    num_classes = 4

    def forward(self, x, t, y=None):
        self.rows = getattr(self, "rows", 0) + x.shape[0]
        y = torch.full((x.shape[0],), 4) if y is None else y
        return x + 10 * y[:, None].float()


@pytest.mark.parametrize("s", [0.0, 1.0, 2.5])
def test_guided_velocity_mixes_conditional_and_null(s):
    model = fm.FM(Labelled())
    x, t, y = torch.randn(3, 2), torch.rand(3), torch.tensor([0, 3, 1])
    v = fm.guided_velocity(model, y, s)(x, t)
    v_c, v_u = x + 10 * y[:, None].float(), x + 40
    torch.testing.assert_close(v, v_u + s * (v_c - v_u))
    assert model.net.rows == (3 if s == 1 else 6)  # one pass; the doubled batch [x, x] when guided


def test_generate_draws_labels_then_x_0_per_batch_and_refuses_bad_labels():
    model = fm.FM(Labelled())
    model.shape = (2,)
    x = fm.generate(model, 5, generator=torch.Generator().manual_seed(3), guidance=2.0, steps=3, batch_size=3)
    g, ref = torch.Generator().manual_seed(3), []
    for b in (3, 2):
        y = torch.randint(4, (b,), generator=g)
        ref.append(fm.sample(fm.guided_velocity(model, y, 2.0), torch.randn(b, 2, generator=g), 3, "midpoint"))
    assert x.dtype == torch.float32 and torch.equal(x, torch.cat(ref))
    with pytest.raises(ValueError, match="0..3"):
        fm.generate(model, 2, y=torch.tensor([0, 4]))
    unlabelled = fm.FM(Zero())
    unlabelled.shape = (2,)
    with pytest.raises(ValueError, match="without labels"):
        fm.generate(unlabelled, 2, y=1)


# ------------------------------------------------------------------------------------------- commands
def cli(*args):
    """fm.py's command line in this process: (exit code, stdout, stderr)."""
    return run_app(fm.app, *args)


@pytest.fixture(scope="module")
def grid_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm") / "grid"
    return fm.train(data="grid25", steps=30, hidden=32, depth=1, batch_size=64, out=str(out), device="cpu")


def test_points_sample_nll_reflow(grid_ckpt, tmp_path):
    code, out, err = cli("sample", "--ckpt", grid_ckpt, "--n", 50, "--method", "midpoint", "--steps", 3,
                         "--out", tmp_path / "s.npz", "--device", "cpu")
    assert code == 0 and "6 network evaluations" in out, err
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (50, 2) and np.isfinite(x).all()
    code, out, err = cli("nll", "--ckpt", grid_ckpt, "--n", 40, "--steps", 4, "--device", "cpu")
    assert code == 0 and "nats" in out and "exact divergence" in out, err
    # reflow: pairs x_1 = ODE(x_0) of the 1-RF; the 2-RF starts from its weights and trains on exactly those pairs
    base, seen = fm.load(grid_ckpt), []
    forward = fm.FM.forward
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fm.FM, "forward", lambda self, x_1, y=None, x_0=None: seen.append((x_0, x_1)) or
                   forward(self, x_1, y, x_0))
        path = fm.reflow(ckpt=str(grid_ckpt), pairs=64, pair_steps=2, pair_method="euler", steps=1, lr=1e-9,
                         batch_size=32, eval_n=64, out=str(tmp_path / "rf"), device="cpu")
    pairs = torch.load(tmp_path / "rf" / "pairs.pt", weights_only=True)["x"]
    torch.testing.assert_close(pairs[:, 1], fm.sample(base.velocity, pairs[:, 0], 2, "euler"))
    pair_set = {tuple(p.flatten().tolist()) for p in pairs}
    assert len(seen) == 1 and seen[0][0] is not None  # one step, on given x_0 (not fresh noise)
    assert all(tuple(torch.stack([a, b]).flatten().tolist()) in pair_set for a, b in zip(*seen[0]))
    rf2 = fm.load(path)
    for (k, a), b in zip(base.state_dict().items(), rf2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    rows = json.loads((tmp_path / "rf" / "reflow.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["1-RF", "2-RF"] and all(r["S"] >= 0 and r["fd_euler1"] >= 0 for r in rows)
    code, out, err = cli("straightness", "--ckpt", grid_ckpt, "--ckpt", path, "--n", 50, "--device", "cpu")
    assert code == 0 and out.count("S_relative") == 2 and "fd_euler4" in out, err


@given(seed=st.integers(0, 10_000), box=st.floats(0.5, 3.0))
@settings(max_examples=10)
def test_clamped_velocity_keeps_the_endpoint_in_the_box(seed, box):
    """v_c = v + (clip(x_1_hat) - x_1_hat) / (1 - t) with x_1_hat = x + (1 - t) v: the endpoint it predicts is the
    clamped one, and v_c is v bit for bit wherever x_1_hat lies inside the box (and at t = 1)."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64)
    t[0] = 1.0
    v = 3 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    v_c = fm.clamped_velocity(lambda x_, t_: v, box)(x, t)
    x_1 = x + (1 - t)[:, None] * v
    keep = (x_1.abs() <= box).all(1) | (t == 1)
    assert keep.any() and not keep.all()
    assert torch.equal(v_c[keep], v[keep])
    moved = t < 1
    torch.testing.assert_close(x[moved] + (1 - t[moved])[:, None] * v_c[moved], x_1[moved].clamp(-box, box))


def test_points_generate_clamps_the_endpoint_to_the_saved_box(grid_ckpt):
    """train saves the standardized train set's box; a network predicting garbage still gives samples inside it,
    and far outside without it (box None: an older checkpoint)."""
    import data
    model, x = fm.load(grid_ckpt), data.load("grid25").x
    box = float(((x - x.mean(0)) / x.std(0)).abs().max())
    assert model.box == pytest.approx(box)
    with torch.no_grad():
        for p in model.net.out.parameters():
            p.fill_(1e3)
    for b, inside in ((box, True), (None, False)):
        model.box = b
        z = model.normalize(fm.generate(model, 50, generator=torch.Generator().manual_seed(0), method="midpoint",
                                        steps=3))
        # within 0.1%: the clamp holds the predicted endpoint of each evaluation, and midpoint's last step lands
        # on x + h v_c(x_mid), a hair from x_mid's clamped endpoint; the garbage network lands at ~1e3 without it
        assert bool((z.abs() <= box * 1.001).all()) == inside


def test_reflow_resume_is_exact(grid_ckpt, tmp_path):
    kw = dict(ckpt=str(grid_ckpt), pairs=64, pair_steps=2, batch_size=16, eval_n=16, device="cpu")
    a = fm.reflow(steps=6, out=str(tmp_path / "a"), **kw)
    fm.reflow(steps=3, out=str(tmp_path / "b"), **kw)
    b = fm.reflow(steps=6, out=str(tmp_path / "b"), resume=True, **kw)
    A, B = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for part in ("ema", "models"):
        sa, sb = (A[part], B[part]) if part == "ema" else (A[part]["model"], B[part]["model"])
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part


TINY_IMG = ["--ch", 8, "--ch-mult", "1,2", "--attn", "--batch-size", 8, "--device", "cpu"]


@pytest.mark.filterwarnings("ignore:.*covariance is singular")  # 16 samples for 128-d features: a smoke run
def test_mnist5k_train_sample_nll_reflow_and_labels(tmp_path):
    seen, forward = [], fm.FM.forward
    with pytest.MonkeyPatch.context() as mp:  # what the loss is given: dequantized pixels
        mp.setattr(fm.FM, "forward", lambda self, x_1, y=None, x_0=None: seen.append(x_1) or forward(self, x_1, y, x_0))
        code, _, err = cli("train", "--steps", 2, *TINY_IMG, "--coupling", "ot", "--t-sampling", "logit-normal",
                           "--out", tmp_path / "run")
    assert code == 0 and (tmp_path / "run" / "samples.png").is_file(), err
    k = (seen[0] + 1) * 127.5  # the 8-bit value plus the dequantization noise u - 1/2
    assert len(seen) == 2 and ((k - k.round()).abs() <= 0.5).all() and (k - k.round()).abs().mean() > 0.1
    ckpt = tmp_path / "run" / "ckpt.pt"
    code, out, err = cli("sample", "--ckpt", ckpt, "--n", 4, "--steps", 2, "--out", tmp_path / "s.npz")
    assert code == 0 and "4 network evaluations" in out, err
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    code, out, err = cli("nll", "--ckpt", ckpt, "--n", 4, "--steps", 1, "--method", "euler")
    assert code == 0 and "hutchinson" in out and 0 < float(out.split("bits/dim")[0].split()[-1]) < 30, err
    code, out, err = cli("reflow", "--ckpt", ckpt, "--pairs", 16, "--pair-steps", 1, "--steps", 1,
                         "--batch-size", 8, "--eval-n", 16, "--out", tmp_path / "rf", "--device", "cpu")
    assert code == 0 and "fid_euler1" in out, err
    code, _, err = cli("train", "--steps", 2, *TINY_IMG, "--labels", "--out", tmp_path / "c")
    assert code == 0, err
    code, out, err = cli("sample", "--ckpt", tmp_path / "c" / "ckpt.pt", "--n", 3, "--steps", 1, "--label", 7,
                         "--guidance", 2, "--out", tmp_path / "c.npz")
    assert code == 0 and "4 network evaluations" in out, err  # midpoint 1 step = 2 calls, doubled batch
    assert (np.load(tmp_path / "c.npz")["y"] == 7).all()


@pytest.mark.parametrize("args", [
    ["sample", "--method", "rk4"], ["sample", "--steps", 0], ["sample", "--n", -1], ["sample", "--label", 99],
    ["sample", "--guidance", 2], ["nll", "--divergence", "maybe"], ["nll", "--steps", -2],
    ["reflow", "--pairs", 0], ["reflow", "--pair-method", "rk4"],
    ["train", "--data", "grid25", "--t-sampling", "beta"], ["train", "--data", "grid25", "--coupling", "sinkhorn"],
    ["train", "--data", "checkerboard", "--labels"], ["train", "--data", "grid25", "--p-uncond", 1.5],
])
def test_bad_input_is_one_line_and_exit_2(args, grid_ckpt, tmp_path):
    extra = ["--out", tmp_path / "run"] if args[0] == "train" else ["--ckpt", grid_ckpt]
    code, _, err = cli(*args, *extra)
    assert_one_line_error(subprocess.CompletedProcess(args, code, "", err))
