"""gan.py: loss identities at known logits, the gradient penalty, R1, spectral norm, shapes, resume, CLI smoke runs."""
import json
import math
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import data
import gan
from conftest import assert_one_line_error, run_app, run_cli

logits = st.lists(st.floats(-15, 15, allow_nan=False), min_size=1, max_size=16).map(
    lambda v: torch.tensor(v, dtype=torch.float64))


@given(logits, logits)
def test_bce_losses_are_the_log_likelihoods_of_eq1(r, f):
    # D: -log sigmoid(r) - log(1 - sigmoid(f)); G (non-saturating): -log sigmoid(f)
    expect_d = -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean()
    assert torch.allclose(gan.d_loss(r, f, "bce"), expect_d, rtol=1e-9, atol=1e-9)
    assert torch.allclose(gan.g_loss(f, "bce"), -torch.log(torch.sigmoid(f)).mean(), rtol=1e-9, atol=1e-9)


def test_bce_at_zero_logits_is_log4_and_stays_finite_at_huge_logits():
    z = torch.zeros(5)
    assert math.isclose(gan.d_loss(z, z, "bce").item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(gan.g_loss(z, "bce").item(), math.log(2), rel_tol=1e-6)
    big = torch.full((3,), 1e4)
    assert gan.d_loss(big, -big, "bce").item() == 0.0  # a perfect D: zero loss, no overflow
    assert math.isclose(gan.g_loss(-big, "bce").item(), 1e4, rel_tol=1e-6)  # softplus(1e4) = 1e4, not inf


@given(logits, logits)
def test_hinge_and_wasserstein_losses(r, f):
    assert torch.allclose(gan.d_loss(r, f, "hinge"), (1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean())
    assert torch.allclose(gan.d_loss(r.abs() + 1, -f.abs() - 1, "hinge"), torch.zeros((), dtype=r.dtype))
    assert torch.allclose(gan.d_loss(r, f, "wgan-gp"), f.mean() - r.mean())
    assert torch.allclose(gan.d_loss(r, f, "wgan-gp"), -gan.d_loss(f, r, "wgan-gp"))  # antisymmetric
    for kind in ("hinge", "wgan-gp"):
        assert torch.allclose(gan.g_loss(f, kind), -f.mean())


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        gan.d_loss(torch.zeros(1), torch.zeros(1), "lsgan")


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.sampled_from([(2,), (1, 6, 6)]), st.sampled_from([1, 2]),
       st.floats(0.25, 4.0))
def test_gradient_penalty_vanishes_iff_the_critic_has_unit_gradient(seed, shape, pack, scale):
    g = torch.Generator().manual_seed(seed)
    dim = pack * math.prod(shape)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = w / w.norm()  # |w| = 1

    def critic(x, w=w):  # f(x) = w . x over the k packed samples: gradient w everywhere
        return x.reshape(-1, dim) @ w

    real = torch.randn(4 * pack, *shape, generator=g, dtype=torch.float64)
    fake = 3 * torch.randn(4 * pack, *shape, generator=g, dtype=torch.float64)
    assert gan.gradient_penalty(critic, real, fake, g).item() < 1e-12
    # f = s w.x has gradient norm s everywhere: penalty (s - 1)^2
    assert math.isclose(gan.gradient_penalty(lambda x: scale * critic(x), real, fake, g).item(), (scale - 1) ** 2,
                        rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=10)
@given(st.integers(0, 10_000), st.sampled_from([(2,), (1, 3, 3)]), st.sampled_from([1, 2]))
def test_gradient_penalty_is_taken_at_the_interpolates(seed, shape, pack):
    # f(x) = 1/2 ||x||^2 over the k packed samples has gradient x: a penalty taken anywhere but at
    # x^ = eps x + (1 - eps) x~ (eps per sample, drawn from the generator) gives another number
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(4 * pack, *shape, generator=g, dtype=torch.float64)
    fake = 0.2 * torch.randn(4 * pack, *shape, generator=g, dtype=torch.float64) + 1.0

    def critic(x):
        return 0.5 * x.reshape(-1, pack * math.prod(shape)).pow(2).sum(1)

    state = g.get_state()
    gp = gan.gradient_penalty(critic, real, fake, g).item()
    eps = torch.rand(real.shape[0], generator=torch.Generator().set_state(state)).double()  # drawn as the code does
    x_hat = eps.view(-1, *[1] * len(shape)) * real + (1 - eps.view(-1, *[1] * len(shape))) * fake
    norms = x_hat.reshape(-1, pack * math.prod(shape)).norm(dim=1)  # ||grad f(x^)|| = ||x^|| per packed output
    assert math.isclose(gp, (norms - 1).pow(2).mean().item(), rel_tol=1e-9)


def test_gradient_penalty_trains_the_critic():
    D = gan.MLPD(width=16, depth=2, sn=False)
    gp = gan.gradient_penalty(D, torch.randn(8, 2), torch.randn(8, 2))
    gp.backward()  # create_graph=True: the penalty has a gradient w.r.t. D's weights
    weights = [p for p in D.parameters() if p.dim() == 2]  # (the last bias does not change grad_x D: no gradient)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in weights)


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.sampled_from([(2,), (1, 4, 4)]), st.sampled_from([1, 2, 4]),
       st.booleans())
