"""flow.py: invertibility, log-determinants against autograd Jacobians, a density that integrates to 1, ActNorm's
data init, the LU 1x1 convolution, dequantization, and every command (tiny budgets) plus bad input."""
import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import data
import flow
from conftest import assert_one_line_error, run_cli


def random_flow(shape, seed, noise=0.1, scales=1, hidden=8, blocks=2, **kw):
    """A float64 flow whose every parameter is perturbed, so that no layer is the identity it starts as."""
    torch.manual_seed(seed)
    m = flow.Flow(shape, hidden=hidden, blocks=blocks, scales=scales, **kw).double()
    x0 = torch.rand(64, *shape, dtype=torch.float64) if len(shape) == 3 else 2 * torch.randn(64, *shape).double()
    m.initialize(x0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(noise * torch.randn_like(p))
    return m


coord = st.one_of(st.floats(-50, 50), st.sampled_from([-1e4, -1e3, 0.0, 1e3, 1e4]))
pixel = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1e-12, 0.5, 1 - 1e-12, 1.0]))


@settings(max_examples=15)
@given(x=st.lists(st.tuples(coord, coord), min_size=1, max_size=8), seed=st.integers(0, 1000))
def test_points_inverse_of_forward_is_identity(x, seed):
    m = random_flow((2,), seed)
    x = torch.tensor(x, dtype=torch.float64)
    z, log_det = m(x)
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    # float64 round-off grows with the size of the intermediate values, hence a tolerance scaled by |z| and |x|
    assert torch.allclose(m.inverse(z), x, rtol=1e-9, atol=1e-11 * float(1 + z.detach().abs().max() + x.abs().max()))


@pytest.mark.parametrize("shape,scales", [((1, 4, 4), 1), ((2, 4, 4), 1), ((1, 8, 8), 2)])
@settings(max_examples=5)
@given(data=st.data(), seed=st.integers(0, 1000))
def test_images_inverse_of_forward_is_identity(shape, scales, data, seed):
    m = random_flow(shape, seed, scales=scales)
    y = torch.tensor(data.draw(st.lists(pixel, min_size=math.prod(shape), max_size=math.prod(shape))),
                     dtype=torch.float64).view(1, *shape)
    z, log_det = m(y)
    assert z.shape == (1, math.prod(shape)) and torch.isfinite(log_det).all()
    assert torch.allclose(m.inverse(z), y, rtol=0, atol=1e-11 * float(1 + z.detach().abs().max()))


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4), (2, 4, 4)])
@settings(max_examples=4)
@given(seed=st.integers(0, 1000))
def test_log_det_equals_log_abs_det_of_autograd_jacobian(shape, seed):
    m = random_flow(shape, seed)
    x = torch.rand(1, *shape, dtype=torch.float64) if len(shape) == 3 else 3 * torch.randn(1, 2).double()
    J = torch.autograd.functional.jacobian(lambda v: m(v.view(1, *shape))[0].flatten(), x.flatten())  # [D, D]
    assert J.shape == (math.prod(shape),) * 2
    assert abs(float(m(x)[1].detach()) - float(torch.linalg.slogdet(J)[1])) < 1e-8


@pytest.mark.parametrize("actnorm,lu", [(True, True), (False, False), (True, False), (False, True)])
def test_point_flow_variants_invert_and_log_det_is_the_jacobians(actnorm, lu):
    """Points run on [B, d] (nn.Linear couplings); --no-actnorm / --no-lu leave those layers out and the flow stays
    exact: f^-1(f(x)) = x and log-det = log|det df/dx| per example."""
    m = random_flow((2,), 3, actnorm=actnorm, lu=lu)
    kinds = [type(layer) for layer in m.top]
    assert (flow.ActNorm in kinds) == actnorm and (flow.InvConv1x1 in kinds) == lu
    assert kinds.count(flow.AffineCoupling) == 8
    assert all(isinstance(c.net[0], torch.nn.Linear) for c in m.top if isinstance(c, flow.AffineCoupling))
    x = 3 * torch.randn(5, 2, dtype=torch.float64)
    z, log_det = m(x)
    assert torch.allclose(m.inverse(z), x, atol=1e-10)
    for i in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda v: m(v.view(1, 2))[0].flatten(), x[i])
        assert abs(float(log_det[i].detach()) - float(torch.linalg.slogdet(J)[1])) < 1e-8


