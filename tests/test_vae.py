"""vae.py: the bounds (ELBO <= IWAE_k <= log p(x), with log p(x) by quadrature over a 1-D latent), the closed-form KL,
the discretized logistic, active units, and every command (tiny budgets) plus bad input."""
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import data
import flow
import vae
from conftest import assert_one_line_error, run_cli

LOG_2PI = math.log(2 * math.pi)


def tiny_vae(likelihood: str, seed: int) -> vae.VAE:
    """A random VAE with latent dim 1 (float64); the decoder's first layers are scaled up so that q(z|x) is far from
    the true posterior and the bounds are visibly apart."""
    torch.manual_seed(seed)
    shape = (2,) if likelihood == "gaussian" else (1, 4, 4)
    m = vae.VAE(shape, latent_dim=1, hidden=8, likelihood=likelihood).double()
    with torch.no_grad():
        for p in list(m.decoder.parameters())[:2]:
            p.mul_(2.0)
    return m.eval()


def tiny_x(likelihood: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if likelihood == "gaussian":
        return (2 * torch.randn(3, 2, generator=g)).double()
    k = torch.randint(0, 256, (3, 1, 4, 4), generator=g).double()  # 8-bit pixels
    x = k / 127.5 - 1
    return vae.binarize(x, g) if likelihood == "bernoulli" else x


def quadrature(m: vae.VAE, x: torch.Tensor, n: int = 2001, lim: float = 8.0, y: torch.Tensor | None = None):
    """Exact log p(x) = log int p(x|z) N(z; 0, 1) dz and ELBO = int q(z|x) log p(x|z) dz - KL on a grid over z (1-D);
    with labels y, those of the CVAE's log p(x|y) (p(x|z, y), q(z|x, y))."""
    z = torch.linspace(-lim, lim, n, dtype=torch.float64)
    dz = z[1] - z[0]
    log_px_z = m.log_px_given_z(x, z[:, None, None].expand(n, len(x), 1), y)  # [n, B]
    log_p = torch.logsumexp(log_px_z + (-0.5 * z ** 2 - 0.5 * LOG_2PI)[:, None], 0) + dz.log()
    mu, logvar = m.encode(x, y)
    q = torch.exp(-0.5 * (z[:, None] - mu[:, 0]) ** 2 / logvar[:, 0].exp() - 0.5 * logvar[:, 0] - 0.5 * LOG_2PI) * dz
    assert torch.allclose(q.sum(0), torch.ones(len(x), dtype=torch.float64), atol=1e-6)  # the grid covers q
    return log_p, (q * log_px_z).sum(0) - vae.gaussian_kl(mu, logvar)


def mc(fn, x, reps):
    """Mean and standard error over `reps` independent estimates per example."""
    v = fn(x.repeat(reps, *[1] * (x.dim() - 1))).view(reps, len(x))
    return v.mean(0), v.std(0) / math.sqrt(reps)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli", "logistic"])
@settings(max_examples=2)
@given(seed=st.integers(0, 10_000))
@torch.no_grad()
def test_elbo_le_iwae_le_exact_log_px_and_iwae_approaches_it(likelihood, seed):
    m, x = tiny_vae(likelihood, seed), tiny_x(likelihood, seed)
    torch.manual_seed(seed)
    log_p, elbo_exact = quadrature(m, x)
    assert (elbo_exact <= log_p + 1e-9).all()  # Jensen, computed without sampling
    elbo, se = mc(m.elbo, x, 1000)
    assert ((elbo - elbo_exact).abs() <= 5 * se + 1e-9).all()  # m.elbo is an unbiased estimate of the ELBO
    gaps = {}
    for k, reps in [(1, 1000), (10, 200), (100, 20), (1000, 4)]:
        iw, se = mc(lambda v: m.iwae(v, k), x, reps)
        assert (iw <= log_p + 5 * se + 1e-9).all(), (k, iw, log_p)  # L_k <= log p(x)
        assert (iw >= elbo_exact - 5 * se - 1e-9).all(), (k, iw, elbo_exact)  # L_k >= L_1 = ELBO
        gaps[k] = (log_p - iw, se)
    gap_1, gap_1000 = gaps[1][0], gaps[1000][0]
    assert (gap_1000 <= torch.clamp(0.2 * gap_1, min=0.01) + 5 * gaps[1000][1]).all(), gaps  # -> log p(x) as k grows


def tiny_cvae(likelihood: str, seed: int, classes: int = 3) -> vae.VAE:
    """A random CVAE (latent dim 1, float64) whose label embeddings are large enough to matter, with a prior p(y)
    that is far from uniform."""
    torch.manual_seed(seed)
    shape = (2,) if likelihood == "gaussian" else (1, 4, 4)
    m = vae.VAE(shape, latent_dim=1, hidden=8, likelihood=likelihood, num_classes=classes).double()
    with torch.no_grad():
        for p in list(m.decoder.parameters())[:2]:
            p.mul_(2.0)
        m.log_py.copy_(torch.tensor([0.6, 0.3, 0.1][:classes], dtype=torch.float64).log())
    return m.eval()


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@torch.no_grad()
def test_cvae_uses_the_label_in_both_networks(likelihood):
    m, x = tiny_cvae(likelihood, 0), tiny_x(likelihood, 0)
    y0, y1 = torch.zeros(len(x), dtype=torch.long), torch.ones(len(x), dtype=torch.long)
    mu0, lv0 = m.encode(x, y0)
    mu1, lv1 = m.encode(x, y1)
    assert not torch.allclose(mu0, mu1) and not torch.allclose(lv0, lv1)  # q(z|x, y)
    z = torch.randn(5, len(x), 1, dtype=torch.float64)
    assert not torch.allclose(m.decode(z, y0), m.decode(z, y1))  # p(x|z, y)
    # the label of example b goes with every z of example b: decoding z [k, B] with y [B] = decoding each b alone
    y = torch.arange(len(x)) % 3  # a different label for each example
    for b in range(len(x)):
        assert torch.allclose(m.decode(z, y)[:, b], m.decode(z[:, b:b + 1], y[b:b + 1])[:, 0])
    m = m.float()  # generate draws float32 noise
    x0 = vae.generate(m, 6, generator=torch.Generator().manual_seed(1), y=0)
    assert not torch.allclose(x0, vae.generate(m, 6, generator=torch.Generator().manual_seed(1), y=2))
    assert torch.equal(x0, vae.generate(m, 6, generator=torch.Generator().manual_seed(1), y=torch.zeros(6).long()))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli", "logistic"])
@settings(max_examples=2)
@given(seed=st.integers(0, 10_000))
@torch.no_grad()
def test_cvae_elbo_le_iwae_le_log_p_x_given_y_for_every_class(likelihood, seed):
    m, x = tiny_cvae(likelihood, seed), tiny_x(likelihood, seed)
    torch.manual_seed(seed)
    for c in range(3):
        y = torch.full((len(x),), c, dtype=torch.long)
        log_p, elbo_exact = quadrature(m, x, y=y)  # log p(x|y) and the ELBO of q(z|x, y), by quadrature over z
        assert (elbo_exact <= log_p + 1e-9).all()
        elbo, se = mc(lambda v: m.elbo(v, y=y.repeat(len(v) // len(x))), x, 400)
        assert ((elbo - elbo_exact).abs() <= 5 * se + 1e-9).all()  # m.elbo(x, y=y) is an unbiased estimate of it
        for k, reps in [(10, 100), (300, 6)]:
            iw, se = mc(lambda v: m.iwae(v, k, y=y.repeat(len(v) // len(x))), x, reps)
            assert (iw <= log_p + 5 * se + 1e-9).all(), (c, k, iw, log_p)  # L_k <= log p(x|y)
            assert (iw >= elbo_exact - 5 * se - 1e-9).all(), (c, k, iw, elbo_exact)  # L_k >= ELBO


@torch.no_grad()
def test_cvae_bayes_classifier_is_bayes_rule_on_log_p_x_given_y():
    m, x = tiny_cvae("gaussian", 1), tiny_x("gaussian", 1)
    exact = torch.stack([quadrature(m, x, y=torch.full((len(x),), c))[0] for c in range(3)], 1)  # log p(x|y) [B, 3]
    log_joint = exact + m.log_py  # log p(x|y) + log p(y), p(y) = (0.6, 0.3, 0.1)
    want = log_joint - torch.logsumexp(log_joint, 1, keepdim=True)
    torch.manual_seed(0)
    got = m.log_posterior(x, k=3000)  # IWAE-3000 in place of log p(x|y)
    assert torch.allclose(got.exp().sum(1), torch.ones(len(x), dtype=torch.float64))  # probabilities sum to 1
    assert (got.exp() - want.exp()).abs().max() < 0.02, (got.exp(), want.exp())
    # the marginal bound of likelihood() is log sum_y p(x|y) p(y), within Monte Carlo error of the exact one
    r = vae.likelihood(m, x, k=3000, seed=0)
    assert abs(r["iwae_nats"] - float(torch.logsumexp(log_joint, 1).mean())) < 0.02
    r_y = vae.likelihood(m, x, k=3000, seed=0, y=torch.tensor([0, 1, 2]))
    assert abs(r_y["iwae_nats"] - float(exact[torch.arange(3), torch.arange(3)].mean())) < 0.02


@torch.no_grad()
def test_labels_are_checked():
    m = tiny_cvae("gaussian", 0)
    for bad in (3, -1, torch.tensor([0, 5]), torch.zeros(3, dtype=torch.long)):
        with pytest.raises(ValueError, match="labels in 0..2"):
            vae.generate(m, 2, y=bad)
    y = vae.labels_for(2000, 3, None, torch.Generator().manual_seed(0))  # y=None: uniform over the classes
    assert set(y.tolist()) == {0, 1, 2} and abs(float((y == 0).float().mean()) - 1 / 3) < 0.05


@settings(max_examples=10)
@given(mu=st.lists(st.floats(-3, 3), min_size=3, max_size=3), logvar=st.lists(st.floats(-4, 2), min_size=3, max_size=3))
def test_closed_form_kl_equals_monte_carlo(mu, logvar):
    mu, logvar = torch.tensor(mu, dtype=torch.float64), torch.tensor(logvar, dtype=torch.float64)
    eps = torch.randn(200_000, 3, dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * eps
    log_q = (-0.5 * eps ** 2 - 0.5 * logvar - 0.5 * LOG_2PI).sum(1)
    log_p = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(1)
    diff = log_q - log_p  # KL = E_q[log q - log p]
    kl = vae.gaussian_kl(mu, logvar)
    assert abs(float(diff.mean() - kl)) <= 5 * float(diff.std()) / math.sqrt(len(diff)) + 1e-9


@settings(max_examples=20)
@example(k_u=19, k_mu=0, log_sigma=-12.0)  # below the floor
@example(k_u=64, k_mu=-294, log_sigma=118.9)  # the grid25 VAE's NaN gradient at step 295,595: e^118.9 overflows float32
@given(k_u=st.integers(-320, 320), k_mu=st.integers(-320, 320), log_sigma=st.floats(-20, 150))
def test_gaussian_decoder_is_the_normal_density_with_a_finite_gradient(k_u, k_mu, log_sigma):
    """Points: log p(x|z) is log N(u; mu, sigma^2) with log sigma floored at -7, minus log scale (u the standardized
    x), and its float32 gradient in the decoder's outputs is the float64 one, finite for any output, however large
    log sigma is. (u, mu = k / 64 and x = 0.5 + 2 u are exact in float32, so only the formula's rounding is seen.)"""
    u, mu = k_u / 64, k_mu / 64
    m = vae.VAE((1,), latent_dim=1, hidden=4, likelihood="gaussian")
    with torch.no_grad():
        m.shift.fill_(0.5), m.scale.fill_(2.0)
    params = torch.tensor([[mu, log_sigma]], requires_grad=True)
    m.decode = lambda z, y=None: params  # the decoder's outputs (mean, log sigma), given
    log_p = m.log_px_given_z(torch.tensor([[0.5 + 2.0 * u]]), torch.zeros(1, 1))
    log_p.sum().backward()
    p64 = params.detach().double().requires_grad_()  # the reference in float64 from the same float32 outputs
    ref = torch.distributions.Normal(p64[0, 0], p64[0, 1].clamp(min=-7.0).exp()).log_prob(
        torch.tensor(u, dtype=torch.float64)) - math.log(2.0)
    ref.backward()
    assert abs(log_p.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
    assert torch.isfinite(params.grad).all()
    scale = max(1.0, float(p64.grad.abs().max()))
    torch.testing.assert_close(params.grad.double(), p64.grad, rtol=1e-4, atol=1e-6 * scale)
    assert torch.isfinite(m.sample(4, torch.Generator().manual_seed(0))).all()  # x ~ N(mu, sigma^2) as well


@settings(max_examples=20)
@example(mean=0.0, log_s=100.0)
@given(mean=st.floats(-1.5, 1.5), log_s=st.floats(-7, 150))
def test_discretized_logistic_stays_finite_for_any_scale(mean, log_s):
    """In float32, log P(k) and its gradient stay finite however large the decoder's log s (a far-off decoder output):
    the bins' masses would underflow to 0 above log s ~ 84 and give -inf and a NaN gradient."""
    params = torch.tensor([mean, log_s], requires_grad=True)
    x = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    log_p = vae.discretized_logistic_logp(x, params[0], params[1])
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()


@settings(max_examples=20)
@given(mean=st.floats(-1.5, 1.5), log_s=st.floats(-7, 3))
def test_discretized_logistic_is_a_distribution_over_256_levels(mean, log_s):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    log_p = vae.discretized_logistic_logp(x, torch.tensor(mean, dtype=torch.float64), torch.tensor(log_s).double())
    assert torch.isfinite(log_p).all() and (log_p <= 1e-12).all()
    assert abs(float(log_p.exp().sum()) - 1) < 1e-9
    # as a density on [0, 1] of y = (k + u) / 256 it is 256 P(k) inside bin k, so it integrates to 1 there as well,
    # and the bits/dim protocol is the very function flow.py uses
    log_p_y = log_p + math.log(256)
    assert torch.allclose(vae.bits_per_dim(log_p_y, 1), flow.bits_per_dim(log_p_y, 1))
    assert torch.allclose(vae.bits_per_dim(log_p_y, 1), -log_p / math.log(2))


@given(n_active=st.integers(0, 6), seed=st.integers(0, 100))
def test_active_units_count_dims_whose_posterior_mean_moves(n_active, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(500, 6)
    mu[:, :n_active] = torch.randn(500, n_active, generator=g)  # variance ~1 > 0.01
    mu[:, n_active:] = 0.3 + 0.01 * torch.randn(500, 6 - n_active, generator=g)  # variance ~1e-4: collapsed
    assert vae.active_units(mu) == n_active


# ----------------------------------------------------------------------------------------------------- commands
def cli(capsys, *args):
    """Run the typer app in this process (fast); returns (exit code, stdout, stderr) like a subprocess would."""
    try:
        vae.app([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


class Proc:  # what assert_one_line_error expects
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")


@pytest.mark.parametrize("data_name", ["moons", "grid25"])
def test_every_command_on_points(tmp_path, capsys, data_name):
    ck = vae.train(data=data_name, steps=3, hidden=8, latent_dim=2, batch_size=16, device="cpu", out=str(tmp_path / "r"))
    assert ck.exists() and vae.load(ck).likelihood == "gaussian"
    code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 7, "--out", tmp_path / "s.npz")
    assert code == 0, err
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (7, 2) and np.isfinite(x).all()
    for cmd, png in [("sample", "s.png"), ("reconstruct", "r.png"), ("interpolate", "i.png")]:
        code, out, err = cli(capsys, cmd, "--ckpt", ck, "--out", tmp_path / png)
        assert code == 0 and (tmp_path / png).stat().st_size > 0, err
    code, out, err = cli(capsys, "nll", "--ckpt", ck, "--k", 5, "--n", 20)
    assert code == 0 and "nats" in out, err
    res = vae.nll(ckpt=str(ck), k=5, n=20)
    assert math.isfinite(res["nll_nats"]) and res["nll_nats"] <= -res["elbo_nats"] + 5  # loose: 20 points, 1 sample


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_every_command_on_mnist5k(tmp_path, capsys, likelihood):
    code, out, err = cli(capsys, "train", "--data", "mnist5k", "--likelihood", likelihood, "--steps", 2, "--hidden", 4,
                         "--latent-dim", 2, "--batch-size", 8, "--device", "cpu", "--out", tmp_path / "r")
    assert code == 0, err
    ck = tmp_path / "r" / "ckpt.pt"
    log = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert '"active_units"' in log and '"kl"' in log
    code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 4, "--out", tmp_path / "s.npz", "--device", "cpu")
    x = np.load(tmp_path / "s.npz")["x"]
    assert code == 0 and x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    model = vae.load(ck)
    assert np.array_equal(vae.generate(model, 4, generator=torch.Generator().manual_seed(0)).numpy(), x)  # --seed 0
    for cmd in ["reconstruct", "interpolate"]:
        code, out, err = cli(capsys, cmd, "--ckpt", ck, "--out", tmp_path / f"{cmd}.png")
        assert code == 0 and (tmp_path / f"{cmd}.png").exists(), err
    code, out, err = cli(capsys, "nll", "--ckpt", ck, "--k", 3, "--n", 4)
    assert code == 0, err
    assert ("bits/dim (" in out) == (likelihood == "logistic") and ("NOT comparable" in out) == (likelihood == "bernoulli")
    r = vae.likelihood(model, data.load("mnist5k", "test").x[:4], k=3, seed=0)
    key = "nll_bpd" if likelihood == "logistic" else "nll_nats"  # Bernoulli: nats of binarized digits, never bits/dim
    assert r["kind"] == "bound" and {"nll_bpd", "nll_nats"} & set(r) == {key}
    assert f"NLL {r[key]:.4f} " in out and vae.nll(ckpt=str(ck), k=3, n=4)[key] == r[key]


def test_every_command_with_a_spatial_latent(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--latent", "spatial", "--factor", 2, "--latent-channels", 3, "--beta", 1e-3,
                         "--likelihood", "logistic", "--steps", 2, "--hidden", 8, "--batch-size", 8, "--device", "cpu",
                         "--out", tmp_path / "r")
    assert code == 0, err
    ck = tmp_path / "r" / "ckpt.pt"
    model = vae.load(ck)
    assert model.latent_shape == (3, 14, 14) and model.encode(torch.zeros(2, 1, 28, 28))[0].shape == (2, 3, 14, 14)
    for cmd in ["reconstruct", "interpolate", "sample"]:
        code, out, err = cli(capsys, cmd, "--ckpt", ck, "--out", tmp_path / f"{cmd}.png")
        assert code == 0 and (tmp_path / f"{cmd}.png").exists(), err
    code, out, err = cli(capsys, "nll", "--ckpt", ck, "--k", 2, "--n", 3)
    assert code == 0 and "bits/dim (" in out, err


# ----------------------------------------------------------------------------------------------------- the surface
@pytest.fixture(scope="module")
def moons_ckpt(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENMODELS_QUIET", "1")
        return vae.train(data="moons", steps=3, hidden=8, latent_dim=2, batch_size=16, device="cpu",
                         out=str(tmp_path_factory.mktemp("vae") / "r"))


def test_generate_is_what_the_sample_command_writes(moons_ckpt, tmp_path, capsys):
    model = vae.load(moons_ckpt)
    x = vae.generate(model, 7, generator=torch.Generator().manual_seed(3))
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
    assert torch.equal(x, vae.generate(model, 7, generator=torch.Generator().manual_seed(3)))  # seeded: reproducible
    # batch: the same draws (only the network's float rounding may depend on the batch size)
    assert torch.allclose(x, vae.generate(model, 7, generator=torch.Generator().manual_seed(3), batch=2), atol=1e-5)
    assert not torch.equal(x, vae.generate(model, 7, generator=torch.Generator().manual_seed(4)))
    code, out, err = cli(capsys, "sample", "--ckpt", moons_ckpt, "--n", 7, "--seed", 3, "--out", tmp_path / "s.npz",
                         "--device", "cpu")
    assert code == 0 and np.array_equal(np.load(tmp_path / "s.npz")["x"], x.numpy()), err
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(3))  # --mean: E[x|z] of the same z
    assert torch.equal(vae.generate(model, 7, generator=torch.Generator().manual_seed(3), mean=True), model.mean(z))
    code, out, err = cli(capsys, "sample", "--ckpt", moons_ckpt, "--n", 3)  # default --out: next to the checkpoint
    assert code == 0 and (moons_ckpt.parent / "sample.png").stat().st_size > 0, err
    with pytest.raises(ValueError, match="unconditional"):
        vae.generate(model, 2, y=torch.zeros(2, dtype=torch.long))


def test_likelihood_is_what_the_nll_command_reports(moons_ckpt, capsys):
    model = vae.load(moons_ckpt)
    r = vae.likelihood(model, data.load("moons", "test").x[:20], k=5, seed=0)
    assert r["kind"] == "bound" and "nll_nats" in r and "nll_bpd" not in r and math.isfinite(r["nll_nats"])
    assert r["nll_nats"] <= -r["elbo_nats"] + 5  # loose: IWAE-5 against a one-sample ELBO on 20 points
    code, out, err = cli(capsys, "nll", "--ckpt", moons_ckpt, "--k", 5, "--n", 20)
    assert code == 0 and f"IWAE-5 NLL {r['nll_nats']:.4f} nats" in out, err
    res = vae.nll(ckpt=str(moons_ckpt), k=5, n=20)
    assert res["nll_nats"] == r["nll_nats"] and res["elbo_nats"] == r["elbo_nats"]


def test_cvae_commands_learn_the_label_and_classify(tmp_path, capsys):
    ck = vae.train(data="moons", steps=600, hidden=32, latent_dim=2, batch_size=64, kl_warmup=100, device="cpu",
                   out=str(tmp_path / "r"), cond=True)
    model = vae.load(ck)
    assert model.num_classes == 2 and torch.allclose(model.log_py.exp(), torch.tensor([0.5, 0.5]), atol=0.01)
    ds = data.load("moons", "train")
    for c in range(2):  # samples of class c lie on moon c: the label of their nearest training point
        code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 200, "--label", c, "--out", tmp_path / "s.npz")
        assert code == 0, err
        x = torch.as_tensor(np.load(tmp_path / "s.npz")["x"])
        assert float((ds.y[torch.cdist(x, ds.x).argmin(1)] == c).float().mean()) > 0.7  # label ignored: 0.5 +- 0.035
    code, out, err = cli(capsys, "classify", "--ckpt", ck, "--n", 300, "--k", 20)
    assert code == 0 and "test accuracy" in out, err
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert acc > 85, out  # the two moons, told apart by Bayes' rule on the CVAE's bound
    assert f"{100 * vae.classify(ckpt=str(ck), n=300, k=20)['accuracy']:.2f}%" in out  # what it returns
    code, out, err = cli(capsys, "nll", "--ckpt", ck, "--k", 5, "--n", 20)  # the marginal bound on log p(x)
    assert code == 0 and "nats" in out, err
    for args in [("sample", "--ckpt", ck, "--label", 2), ("sample", "--ckpt", ck, "--label", -1)]:
        assert_one_line_error(Proc(*cli(capsys, *args)))


def test_cvae_on_mnist5k_and_label_on_an_unconditional_model(tmp_path, capsys, moons_ckpt):
    code, out, err = cli(capsys, "train", "--cond", "--steps", 2, "--hidden", 4, "--latent-dim", 2, "--batch-size", 8,
                         "--device", "cpu", "--out", tmp_path / "r")
    assert code == 0, err
    ck = tmp_path / "r" / "ckpt.pt"
    code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 5, "--label", 7, "--out", tmp_path / "s.png")
    assert code == 0 and "label accuracy (fid.classify)" in out, err
    code, out, err = cli(capsys, "classify", "--ckpt", ck, "--n", 10, "--k", 2)
    assert code == 0 and "fid.py's discriminative classifier" in out, err
    for args in [("sample", "--ckpt", ck, "--label", 10), ("sample", "--ckpt", moons_ckpt, "--label", 0),
                 ("classify", "--ckpt", moons_ckpt), ("train", "--data", "swissroll", "--cond")]:
        assert_one_line_error(Proc(*cli(capsys, *args)))


def test_the_class_prior_is_the_training_frequencies(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    moons = data.load("moons")
    keep = torch.cat([(moons.y == 0).nonzero()[:300, 0], (moons.y == 1).nonzero()[:100, 0]])  # 3 : 1
    unbalanced = data.Dataset(moons.x[keep], moons.y[keep], "points", "moons", 2)
    monkeypatch.setattr(vae.datasets, "load", lambda name, split="train": unbalanced)
    ck = vae.train(data="moons", steps=2, hidden=4, batch_size=16, device="cpu", out=str(tmp_path / "r"), cond=True)
    assert torch.allclose(vae.load(ck).log_py.exp(), torch.tensor([0.75, 0.25]))  # p(y) of Bayes' rule


def test_bad_input_fails_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args in [("train", "--data", "nope"), ("train", "--data", "moons", "--steps", -1),
                 ("train", "--likelihood", "gauss"), ("train", "--data", "moons", "--beta", "nan"),
                 ("sample", "--ckpt", tmp_path / "missing.pt"), ("sample", "--ckpt", bad),
                 ("nll", "--ckpt", bad, "--k", 0), ("reconstruct", "--ckpt", bad, "--out", tmp_path / "x.jpg"),
                 ("train", "--latent", "cube"), ("train", "--data", "moons", "--latent", "spatial"),
                 ("train", "--latent", "spatial", "--factor", 3), ("train", "--latent", "spatial", "--factor", 32)]:
        assert_one_line_error(Proc(*cli(capsys, *args)))
    assert_one_line_error(run_cli("vae.py", "train", "--data", "moons", "--latent-dim", "0"))  # a real process