def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm(seed, shape, pack, scaled):
    g = torch.Generator().manual_seed(seed)
    dim = math.prod(shape)
    w = torch.randn(pack * dim, generator=g, dtype=torch.float64)
    real = torch.randn(3 * pack, *shape, generator=g, dtype=torch.float64)
    scale = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5 if scaled else None

    def critic(x):  # D(x) = w . x over the k packed samples: gradient w at every real point
        return x.reshape(-1, pack * dim) @ w

    # in standardized coordinates h = x / scale the gradient is scale * w (the scale repeats over the k samples)
    expect = (w * (scale.flatten().repeat(pack) if scaled else 1)).pow(2).sum().item()
    assert math.isclose(gan.r1_penalty(critic, real, scale).item(), expect, rel_tol=1e-9)
    assert gan.r1_penalty(lambda x: critic(x) * 0 + 5.0, real).item() == 0  # a flat D: no penalty


def test_r1_penalty_trains_the_critic_and_is_on_by_default_for_points(tmp_path, monkeypatch):
    D = gan.MLPD(width=16, depth=2, pack=2, sn=False)
    gan.r1_penalty(D, torch.randn(8, 2), D.std).backward()
    weights = [p for p in D.parameters() if p.dim() == 2]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in weights)
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    kw = dict(data="ring8", steps=3, batch_size=16, width=8, depth=1, z_dim=4, device="cpu", eval_every=0)
    for loss, on in (("bce", True), ("wgan-gp", False)):
        ckpt = gan.train(loss=loss, out=str(tmp_path / loss), **kw)
        logged = [json.loads(line)["r1"] for line in (tmp_path / loss / "metrics.jsonl").read_text().splitlines()]
        assert torch.load(ckpt, weights_only=True)["config"]["r1"] == (0.1 if on else 0.0)
        assert all(v > 0 for v in logged) if on else all(v == 0 for v in logged)