def test_point_layers_are_the_1x1_convolution_layers_on_b_d_1_1():
    """The [B, d] path is the same map as the image layers on [B, d, 1, 1]: a Linear coupling with the weights of a
    1x1-convolution coupling, the LU matrix as a linear map, ActNorm's data init over the batch."""
    torch.manual_seed(0)
    lin = flow.AffineCoupling(flow.point_mask(4, 1, 1, 1), 8, 0).double()
    conv = flow.AffineCoupling(flow.channel_mask(4, 1, 1, 1), 8, 1).double()
    with torch.no_grad():
        for a, b in zip(lin.net, conv.net):
            if isinstance(a, torch.nn.Linear):
                a.weight.normal_()
                a.bias.normal_()
                b.weight.copy_(a.weight[:, :, None, None])
                b.bias.copy_(a.bias)
    x = torch.randn(6, 4, dtype=torch.float64)
    (y, ld), (y4, ld4) = lin(x), conv(x[:, :, None, None])
    assert torch.allclose(y, y4.flatten(1)) and torch.allclose(ld, ld4) and not torch.allclose(y, x)
    assert torch.allclose(lin.inverse(y), x)
    mix = flow.InvConv1x1(4).double()
    with torch.no_grad():
        for p in mix.parameters():
            p.add_(0.5 * torch.randn_like(p))
    (y, ld), (y4, ld4) = mix(x), mix(x[:, :, None, None])
    assert torch.allclose(y, y4.flatten(1)) and torch.allclose(ld, ld4)
    assert torch.allclose(ld, torch.linalg.slogdet(mix.weight())[1].expand(6)) and torch.allclose(mix.inverse(y), x)
    an = flow.ActNorm(4, ndim=2).double()
    an.pending_init = True
    y, ld = an(3 * x + 1)
    assert torch.allclose(y.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ld, an.log_s.sum().expand(6)) and torch.allclose(an.inverse(y), 3 * x + 1)


def test_point_and_image_defaults_and_explicit_options_win(tmp_path, monkeypatch):
    """Options left unset take their data kind's default (flow.DEFAULTS: plain RealNVP on points), saved resolved in
    the config; options given win."""
    class Stop(Exception):
        pass

    seen = {}

    def trainer(name, config, models, ds, **kw):
        seen.update(config=config, model=models["model"], **kw)
        raise Stop

    monkeypatch.setattr(flow.training, "Trainer", trainer)
    for data_name, kw in [("moons", {}), ("mnist5k", {}), ("moons", dict(hidden=16, actnorm=True, steps=7, batch_size=32))]:
        with pytest.raises(Stop):
            flow.train(data=data_name, out=str(tmp_path / "r"), **kw)
        expected = {**flow.DEFAULTS["points" if data_name == "moons" else "images"], **kw}
        assert {k: seen["config"][k] for k in expected} == expected
        assert seen["steps"] == expected["steps"] and seen["batch_size"] == expected["batch_size"]
        kinds = [type(m) for m in seen["model"].modules()]
        assert (flow.ActNorm in kinds) == expected["actnorm"] and (flow.InvConv1x1 in kinds) == expected["lu"]
        first = next(m for m in seen["model"].modules() if isinstance(m, flow.AffineCoupling)).net[0]
        assert getattr(first, "out_features", getattr(first, "out_channels", None)) == expected["hidden"]
    assert flow.DEFAULTS["points"]["actnorm"] is False and flow.DEFAULTS["points"]["lu"] is False


