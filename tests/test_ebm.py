"""ebm.py: Langevin dynamics against a Gaussian's mean and variance, the grid partition function against a closed
form, the replay buffer's restarts, the regularized CD loss, and the commands (smoke runs, exact resume with the
buffer, the divergence stop, one-line errors)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import data
import ebm
from conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


@given(mx=st.floats(-3, 3), my=st.floats(-3, 3), s=st.floats(0.3, 3.0), seed=st.integers(0, 2 ** 16))
@settings(max_examples=8)
def test_langevin_samples_a_gaussian(mx, my, s, seed):
    """E(x) = |x - mu|^2 / (2 s^2) with noise_std = sqrt(2 h) (ULA): the chains' mean is mu and their variance
    s^2 / (1 - h / (2 s^2)), ULA's exact stationary variance for a Gaussian (-> s^2 as h -> 0)."""
    mu = torch.tensor([mx, my], dtype=torch.float64)
    h = 0.05 * s ** 2
    g = torch.Generator().manual_seed(seed)
    x0 = mu + 3 * s * (torch.rand(4000, 2, generator=g, dtype=torch.float64) - 0.5)
    x = ebm.langevin(lambda x: ((x - mu) ** 2).sum(1) / (2 * s ** 2), x0, 200, h, math.sqrt(2 * h), g)
    var = s ** 2 / (1 - h / (2 * s ** 2))
    assert torch.allclose(x.mean(0), mu, atol=5 * s / math.sqrt(4000))
    assert x.var(0).mean().item() == pytest.approx(var, rel=0.06)
    assert var == pytest.approx(s ** 2, rel=0.03)


@given(mx=st.floats(-3, 3), s=st.floats(0.3, 3.0), seed=st.integers(0, 2 ** 16))
@settings(max_examples=8)
def test_mala_keeps_a_gaussian_exactly_where_ula_inflates_it(mx, s, seed):
    """E(x) = |x - mu|^2 / (2 s^2), chains started exactly at N(mu, s^2 I), step h = s^2: MALA's accept/reject keeps
    the law (mean mu, variance s^2) where ULA's chain goes to its own stationary variance s^2 / (1 - h / (2 s^2)) =
    2 s^2. 1/sqrt(n) tolerances on 20,000 chains."""
    mu = torch.tensor([mx, -mx], dtype=torch.float64)
    h, n = s ** 2, 20_000
    energy = lambda x: ((x - mu) ** 2).sum(1) / (2 * s ** 2)  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    x0 = mu + s * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x, accepted = ebm.mala(energy, x0, 20, h, g)
    assert 0.2 < accepted < 0.95  # both branches are taken
    assert torch.allclose(x.mean(0), mu, atol=5 * s / math.sqrt(n))
    assert x.var(0).mean().item() == pytest.approx(s ** 2, rel=0.04)
    ula = ebm.langevin(energy, x0, 20, h, math.sqrt(2 * h), g)
    assert ula.var(0).mean().item() == pytest.approx(2 * s ** 2, rel=0.04)  # what the test tells MALA from


