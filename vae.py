"""Variational autoencoder: a Gaussian encoder q(z|x), the reparameterization trick, and a lower bound on log p(x).

What it optimizes (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114, eq. 3 and 10), with p(z) = N(0, I) and
q(z|x) = N(mu(x), diag sigma^2(x)):
    log p(x) >= ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
one reparameterized sample z = mu + sigma * eps per example and the closed-form KL (their Appendix B). `--beta` weights
the KL (beta-VAE, Higgins et al. 2017); beta = 1 is the true bound. Departure: the KL weight rises linearly from 0 over
`--kl-warmup` steps (Sonderby et al. 2016, https://arxiv.org/abs/1602.02282): without it the moons VAE keeps one
active unit (which moon) and leaves the position along the arc to decoder noise (IWAE NLL 1.47 nats after 10,000 steps
without warm-up, 0.72 after 6,000 with it). NLL is estimated with the importance-weighted bound
(IWAE, Burda et al. 2016, https://arxiv.org/abs/1509.00519, eq. 8; Theorem 1: ELBO = L_1 <= L_k <= L_k+1 -> log p(x)):
    L_k(x) = E[log (1/k) sum_i w_i],   w_i = p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x).
Posterior collapse is watched through the active units of Burda et al. (Sec. 5.2): dims j with Cov_x(E_q[z_j]) > 0.01.

Latents: `--latent flat` (default) z in R^L, prior N(0, I), the lesson's VAE; `--latent spatial` z a feature map
[C_z, H/f, W/f] from a fully convolutional encoder (`--factor f`, `--latent-channels C_z`): the first stage of latent
diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752, sec. 3.1), trained there with a KL weight far below 1
("a slight KL-penalty towards a standard normal", their kl_weight 1e-6 against a summed reconstruction loss), so that
z keeps the detail of x and the prior's job passes to the diffusion model (ldm.py; `--beta` sets the weight here).

Decoders p(x|z):
- points: Gaussian; mean AND variance are learned outputs of the MLP decoder (log sigma >= -7), on coordinates
  standardized by the training mean/std. Densities are reported in raw coordinates (the Jacobian -sum log std included).
- images, `--likelihood bernoulli` (default; the lesson's decoder): pixels in [0, 1] as Bernoulli probabilities. That is
  a likelihood of BINARY data only, so training binarizes dynamically (x ~ Bernoulli(intensity) every step, as Burda et al.)
  and `nll` reports nats on the test digits binarized once with a fixed seed: the kind of number the papers give for
  binarized MNIST, but NOT comparable with bits/dim of 8-bit models.
- images, `--likelihood logistic`: a discretized logistic per pixel over the 256 levels (Salimans et al. 2017,
  https://arxiv.org/abs/1701.05517, eq. 2, one component). As a density on [0, 1]^D that is constant inside each
  dequantization bin it reads p(y|z) = 256^D P(k|z): a model of the same dequantized data as flow.py, so its bits/dim
  are comparable with the flow's. bench.py should use this one.

Bits/dim, the same protocol as flow.py: 8-bit pixels k in {0..255} (data.py's x = k / 127.5 - 1), uniform dequantization
y = (k + u) / 256, u ~ U[0, 1)^D, a density p(y) on [0, 1]^D, and
    bpd = (-log p(y) + D log 256) / (D log 2)                                   (`bits_per_dim`)
which upper-bounds the discrete code length -log2 P(k) / D (Theis et al. 2016); the papers' MNIST numbers use it. For the
discretized logistic log p(y) = log P(k) + D log 256 whatever u is, so its bpd is -log P(k) / (D log 2) exactly (or its
IWAE bound).

Algorithm -> function: encoder/decoder `VAE.encode`, `VAE.log_px_given_z`; reparameterization + ELBO `VAE.forward`,
`VAE.elbo`; closed-form KL `gaussian_kl`; IWAE `VAE.iwae`; active units `active_units`; ancestral sampling `VAE.sample`.
The surface shared with the other model files: `generate(model, n)` (samples in data space) and `likelihood(model, x)`
(-IWAE_k: nats on points, bits/dim with the logistic decoder; kind "bound"); `BENCH` (how bench.py runs this file).

Commands (times measured on a 2-core CPU shared with other jobs; see README):
    python vae.py train --data moons                       # MLP VAE on points
    python vae.py train                                    # conv VAE on mnist5k, Bernoulli decoder
    python vae.py train --likelihood logistic --out runs/vae-mnist5k-logistic
    python vae.py sample --ckpt runs/vae-mnist5k/ckpt.pt       # -> runs/vae-mnist5k/sample.png (.npz: raw samples)
    python vae.py reconstruct --ckpt runs/vae-mnist5k/ckpt.pt --out recon.png
    python vae.py interpolate --ckpt runs/vae-mnist5k/ckpt.pt --out interp.png
    python vae.py nll --ckpt runs/vae-moons/ckpt.pt --k 1000    # IWAE-1000: nats (points) or bits/dim (logistic)
    python vae.py train --latent spatial --factor 4 --beta 1e-3 --likelihood logistic   # ldm.py's autoencoder
    python vae.py train --device cuda --hidden 128 --steps 30000 --data mnist --likelihood logistic   # GPU
    python vae.py train --cond --out runs/vae-mnist5k-cond       # CVAE on the digits' labels (Sohn et al. 2015)
    python vae.py sample --ckpt runs/vae-mnist5k-cond/ckpt.pt --label 7    # sevens
    python vae.py classify --ckpt runs/vae-mnist5k-cond/ckpt.pt --k 50     # the CVAE as a Bayes classifier

CVAE (`--cond`; Sohn, Lee & Yan 2015, "Learning Structured Output Representation using Deep Conditional
Generative Models", NeurIPS, their variational bound with x and y in each other's roles): q(z|x, y), p(x|z, y),
p(z) = N(0, I), so
    log p(x|y) >= E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) || p(z))   and   L_k(x, y) <= log p(x|y) likewise;
the label is a per-class bias on the first layer of each network (`with_label`). Generative classifier
`VAE.log_posterior`: log p(y|x) = L_k(x, y) + log p(y) - log sum_y' exp(L_k(x, y') + log p(y')).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

LIKELIHOODS = ("bernoulli", "logistic")  # image decoders; points always use "gaussian"
LATENTS = ("flat", "spatial")  # z [B, L] (the lesson's VAE) or z [B, C, H/f, W/f] (latent diffusion's autoencoder)
LOG_2PI = math.log(2 * math.pi)
LOG_SCALE_MIN = -7.0  # floor on the decoder's log sigma (points) and log s (logistic): no infinite density on a point
LOG_SCALE_MAX = 80.0  # cap where e^(+-log scale) is used: finite in float32 (e^88 overflows, e^-84 underflows a mass)


def gaussian(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """N(0, I) of `shape` on `device`, drawn where `generator` lives (a CPU generator can drive a model on a GPU, and
    one seed gives the same noise on every device); generator None: the global RNG of `device`."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