@settings(max_examples=3)
@given(seed=st.integers(0, 1000))
@torch.no_grad()
def test_2d_density_integrates_to_one(seed):
    m = random_flow((2,), seed)
    lim, n = 12.0, 601
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).view(-1, 2)
    mass = float(m.log_prob(grid).exp().sum()) * float(g[1] - g[0]) ** 2
    outside = float((m.sample(20_000).abs() > lim).any(1).double().mean())  # mass the box misses, by sampling
    assert abs(mass - (1 - outside)) < 0.01, (mass, outside)


def random_cflow(shape, seed, classes=3, **kw):
    """A random conditional flow (float64): every parameter perturbed, the label embeddings and base means included
    (they start at zero), and a prior p(c) far from uniform."""
    torch.manual_seed(seed)
    m = flow.Flow(shape, hidden=kw.get("hidden", 8), blocks=kw.get("blocks", 2), scales=kw.get("scales", 1),
                  num_classes=classes).double()
    x0 = torch.rand(64, *shape, dtype=torch.float64) if len(shape) == 3 else 2 * torch.randn(64, *shape).double()
    m.initialize(x0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
        m.base_mean.weight.mul_(10.0)  # classes 1 std apart in z
        m.log_pc.copy_(torch.tensor([0.6, 0.3, 0.1][:classes], dtype=torch.float64).log())
    return m


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
@torch.no_grad()
def test_conditional_flow_uses_the_label_in_every_coupling_and_the_base(shape):
    m = random_cflow(shape, 0)
    x = torch.rand(4, *shape, dtype=torch.float64) if len(shape) == 3 else 2 * torch.randn(4, 2).double()
    c0, c1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    couplings = [mod for mod in m.modules() if isinstance(mod, flow.AffineCoupling)]
    assert len(couplings) >= 2
    for layer in couplings:
        h_in = torch.randn(4, *layer.mask.shape[1:], dtype=torch.float64)
        assert not torch.allclose(layer(h_in, c0)[0], layer(h_in, c1)[0])  # (s, t) = NN(b*x, c)
        assert torch.allclose(layer.inverse(layer(h_in, c1)[0], c1), h_in)
    assert not torch.allclose(m.base_mean(c0), m.base_mean(c1))
    assert not torch.allclose(m(x, c0)[0], m(x, c1)[0]) and not torch.allclose(m.log_prob(x, c0), m.log_prob(x, c1))


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
@settings(max_examples=3)
@given(seed=st.integers(0, 1000))
@torch.no_grad()
def test_conditional_inverse_and_log_det(shape, seed):
    m = random_cflow(shape, seed)
    x = torch.rand(3, *shape, dtype=torch.float64) if len(shape) == 3 else 2 * torch.randn(3, 2).double()
    c = torch.tensor([0, 1, 2])
    z, log_det = m(x, c)
    assert torch.allclose(m.inverse(z, c), x, atol=1e-10)  # f^-1(f(x; c); c) = x, the base mean included
    for b in range(3):  # log|det df(x; c)/dx| against autograd, one example at a time
        with torch.enable_grad():
            J = torch.autograd.functional.jacobian(lambda v: m(v.view(1, *shape), c[b:b + 1])[0].flatten(),
                                                   x[b].flatten())
        assert abs(float(log_det[b]) - float(torch.linalg.slogdet(J)[1])) < 1e-8


@pytest.mark.parametrize("seed", [0, 1])
@torch.no_grad()
def test_p_x_given_c_integrates_to_one_and_the_marginal_is_the_mixture(seed):
    m = random_cflow((2,), seed)
    m_float = copy.deepcopy(m).float()  # generate draws float32 noise
    lim, n = 12.0, 401
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).view(-1, 2)
    cell = float(g[1] - g[0]) ** 2
    log_p_c = []
    for c in range(3):
        log_p = m.log_prob(grid, torch.full((len(grid),), c))  # log p(x|c) on the grid
        x_c = flow.generate(m_float, 4000, generator=torch.Generator().manual_seed(c), y=c).double()
        outside = float((x_c.abs() > lim).any(1).double().mean())  # mass the box misses, by sampling p(x|c)
        assert abs(float(log_p.exp().sum()) * cell - (1 - outside)) < 0.01, (c, outside)
        # the samples of class c follow p(x|c): their mean is the density's mean (a wrong base mean in f^-1 moves it)
        mean = (log_p.exp()[:, None] * grid).sum(0) * cell
        assert (x_c[(x_c.abs() <= lim).all(1)].mean(0) - mean).abs().max() < 0.15, (c, mean)
        log_p_c.append(log_p)
    log_joint = torch.stack(log_p_c, 1) + torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).log()
    marginal = m.log_prob(grid)  # no label: log p(x) = log sum_c p(x|c) p(c)
    assert torch.allclose(marginal, torch.logsumexp(log_joint, 1), atol=1e-9)
    assert abs(float(marginal.exp().sum()) * cell - 1) < 0.02
    post = m.log_posterior(grid[::97]).exp()  # Bayes' rule: p(c|x) = p(x|c) p(c) / p(x), sums to 1
    assert torch.allclose(post.sum(1), torch.ones(len(post), dtype=torch.float64))
    assert torch.allclose(post, (log_joint[::97] - marginal[::97, None]).exp(), atol=1e-9)
    r = flow.likelihood(m, grid[:50])  # the surface: the marginal without labels, p(x|c) with them
    assert math.isclose(r["nll_nats"], -float(marginal[:50].mean()), rel_tol=1e-9)
    r_c = flow.likelihood(m, grid[:50], y=torch.full((50,), 2))
    assert math.isclose(r_c["nll_nats"], -float(log_p_c[2][:50].mean()), rel_tol=1e-9)