def test_wgan_gp_takes_the_papers_n_critic_and_adam_betas_unless_set(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    kw = dict(data="ring8", steps=1, batch_size=16, width=8, depth=1, z_dim=4, device="cpu", eval_every=0)
    config = lambda name, **o: torch.load(gan.train(out=str(tmp_path / name), **kw, **o), weights_only=True)["config"]
    c = config("wgan", loss="wgan-gp")  # Gulrajani et al. 2017, Algorithm 1: n_critic 5, Adam beta1 0, beta2 0.9
    assert (c["n_critic"], c["beta1"], c["beta2"], c["r1"]) == (5, 0.0, 0.9, 0.0)
    c = config("wgan-set", loss="wgan-gp", n_critic=2, beta1=0.5, beta2=0.99)
    assert (c["n_critic"], c["beta1"], c["beta2"]) == (2, 0.5, 0.99)
    c = config("bce", loss="bce")
    assert (c["n_critic"], c["beta1"], c["beta2"], c["r1"]) == (1, 0.5, 0.999, 0.1)


@settings(max_examples=5)
@given(st.integers(0, 1000))
def test_spectral_norm_brings_the_largest_singular_value_to_one(seed):
    torch.manual_seed(seed)
    D = gan.MLPD(width=32, depth=2, sn=True).train()
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(5.0)  # far from norm 1 before normalization
        for _ in range(30):  # one power iteration per training-mode forward pass
            D(torch.randn(8, 2))
    linears = [m for m in D.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for m in linears:
        assert torch.linalg.matrix_norm(m.parametrizations.weight.original, 2) > 2  # the raw weight is large
        assert abs(torch.linalg.matrix_norm(m.weight.detach(), 2).item() - 1) < 0.02  # W / sigma(W)


def test_shapes_padding_and_packing():
    G, D = gan.ConvG(z_dim=8, ch=4, shape=(1, 28, 28)), gan.ConvD(ch=4, shape=(1, 28, 28), pack=2)
    x = G(torch.randn(6, 8))
    assert x.shape == (6, 1, 28, 28) and x.abs().max() <= 1  # 32x32 output cropped back to 28x28, tanh range
    assert D(x).shape == (3,)  # 6 images judged in packs of 2
    Gp, Dp = gan.build(dict(z_dim=4, width=8, depth=2, pack=4, sn=True, channels=4, g_bn=True), (2,))
    assert Gp(torch.randn(8, 4)).shape == (8, 2) and Dp(torch.randn(8, 2)).shape == (2,)
    # D sees the padding as background: padding a 28x28 image with -1 is what D does to it itself
    D1 = gan.ConvD(ch=4, shape=(1, 28, 28), pack=1)
    D32 = gan.ConvD(ch=4, shape=(1, 32, 32), pack=1)
    D32.load_state_dict(D1.state_dict())
    assert torch.allclose(D1(x), D32(F.pad(x, (2, 2, 2, 2), value=-1.0)))


@torch.no_grad()
def test_conditional_generators_and_projection_discriminators_use_the_label():
    torch.manual_seed(0)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.tensor([1, 2, 0, 1])
    for G in (gan.MLPG(z_dim=4, width=8, depth=2, bn=True, num_classes=3).eval(),
              gan.ConvG(z_dim=8, ch=4, shape=(1, 28, 28), num_classes=3).eval()):
        z = torch.randn(4, G.z_dim)
        assert not torch.allclose(G(z, y0), G(z, y1)) and G(z, y1).shape == G(z).shape
    for D in (gan.MLPD(width=8, depth=2, pack=1, num_classes=3).eval(), gan.MLPD(width=8, depth=2, pack=2, num_classes=3).eval(),
              gan.ConvD(ch=4, shape=(1, 28, 28), pack=2, num_classes=3).eval()):
        x = torch.randn(4, 2) if isinstance(D, gan.MLPD) else torch.rand(4, 1, 28, 28) * 2 - 1
        assert not torch.allclose(D(x, y0), D(x, y1)) and D(x, y1).shape == D(x).shape


@pytest.mark.parametrize("sn", [False, True])
@torch.no_grad()
def test_projection_discriminator_adds_y_transpose_V_phi_per_packed_slot(sn):
    """D(x, y) = psi(phi(x)) + y^T V phi(x) (Miyato & Koyama eq. 3); packed, y is the k one-hots side by side."""
    torch.manual_seed(1)
    C = 3
    D = gan.MLPD(width=8, depth=2, pack=2, sn=sn, num_classes=C).eval()
    with torch.no_grad():
        D.mean.fill_(0.5)
        D.std.fill_(2.0)
    x, y = torch.randn(6, 2), torch.tensor([0, 2, 1, 1, 2, 0])
    phi = D.net[:-1](((x - 0.5) / 2.0).reshape(3, 4))  # [3, width]: the packed pairs' features
    V = D.embed.weight  # [2 C, width]: a row per (slot, class)
    want = D.net[-1](phi).squeeze(1) + ((V[y[0::2]] + V[C + y[1::2]]) * phi).sum(1)
    assert torch.allclose(D(x, y), want, atol=1e-6)
    assert torch.allclose(D(x, y) - D(x), ((V[y[0::2]] + V[C + y[1::2]]) * phi).sum(1), atol=1e-6)
    swapped = y.view(3, 2).flip(1).flatten()  # the same labels in the other slots: another class term
    assert not torch.allclose(D(x, y), D(x, swapped))
    if sn:  # V is spectrally normalized like every other layer of D
        assert abs(float(torch.linalg.matrix_norm(V, 2)) - 1) < 0.2


def test_cgan_learns_the_label_with_packing_and_r1(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    ck = gan.train(data="ring8", steps=300, width=64, depth=2, z_dim=4, batch_size=128, device="cpu", eval_every=0,
                   out=str(tmp_path / "r"), cond=True)  # the points recipe: PacGAN2, R1 0.1, BatchNorm G
    cfg = torch.load(ck, weights_only=True)["config"]
    assert cfg["pack"] == 2 and cfg["r1"] > 0 and cfg["num_classes"] == 8
    G = gan.load(ck)
    centers, _ = data.MODES["ring8"]
    for c in (0, 3, 6):  # samples asked for mode c land nearest to mode c (8 modes: 1/8 if the label were ignored)
        x = gan.generate(G, 200, generator=torch.Generator().manual_seed(c), y=c)
        assert float((torch.cdist(x, centers).argmin(1) == c).float().mean()) > 0.8
    for loss in ("wgan-gp", "hinge"):  # the gradient penalty and the hinge loss with a projection critic
        ck = gan.train(data="ring8", steps=3, width=8, depth=1, z_dim=4, batch_size=16, device="cpu", eval_every=0,
                       out=str(tmp_path / loss), cond=True, loss=loss)
        assert torch.isfinite(gan.generate(gan.load(ck), 4, y=1)).all()


def test_batchnorm_generator_samples_each_z_on_its_own_in_eval_mode():
    torch.manual_seed(0)
    G = gan.MLPG(z_dim=4, width=16, depth=2, bn=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in G.modules()) == 2
    for _ in range(3):  # training-mode calls fill the running statistics
        G(torch.randn(64, 4) * 3 + 1)
    z = torch.randn(10, 4)
    assert not torch.allclose(G(z)[:1], G(z[:1].repeat(2, 1))[:1])  # train mode: x depends on the batch
    G.eval()
    assert torch.allclose(G(z)[:1], G(z[:1]), atol=1e-6)  # eval mode: running statistics, one z at a time
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in gan.MLPG(4, 16, 2, bn=False).modules())


def test_resume_with_several_critic_steps_is_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    kw = dict(data="ring8", batch_size=16, width=16, depth=2, z_dim=4, n_critic=2, loss="hinge", device="cpu",
              eval_every=0, ckpt_every=1000)
    a = gan.train(steps=6, out=str(tmp_path / "a"), **kw)
    gan.train(steps=3, out=str(tmp_path / "b"), **kw)
    b = gan.train(steps=6, out=str(tmp_path / "b"), resume=True, **kw)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for part in ("G", "D"):
        for k, v in sa["models"][part].items():
            assert torch.equal(v, sb["models"][part][k]), (part, k)


def test_cli_points(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("gan.py", "train", "--data", "grid25", "--steps", "4", "--batch-size", "32", "--width", "16",
                   "--depth", "2", "--pack", "2", "--loss", "wgan-gp", "--n-critic", "2", "--device", "cpu",
                   "--out", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "modes covered" in proc.stdout
    log = (run / "metrics.jsonl").read_text().splitlines()
    assert all(k in log[-1] for k in ("d_real", "d_fake", "grad_norm_D", "grad_norm_G", "modes", "hq"))
    assert sum('"modes"' in line for line in log) == 2  # at step 0 (every --eval-every) and at the end
    proc = run_cli("gan.py", "sample", "--ckpt", run / "ckpt.pt", "--n", "100", "--out", tmp_path / "s.npz")
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (100, 2) and np.isfinite(x).all()
    assert "modes covered" in proc.stdout


def test_cli_mnist5k(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("gan.py", "train", "--steps", "2", "--batch-size", "8", "--channels", "4", "--z-dim", "8",
                   "--device", "cpu", "--out", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "samples.png").exists()
    proc = run_cli("gan.py", "sample", "--ckpt", run / "ckpt.pt", "--n", "5", "--out", tmp_path / "s.npz",
                   "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1  # same space as the data
    assert "classes" in proc.stdout  # digit diversity by fid.classify
    G = gan.load(run / "ckpt.pt")
    assert not G.training and G(torch.randn(2, 8)).shape == (2, 1, 28, 28)
    assert np.array_equal(gan.generate(G, 5, generator=torch.Generator().manual_seed(0)).numpy(), x)  # --seed 0


def test_cli_conditional_mnist5k_and_bad_labels(tmp_path, ring_ckpt, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")

    def cli(*args):  # in this process, as `python gan.py ARGS` would run
        return subprocess.CompletedProcess(args, *run_app(gan.app, *args))

    run = tmp_path / "run"
    proc = cli("train", "--cond", "--steps", 2, "--batch-size", 8, "--channels", 4, "--z-dim", 8, "--pack", 2,
               "--r1", 1, "--device", "cpu", "--out", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("sample", "--ckpt", run / "ckpt.pt", "--n", 5, "--label", 7, "--out", tmp_path / "s.npz", "--device", "cpu")
    assert proc.returncode == 0 and "label accuracy (fid.classify)" in proc.stdout, proc.stderr[-2000:]
    x = np.load(tmp_path / "s.npz")["x"]
    G = gan.load(run / "ckpt.pt")
    assert np.array_equal(gan.generate(G, 5, generator=torch.Generator().manual_seed(0), y=7).numpy(), x)
    for args in (["--ckpt", run / "ckpt.pt", "--label", 10], ["--ckpt", ring_ckpt, "--label", 0]):
        assert_one_line_error(cli("sample", *args, "--out", tmp_path / "x.png"))
    assert_one_line_error(cli("train", "--data", "swissroll", "--cond", "--out", tmp_path / "y"))
    with pytest.raises(ValueError, match="labels in 0..9"):
        gan.generate(G, 2, y=torch.tensor([3, 10]))


@pytest.mark.parametrize("args", [
    ["train", "--steps", "-1"],
    ["train", "--loss", "minimax"],
    ["train", "--data", "nope"],
    ["train", "--data", "grid25", "--batch-size", "10", "--pack", "4"],
    ["train", "--data", "grid25", "--batch-size", "1", "--pack", "1"],
    ["train", "--data", "grid25", "--r1", "-1"],
    ["sample", "--ckpt", "missing/ckpt.pt"],
])
def test_bad_input_is_one_line(args, tmp_path):
    assert_one_line_error(run_cli("gan.py", *args, "--out", tmp_path / "x" if args[0] == "train" else
                                  tmp_path / "x.png"))


# ----------------------------------------------------------------------------------------------------- the surface
@pytest.fixture(scope="module")
def ring_ckpt(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENMODELS_QUIET", "1")
        return gan.train(data="ring8", steps=3, batch_size=16, width=8, depth=1, z_dim=4, device="cpu", eval_every=0,
                         out=str(tmp_path_factory.mktemp("gan") / "r"))


def test_generate_is_what_the_sample_command_writes(ring_ckpt, tmp_path, capsys):
    G = gan.load(ring_ckpt)
    x = gan.generate(G, 7, generator=torch.Generator().manual_seed(3))
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
    assert torch.equal(x, gan.generate(G, 7, generator=torch.Generator().manual_seed(3)))  # seeded: reproducible
    assert not torch.equal(x, gan.generate(G, 7, generator=torch.Generator().manual_seed(4)))
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, G(z).detach())  # x = G(z), z ~ N(0, I)
    gan.app(["sample", "--ckpt", str(ring_ckpt), "--n", "7", "--seed", "3", "--out", str(tmp_path / "s.npz"),
             "--device", "cpu"])
    assert np.array_equal(np.load(tmp_path / "s.npz")["x"], x.numpy())
    gan.app(["sample", "--ckpt", str(ring_ckpt), "--n", "3", "--device", "cpu"])  # default --out: by the checkpoint
    assert (ring_ckpt.parent / "sample.png").stat().st_size > 0 and "modes covered" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unconditional"):
        gan.generate(G, 2, y=torch.zeros(2, dtype=torch.long))
