"""ldm.py: the spatial latent's shapes, the scale factor (unit std on the training latents), generate = decode of
ddpm.sample, the checkpoint carrying the autoencoder, s and the DDPM, the LSGM bound's pieces (against vae.py's own
one-sample bound, and invariant to the latent's scale through its Jacobian), stage 2's exact resume, the commands and
bad input."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import data
import ddpm
import ldm
import vae
from conftest import assert_one_line_error, run_app

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(ae_steps=4, ae_hidden=8, ch=8, ch_mult="1,2", attn=False, batch_size=16, warmup=2, device="cpu")


class Proc:  # what assert_one_line_error expects
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny two-stage run on mnist5k: stage 1 (4 steps of the spatial autoencoder), stage 2 (6 steps)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENMODELS_QUIET", "1")
        out = tmp_path_factory.mktemp("ldm") / "r"
        return ldm.train(data="mnist5k", steps=6, out=str(out), **TINY)


def tiny_ldm(factor=2, channels=2, scale=1.0, seed=0) -> ldm.LDM:
    """A random float64 LDM on 4x4 images (spatial z [channels, 4/f, 4/f]) with a small UNet on the latents."""
    torch.manual_seed(seed)
    ae = vae.VAE((1, 4, 4), hidden=8, likelihood="logistic", latent="spatial", factor=factor, latent_channels=channels)
    config = dict(timesteps=20, schedule="linear", prediction="v", min_snr=0.0, net="unet", ch=8, ch_mult="1",
                  attn=False, dropout=0.0)
    return ldm.LDM(ae, ddpm.build(config, ae.latent_shape), scale).double().eval()


def images(n=3, seed=0, size=4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 1, size, size), generator=g) / 127.5 - 1).double()  # 8-bit pixels


# ----------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("factor", [2, 4])
@given(channels=st.integers(1, 4))
@settings(max_examples=3)
def test_spatial_encoder_output_shapes(factor, channels):
    m = vae.VAE((1, 28, 28), hidden=8, likelihood="logistic", latent="spatial", factor=factor, latent_channels=channels)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (5, channels, 28 // factor, 28 // factor) == (5, *m.latent_shape)
    assert m.decode(mu).shape == (5, 2, 28, 28) and m.mean(mu).shape == x.shape  # logistic: (mean, log s) per pixel
    log_px_z, kl = m(x)
    assert log_px_z.shape == kl.shape == (5,) and m.iwae(x, 3).shape == (5,)
    assert m.sample(4).shape == (4, 1, 28, 28)


def test_spatial_vae_elbo_is_the_mean_of_its_one_sample_iwae():
    """The closed-form KL summed over every latent dim [C, h, w] (elbo) against its Monte Carlo (iwae with k = 1)."""
    m = tiny_ldm(factor=2, channels=3).ae
    x = images(2).repeat(4000, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        elbo, iw = m.elbo(x, g).view(4000, 2), m.iwae(x, 1, generator=g).view(4000, 2)
    se = (iw.std(0) ** 2 / 4000 + elbo.std(0) ** 2 / 4000).sqrt()
    assert ((elbo.mean(0) - iw.mean(0)).abs() < 5 * se).all(), (elbo.mean(0), iw.mean(0), se)


# ----------------------------------------------------------------------------------------------------- the scale
def test_scaled_training_latents_have_unit_std_and_decode_inverts_the_scale(run):
    model = ldm.load(run)
    x = data.load("mnist5k", "train").x
    mu = ldm.encode_all(model.ae, x)
    with torch.no_grad():
        z = model.encode(x)
        assert abs(z.std().item() - 1) < 1e-4  # s = 1 / std(mu) over the training set
        assert torch.allclose(model.scale_factor, 1 / mu.std()) and torch.allclose(z, model.scale_factor * mu)
        assert torch.allclose(model.decode(z[:8]), model.ae.mean(mu[:8]), atol=1e-6)  # decode(s mu) = E[x | mu]


# ----------------------------------------------------------------------------------------------------- generate
@pytest.mark.parametrize("method, steps", [("ddim", 8), ("ddpm", 5), ("dpm++2m", 4)])
def test_generate_is_decode_of_ddpm_sample(run, method, steps):
    model = ldm.load(run)
    x = ldm.generate(model, 6, generator=torch.Generator().manual_seed(7), method=method, steps=steps)
    g = torch.Generator().manual_seed(7)
    z_T = torch.randn((6, *model.latent_shape), generator=g)  # z_T ~ N(0, I) first, then the sampler's noise
    spacing = "karras" if method == "dpm++2m" else "lambda"  # "auto" on spatial latents, as ddpm.generate's
    z_0 = ddpm.sample(model.diffusion.eps, model.diffusion.alpha_bar64, z_T, method, steps, generator=g,
                      spacing=spacing, rho=3.0)
    assert x.shape == (6, 1, 28, 28) and torch.isfinite(x).all()
    torch.testing.assert_close(x, model.decode(z_0), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="trained without labels"):
        ldm.generate(model, 2, y=torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------- checkpoint
def test_checkpoint_carries_autoencoder_scale_and_ddpm_and_sample_rebuilds_them(run, tmp_path):
    ck = torch.load(run, weights_only=True)
    ae_ck = torch.load(run.parent / "ae" / "ckpt.pt", weights_only=True)
    assert ck["config"]["ae_model"] == ae_ck["config"]["model"] and ae_ck["config"]["beta"] == 1e-3  # --ae-beta
    assert ae_ck["config"]["model"]["latent"] == "spatial" and ae_ck["config"]["model"]["factor"] == 4
    model, stage1 = ldm.load(run), vae.load(run.parent / "ae" / "ckpt.pt")
    for k, v in stage1.state_dict().items():  # the autoencoder: stage 1's EMA weights, unchanged by stage 2
        assert torch.equal(ck["ema"][f"ae.{k}"], v) and torch.equal(ck["models"]["model"][f"ae.{k}"], v), k
    assert any(k.startswith("diffusion.net.") for k in ck["ema"]) and ck["ema"]["scale_factor"] > 0
    assert model.latent_shape == (4, 7, 7) and model.diffusion.T == 1000
    # the sample command needs nothing but the checkpoint (stage 1's folder moved away)
    (run.parent / "ae").rename(tmp_path / "ae")
    try:
        code, out, err = run_app(ldm.app, "sample", "--ckpt", run, "--n", 5, "--seed", 3, "--sampler", "ddim",
                                 "--steps", 6, "--out", tmp_path / "s.npz", "--device", "cpu")
    finally:
        (tmp_path / "ae").rename(run.parent / "ae")
    assert code == 0, err
    x = np.load(tmp_path / "s.npz")["x"]
    ref = ldm.generate(model, 5, generator=torch.Generator().manual_seed(3), method="ddim", steps=6)
    assert np.array_equal(x, ref.numpy())


def test_stage_2_on_a_given_autoencoder_and_its_exact_resume(run, tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    ae = str(run.parent / "ae" / "ckpt.pt")
    kw = dict(TINY, data="mnist5k", ae=ae, seed=1)
    torch.manual_seed(123)  # with --ae no stage 1 runs (which seeds itself): the weights must depend on --seed alone
    a = ldm.train(steps=6, out=str(tmp_path / "a"), **kw)
    torch.manual_seed(456)
    ldm.train(steps=3, out=str(tmp_path / "b"), **kw)
    b = ldm.train(steps=6, out=str(tmp_path / "b"), resume=True, **kw)
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert not (tmp_path / "a" / "ae").exists()  # --ae: no stage 1
    for key in ("models", "ema"):
        for k, v in ca[key]["model"].items() if key == "models" else ca[key].items():
            other = cb[key]["model"][k] if key == "models" else cb[key][k]
            assert torch.equal(v, other), (key, k)
    assert all(torch.equal(ca["ema"][f"ae.{k}"], v) for k, v in vae.load(ae).state_dict().items())


# ----------------------------------------------------------------------------------------------------- the bound
def normal_nll(std):
    """-log N(z; 0, std^2 I) per example, z [B, ...]."""
    return lambda z: (0.5 * (z / std) ** 2 + math.log(std) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


@given(seed=st.integers(0, 1000), scale=st.floats(0.1, 10.0))
@settings(max_examples=5)
def test_lsgm_bound_with_a_standard_normal_prior_is_vaes_one_sample_bound(seed, scale):
    """With p(z) = N(0, I), i.e. p_s = N(0, s^2 I) on z_s = s z, the pieces sum to -L_1 of vae.py (same z)."""
    m = tiny_ldm(scale=scale, seed=seed)
    x, scale = images(3, seed), m.scale_factor.item()  # the buffer's value (a float32 rounding of `scale`)
    with torch.no_grad():
        terms = m.bound_terms(x, normal_nll(scale), torch.Generator().manual_seed(seed))
        iw1 = m.ae.iwae(x, 1, generator=torch.Generator().manual_seed(seed))
        z = _z(m, x, seed)
    torch.testing.assert_close(terms["total"], -iw1, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(terms["prior"], normal_nll(1.0)(z), rtol=1e-8, atol=1e-8)  # -log N(z; 0, I)


def _z(m, x, seed):
    """The z ~ q(z|x) that bound_terms draws from a generator seeded with `seed`."""
    mu, logvar = m.ae.encode(x)
    return mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed),
                                                   dtype=mu.dtype)


@given(seed=st.integers(0, 1000), c=st.floats(0.05, 20.0), tau=st.floats(0.3, 3.0))
@settings(max_examples=8)
def test_lsgm_bound_is_invariant_to_the_latent_scale(seed, c, tau):
    """Scaling the latents by c (s -> c s) and the prior with them (N(0, (s tau)^2) -> N(0, (c s tau)^2)) changes the
    prior's bound on the scaled latents by D_z log c, which the Jacobian term takes back: the total is the same."""
    x = images(3, seed)
    terms, nll_scaled, scales = [], [], []
    for s in (1.7, 1.7 * c):
        m = tiny_ldm(scale=s, seed=seed)
        s = m.scale_factor.item()  # the buffer's value (a float32 rounding)
        with torch.no_grad():
            terms.append(m.bound_terms(x, normal_nll(s * tau), torch.Generator().manual_seed(seed)))
            z = _z(m, x, seed)
        nll_scaled.append(normal_nll(s * tau)(s * z))  # the prior's bound on the scaled latents
        scales.append(s)
    D_z = math.prod(m.latent_shape)
    c = scales[1] / scales[0]
    torch.testing.assert_close(nll_scaled[1] - nll_scaled[0], torch.full_like(z[:, 0, 0, 0], D_z * math.log(c)))
    for k in ("prior", "total"):  # the Jacobian -D_z log s takes the D_z log c back
        torch.testing.assert_close(terms[0][k], terms[1][k], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(terms[0]["prior"], normal_nll(tau)(z), rtol=1e-8, atol=1e-8)  # -log N(z; 0, tau^2)


def test_likelihood_is_the_bound_with_the_ddpm_prior_in_bits_per_dim(run):
    model = ldm.load(run)
    x = data.load("mnist5k", "test").x[:6]
    r = ldm.likelihood(model, x, n_t=5, seed=2, batch_size=4)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        prior = lambda z: model.diffusion.vlb(z, 5, discrete=False, generator=g)  # noqa: E731 (continuous L_0)
        parts = [model.bound_terms(xb, prior, g) for xb in x.split(4)]
    total = torch.cat([p["total"] for p in parts]).double().mean().item()
    assert r["kind"] == "bound" and r["n"] == 6 and r["n_t"] == 5
    assert math.isclose(r["nll_bpd"], total / (784 * math.log(2)), rel_tol=1e-6)  # nats -> bits/dim (vae.py's protocol)
    assert math.isclose(r["rec_nats"] + r["log_q_nats"] + r["prior_nats"], total, rel_tol=1e-6)


# ----------------------------------------------------------------------------------------------------- commands
def test_points_commands_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    code, out, err = run_app(ldm.app, "train", "--data", "moons", "--steps", 4, "--ae-steps", 3, "--ae-hidden", 8,
                             "--hidden", 16, "--depth", 1, "--batch-size", 16, "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    model = ldm.load(tmp_path / "ckpt.pt")
    assert model.latent_shape == (2,) and model.encode(torch.randn(3, 2)).shape == (3, 2)
    # the latent samplers clamp z_0 to the box of the scaled train latents, which train saves: a network that
    # predicts garbage still gives latents inside it (ddpm.x0_box; images keep x0_clip, None by default)
    import data
    box = float(ldm.encode_all(model.ae, data.load("moons").x).mul(model.scale_factor).abs().max())
    assert model.diffusion.box == pytest.approx(box, rel=1e-5)
    with torch.no_grad():
        for p in model.diffusion.net.out.parameters():
            p.fill_(1e3)  # eps = 1e3 (x + 1) everywhere: z_0 far outside the data without the clamp
    z = []
    model.decode = lambda z_0: z.append(z_0) or z_0  # noqa: E731 (catch the latents the sampler hands the decoder)
    ldm.generate(model, 50, generator=torch.Generator().manual_seed(0), method="ddim", steps=5)
    assert z[0].abs().max() <= box * (1 + 1e-6)
    code, out, err = run_app(ldm.app, "sample", "--ckpt", tmp_path / "ckpt.pt", "--n", 7, "--out", tmp_path / "s.npz")
    assert code == 0 and np.load(tmp_path / "s.npz")["x"].shape == (7, 2), err
    code, out, err = run_app(ldm.app, "nll", "--ckpt", tmp_path / "ckpt.pt", "--n", 10, "--n-t", 5, "--device", "cpu")
    assert code == 0 and "nats" in out and "LSGM bound" in out, err


def test_images_nll_command(run):
    code, out, err = run_app(ldm.app, "nll", "--ckpt", run, "--n", 4, "--n-t", 3, "--device", "cpu")
    r = ldm.likelihood(ldm.load(run), data.load("mnist5k", "test").x[
        torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:4]], n_t=3, seed=0)
    assert code == 0 and f"{r['nll_bpd']:.4f} bits/dim" in out, err


# ----------------------------------------------------------------------------------------------------- labels
def test_labels_cfg_guidance_on_the_latent_ddpm(run, tmp_path, monkeypatch):
    """--labels: the latent DDPM gets a label embedding (num_classes saved), training drops labels to null at rate
    p_uncond, and generate is decode of cfg.generate on the latent DDPM (the label is used; guidance changes it)."""
    import cfg

    monkeypatch.setenv("GENMODELS_QUIET", "1")
    ae = str(run.parent / "ae" / "ckpt.pt")
    path = ldm.train(data="mnist5k", steps=4, ae=ae, labels=True, out=str(tmp_path / "l"), **TINY)
    assert torch.load(path, weights_only=True)["extra"]["num_classes"] == 10
    model = ldm.load(path)
    assert model.num_classes == 10 and model.diffusion.net.num_classes == 10
    kw = dict(method="ddim", steps=5)
    x = ldm.generate(model, 4, generator=torch.Generator().manual_seed(2), y=3, guidance=2.0, **kw)
    z_0 = cfg.generate(model.diffusion, 4, generator=torch.Generator().manual_seed(2), y=3, guidance=2.0,
                       spacing="lambda", x0_clip=None, **kw)
    torch.testing.assert_close(x, model.decode(z_0), rtol=0, atol=1e-6)
    other = ldm.generate(model, 4, generator=torch.Generator().manual_seed(2), y=5, guidance=2.0, **kw)
    assert not torch.equal(x, other)  # the label reaches the network
    # Algorithm 1's label dropout: p_uncond of the labels become the null label (10) during training
    seen = []
    monkeypatch.setattr(ldm.LDM, "forward", lambda self, z, y=None: seen.append(y) or self.diffusion.loss(z, y))
    ldm.train(data="mnist5k", steps=40, ae=ae, labels=True, p_uncond=0.5, out=str(tmp_path / "d"),
              **{**TINY, "batch_size": 64})
    ys = torch.cat(seen)
    assert ys.max() == 10 and abs((ys == 10).float().mean().item() - 0.5) < 0.05  # 2,560 draws: std 0.01
    # an unconditional model refuses labels and guidance
    with pytest.raises(ValueError, match="without labels"):
        ldm.generate(ldm.load(run), 2, y=1)
    for args in [("sample", "--ckpt", run, "--label", 3), ("sample", "--ckpt", run, "--guidance", 2),
                 ("sample", "--ckpt", path, "--label", 10), ("train", "--labels", "--p-uncond", 1.5)]:
        assert_one_line_error(Proc(*run_app(ldm.app, *args)))
    code, _, err = run_app(ldm.app, "sample", "--ckpt", path, "--label", 7, "--guidance", 1.5, "--n", 3, "--steps", 3,
                           "--out", tmp_path / "s.npz", "--device", "cpu")
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["x"].shape == (3, 1, 28, 28)


def test_bad_input_is_one_line_and_exit_2(run, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    flat = vae.train(data="mnist5k", likelihood="logistic", steps=1, hidden=4, latent_dim=2, batch_size=4,
                     device="cpu", out=str(tmp_path / "flat"))
    for args in [("train", "--steps", -1), ("train", "--ae-steps", 0), ("train", "--data", "nope"),
                 ("train", "--ae", tmp_path / "missing.pt", "--out", tmp_path / "x"),
                 ("train", "--ae", bad, "--out", tmp_path / "x"),
                 ("train", "--ae", run, "--out", tmp_path / "x"),  # an ldm checkpoint, not a vae.py one
                 ("train", "--ae", flat, "--out", tmp_path / "x", "--device", "cpu"),  # a flat-latent VAE
                 ("train", "--ae-beta", "nan"), ("train", "--net", "transformer"),
                 ("sample", "--ckpt", tmp_path / "missing.pt"), ("sample", "--ckpt", bad),
                 ("sample", "--ckpt", run, "--sampler", "euler"), ("sample", "--ckpt", run, "--steps", 5000),
                 ("sample", "--ckpt", run, "--n", 0), ("sample", "--ckpt", run, "--out", tmp_path / "s.jpg"),
                 ("nll", "--ckpt", bad), ("nll", "--ckpt", run, "--n-t", -1)]:
        assert_one_line_error(Proc(*run_app(ldm.app, *args)))