@settings(max_examples=10)
@given(channels=st.integers(1, 5), seed=st.integers(0, 1000))
def test_actnorm_data_init_gives_zero_mean_unit_variance(channels, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, channels, 3, 3, generator=g) * torch.rand(1, channels, 1, 1, generator=g) * 10 \
        + torch.randn(1, channels, 1, 1, generator=g) * 5
    layer = flow.ActNorm(channels)
    layer.pending_init = True
    y, log_det = layer(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(channels), atol=1e-5)
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(channels), atol=1e-4)
    assert torch.allclose(layer.inverse(y), x, atol=1e-4) and log_det.shape == (16,)


@settings(max_examples=10)
@given(channels=st.integers(1, 6), seed=st.integers(0, 1000))
def test_invconv_log_det_equals_log_abs_det_w(channels, seed):
    torch.manual_seed(seed)
    layer = flow.InvConv1x1(channels).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(3, channels, 5, 4, dtype=torch.float64)
    y, log_det = layer(x)
    assert torch.allclose(log_det, 5 * 4 * torch.linalg.slogdet(layer.weight())[1].expand(3))
    assert torch.allclose(layer.inverse(y), x, atol=1e-10)


@given(seed=st.integers(0, 1000))
def test_dequantization_stays_in_the_pixels_bin_and_uniform_density_is_8_bits(seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (4, 1, 5, 5), generator=g)
    y = flow.dequantize(k / 127.5 - 1, g)
    assert (torch.floor(256 * y) == k).all() and (y >= 0).all() and (y < 1).all()
    assert torch.allclose(flow.bits_per_dim(torch.zeros(4), 25), torch.full((4,), 8.0))  # p = 1 on [0, 1]^D


def test_sampling_at_high_temperature_stays_finite():
    for shape, scales in [((2,), 1), ((1, 8, 8), 2)]:
        m = random_flow(shape, 0, noise=1.0, scales=scales).float()
        assert torch.isfinite(m.sample(256, temperature=4.0)).all()


