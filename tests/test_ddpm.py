"""DDPM: the laws of the forward process, the bound, the samplers (against an analytic oracle), and the commands."""
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
from conftest import assert_one_line_error, run_cli


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
    model = ddpm.DDPM(ddpm.MLP(1, 8, 1), 1000, schedule)  # the model's float32 buffers
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

    def forward(self, x, t, y=None):
        return self.a[t].view(-1, 1) * x + self.b[t].view(-1, 1)


@settings(max_examples=10)
@given(st.integers(0, 10_000), st.floats(-2, 2))
def test_vlb_never_exceeds_exact_nll(seed, x0):
    T = 12
    g = torch.Generator().manual_seed(seed)
    a, b = 0.8 * torch.rand(T, generator=g), 0.5 * torch.randn(T, generator=g)
    model = ddpm.DDPM(LinearEps(a, b), T, "cosine").double()
    ab, betas = model.alpha_bar.double(), model.betas.double()
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
CENTERS = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
STD = 0.1


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


def mixture_stats(x):
    d = (x.double()[:, None] - CENTERS[None]).norm(dim=-1)  # [N, K]
    k = d.argmin(1)
    within = (d.min(1).values < 3 * STD).double().mean().item()  # |x - mu| < 3 std: 98.9% of a 2-D Gaussian
    weights = torch.bincount(k, minlength=3).double() / len(x)
    spread = torch.stack([(x.double()[k == j] - CENTERS[j]).std() for j in range(3)])
    return within, weights, spread


AB = alpha_bar_of("linear", 1000).float()


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.mark.parametrize("sampler,steps,eta", [("ddpm", 1000, 0.0), ("ddpm", 100, 0.0), ("ddim", 50, 0.0),
                                               ("ddim", 50, 1.0), ("dpm++2m", 10, 0.0), ("dpm++2m", 20, 0.0)])
def test_samplers_reproduce_mixture_from_exact_eps(sampler, steps, eta):
    eps_fn = Counter(mixture_eps(AB))
    x_T = torch.randn(3000, 2, generator=torch.Generator().manual_seed(1))
    x = ddpm.sample(eps_fn, AB, x_T, sampler, steps, eta, torch.Generator().manual_seed(2))
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
        for spacing in ["lambda", "uniform"]:
            ts = ddpm.timesteps(1000, steps, AB, spacing)
            assert len(ts) == steps and ts[0] == 999 and (steps == 1 or ts[-1] == 0)
            assert all(a > b for a, b in zip(ts, ts[1:]))


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