# ----------------------------------------------------------------------------------------------------- network
class VAE(nn.Module):
    """MLP VAE for points [B, d] (likelihood "gaussian") or conv VAE for images [B, C, H, W] in [-1, 1], H, W % 4 == 0.
    Images with latent "spatial": a fully convolutional encoder/decoder whose z is a feature map [B, C_z, H/f, W/f]
    (f = `factor`, a power of 2; C_z = `latent_channels`): the autoencoder of latent diffusion (Rombach et al. 2022,
    https://arxiv.org/abs/2112.10752, sec. 3.1, their KL-regularized "f = 4, c = ..." models) and ldm.py's stage 1."""

    def __init__(self, shape=(2,), latent_dim: int = 2, hidden: int = 64, likelihood: str = "gaussian",
                 latent: str = "flat", factor: int = 4, latent_channels: int = 4, num_classes: int = 0):
        super().__init__()
        self.shape, self.latent_dim, self.likelihood = tuple(shape), latent_dim, likelihood
        self.latent = latent
        L, h = latent_dim, hidden
        if likelihood == "gaussian":
            d = self.shape[0]
            self.latent_shape = (L,)
            self.encoder = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 2 * L))
            self.decoder = nn.Sequential(nn.Linear(L, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 2 * d))
        elif latent == "spatial":
            C, H, W = self.shape
            out = C if likelihood == "bernoulli" else 2 * C
            n = int(math.log2(factor))  # stride-2 levels; channels h / 2^(n-1), ..., h / 2, h
            chans = [max(h // 2 ** (n - 1 - i), 1) for i in range(n)]
            self.latent_shape = (latent_channels, H // factor, W // factor)
            enc, c = [], C
            for co in chans:
                enc += [nn.Conv2d(c, co, 4, 2, 1), nn.SiLU()]  # [B, co, H/2^i, W/2^i]
                c = co
            self.encoder = nn.Sequential(*enc, nn.Conv2d(c, h, 3, 1, 1), nn.SiLU(),
                                         nn.Conv2d(h, 2 * latent_channels, 3, 1, 1))  # [B, 2 C_z, H/f, W/f]
            dec = [nn.Conv2d(latent_channels, h, 3, 1, 1), nn.SiLU(), nn.Conv2d(h, c, 3, 1, 1)]
            for co in list(reversed(chans[:-1])) + [out]:  # the encoder's channels backwards, then the outputs
                dec += [nn.SiLU(), nn.ConvTranspose2d(c, co, 4, 2, 1)]  # doubles H and W
                c = co
            self.decoder = nn.Sequential(*dec)  # [B, out, H, W]
        else:
            C, H, W = self.shape
            out = C if likelihood == "bernoulli" else 2 * C  # Bernoulli logits, or logistic (mean, log s)
            self.latent_shape = (L,)
            self.encoder = nn.Sequential(
                nn.Conv2d(C, h // 2, 4, 2, 1), nn.SiLU(),  # [B, h/2, H/2, W/2]
                nn.Conv2d(h // 2, h, 4, 2, 1), nn.SiLU(),  # [B, h, H/4, W/4]
                nn.Flatten(), nn.Linear(h * H * W // 16, 2 * L))  # [B, 2L]
            self.decoder = nn.Sequential(
                nn.Linear(L, h * H * W // 16), nn.SiLU(), nn.Unflatten(1, (h, H // 4, W // 4)),
                nn.ConvTranspose2d(h, h // 2, 4, 2, 1), nn.SiLU(),  # [B, h/2, H/2, W/2]
                nn.ConvTranspose2d(h // 2, out, 4, 2, 1))  # [B, out, H, W]
        d = self.shape[0] if likelihood == "gaussian" else 1
        self.register_buffer("shift", torch.zeros(d))  # points: training mean and std, set by `train`
        self.register_buffer("scale", torch.ones(d))
        self.num_classes = num_classes
        if num_classes:  # CVAE; made last, so that an unconditional VAE's initial weights stay what they were
            self.enc_label = nn.Embedding(num_classes, _width(self.encoder[0]))  # q(z|x, y)
            self.dec_label = nn.Embedding(num_classes, _width(self.decoder[0]))  # p(x|z, y)
            self.register_buffer("log_py", torch.full((num_classes,), -math.log(num_classes)))  # log p(y), set by train

    def sum_latent(self, a: torch.Tensor) -> torch.Tensor:
        """Sum over the latent dims of a [..., *latent_shape] tensor -> [...]."""
        return a.flatten(-len(self.latent_shape)).sum(-1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mu, diag exp(logvar)), or q(z|x, y) with labels y [B] (CVAE); both [B, *latent_shape]
        ([B, L] or [B, C_z, H/f, W/f])."""
        u = (x - self.shift) / self.scale if self.likelihood == "gaussian" else x
        out = self.encoder(u) if y is None else with_label(self.encoder, u, self.enc_label(self._check_y(y)))
        mu, logvar = out.to(x.dtype).chunk(2, 1)  # .to: float32 out of bf16 autocast
        return mu, logvar.clamp(-30, 20)  # clamp: keeps exp(logvar) finite; inactive in normal training

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder outputs for z [..., *latent_shape] (and labels y [B], the last lead dim of z, in a CVAE)
        -> [..., 2d] (points) or [..., out, H, W] (images)."""
        lead = z.shape[:z.dim() - len(self.latent_shape)]
        z_flat = z.reshape(-1, *self.latent_shape)  # [prod(lead), *latent_shape]
        if y is None:
            params = self.decoder(z_flat).to(z.dtype)
        else:  # y [B] -> [..., B] -> [prod(lead)]: every z of example b decodes with its label y_b
            e = self.dec_label(self._check_y(y).expand(lead).reshape(-1))
            params = with_label(self.decoder, z_flat, e).to(z.dtype)
        return params.reshape(*lead, *params.shape[1:])

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|z) (CVAE: log p(x|z, y)) in nats per example; x [B, ...] in data space, z [..., B, L] -> [..., B]."""
        params = self.decode(z, y)
        if self.likelihood == "gaussian":  # log N(u; mu, sigma^2) - sum log scale   (u = standardized x)
            mu, log_sigma = params.chunk(2, -1)
            log_sigma = log_sigma.clamp(min=LOG_SCALE_MIN)
            u = (x - self.shift) / self.scale
            # (u - mu) e^-log_sigma, not / e^log_sigma: a decoder far off the data (a wide q(z|x) draw) can put
            # log_sigma > 88, where e^log_sigma overflows float32 and its gradient 0 * inf = NaN (the grid25 VAE at
            # step 295,595, bench/long); e^-log_sigma underflows to 0 and its gradient stays finite.
            log_p = -0.5 * ((u - mu) * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * LOG_2PI
            return log_p.sum(-1) - self.scale.log().sum()
        if self.likelihood == "bernoulli":  # sum x log p + (1 - x) log(1 - p), x in {0, 1} = (x_data + 1) / 2
            target = ((x + 1) / 2).expand_as(params)
            return -F.binary_cross_entropy_with_logits(params, target, reduction="none").sum((-3, -2, -1))
        mean, log_s = params.chunk(2, -3)
        return discretized_logistic_logp(x, mean, log_s.clamp(min=LOG_SCALE_MIN)).sum((-3, -2, -1))

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z] (CVAE: E[x|z, y]) in data space (the image a VAE usually shows; points: the decoder mean)."""
        params = self.decode(z, y)
        if self.likelihood == "gaussian":
            return params.chunk(2, -1)[0] * self.scale + self.shift
        if self.likelihood == "bernoulli":
            return 2 * torch.sigmoid(params) - 1  # p in [0, 1] -> [-1, 1]
        return params.chunk(2, -3)[0].clamp(-1, 1)  # logistic mean (the clamp: data range)

    # ------------------------------------------------------------------------------------------------- bounds
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One-sample ELBO terms per example: (log p(x|z), KL(q(z|x) || p(z))), z = mu + sigma * eps (reparam.).
        With labels y: (log p(x|z, y), KL(q(z|x, y) || p(z))), the CVAE's bound on log p(x|y) (Sohn et al. 2015,
        with the prior p(z|y) fixed to N(0, I) where they learn a prior network)."""
        mu, logvar = self.encode(x, y)
        eps = gaussian(mu.shape, generator, mu.device, mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # K&W eq. 10: z = g(eps, x), eps ~ N(0, I)
        return self.log_px_given_z(x, z, y), gaussian_kl(mu.flatten(1), logvar.flatten(1))

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
             y: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO estimate per example in nats: log p(x|z) - KL (one z; closed-form KL); with y, of log p(x|y)."""
        log_px_z, kl = self(x, generator, y=y)
        return log_px_z - kl

    def iwae(self, x: torch.Tensor, k: int, chunk: int = 4096, generator: torch.Generator | None = None, *,
             y: torch.Tensor | None = None) -> torch.Tensor:
        """IWAE bound L_k per example in nats (Burda et al. eq. 8): logsumexp_i(log w_i) - log k; chunks of z samples.
        With labels y: the bound on log p(x|y), w_i = p(x|z_i, y) p(z_i) / q(z_i|x, y)."""
        mu, logvar = self.encode(x, y)
        std = torch.exp(0.5 * logvar)
        log_w = []
        per = max(1, chunk // len(x))  # samples per chunk, so that per * B decoder calls fit in memory
        for i in range(0, k, per):
            eps = gaussian((min(per, k - i), *mu.shape), generator, mu.device, mu.dtype)  # [k', B, *latent_shape]
            z = mu + std * eps
            log_pz = self.sum_latent(-0.5 * z ** 2 - 0.5 * LOG_2PI)  # log N(z; 0, I)
            log_qz = self.sum_latent(-0.5 * eps ** 2 - 0.5 * LOG_2PI) - self.sum_latent(std.log())  # log N(z; mu, sigma^2)
            log_w.append(self.log_px_given_z(x, z, y) + log_pz - log_qz)  # [k', B]
        return torch.logsumexp(torch.cat(log_w), 0) - math.log(k)

    def log_joint(self, x: torch.Tensor, k: int, chunk: int = 4096,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """CVAE: L_k(x, y) + log p(y) for every class y -> [B, C], a bound on log p(x, y) per class."""
        labels = torch.arange(self.num_classes, device=x.device)
        return torch.stack([self.iwae(x, k, chunk, generator, y=c.expand(len(x))) for c in labels], 1) + self.log_py

    def log_posterior(self, x: torch.Tensor, k: int, chunk: int = 4096,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The CVAE as a generative classifier, Bayes' rule with L_k in place of log p(x|y) -> log p(y|x) [B, C]:
            log p(y|x) = log p(x|y) + log p(y) - log sum_y' p(x|y') p(y')."""
        log_pxy = self.log_joint(x, k, chunk, generator)
        return log_pxy - torch.logsumexp(log_pxy, 1, keepdim=True)

    def _check_y(self, y: torch.Tensor) -> torch.Tensor:
        if not self.num_classes:
            raise ValueError("this VAE is unconditional (trained without --cond): y must be None")
        return y

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = False,
               batch: int = 1000, y: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling z ~ p(z), x ~ p(x|z) (CVAE: x ~ p(x|z, y), labels y [n]). Images: the decoder mean
        E[x|z] is returned (the usual VAE picture; sampled pixels would be salt-and-pepper noise). Points:
        x = mu + sigma * eps (the model's density), or the decoder mean with `mean`. All noise is drawn first
        (z [n, L], then eps [n, d]), so `batch`, the decoder calls per chunk, does not change the draws."""
        dev = self.shift.device
        z = gaussian((n, *self.latent_shape), generator, dev)  # z ~ N(0, I)
        ys = [None] * len(z.split(batch)) if y is None else y.to(dev).split(batch)
        if mean or self.likelihood != "gaussian":
            return torch.cat([self.mean(zb, yb) for zb, yb in zip(z.split(batch), ys)])
        mu, log_sigma = torch.cat([self.decode(zb, yb) for zb, yb in zip(z.split(batch), ys)]).chunk(2, -1)  # [n, d]
        sigma = log_sigma.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()  # the density's floor; the cap keeps sigma finite in float32
        u = mu + sigma * gaussian(mu.shape, generator, dev)  # u ~ N(mu, sigma^2)
        return u * self.scale + self.shift


def _width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def with_label(net: nn.Sequential, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """net(h) with the label embedding e [B, width] added to the first layer's output (broadcast over H, W): for a
    dense first layer that is exactly the one-hot label concatenated to its input, W [h; onehot(y)] = W_h h + W_y[:, y],
    as Sohn et al. feed y to both networks; for a first convolution, a constant label channel up to the zero padding."""
    a = net[0](h)
    return net[1:](a + e.view(*e.shape, *[1] * (a.dim() - 2)))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag e^logvar) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)   (K&W Appendix B)."""
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)


def discretized_logistic_logp(x: torch.Tensor, mean: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """log P(k) per pixel, x = k / 127.5 - 1: the logistic mass of the bin [x - 1/255, x + 1/255], the end bins stretched
    to -inf and +inf so the 256 masses sum to 1 (Salimans et al. eq. 2). With a = (x + 1/255 - mean) / s and
    b = (x - 1/255 - mean) / s: log(sig(a) - sig(b)) = log sig(a) + log sig(-b) + log(1 - e^(b - a)), stable for any a, b."""
    inv_s = torch.exp(-log_s.clamp(max=LOG_SCALE_MAX))  # above ~84 the bin's mass underflows float32 and its gradient is NaN
    a = (x + 1 / 255 - mean) * inv_s
    b = (x - 1 / 255 - mean) * inv_s
    mid = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(b - a))
    return torch.where(x < -0.999, F.logsigmoid(a), torch.where(x > 0.999, F.logsigmoid(-b), mid))


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Burda et al. Sec. 5.2: number of dims j with Cov_x(E_q(z|x)[z_j]) > 0.01; mu [N, L] = encoder means."""
    return int((mu.var(0) > threshold).sum())


def bits_per_dim(log_p_y: torch.Tensor, dims: int) -> torch.Tensor:
    """bpd = (-log p(y) + D log 256) / (D log 2) for a density on [0, 1]^D of y = (k + u) / 256 (same as flow.py)."""
    return (-log_p_y + dims * math.log(256)) / (dims * math.log(2))


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarization of images in [-1, 1]: pixel ~ Bernoulli((x + 1) / 2), returned in {-1, 1}."""
    return 2 * torch.bernoulli((x + 1) / 2, generator=generator) - 1


# ----------------------------------------------------------------------------------------------------- the surface
def labels_for(n: int, num_classes: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The labels of n samples on the CPU: y an int (n copies) or [n] ids in 0..C-1; None on a conditional model:
    y ~ U{0..C-1} from `generator` (drawn before any other noise); None on an unconditional one: None."""
    if y is None:
        return torch.randint(num_classes, (n,), generator=generator,
                             device=generator.device if generator is not None else "cpu").cpu() if num_classes else None
    if not num_classes:
        raise ValueError("vae.py's VAE is unconditional (trained without --cond): y must be None")
    y = torch.as_tensor(y, dtype=torch.long).cpu()
    y = y.expand(n) if y.dim() == 0 else y
    if y.shape != (n,) or not bool(((y >= 0) & (y < num_classes)).all()):
        raise ValueError(f"y must be one label or {n} labels in 0..{num_classes - 1}, got {y.tolist()[:8]}")
    return y


@torch.no_grad()
def generate(model: VAE, n: int, *, generator: torch.Generator | None = None, y=None, mean: bool = False,
             batch: int = 1000) -> torch.Tensor:
    """n samples in data space on the CPU: x ~ p(x|z), z ~ N(0, I) for points (`mean`: E[x|z] instead); E[x|z] in
    [-1, 1] for images. CVAE: x ~ p(x|z, y) for labels y (`labels_for`; None: y ~ U, drawn first). One generator
    runs through; the decoder sees `batch` latents at a time."""
    y = labels_for(n, model.num_classes, y, generator)
    return model.sample(n, generator, mean, batch, y).cpu()


@torch.no_grad()
def likelihood(model: VAE, x: torch.Tensor, *, k: int = 1000, seed: int = 0, y: torch.Tensor | None = None) -> dict:
    """-IWAE_k on test data x in data space; kind "bound" (L_k <= log p(x): the NLL is an upper bound). CVAE: with
    labels y [N], the bound on -log p(x|y); without, on -log p(x) = -log sum_y p(x|y) p(y) (logsumexp over the
    classes of L_k(x, y) + log p(y), a bound as well: each L_k(x, y) is one in expectation). Points:
    {"nll_nats"}; logistic decoder: {"nll_bpd"} (the protocol shared with flow.py: log p(y) = log P(k) + D log 256);
    Bernoulli: {"nll_nats"} of x binarized once with `seed` (binary data, NOT comparable with bits/dim). Extra keys:
    iwae_nats and elbo_nats (mean L_k and ELBO in nats per example), elbo_bpd (logistic), k, n, per_example (the
    bound per example [N], in the unit of the mean). The binarization and
    the z samples come from two generators seeded with `seed`; examples go through in chunks of about 4096 / k."""
    dev = model.shift.device
    if model.likelihood == "bernoulli":  # the fixed binarization of the test digits
        x = binarize(x, torch.Generator(x.device).manual_seed(seed))
    g = torch.Generator(dev).manual_seed(seed)
    chunk = 1 << 16 if model.likelihood == "gaussian" else 4096  # decoder evaluations per chunk
    iw, el = [], []
    per = max(1, chunk // k)
    for i, xb in enumerate(x.split(per)):
        xb = xb.to(dev)
        if model.num_classes and y is None:  # the marginal: classes enumerated
            iw.append(torch.logsumexp(model.log_joint(xb, k, chunk, g), 1).cpu())
            el.append(torch.logsumexp(model.log_joint(xb, 1, chunk, g), 1).cpu())
            continue
        yb = None if y is None else y[i * per:(i + 1) * per].to(dev)
        iw.append(model.iwae(xb, k, chunk, g, y=yb).cpu())  # L_k per example [B]
        el.append(model.elbo(xb, g, y=yb).cpu())  # ELBO = L_1 per example [B]
    iw, el = torch.cat(iw), torch.cat(el)
    res = dict(kind="bound", k=k, n=len(x), iwae_nats=float(iw.mean()), elbo_nats=float(el.mean()))
    if model.likelihood == "logistic":
        D = math.prod(model.shape)
        res["per_example"] = bits_per_dim(iw + D * math.log(256), D)  # [N], the anomaly score of bench.py
        res["nll_bpd"] = float(res["per_example"].mean())
        res["elbo_bpd"] = float(bits_per_dim(el + D * math.log(256), D).mean())  # -ELBO in bits/dim
    else:
        res["nll_nats"], res["per_example"] = -res["iwae_nats"], -iw
    return res


# ----------------------------------------------------------------------------------------------------- commands
import typer  # noqa: E402  (the lower part of the file: CLI, data and training plumbing)

import data as datasets  # noqa: E402
import training  # noqa: E402

app = training.App(help="Variational autoencoder: ELBO training, IWAE likelihood, samples, reconstructions, interpolation.")
Opt = typer.Option
# The latent's shape, declared once (vae.py's train and ldm.py's stage 1 both take them)
Latent = Annotated[str, Opt(help="images: flat (z [L], --latent-dim) or spatial (z [C_z, H/f, W/f], latent "
                                 "diffusion's autoencoder: --factor, --latent-channels)")]
Factor = Annotated[int, Opt(help="spatial latent: downsampling factor f, a power of 2 (4: 28x28 -> 7x7, 2: -> 14x14)")]
LatentChannels = Annotated[int, Opt(help="spatial latent: channels C_z of z")]


def load(path: str | Path, device: str = "cpu") -> VAE:
    """Rebuild the VAE from ckpt["config"] and load its EMA weights; eval mode."""
    ckpt = training.load_checkpoint(path, "vae")
    model = VAE(**ckpt["config"]["model"])
    model.load_state_dict(training.ema_state(ckpt))
    return model.to(device).eval()


def _model_input(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """What the decoder models: binarized images for the Bernoulli decoder, the data itself otherwise."""
    return binarize(x, generator) if model.likelihood == "bernoulli" else x


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: moons, grid25, ring8, checkerboard, swissroll, mnist5k, mnist, fashion, cifar10")] = "mnist5k",
    likelihood: Annotated[str, Opt(help="image decoder: bernoulli (binarized pixels, nats) or logistic (8-bit pixels, bits/dim comparable with flow.py); points: Gaussian")] = "bernoulli",
    latent_dim: Annotated[int, Opt(min=1, help="dimension of z")] = 16,
    latent: Latent = "flat",
    factor: Factor = 4,
    latent_channels: LatentChannels = 4,
    hidden: Annotated[int, Opt(min=2, help="MLP width (points) or conv channels (images)")] = 64,
    beta: Annotated[float, Opt(min=0.0, help="KL weight (1 = the ELBO; beta-VAE otherwise)")] = 1.0,
    kl_warmup: Annotated[int, Opt(min=0, help="steps over which the KL weight rises linearly from 0 to --beta")] = 1000,
    cond: Annotated[bool, Opt("--cond/--no-cond", help="conditional VAE on the data's labels: q(z|x, y), p(x|z, y) "
                                                        "(Sohn et al. 2015); then sample --label K")] = False,
    steps: Annotated[int, Opt(help="optimizer steps")] = 5000,
    batch_size: Annotated[int, Opt(help="examples per step")] = 128,
    lr: Annotated[float, Opt(help="AdamW learning rate")] = 1e-3,
    ema_decay: Annotated[float, Opt(help="EMA decay of the weights used to sample")] = 0.995,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    device: training.Device = "auto",
    seed: training.Seed = 0,
    out: Annotated[str, Opt(help="output folder (default runs/vae-<data>)")] = "",
    resume: training.Resume = False,
) -> Path:
    """Maximize the ELBO (beta-weighted KL) with one reparameterized sample per example."""
    config = dict(locals())
    training.check(likelihood in LIKELIHOODS, f"--likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    training.check(latent_dim >= 1 and hidden >= 2, "--latent-dim must be >= 1 and --hidden >= 2")
    training.check(beta >= 0 and math.isfinite(beta), f"--beta must be a finite number >= 0, got {beta}")
    training.check(kl_warmup >= 0, f"--kl-warmup must be >= 0, got {kl_warmup}")
    ds = datasets.load(data, "train")
    lik = "gaussian" if ds.kind == "points" else likelihood
    training.check(latent in LATENTS, f"--latent must be one of {', '.join(LATENTS)}, got {latent!r}")
    training.check(latent == "flat" or lik != "gaussian", "--latent spatial needs images; points use a flat z")
    training.check(factor >= 2 and factor & (factor - 1) == 0 and latent_channels >= 1,
                   f"--factor must be a power of 2 >= 2 and --latent-channels >= 1, got {factor}, {latent_channels}")
    f = factor if latent == "spatial" else 4
    training.check(lik == "gaussian" or (ds.shape[1] % f == 0 and ds.shape[2] % f == 0),
                   f"image height and width must be divisible by {f}, got {ds.shape}")
    training.check(not cond or (ds.y is not None and ds.num_classes > 1), f"--cond needs a labelled dataset; {data} has none")
    config["model"] = dict(shape=list(ds.shape), latent_dim=latent_dim, hidden=hidden, likelihood=lik)
    if latent == "spatial":
        config["model"].update(latent=latent, factor=factor, latent_channels=latent_channels)
    if cond:  # the label count travels in the checkpoint's model config (absent: 0, an unconditional VAE)
        config["model"]["num_classes"] = ds.num_classes
    training.seed_everything(seed)  # the initial weights depend on --seed alone
    model = VAE(**config["model"])
    if lik == "gaussian":  # standardize points inside the model (buffers travel with the checkpoint)
        model.shift.copy_(ds.x.mean(0))
        model.scale.copy_(ds.x.std(0))
    if cond:  # p(y): the training set's class frequencies (the generative classifier's prior)
        model.log_py.copy_(torch.bincount(ds.y, minlength=ds.num_classes).float().div(len(ds)).log())
    tr = training.Trainer("vae", config, {"model": model}, ds, steps=steps, batch_size=batch_size, lr=lr,
                          out=out or f"runs/vae-{data}", device=device, seed=seed, resume=resume,
                          ema_decay=ema_decay, betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip)
    g = torch.Generator().manual_seed(seed)
    probe = torch.randperm(len(ds), generator=g)[:1000]
    x_probe = _model_input(model, ds.x[probe], g).to(tr.dev)  # for active units
    y_probe = ds.y[probe].to(tr.dev) if cond else None
    dims = math.prod(ds.shape)
    for step, (x, y) in tr:
        x = _model_input(model, x)  # Bernoulli: dynamic binarization, a fresh binary image every step
        with tr.autocast():
            log_px_z, kl = tr.models["model"](x, y=y if cond else None)  # CVAE: the bound on log p(x|y)
        beta_t = beta * min(1.0, (step + 1) / kl_warmup) if kl_warmup else beta  # KL warm-up (Sonderby et al. 2016)
        loss = -(log_px_z - beta_t * kl).mean()  # -ELBO_beta, nats per example
        log_px_z, kl = log_px_z.float(), kl.float()
        metrics = dict(elbo=float((log_px_z - kl).detach().mean()), kl=float(kl.detach().mean()), beta=beta_t)
        if lik == "logistic":
            metrics["elbo_bpd"] = float(bits_per_dim((log_px_z - kl).detach().mean() + dims * math.log(256), dims))
        if step % 100 == 0 or step + 1 == steps:
            with torch.no_grad():
                metrics["active_units"] = active_units(
                    training.unwrap(tr.models["model"]).encode(x_probe, y_probe)[0].flatten(1))
        tr.step(loss, **metrics)
    sorted_labels = (lambda n: torch.arange(n) * ds.num_classes // n) if cond else (lambda n: None)  # class by class
    return tr.finish(lambda n: generate(tr.sampling_model(), n, y=sorted_labels(n)), reference=ds.x[:2000])


@app.command()
def sample(
    ckpt: Annotated[str, Opt(help="checkpoint")] = "runs/vae-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    out: Annotated[str, Opt(help=".png (grid or scatter) or .npz (raw samples under key x, data space); default "
                                 "<ckpt folder>/sample.png")] = "",
    mean: Annotated[bool, Opt(help="points: the decoder mean instead of a draw x ~ p(x|z) (images always show the "
                                   "mean)")] = False,
    label: Annotated[int | None, Opt(help="CVAE: the digit / class to draw (default: the classes in turn); needs a "
                                           "model trained with --cond")] = None,
    seed: training.Seed = 0,
    device: training.Device = "auto",
) -> Path:
    """z ~ N(0, I), x ~ p(x|z) (points) or x = E[x|z] (images); CVAE: given the label y."""
    training.check(n > 0, f"--n must be positive, got {n}")
    path = datasets.samples_path(out, Path(ckpt).parent / "sample.png")
    model = load(ckpt, str(training.device(device)))
    C = model.num_classes
    training.check(label is None or C > 0, "--label needs a model trained with --cond; this one is unconditional")
    training.check(label is None or 0 <= label < C, f"--label must be in 0..{C - 1}, got {label}")
    y = (torch.full((n,), label) if label is not None else torch.arange(n) * C // n) if C else None
    x = generate(model, n, generator=torch.Generator().manual_seed(seed), mean=mean, y=y)
    ref = _test_data(model, ckpt)[:2000] if model.likelihood == "gaussian" else None
    if y is not None and training.load_checkpoint(ckpt, "vae")["config"]["data"] in ("mnist5k", "mnist"):
        import fid  # how often fid.py's MNIST classifier sees the digit that was asked for

        print(f"label accuracy (fid.classify): {float((fid.classify(x).argmax(1) == y).float().mean()):.4f} "
              f"on {n} samples")
    return datasets.write_samples(x, path, reference=ref)


def _test_data(model: VAE, ckpt: str) -> torch.Tensor:
    return datasets.load(training.load_checkpoint(ckpt, "vae")["config"]["data"], "test").x


@app.command()
def reconstruct(
    ckpt: Annotated[str, Opt(help="checkpoint")] = "runs/vae-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of test examples")] = 32,
    out: Annotated[str, Opt(help="PNG: each original beside its reconstruction, the decoder mean at z = mu(x)")] = "vae_reconstruct.png",
    seed: Annotated[int, Opt(help="random seed (which test examples; binarization)")] = 0,
) -> Path:
    """Originals (as the model sees them: binarized for Bernoulli) beside their reconstructions."""
    training.check(n > 0, f"--n must be positive, got {n}")
    training.check(out.endswith(".png"), f"--out must end in .png, got {out!r}")
    model = load(ckpt)
    g = torch.Generator().manual_seed(seed)
    x_all = _test_data(model, ckpt)
    x = _model_input(model, x_all[torch.randperm(len(x_all), generator=g)[:n]], g)
    with torch.no_grad():
        x_rec = model.mean(model.encode(x)[0])
    if model.likelihood == "gaussian":  # points: reconstructions over the originals (grey)
        return datasets.write_samples(x_rec, out, reference=x)
    pairs = torch.stack([x, x_rec], 1).flatten(0, 1)  # [2n, C, H, W]: original, reconstruction, original, ...
    return datasets.write_samples(pairs, out, nrow=8)


@app.command()
def interpolate(
    ckpt: Annotated[str, Opt(help="checkpoint")] = "runs/vae-mnist5k/ckpt.pt",
    pairs: Annotated[int, Opt(help="number of (start, end) test pairs, one row each")] = 8,
    steps: Annotated[int, Opt(help="decoded points between the two ends")] = 8,
    out: Annotated[str, Opt(help="PNG grid: row = x_a, the decoder means at z_t = (1-t) mu(x_a) + t mu(x_b), x_b")] = "vae_interpolate.png",
    seed: Annotated[int, Opt(help="random seed (which test pairs)")] = 0,
) -> Path:
    """Walk the latent space on straight lines between the posterior means of two test inputs."""
    training.check(pairs > 0 and steps > 0, f"--pairs and --steps must be positive, got {pairs}, {steps}")
    training.check(out.endswith(".png"), f"--out must end in .png, got {out!r}")
    model = load(ckpt)
    g = torch.Generator().manual_seed(seed)
    x_all = _test_data(model, ckpt)
    x = _model_input(model, x_all[torch.randperm(len(x_all), generator=g)[:2 * pairs]], g)
    x_a, x_b = x[:pairs], x[pairs:2 * pairs]
    with torch.no_grad():
        z_a, z_b = model.encode(x_a)[0], model.encode(x_b)[0]  # [P, *latent_shape]
        t = torch.linspace(0, 1, steps).view(-1, 1, *[1] * len(model.latent_shape))  # [T, 1, 1(, 1, 1)]
        x_t = model.mean((1 - t) * z_a + t * z_b)  # [T, P, ...]
    if model.likelihood == "gaussian":
        return datasets.write_samples(x_t.flatten(0, 1), out, reference=_test_data(model, ckpt)[:2000])
    rows = torch.cat([x_a[None], x_t, x_b[None]]).transpose(0, 1).flatten(0, 1)  # [P * (T + 2), C, H, W]
    return datasets.write_samples(rows, out, nrow=steps + 2)


@app.command()
def classify(
    ckpt: Annotated[str, Opt(help="checkpoint of a CVAE (train --cond)")] = "runs/vae-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="test examples, a random subset (0 = the whole test split)")] = 0,
    k: Annotated[int, Opt(help="importance samples of the IWAE bound of each log p(x|y)")] = 100,
    seed: Annotated[int, Opt(help="random seed (subset, binarization, z samples)")] = 0,
    device: training.Device = "cpu",
) -> dict:
    """The CVAE as a generative classifier: argmax_y L_k(x, y) + log p(y) on test data (Bayes' rule)."""
    training.check(k > 0 and n >= 0, f"--k must be positive and --n >= 0, got {k}, {n}")
    model = load(ckpt, str(training.device(device)))
    training.check(model.num_classes > 0, f"{ckpt} is an unconditional VAE; classify needs one trained with --cond")
    name = training.load_checkpoint(ckpt, "vae")["config"]["data"]
    return bayes_accuracy(lambda xb, g: model.log_posterior(xb, k, generator=g), _model_input, model, name, n, seed,
                          f"CVAE + Bayes' rule, IWAE-{k} bound of log p(x|y)")


def bayes_accuracy(log_posterior, model_input, model, name: str, n: int, seed: int, what: str) -> dict:
    """Accuracy of argmax_y log p(y|x) on n test examples (a seeded subset), beside fid.py's classifier's on the same
    images (MNIST-like data)."""
    ds = datasets.load(name, "test")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n] if n else torch.arange(len(ds))
    x, y = ds.x[idx], ds.y[idx]
    dev = next(model.buffers()).device
    g_dev = torch.Generator(dev).manual_seed(seed)
    with torch.no_grad():
        pred = torch.cat([log_posterior(model_input(model, xb, g).to(dev), g_dev).argmax(1).cpu()
                          for xb in x.split(100)])
    res = dict(model="vae", data=name, n=len(x), accuracy=float((pred == y).float().mean()))
    line = f"{what}: test accuracy {100 * res['accuracy']:.2f}% on {len(x)} {name} test examples"
    if name in ("mnist5k", "mnist"):
        import fid

        res["fid_classifier_accuracy"] = float((fid.classify(x).argmax(1) == y).float().mean())
        line += f" (fid.py's discriminative classifier: {100 * res['fid_classifier_accuracy']:.2f}% on the same)"
    print(line)
    return res


@app.command()
def nll(
    ckpt: Annotated[str, Opt(help="checkpoint")] = "runs/vae-mnist5k/ckpt.pt",
    k: Annotated[int, Opt(help="importance samples of the IWAE bound")] = 1000,
    n: Annotated[int, Opt(help="test examples to use (0 = the whole test split)")] = 0,
    seed: Annotated[int, Opt(help="random seed (samples; the fixed test binarization)")] = 0,
    device: training.Device = "cpu",
) -> dict:
    """-IWAE_k (and -ELBO) on the test split: nats (points, binarized images) or bits/dim (logistic decoder)."""
    training.check(k > 0 and n >= 0, f"--k must be positive and --n >= 0, got {k}, {n}")
    model = load(ckpt, str(training.device(device)))
    x = _test_data(model, ckpt)
    r = likelihood(model, x[:n] if n else x, k=k, seed=seed)
    res = dict(model="vae", data=training.load_checkpoint(ckpt, "vae")["config"]["data"], k=k, n=r["n"],
               likelihood=model.likelihood, nll_nats=-r["iwae_nats"], elbo_nats=r["elbo_nats"])
    if model.likelihood == "logistic":
        res["nll_bpd"] = r["nll_bpd"]
        print(f"IWAE-{k} NLL {res['nll_bpd']:.4f} bits/dim ({res['nll_nats']:.2f} nats; -ELBO "
              f"{r['elbo_bpd']:.4f} bits/dim) on {r['n']} test images")
    else:
        what = "test points" if model.likelihood == "gaussian" else \
            "test images binarized (seed fixed); NOT comparable with 8-bit bits/dim"
        print(f"IWAE-{k} NLL {res['nll_nats']:.4f} nats (-ELBO {-res['elbo_nats']:.4f}) on {r['n']} {what}")
    return res


# How bench.py trains, samples and scores this file (data, read by bench; the numbers of its earlier adapters).
BENCH = {
    "claim": "good likelihood, blurry samples",
    "kinds": ("points", "images"),
    "options": {"points": {}, "images": {"likelihood": "logistic"}},  # logistic: bits/dim comparable with flow.py's
    "defaults": {"images": {"likelihood": "logistic"}},  # bench --defaults: the README's `train --likelihood logistic`
    "quick": {"points": {"hidden": 16, "latent_dim": 4},
              "images": {"hidden": 16, "latent_dim": 4, "likelihood": "logistic"}},
    "settings": {"points": [{"sampler": "decoder"}], "images": [{"sampler": "decoder"}]},
    "quick_settings": {"points": [{"sampler": "decoder"}], "images": [{"sampler": "decoder"}]},
    "likelihood": {"points": {"n": 1000, "k": 1000, "seed": 0}, "images": {"n": 200, "k": 100, "seed": 0}},
    "quick_likelihood": {"points": {"n": 200, "k": 50, "seed": 0}, "images": {"n": 200, "k": 50, "seed": 0}},
    "network": "decode",  # one decoder call per sample (the method: a CVAE runs its layers with the label between)
    "batch": 10_000,  # one generate call: it draws all noise first and decodes 1000 at a time
    # the conditional suite: the CVAE (train --cond), and its generative classifier (the classify command)
    "conditional_options": {"cond": True},
    "conditional": [{"sampler": "decoder"}],
    "classifier": {"n": 1000, "k": 50},
    "quick_classifier": {"n": 20, "k": 2},
}


if __name__ == "__main__":
    app()