# ----------------------------------------------------------------------------------------------------- commands
def cli(capsys, *args):
    """Run the typer app in this process (fast); returns (exit code, stdout, stderr) like a subprocess would."""
    try:
        flow.app([str(a) for a in args])
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


@pytest.mark.parametrize("data_name", ["moons", "grid25", "mnist5k"])
def test_every_command(tmp_path, capsys, data_name):
    code, out, err = cli(capsys, "train", "--data", data_name, "--steps", 3, "--hidden", 4, "--blocks", 1,
                         "--batch-size", 8, "--device", "cpu", "--out", tmp_path / "r")
    assert code == 0, err
    ck = tmp_path / "r" / "ckpt.pt"
    assert (tmp_path / "r" / "samples.png").exists()
    code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 5, "--temperature", 0.7, "--out", tmp_path / "s.npz",
                         "--device", "cpu")
    assert code == 0, err
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == ((5, 2) if data_name != "mnist5k" else (5, 1, 28, 28)) and np.isfinite(x).all()
    model = flow.load(ck)
    x_gen = flow.generate(model, 5, generator=torch.Generator().manual_seed(0), temperature=0.7)  # --seed 0
    assert np.array_equal(x_gen.numpy(), x)
    if data_name == "mnist5k":  # images: y in [0, 1] -> data space 2y - 1
        y = model.sample(5, 0.7, torch.Generator().manual_seed(0))
        assert torch.equal(x_gen, (2 * y - 1).clamp(-1, 1)) and x.min() >= -1 and x.max() <= 1
    code, out, err = cli(capsys, "sample", "--ckpt", ck, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, out, err = cli(capsys, "nll", "--ckpt", ck, "--n", 16)
    assert code == 0 and ("bits/dim" if data_name == "mnist5k" else "nats") in out, err
    res = flow.nll(ckpt=str(ck), n=16)
    assert math.isfinite(res.get("nll_bpd", res.get("nll_nats")))
    r = flow.likelihood(model, data.load(data_name, "test").x[:16], seed=0)
    key = "nll_bpd" if data_name == "mnist5k" else "nll_nats"
    assert r["kind"] == "exact" and {"nll_bpd", "nll_nats"} & set(r) == {key}
    assert res[key] == r[key] and f"NLL {r[key]:.4f} " in out


# ----------------------------------------------------------------------------------------------------- the surface
@pytest.fixture(scope="module")
def moons_ckpt(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENMODELS_QUIET", "1")
        return flow.train(data="moons", steps=3, hidden=4, blocks=1, batch_size=8, device="cpu",
                          out=str(tmp_path_factory.mktemp("flow") / "r"))


def test_generate_is_what_the_sample_command_writes(moons_ckpt, tmp_path, capsys):
    model = flow.load(moons_ckpt)
    x = flow.generate(model, 7, generator=torch.Generator().manual_seed(3))
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
    # batch: the same draws (only the network's float rounding may depend on the batch size)
    assert torch.allclose(x, flow.generate(model, 7, generator=torch.Generator().manual_seed(3), batch=3), atol=1e-5)
    assert torch.equal(x, model.sample(7, 1.0, torch.Generator().manual_seed(3)))  # points: raw coordinates
    assert not torch.equal(x, flow.generate(model, 7, generator=torch.Generator().manual_seed(4)))
    code, out, err = cli(capsys, "sample", "--ckpt", moons_ckpt, "--n", 7, "--seed", 3, "--out", tmp_path / "s.npz",
                         "--device", "cpu")
    assert code == 0 and np.array_equal(np.load(tmp_path / "s.npz")["x"], x.numpy()), err
    code, out, err = cli(capsys, "sample", "--ckpt", moons_ckpt, "--n", 3)  # default --out: next to the checkpoint
    assert code == 0 and (moons_ckpt.parent / "sample.png").stat().st_size > 0, err
    with pytest.raises(ValueError, match="unconditional"):
        flow.generate(model, 2, y=torch.zeros(2, dtype=torch.long))


def test_conditional_commands_learn_the_label_and_classify(tmp_path, capsys, moons_ckpt):
    ck = flow.train(data="moons", steps=300, hidden=32, blocks=2, batch_size=128, device="cpu", warmup=20,
                    out=str(tmp_path / "r"), cond=True)
    model = flow.load(ck)
    assert model.num_classes == 2 and torch.allclose(model.log_pc.exp(), torch.tensor([0.5, 0.5]), atol=0.01)
    ds = data.load("moons", "train")
    for c in range(2):  # samples of class c lie on moon c: the label of their nearest training point
        code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 200, "--label", c, "--out", tmp_path / "s.npz")
        assert code == 0, err
        x = torch.as_tensor(np.load(tmp_path / "s.npz")["x"])
        assert float((ds.y[torch.cdist(x, ds.x).argmin(1)] == c).float().mean()) > 0.8  # label ignored: 0.5
    code, out, err = cli(capsys, "classify", "--ckpt", ck, "--n", 500)
    assert code == 0 and "test accuracy" in out, err
    res = flow.classify(ckpt=str(ck), n=500)
    assert res["accuracy"] > 0.9 and f"{100 * res['accuracy']:.2f}%" in out  # Bayes' rule with exact densities
    for args in [("sample", "--ckpt", ck, "--label", 2), ("sample", "--ckpt", moons_ckpt, "--label", 0),
                 ("classify", "--ckpt", moons_ckpt), ("train", "--data", "checkerboard", "--cond")]:
        assert_one_line_error(Proc(*cli(capsys, *args)))


def test_conditional_flow_on_mnist5k(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--cond", "--steps", 2, "--hidden", 4, "--blocks", 1, "--batch-size", 8,
                         "--device", "cpu", "--out", tmp_path / "r")
    assert code == 0, err
    ck = tmp_path / "r" / "ckpt.pt"
    code, out, err = cli(capsys, "sample", "--ckpt", ck, "--n", 5, "--label", 3, "--out", tmp_path / "s.npz")
    assert code == 0 and "label accuracy (fid.classify)" in out, err
    assert np.load(tmp_path / "s.npz")["x"].shape == (5, 1, 28, 28)
    code, out, err = cli(capsys, "classify", "--ckpt", ck, "--n", 10)
    assert code == 0 and "fid.py's discriminative classifier" in out, err
    assert_one_line_error(Proc(*cli(capsys, "sample", "--ckpt", ck, "--label", 10)))


def test_the_class_prior_is_the_training_frequencies(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    moons = data.load("moons")
    keep = torch.cat([(moons.y == 0).nonzero()[:300, 0], (moons.y == 1).nonzero()[:100, 0]])  # 3 : 1
    unbalanced = data.Dataset(moons.x[keep], moons.y[keep], "points", "moons", 2)
    monkeypatch.setattr(flow.datasets, "load", lambda name, split="train": unbalanced)
    ck = flow.train(data="moons", steps=2, hidden=4, batch_size=16, device="cpu", out=str(tmp_path / "r"), cond=True)
    assert torch.allclose(flow.load(ck).log_pc.exp(), torch.tensor([0.75, 0.25]))  # p(y) of Bayes' rule


def test_bad_input_fails_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args in [("train", "--data", "nope"), ("train", "--data", "moons", "--steps", 0),
                 ("train", "--data", "mnist5k", "--scales", 3), ("train", "--data", "moons", "--lr", -1),
                 ("sample", "--ckpt", tmp_path / "missing.pt"), ("sample", "--ckpt", bad),
                 ("sample", "--ckpt", bad, "--temperature", 0), ("nll", "--ckpt", bad)]:
        assert_one_line_error(Proc(*cli(capsys, *args)))
    assert_one_line_error(run_cli("flow.py", "sample", "--ckpt", tmp_path / "missing.pt"))  # a real process
