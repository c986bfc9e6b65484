"""Latent diffusion: ddpm.py's DDPM trained in the latent space of vae.py's autoencoder, decoded back to images.

What it optimizes (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
https://arxiv.org/abs/2112.10752), in two stages that never share a gradient:
 1. perceptual compression (sec. 3.1): an autoencoder with a spatial latent, z ~ q(z|x) = N(mu(x), sigma^2(x)) of
    shape [C_z, H/f, W/f], trained on E_q[-log p(x|z)] + beta KL(q(z|x) || N(0, I)) with beta far below 1 (their
    "KL-reg."): vae.py's VAE with `--latent spatial` (points: a flat z), trained by vae.train;
 2. the latent diffusion model (sec. 3.3, eq. 2): L_LDM = E_{z, eps, t} ||eps - eps_theta(z_t, t)||^2 on
    z = s mu(x), the posterior mean of every training example, encoded once and scaled by s = 1 / std(mu) over the
    training set (sec. 4.3.2 and appendix G: "we rescale the latents to unit standard deviation"; Stable Diffusion's
    0.18215 is this s for its autoencoder): ddpm.py's DDPM and loss, with a nets.py backbone (UNet or DiT).
Sampling: z_0 = ddpm.sample(eps_theta, alpha_bar, z_T), z_T ~ N(0, I), with any of ddpm.py's samplers, then
x = E[x | z = z_0 / s], the decoder's mean.
Likelihood: the composition is a VAE whose prior is the diffusion model, so (LSGM, Vahdat et al. 2021,
https://arxiv.org/abs/2106.05931, sec. 2: the KL split into the encoder's negative entropy and a cross entropy)
    -log p(x) <= E_q(z|x)[ -log p(x|z) + log q(z|x) - log p(z) ],
and with the diffusion model's bound on the scaled latent z_s = s z (ddpm.DDPM.vlb, continuous Gaussian L_0) and the
Jacobian of z -> s z (p(z) = p_s(s z) s^D_z):
    -log p(z) = -log p_s(s z) - D_z log s <= L_vlb(s z) - D_z log s.
One z per example (k = 1: the diffusion bound is itself an estimate, which an IWAE log-mean-exp would bias).

Algorithm -> function:
    stage 1, the autoencoder (sec. 3.1)            -> vae.VAE(latent="spatial"), trained by vae.train (`train`)
    encode once, posterior mean, scale factor s     -> encode_all, LDM.encode (z = s mu(x)), LDM.decode
    stage 2, L_LDM (eq. 2)                          -> LDM.forward = ddpm.DDPM.loss on the scaled latents
    sampling: decode of ddpm.sample                 -> generate (ddpm.generate on the latents, then LDM.decode)
    the composed bound (LSGM) and its Jacobian      -> LDM.bound_terms, likelihood (bits/dim under vae.py's
                                                       logistic-decoder protocol; nats on points)
    labels (`--labels`): label dropout, guidance    -> cfg.drop_labels in `train`; generate samples the latent
                                                       DDPM through cfg.generate (eps_u + s (eps_c - eps_u))
Departures: one autoencoder architecture for all (vae.py's small conv VAE, no GAN or perceptual loss, so its
reconstructions are blurrier than Rombach et al.'s); the decoder mean, not a sample, is the image; the autoencoder
never sees the labels (only the latent DDPM is conditional, as in Rombach et al.'s class-conditional LDMs); latents
are not clipped during sampling.

Commands (2-core CPU shared with other jobs; one thread; see the README's ldm.py section for measured numbers):
    python ldm.py train                                      # both stages on mnist5k -> runs/ldm-mnist5k/
    python ldm.py train --ae runs/ldm-mnist5k/ae/ckpt.pt --out runs/ldm-2   # stage 2 on a trained autoencoder
    python ldm.py train --ae-factor 2 --out runs/ldm-f2     # 14x14x4 latents instead of 7x7x4
    python ldm.py sample --sampler ddim --steps 50           # -> runs/ldm-mnist5k/samples-ddim-50.png
    python ldm.py sample --n 1000 --out samples.npz && python fid.py score samples.npz mnist5k:test
    python ldm.py nll                                        # the LSGM bound in bits/dim on the test split
    python ldm.py reconstruct --out recon.npz && python fid.py score recon.npz mnist5k:test   # the ceiling
    python ldm.py train --net dit --dit-size DiT-S/7 --dit-patch 1   # a DiT on the 7x7 latent (49 tokens)
    python ldm.py train --data grid25 --steps 3000 --p-mean -2.5   # points: flat z, an MLP denoiser (README: the toy recipe)
    python ldm.py train --labels --out runs/ldm-labels && python ldm.py sample --ckpt runs/ldm-labels/ckpt.pt \
        --label 7 --guidance 2                               # class-conditional, with cfg.py's guidance
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

import cfg  # labels: label dropout and guided sampling (cfg.py's classifier-free guidance on the latent DDPM)
import ddpm  # the schedule, loss, samplers and bound (DESIGN.md: ldm.py composes vae.py and ddpm.py)
import vae  # the autoencoder

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------------- the model
class LDM(nn.Module):
    """The autoencoder (frozen), the scale factor s and the latent DDPM, as one module: its state dict is the whole
    model, so one checkpoint carries all three."""

    def __init__(self, ae: vae.VAE, diffusion: ddpm.DDPM, scale_factor: float = 1.0, num_classes: int = 0):
        super().__init__()
        self.ae, self.diffusion, self.num_classes = ae, diffusion, num_classes  # num_classes > 0: labels (cfg.py)
        self.ae.requires_grad_(False)  # stage 2 never changes the autoencoder
        self.register_buffer("scale_factor", torch.tensor(float(scale_factor)))  # s = 1 / std of the latents

    @property
    def denoiser(self) -> nn.Module:
        """eps_theta: the network called once per sampler step (what bench counts)."""
        return self.diffusion.net

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.ae.latent_shape

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> scaled latents s mu(x) [N, C_z, H/f, W/f] (the posterior mean; points: [N, L])."""
        return self.scale_factor * self.ae.encode(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> data: the decoder mean E[x | z / s]."""
        return self.ae.mean(z / self.scale_factor)

    def forward(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """L_LDM (Rombach et al. eq. 2) on scaled latents z: ddpm.py's loss (its target, weighting and t sampling);
        with labels y (already dropped to the null label where cfg.drop_labels says), the conditional L_LDM."""
        return self.diffusion.loss(z, y)

    @torch.no_grad()
    def bound_terms(self, x: torch.Tensor, prior_nll, generator: torch.Generator | None = None) -> dict:
        """The pieces of the LSGM bound per example, in nats, for one z ~ q(z|x) (z = mu + sigma eps):
            rec   = -log p(x|z)                       (vae.py's decoder; points: in raw coordinates)
            log_q =  log q(z|x) = sum -eps^2/2 - log sigma - log(2 pi)/2
            prior = prior_nll(s z) - D_z log s        (>= -log p(z): the Jacobian of z -> s z)
            total = rec + log_q + prior               (>= -log p(x) in expectation).
        prior_nll: any bound on -log p_s per example of scaled latents (the DDPM's L_vlb in `likelihood`)."""
        mu, logvar = self.ae.encode(x)
        std = torch.exp(0.5 * logvar)
        eps = vae.gaussian(mu.shape, generator, mu.device, mu.dtype)
        z = mu + std * eps  # reparameterized z ~ q(z|x), unscaled
        rec = -self.ae.log_px_given_z(x, z)
        log_q = self.ae.sum_latent(-0.5 * eps ** 2 - std.log() - 0.5 * LOG_2PI)
        D_z = math.prod(self.latent_shape)
        prior = prior_nll(self.scale_factor * z) - D_z * self.scale_factor.log()  # -log p(z) = -log p_s(s z) - D_z log s
        return {"rec": rec, "log_q": log_q, "prior": prior, "total": rec + log_q + prior}


def encode_all(ae: vae.VAE, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The posterior means mu(x) of a whole data set, unscaled, [N, *latent_shape] (stage 2's training data)."""
    dev = ae.shift.device
    with torch.no_grad():
        return torch.cat([ae.encode(xb.to(dev))[0] for xb in x.split(batch)])


# ----------------------------------------------------------------------------------------------------- the surface
@torch.no_grad()
def generate(model: LDM, n: int, *, generator: torch.Generator | None = None, y=None, guidance: float = 1.0,
             method: str = "dpm++2m", steps: int = 20, eta: float = 0.0, spacing: str = "auto", rho: float = 3.0,
             x0_clip: float | None = None, batch_size: int = 1000) -> torch.Tensor:
    """n samples in data space on the CPU: z_0 = ddpm.generate(the latent DDPM) (z_T ~ N(0, I), then ddpm.sample with
    `method` in `steps` calls of eps_theta; the same generator runs through), x = decode(z_0). x0_clip clamps the
    predicted latent z_0 of images (None: off; latents are not bounded like pixels); points' z_0 is always clamped to
    the box of the scaled train latents that train saves (ddpm.x0_box; none in older checkpoints), since off the
    data the latent network's output can be garbage (a 300 s grid25 model: 50 NaN values in 2,500 samples without
    the clamp, none with it). spacing "auto" is ddpm.generate's: karras
    with `rho` for dpm++2m on spatial latents (FID 9.5 against lambda's 11.3 at 20 calls, README), else lambda.
    A model trained with labels samples through cfg.generate instead: labels y (an int, a LongTensor [n], or None:
    uniform over the classes) and eps_u + s (eps_c - eps_u) with s = `guidance` (1: the conditional model alone)."""
    if not model.num_classes and (y is not None or guidance != 1):
        raise ValueError("this ldm.py model was trained without labels (python ldm.py train --labels): y must be "
                         "None and guidance 1")
    spacing = ddpm.auto_spacing(spacing, model.latent_shape, method)
    if len(model.latent_shape) == 1:
        x0_clip = 1.0  # points: any bound selects the saved latent box in ddpm.x0_box (None there turns it off)
    if model.num_classes:  # cfg.py's guided sampling on the latent DDPM (labels checked there)
        z_0 = cfg.generate(model.diffusion, n, generator=generator, y=y, guidance=guidance, method=method,
                           steps=steps, eta=eta, spacing=spacing, rho=rho, x0_clip=x0_clip, batch_size=batch_size)
    else:
        z_0 = ddpm.generate(model.diffusion, n, generator=generator, method=method, steps=steps, eta=eta,
                            spacing=spacing, rho=rho, x0_clip=x0_clip, batch_size=batch_size)  # [n, *latent_shape]
    dev = model.scale_factor.device
    return torch.cat([model.decode(zb.to(dev)).float().cpu() for zb in z_0.split(batch_size)])


@torch.no_grad()
def likelihood(model: LDM, x: torch.Tensor, *, n_t: int | None = 50, seed: int = 0,
               generator: torch.Generator | None = None, batch_size: int = 100) -> dict:
    """The LSGM bound (LDM.bound_terms with the latent DDPM's L_vlb, n_t stratified timesteps per example, 0 or None:
    all T) averaged over the examples x (data space); kind "bound". Images: {"nll_bpd"} under vae.py's protocol
    (log p(y) = log P(k) + D log 256 for the discretized logistic decoder, so bits/dim = nats / (D ln 2)); points:
    {"nll_nats"}. Extra keys: the mean of each piece in nats (rec_nats, log_q_nats, prior_nats), per_example [N]."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    dev = model.scale_factor.device

    def prior_nll(z_s):  # L_vlb >= -log p_s(z_s): continuous latents, so a Gaussian L_0 density, not 8-bit bins
        return model.diffusion.vlb(z_s, n_t or None, discrete=False, generator=g)

    parts = [model.bound_terms(xb.to(dev), prior_nll, g) for xb in x.split(batch_size)]
    per = {k: torch.cat([p[k].double().cpu() for p in parts]) for k in parts[0]}  # [N] each, nats
    mean = {k: v.mean().item() for k, v in per.items()}
    out = {"kind": "bound", "n": len(x), "n_t": n_t or model.diffusion.T,
           **{f"{k}_nats": v for k, v in mean.items() if k != "total"}}
    if model.ae.likelihood == "gaussian":
        out["nll_nats"], out["per_example"] = mean["total"], per["total"].float()
    else:
        D = x[0].numel()
        bpd = vae.bits_per_dim(-per["total"] + D * math.log(256), D)  # [N], the anomaly score of bench.py
        out["nll_bpd"], out["per_example"] = float(bpd.mean()), bpd.float()
    return out


# ----------------------------------------------------------------------------------------------------- commands
# Everything below is plumbing for the command line; the algorithm is above.
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import data as datasets  # noqa: E402
import nets  # noqa: E402
import training  # noqa: E402

app = training.App(help="Latent diffusion: vae.py's autoencoder + ddpm.py's DDPM on its latents; train, sample, bound.")
Opt = typer.Option


def build(config: dict, scale_factor: float = 1.0, num_classes: int = 0) -> LDM:
    """The model a saved config describes: vae.VAE(**config["ae_model"]) and ddpm.build on its latent shape (with a
    label embedding of num_classes + 1 rows when num_classes > 0, as cfg.build)."""
    ae = vae.VAE(**config["ae_model"])
    diffusion = cfg.build(config, ae.latent_shape, num_classes) if num_classes else ddpm.build(config, ae.latent_shape)
    diffusion.shape = ae.latent_shape  # what ddpm.generate draws z_T in
    return LDM(ae, diffusion, scale_factor, num_classes)


def load(path, device: str = "cpu") -> LDM:
    """The autoencoder, the scale factor and the latent DDPM (EMA weights) from one checkpoint, ready to sample."""
    ckpt = training.load_checkpoint(path, "ldm")
    model = build(ckpt["config"], num_classes=int(ckpt["extra"].get("num_classes", 0)))
    model.load_state_dict(training.ema_state(ckpt))
    model.config = ckpt["config"]
    return model.to(training.device(device)).eval()


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: mnist5k (bundled), mnist, fashion, cifar10, or a 2-D toy such as grid25")] = "mnist5k",
    steps: Annotated[int, Opt(help="stage 2: optimizer steps of the latent DDPM")] = 1500,
    ae_steps: Annotated[int, Opt(help="stage 1: optimizer steps of the autoencoder (vae.py train)")] = 1000,
    ae: Annotated[str, Opt(help="a vae.py checkpoint to use as the autoencoder (skips stage 1)")] = "",
    ae_factor: vae.Factor = 4,
    ae_latent_channels: vae.LatentChannels = 4,
    ae_latent_dim: Annotated[int, Opt(help="points: dimension of the flat z")] = 2,
    ae_hidden: Annotated[int, Opt(help="autoencoder conv channels (images) or MLP width (points)")] = 64,
    ae_beta: Annotated[float, Opt(help="autoencoder KL weight, far below 1 (Rombach et al. sec. 3.1)")] = 1e-3,
    labels: Annotated[bool, Opt(help="class-conditional latent DDPM with label dropout (cfg.py's guidance)")] = False,
    p_uncond: Annotated[float, Opt(help="label dropout: probability of training on the null label")] = cfg.P_UNCOND,
    batch_size: Annotated[int, Opt(help="stage 2: latents per step (per process under torchrun)")] = 64,
    lr: Annotated[float, Opt(help="stage 2: peak AdamW learning rate")] = 2e-3,
    warmup: Annotated[int, Opt(help="stage 2: linear learning-rate warm-up steps")] = 100,
    timesteps: Annotated[int, Opt(help="number of diffusion steps T")] = 1000,
    schedule: Annotated[str, Opt(help="beta schedule: linear or cosine")] = "linear",
    prediction: Annotated[str, Opt(help="network target: eps (noise) or v")] = "v",
    min_snr: Annotated[float, Opt(help="min-SNR-gamma loss weighting, gamma (0 = plain L_simple)")] = 0.0,
    t_sampling: Annotated[str, Opt(help="training t: uniform (Ho et al.) or lognormal (EDM's noise levels)")] = "lognormal",
    p_mean: Annotated[float, Opt(help="lognormal t: mean of ln sigma (EDM's P_mean is -1.2; its std P_std is 1.2)")] = 0.0,
    net: nets.Net = "unet",
    ch: nets.Ch = 32,
    ch_mult: nets.ChMult = "1,2,2",
    attn: nets.Attn = True,
    dropout: nets.Dropout = 0.0,
    patch: nets.Patch = 1,
    dit_size: nets.DitSize = nets.DEFAULT_DIT,
    dit_depth: nets.DitDepth = 0,
    dit_width: nets.DitWidth = 0,
    dit_heads: nets.DitHeads = 0,
    dit_patch: nets.DitPatch = 0,
    hidden: nets.Hidden = 256,
    depth: nets.Depth = 3,
    ema_decay: Annotated[float, Opt(help="stage 2: EMA decay of the sampling weights (with warm-up)")] = 0.999,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    device: training.Device = "auto",
    compile: Annotated[bool, Opt(help="torch.compile the network (CUDA)")] = False,
    seed: training.Seed = 0,
    out: Annotated[str | None, Opt(help="run folder (default runs/ldm-<data>); stage 1 writes <out>/ae")] = None,
    resume: training.Resume = False,
    ckpt_every: training.CkptEvery = 250,
) -> Path:
    """Stage 1 (the autoencoder, unless --ae), encode the training set once, then stage 2 (the latent DDPM)."""
    config = dict(locals())
    check = training.check
    check(steps > 0 and ae_steps > 0, f"--steps and --ae-steps must be positive, got {steps}, {ae_steps}")
    check(ae_beta >= 0 and math.isfinite(ae_beta), f"--ae-beta must be a finite number >= 0, got {ae_beta}")
    check(0 < p_uncond < 1, f"--p-uncond must be in (0, 1), got {p_uncond}")
    ds = datasets.load(data)
    check(not labels or ds.num_classes > 0, f"--labels: --data {data} has no labels")
    C = ds.num_classes if labels else 0
    ddpm.validate(config, (ae_latent_dim,) if ds.kind == "points" else None)  # schedule and backbone options
    out = Path(out or f"runs/ldm-{data}")
    config["out"] = str(out)

    # stage 1: the autoencoder (vae.py), or the one given; a finished stage 1 is not repeated on --resume
    ae_path = Path(ae) if ae else out / "ae" / "ckpt.pt"
    if not ae and not (resume and ae_path.exists() and training.load_checkpoint(ae_path, "vae")["step"] >= ae_steps):
        vae.train(data=data, likelihood="logistic", latent="flat" if ds.kind == "points" else "spatial",
                  factor=ae_factor, latent_channels=ae_latent_channels, latent_dim=ae_latent_dim, hidden=ae_hidden,
                  beta=ae_beta, steps=ae_steps, device=device, seed=seed, out=str(out / "ae"),
                  resume=resume and ae_path.exists())
    autoenc = vae.load(ae_path, str(training.device(device)))
    check(autoenc.likelihood != "bernoulli" and autoenc.shape == ds.shape and
          (ds.kind == "points" or autoenc.latent == "spatial"),
          f"--ae {ae_path}: need a vae.py autoencoder of {data} with a logistic decoder and --latent spatial")

    # the training set, encoded once: posterior means, scaled to unit std (Rombach et al. sec. 4.3.2, appendix G)
    mu = encode_all(autoenc, ds.x).cpu()
    s = 1 / mu.std().item()
    latents = datasets.Dataset(s * mu, ds.y, "latents", f"{data} latents")
    if ds.kind == "points":  # the latent samplers clamp z_0 to the box of the scaled train latents (generate)
        config["box"] = float(latents.x.abs().max())
    config["ae_model"] = training.load_checkpoint(ae_path, "vae")["config"]["model"]
    ddpm.validate(config, autoenc.latent_shape)  # e.g. a DiT patch must divide the latent, not the image

    # stage 2: the latent DDPM
    training.seed_everything(seed)  # the initial weights depend on --seed alone
    model = build(config, s, C)
    model.ae.load_state_dict(autoenc.state_dict())
    tr = training.Trainer("ldm", config, {"model": model}, latents, steps=steps, batch_size=batch_size, lr=lr,
                          out=out, device=device, seed=seed, resume=resume, ema_decay=ema_decay, warmup=warmup,
                          betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip, compile=compile,
                          ckpt_every=ckpt_every, extra={"shape": list(ds.shape), "num_classes": C})
    for _, (z, y) in tr:
        y = cfg.drop_labels(y, C, p_uncond) if C else None  # Ho & Salimans Algorithm 1: y <- null w.p. p_uncond
        with tr.autocast():
            loss = tr.models["model"](z, y)  # L_LDM on the scaled latents, through DDP / compile wrappers
        tr.step(loss)

    def sample_fn(n):
        return generate(tr.sampling_model(), n, generator=torch.Generator().manual_seed(seed))

    images = ds.kind == "images"
    return tr.finish(sample_fn, n=64 if images else 2000, reference=None if images else ds.x[:2000])


@app.command("sample")
def sample_cmd(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/ldm-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    sampler: Annotated[str, Opt(help="ddpm (ancestral), ddim or dpm++2m")] = "dpm++2m",
    steps: Annotated[int, Opt(help="network calls per sample (1..T)")] = 20,
    eta: Annotated[float, Opt(help="DDIM stochasticity: 0 deterministic, 1 = ancestral")] = 0.0,
    spacing: Annotated[str, Opt(help="timestep spacing: karras (sigma^(1/rho) even), lambda (log-SNR even), uniform, "
                                     "or auto (karras for dpm++2m on spatial latents, else lambda)")] = "auto",
    rho: Annotated[float, Opt(help="karras spacing: rho (large: like lambda; small: fewer steps at low noise)")] = 3.0,
    label: Annotated[int, Opt(help="models trained with --labels: the class to draw; -1 = every class in turn")] = -1,
    guidance: Annotated[float, Opt(help="models trained with --labels: guidance scale s (0 unconditional, 1 "
                                        "conditional, > 1 guided)")] = 1.0,
    batch_size: Annotated[int, Opt(help="samples per batch")] = 500,
    out: Annotated[str | None, Opt(help=".png grid/scatter or .npz (key x); default next to the checkpoint")] = None,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> torch.Tensor:
    """Sample: the latent DDPM with any of ddpm.py's samplers, then the decoder (all rebuilt from the checkpoint)."""
    check = training.check
    check(n > 0, f"--n must be positive, got {n}")
    check(sampler in ddpm.SAMPLERS, f"unknown --sampler {sampler!r}; choose one of {', '.join(ddpm.SAMPLERS)}")
    check(steps > 0 and eta >= 0, f"--steps must be positive and --eta >= 0, got {steps}, {eta}")
    ddpm.check_spacing(spacing, rho)
    check(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
    path = datasets.samples_path(out, Path(ckpt).parent / f"samples-{sampler}-{steps}.png")
    model = load(ckpt, device)
    check(steps <= model.diffusion.T, f"--steps must be at most T = {model.diffusion.T}, got {steps}")
    C = model.num_classes
    check(C > 0 or (label == -1 and guidance == 1), "--label and --guidance need a model trained with --labels")
    check(-1 <= label < max(C, 1), f"--label {label} is not a class of {model.config['data']} (0..{C - 1}, or -1)")
    y = (torch.full((n,), label) if label >= 0 else (torch.arange(n) * C) // n) if C else None  # -1: classes in turn
    g = torch.Generator().manual_seed(seed)
    with training.autocast(model.scale_factor.device):
        x = generate(model, n, generator=g, y=y, guidance=guidance, method=sampler, steps=steps, eta=eta,
                     spacing=spacing, rho=rho, batch_size=batch_size)
    points = x.dim() == 2
    datasets.write_samples(x, path, reference=datasets.load(model.config["data"], "test").x[:2000] if points else None)
    return x


@app.command()
def nll(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/ldm-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="test examples (the first n of a seed-0 permutation)")] = 200,
    n_t: Annotated[int, Opt(help="timesteps per example in the Monte Carlo sum over t (0 = all T)")] = 50,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> dict:
    """The LSGM bound on -log p(x) on the test split: bits/dim (images) or nats (points), and its three pieces."""
    training.check(n > 0 and n_t >= 0, f"--n must be positive and --n-t >= 0, got {n}, {n_t}")
    model = load(ckpt, device)
    ds = datasets.load(model.config["data"], "test")
    x = ds.x[torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]]
    r = likelihood(model, x, n_t=n_t, seed=seed)
    value = f"{r['nll_bpd']:.4f} bits/dim" if "nll_bpd" in r else f"{r['nll_nats']:.4f} nats"
    print(f"LSGM bound on {ds.name}:test (n={len(x)}, {r['n_t']} timesteps/example): {value}; nats per example: "
          f"-log p(x|z) {r['rec_nats']:.1f} + log q(z|x) {r['log_q_nats']:.1f} + -log p(z) {r['prior_nats']:.1f}")
    return r


@app.command()
def reconstruct(
    ae: Annotated[str, Opt(help="the autoencoder: a vae.py checkpoint (stage 1 writes <out>/ae/ckpt.pt)")] = "runs/ldm-mnist5k/ae/ckpt.pt",
    out: Annotated[str, Opt(help=".npz (reconstructions under key x, for python fid.py score) or .png")] = "recon.npz",
    device: training.Device = "auto",
) -> float:
    """The ceiling of latent diffusion: decode(encode(x)) of the whole test split; prints the MSE (data in [-1, 1])."""
    x = datasets.load(training.load_checkpoint(ae, "vae")["config"]["data"], "test").x
    autoenc = vae.load(ae, str(training.device(device)))
    with torch.no_grad():
        x_rec = torch.cat([autoenc.mean(m).cpu() for m in encode_all(autoenc, x).split(1000)])  # E[x | mu(x)]
    mse = ((x_rec - x) ** 2).mean().item()
    print(f"reconstruction MSE {mse:.5f} on {len(x)} test examples (latent {list(autoenc.latent_shape)})")
    datasets.write_samples(x_rec, out)
    return mse


# How bench.py trains, samples and scores this file (data, read by bench).
BENCH = {
    "claim": "latent diffusion: per-step cost cut 16-64x, ~3200x effective with DDIM-50",
    "kinds": ("points", "images"),
    # points: ddpm.py's toy recipe for the latent DDPM (a flat 2-D z; its BENCH says why P_mean is -2.5)
    "options": {"points": {"prediction": "v", "min_snr": 0.0, "t_sampling": "lognormal", "p_mean": -2.5,
                           "ema_decay": 0.995},
                "images": {}},
    "quick": {"points": {"hidden": 64, "depth": 2, "ae_steps": 100, "ae_hidden": 16},
              "images": {"ch": 8, "ch_mult": "1,2", "attn": False, "warmup": 10, "ae_steps": 100, "ae_hidden": 16}},
    "settings": {"points": [{"sampler": "ddim-50", "method": "ddim", "steps": 50},
                            {"sampler": "dpm++2m-20", "method": "dpm++2m", "steps": 20}],
                 "images": [{"sampler": "ddim-50", "method": "ddim", "steps": 50},
                            {"sampler": "dpm++2m-20", "method": "dpm++2m", "steps": 20}]},
    "quick_settings": {"points": [{"sampler": "dpm++2m-20", "method": "dpm++2m", "steps": 20}],
                       "images": [{"sampler": "dpm++2m-10", "method": "dpm++2m", "steps": 10}]},
    # images only: bits/dim beside the other families' (on the toys bench reports no ldm likelihood)
    "likelihood": {"images": {"n": 100, "n_t": 50, "seed": 0}},
    "quick_likelihood": {"images": {"n": 100, "n_t": 20, "seed": 0}},
    "network": "denoiser",  # eps_theta: one call per sampler step (plus one decoder call per sample)
    "batch": 1000,
    # the samplers suite: the lesson's "latent diffusion + DDIM-50" row, and DPM-Solver++ beside ddpm.py's
    "samplers": [{"sampler": "ddim-50", "method": "ddim", "steps": 50, "eta": 0.0, "spacing": "lambda"},
                 {"sampler": "dpm++2m-20", "method": "dpm++2m", "steps": 20, "eta": 0.0, "spacing": "lambda"}],
    # the conditional suite: train --labels (the latent DDPM with cfg.py's guidance), s = 1 and s = 2 (README's best)
    "conditional_options": {"labels": True},
    "conditional": [{"sampler": "dpm++2m-20 s=1", "method": "dpm++2m", "steps": 20, "guidance": 1.0},
                    {"sampler": "dpm++2m-20 s=2", "method": "dpm++2m", "steps": 20, "guidance": 2.0}],
}


if __name__ == "__main__":
    app()