def test_mala_is_the_stated_step():
    """One step by hand: the ULA proposal y from the generator's draw, then accepted where log u < E(x) - E(y) +
    log q(x | y) - log q(y | x), q(b | a) = N(b; a - h grad E(a), 2h I)."""
    E = lambda x: (x ** 4).sum(1) / 4  # noqa: E731  (grad x^3: an asymmetric proposal)
    x = torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 0.3
    out, accepted = ebm.mala(E, x, 1, h, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    y = x - h * x ** 3 + math.sqrt(2 * h) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    log_q = lambda b, a: -((b - a + h * a ** 3) ** 2).sum(1) / (4 * h)  # noqa: E731
    keep = torch.rand(500, generator=g, dtype=torch.float64).log() < E(x) - E(y) + log_q(x, y) - log_q(y, x)
    assert 0 < keep.sum() < 500
    assert torch.allclose(out, torch.where(keep[:, None], y, x)) and accepted == pytest.approx(keep.double().mean())


@given(step=st.floats(1e-3, 0.5))
def test_langevin_is_the_stated_update(step):
    """No noise, one step: x - step * grad E(x) exactly (here grad of |x|^2 / 2 is x); the clamp keeps a box."""
    x = torch.randn(10, 3, dtype=torch.float64)
    assert torch.allclose(ebm.langevin(lambda x: (x ** 2).sum(1) / 2, x, 1, step, 0.0), (1 - step) * x)
    y = ebm.langevin(lambda x: -(x ** 2).sum(1), x, 5, step, 0.1, clamp=(-1.0, 1.0))
    assert y.abs().max() <= 1


@given(mx=st.floats(-1, 1), my=st.floats(-1, 1), s=st.floats(0.15, 0.8), c=st.floats(-5, 5))
@settings(max_examples=10)
def test_log_partition_of_a_gaussian_energy(mx, my, s, c):
    """E = |u - mu|^2 / (2 s^2) + c integrates to log Z = log(2 pi s^2) - c (mass outside [-4, 4]^2 negligible)."""
    mu = torch.tensor([mx, my])
    log_z = ebm.log_partition(lambda u: ((u - mu) ** 2).sum(1) / (2 * s ** 2) + c, box=4.0, n=400)
    assert float(log_z) == pytest.approx(math.log(2 * math.pi * s ** 2) - c, abs=2e-3)


class GaussianEnergy(torch.nn.Module):
    """E(u) = |u - m|^2 / (2 s^2) + c in normalized units."""

    def __init__(self, m, s, c):
        super().__init__()
        self.m, self.s, self.c = torch.tensor(m), s, c

    def forward(self, u):
        return ((u - self.m) ** 2).sum(1) / (2 * self.s ** 2) + self.c


@pytest.mark.parametrize("base", [0.0, 1.5])  # without and with the base measure, both always checked
@given(m=st.tuples(st.floats(-1, 1), st.floats(-1, 1)), s=st.floats(0.4, 1.2),
       shift=st.tuples(st.floats(-5, 5), st.floats(-5, 5)), scale=st.tuples(st.floats(0.2, 4), st.floats(0.2, 4)))
@settings(max_examples=5)
def test_nll_is_the_gaussians_in_data_space(base, m, s, shift, scale):
    """The net's Gaussian energy times the base measure N(0, base^2) is a Gaussian in normalized units, precision
    P = 1/s^2 + 1/base^2 and mean (m / s^2) / P; in data space x = shift + scale * u the density is divided by
    prod(scale). So -log p(x) is that Gaussian's, plus sum(log scale), whatever the energy's constant c."""
    model = ebm.EBM(GaussianEnergy(m, s, c=3.0), (2,), torch.tensor(shift), torch.tensor(scale), base_std=base)
    P = 1 / s ** 2 + (1 / base ** 2 if base else 0.0)
    mean = torch.tensor(m, dtype=torch.float64) / s ** 2 / P
    u = mean + torch.randn(50, 2, dtype=torch.float64) / math.sqrt(P)
    x = (torch.tensor(shift, dtype=torch.float64) + torch.tensor(scale, dtype=torch.float64) * u).float()
    gauss = torch.distributions.Normal(mean, 1 / math.sqrt(P))
    expect = -gauss.log_prob(u).sum(1) + math.log(scale[0] * scale[1])
    got = model.nll(x, box=8.0, n=800).double()
    assert torch.allclose(got, expect, atol=3e-3), (got - expect).abs().max()


@given(mx=st.floats(-0.5, 0.5), s=st.floats(1.0, 2.0), box=st.floats(2.0, 3.0))
@settings(max_examples=6)
def test_mass_outside_the_box_is_measured_and_warned(mx, s, box):
    """For E = |u - mu|^2 / (2 s^2), Z over [-b, b]^2 is 2 pi s^2 prod_d (Phi((b - mu_d)/s) - Phi((-b - mu_d)/s));
    doubling the box raises log Z by log(Z_2b / Z_b), and nll warns when that is 0.01 nats or more."""
    mu = torch.tensor([mx, -0.3])
    energy = GaussianEnergy(mu.tolist(), s, c=0.0)
    Phi = lambda v: 0.5 * (1 + torch.erf(v / math.sqrt(2)))
    log_z = lambda b: float(torch.log(Phi((b - mu) / s) - Phi((-b - mu) / s)).sum())  # + log(2 pi s^2) cancels
    expect = log_z(2 * box) - log_z(box)
    assert expect > 0.02  # the case is one that loses mass
    assert ebm.mass_outside(energy, box, 400) == pytest.approx(expect, rel=2e-3)
    model = ebm.EBM(energy, (2,))
    with pytest.warns(UserWarning, match="mass outside"):
        model.nll(torch.zeros(3, 2), box, 400)
    assert ebm.mass_outside(energy, 4 * s + 2, 400) < 1e-3  # a box wide enough holds the mass


@given(restart=st.floats(0.0, 1.0))
@settings(max_examples=10)
def test_replay_buffer_restarts_a_fraction_and_writes_back(restart):
    """With 0 Langevin steps, negatives are stored chains except a `restart` fraction of fresh noise, and the
    buffer holds them afterwards."""
    buffer = torch.full((50_000, 2), 7.0)
    x = ebm.negatives(lambda x: x.sum(1), buffer, lambda n: torch.zeros(n, 2), 20_000, 0, 0.1, 0.0, restart)
    fresh = (x == 0).all(1).float().mean().item()
    assert fresh == pytest.approx(restart, abs=0.015)
    assert ((buffer == 0).all(1).sum() > 0) == (fresh > 0)
    assert set(torch.unique(buffer).tolist()) <= {0.0, 7.0}


@given(alpha=st.floats(0.01, 10.0))
@settings(max_examples=10)
def test_regularizer_bounds_the_energy_gap(alpha):
    """Minimizing E+ - E- + alpha (E+^2 + E-^2) over constant energies gives E+ = -1/(2 alpha), E- = 1/(2 alpha):
    the regularizer caps the data/sample gap at 1/alpha nats (why a small alpha is needed for sharp densities)."""
    e = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([e], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = ebm.cd_loss(e[:1], e[1:], alpha)
        loss.backward()
        return loss

    opt.step(closure)
    assert e.detach().tolist() == pytest.approx([-1 / (2 * alpha), 1 / (2 * alpha)], rel=1e-3, abs=1e-5)


def test_networks_map_a_batch_to_one_energy_each():
    assert ebm.EnergyMLP(2, 16).forward(torch.randn(5, 2)).shape == (5,)
    assert ebm.EnergyCNN((1, 28, 28), 4).forward(torch.randn(3, 1, 28, 28)).shape == (3,)
    assert ebm.EnergyCNN((3, 32, 32), 4).forward(torch.randn(2, 3, 32, 32)).shape == (2,)


def test_chain_defaults_by_data_kind():
    """0 / -1 defaults: points train ULA at 1e-3 and sample ULA at 1e-4; images use cold clamped chains."""
    cfg = dict(kind="points", lr=0.0, step_size=0.0, noise_std=-1.0, sample_step_size=0.0)
    assert ebm.train_chain(cfg) == pytest.approx((1e-3, math.sqrt(2e-3), None))
    assert ebm.chain_settings(cfg) == pytest.approx((1e-4, math.sqrt(2e-4), None))
    assert ebm.chain_settings(cfg, 0.01)[:2] == pytest.approx((0.01, math.sqrt(0.02)))  # ULA at any step
    assert ebm.chain_settings(dict(cfg, noise_std=0.0), 0.01)[1] == 0.0  # an explicit noise wins
    img = dict(cfg, kind="images")
    assert ebm.train_chain(img) == ebm.chain_settings(img) == (1.0, 0.01, (-1.0, 1.0))
    assert ebm.resolve(img, "lr") == 1e-4 and ebm.resolve(cfg, "lr") == 1e-3


# ----------------------------------------------------------------------------------------------------- commands
TINY_POINTS = ["--data", "grid25", "--steps", "3", "--hidden", "16", "--langevin-steps", "2", "--batch-size", "16",
               "--buffer-size", "100", "--sample-steps", "2", "--device", "cpu"]


def test_cli_points_train_sample_and_nll(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("ebm.py", "train", *TINY_POINTS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "ckpt.pt").is_file() and (out / "samples.png").is_file() and "test NLL" in proc.stdout
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["extra"]["buffer"].shape == (100, 2)  # the replay buffer is part of the checkpoint
    nll = ebm.nll(ckpt=str(out / "ckpt.pt"), split="test", box=4.0, grid=200)
    assert math.isfinite(nll)
    ebm.sample(ckpt=str(out / "ckpt.pt"), n=5, out=str(tmp_path / "s.npz"), langevin_steps=3, step_size=0.0,
               noise_std=-1.0, seed=0, device="cpu")
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (5, 2) and np.isfinite(x).all()


def test_images_train_and_sample(tmp_path):
    ckpt = ebm.train(data="mnist5k", steps=2, batch_size=4, ch=4, langevin_steps=2, buffer_size=8, sample_steps=2,
                     device="cpu", out=str(tmp_path / "m"))
    ebm.sample(ckpt=str(ckpt), n=3, out=str(tmp_path / "m.npz"), langevin_steps=2, step_size=0.0, noise_std=-1.0,
               seed=0, device="cpu")
    x = np.load(tmp_path / "m.npz")["x"]
    assert x.shape == (3, 1, 28, 28) and x.min() >= -1 and x.max() <= 1  # chains are clamped to the data box
    model = ebm.load(ckpt)
    assert np.array_equal(ebm.generate(model, 3, generator=torch.Generator().manual_seed(0), steps=2).numpy(), x)
    with pytest.raises(ValueError, match="2-D points"):
        ebm.likelihood(model, torch.zeros(2, 1, 28, 28))


def test_resume_is_exact_with_the_replay_buffer(tmp_path):
    kw = dict(data="ring8", batch_size=8, hidden=16, langevin_steps=3, buffer_size=64, sample_steps=1, device="cpu")
    a = torch.load(ebm.train(steps=6, out=str(tmp_path / "a"), **kw), weights_only=True)
    ebm.train(steps=3, out=str(tmp_path / "b"), **kw)
    b = torch.load(ebm.train(steps=6, out=str(tmp_path / "b"), resume=True, **kw), weights_only=True)
    assert torch.equal(a["extra"]["buffer"], b["extra"]["buffer"])
    for k, v in a["models"]["model"].items():
        assert torch.equal(v, b["models"]["model"][k]), k


def cli(capsys, *args):
    """Run ebm's app in this process (as `python ebm.py ...` would) and capture its exit code and stderr."""
    capsys.readouterr()  # drop what earlier calls printed
    with pytest.raises(SystemExit) as e:
        ebm.app(args=[str(a) for a in args])
    return SimpleNamespace(returncode=e.value.code, stderr=capsys.readouterr().err)


def test_diverging_energies_stop_with_a_message(tmp_path, capsys):
    proc = cli(capsys, "train", *TINY_POINTS, "--max-energy", "1e-9", "--out", tmp_path / "d")
    assert_one_line_error(proc, code=1)
    assert "diverged" in proc.stderr


def test_bad_input_fails_with_one_line(tmp_path, capsys):
    assert_one_line_error(run_cli("ebm.py", "train", "--steps", "-1"))
    assert_one_line_error(cli(capsys, "train", "--data", "nope", "--out", tmp_path / "x"))
    assert_one_line_error(cli(capsys, "train", *TINY_POINTS, "--restart", "1.5", "--out", tmp_path / "x"))
    assert_one_line_error(cli(capsys, "train", *TINY_POINTS, "--buffer-size", "4", "--out", tmp_path / "x"))
    assert_one_line_error(cli(capsys, "sample", "--ckpt", tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02corrupt")
    assert_one_line_error(cli(capsys, "nll", "--ckpt", bad))
    img = ebm.train(data="mnist5k", steps=1, batch_size=2, ch=2, langevin_steps=1, buffer_size=2, sample_steps=1,
                    device="cpu", out=str(tmp_path / "img"))
    assert_one_line_error(cli(capsys, "nll", "--ckpt", img))  # no grid likelihood for images
    assert_one_line_error(cli(capsys, "sample", "--ckpt", img, "--out", tmp_path / "x.gif"))
    assert_one_line_error(cli(capsys, "sample", "--ckpt", img, "--sampler", "mala"))  # points only
    assert_one_line_error(cli(capsys, "sample", "--ckpt", img, "--sampler", "hmc"))
    assert_one_line_error(cli(capsys, "sample", "--ckpt", img, "--sampler", "mala", "--noise-std", "0.1"))


# ----------------------------------------------------------------------------------------------------- the surface
@pytest.fixture(scope="module")
def moons_ckpt(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENMODELS_QUIET", "1")
        return ebm.train(data="moons", steps=3, hidden=8, langevin_steps=2, buffer_size=32, sample_steps=2,
                         batch_size=16, device="cpu", out=str(tmp_path_factory.mktemp("ebm") / "r"))


def test_generate_is_what_the_sample_command_writes(moons_ckpt, tmp_path, capsys):
    model = ebm.load(moons_ckpt)
    x = ebm.generate(model, 7, generator=torch.Generator().manual_seed(3), steps=4)
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
    assert torch.equal(x, ebm.generate(model, 7, generator=torch.Generator().manual_seed(3), steps=4))
    assert not torch.equal(x, ebm.generate(model, 7, generator=torch.Generator().manual_seed(4), steps=4))
    g = torch.Generator().manual_seed(3)  # by hand: ULA at the checkpoint's sampling step, from EBM.noise
    step, noise, clamp = ebm.chain_settings(model.config)
    assert torch.equal(x, model.denormalize(ebm.langevin(model, model.noise(7, g), 4, step, noise, g, clamp)))
    ebm.app(["sample", "--ckpt", str(moons_ckpt), "--n", "7", "--langevin-steps", "4", "--seed", "3",
             "--out", str(tmp_path / "s.npz"), "--device", "cpu"])
    assert np.array_equal(np.load(tmp_path / "s.npz")["x"], x.numpy())
    ebm.app(["sample", "--ckpt", str(moons_ckpt), "--n", "3", "--langevin-steps", "1"])  # default --out
    assert (moons_ckpt.parent / "sample.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unconditional"):
        ebm.generate(model, 2, y=torch.zeros(2, dtype=torch.long))
    # --sampler mala: MALA at the default step from the same starts
    x = ebm.generate(model, 7, generator=torch.Generator().manual_seed(3), steps=4, method="mala")
    g = torch.Generator().manual_seed(3)
    assert torch.equal(x, model.denormalize(ebm.mala(model, model.noise(7, g), 4, ebm.MALA_STEP, g)[0]))
    ebm.app(["sample", "--ckpt", str(moons_ckpt), "--n", "7", "--langevin-steps", "4", "--seed", "3", "--sampler",
             "mala", "--out", str(tmp_path / "m.npz"), "--device", "cpu"])
    assert np.array_equal(np.load(tmp_path / "m.npz")["x"], x.numpy())


def test_likelihood_is_what_the_nll_command_reports(moons_ckpt, capsys):
    model = ebm.load(moons_ckpt)
    r = ebm.likelihood(model, data.load("moons", "test").x, box=4.0, grid=100)
    assert r["kind"] == "grid" and "nll_bpd" not in r and math.isfinite(r["nll_nats"])
    assert {"log_z", "mass_outside_nats"} <= set(r)
    capsys.readouterr()
    assert ebm.nll(ckpt=str(moons_ckpt), split="test", box=4.0, grid=100) == r["nll_nats"]
    assert f"NLL {r['nll_nats']:.4f} nats" in capsys.readouterr().out
