"""DDPM: denoising diffusion probabilistic models, with fast samplers and the variational bound.

What it optimizes (Ho et al. 2020, https://arxiv.org/abs/2006.11239): the forward process adds Gaussian noise,
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)  (eq. 4); a network eps_theta(x_t, t) learns to predict
that noise with L_simple = E ||eps - eps_theta(x_t, t)||^2 (eq. 14), a reweighted variational bound. Here the loss may
be weighted by min-SNR-gamma (Hang et al. 2023, https://arxiv.org/abs/2303.09556) and the network may predict
v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 instead (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512).

Algorithm -> function:
    forward process q(x_t | x_0), eq. 4             -> DDPM.q_sample
    posterior q(x_{t-1} | x_t, x_0), eqs. 6-7       -> posterior
    Algorithm 1 (training)                          -> DDPM.loss
    Algorithm 2 (ancestral sampling)                -> sample(..., sampler="ddpm")
    DDIM, eq. 12 of Song et al. 2020 (any eta)      -> sample(..., sampler="ddim");  inversion -> ddim_invert
    DPM-Solver++(2M), Alg. 2 of Lu et al. 2022      -> sample(..., sampler="dpm++2m")
    variational bound L_vlb, eq. 5 (bits/dim)       -> DDPM.vlb (prior L_T: prior_kl; L_0: decoder_nll, eq. 13;
                                                       nats -> bits/dim: bits_per_dim)
Schedules: linear (Ho et al.) and cosine (Nichol & Dhariwal 2021, https://arxiv.org/abs/2102.09672, eq. 17).

Commands:
    python ddpm.py train                                  # mnist5k, 8 min 45 s on 2 CPU cores -> runs/ddpm-mnist5k/
    python ddpm.py sample --sampler dpm++2m --steps 20    # -> runs/ddpm-mnist5k/samples-dpm++2m-20.png
    python ddpm.py nll                                    # variational bound in bits/dim on the test split
    python ddpm.py invert                                 # DDIM inversion x_0 -> x_T -> x_0
    python ddpm.py train --data grid25 --steps 20000 --batch-size 256 --lr 1e-3 --min-snr 0  # 2-D toy, MLP
    torchrun --nproc_per_node=2 ddpm.py train             # DDP (gloo on CPU, NCCL on GPU)
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------- schedules
def make_betas(schedule: str, T: int) -> np.ndarray:
    """beta_1..beta_T in float64. linear: Ho et al. (1e-4 -> 0.02, rescaled to T); cosine: Nichol & Dhariwal eq. 17."""
    if schedule == "linear":
        scale = 1000 / T  # keeps alpha_bar_T similar for any T (Nichol & Dhariwal sec. 3.2); clipped for tiny T
        return np.clip(np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64), 0, 0.999)
    if schedule == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2) ** 2
        alpha_bar = f / f[0]
        return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)  # beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}
    raise ValueError(f"unknown schedule {schedule!r}; use linear or cosine")


def prior_kl(x_0, alpha_bar_T):
    """The prior term L_T = KL(q(x_T | x_0) || N(0, I)) of eq. 5, summed over dims, per example. With
    q(x_T | x_0) = N(m, v I), m = sqrt(alpha_bar_T) x_0, v = 1 - alpha_bar_T (eq. 4), each dim contributes
    KL(N(m, v) || N(0, 1)) = (m^2 + v - 1 - log v) / 2, and v - 1 - log v = -alpha_bar_T - log1p(-alpha_bar_T)
    (written so to keep its digits when alpha_bar_T ~ 0: it is ~ alpha_bar_T^2 / 2)."""
    m2 = alpha_bar_T * x_0 ** 2  # m^2
    return 0.5 * (m2.flatten(1).sum(1) + x_0[0].numel() * (-alpha_bar_T - torch.log1p(-alpha_bar_T)))


def bits_per_dim(nats, D: int):
    """-log p(x) per example in nats -> bits per dimension: nats / (D ln 2). No dequantization offset is added: the
    discretized decoder L_0 (decoder_nll) already puts a probability mass, not a density, on each 8-bit value."""
    return nats / (D * math.log(2))


def posterior(alpha_bar_t, alpha_bar_s, x_t, x_0):
    """q(x_s | x_t, x_0) for s < t (eqs. 6-7, for any pair of steps): returns mean and variance."""
    beta = 1 - alpha_bar_t / alpha_bar_s  # the effective beta of the jump s -> t
    var = (1 - alpha_bar_s) / (1 - alpha_bar_t) * beta  # beta_tilde
    mean = (alpha_bar_s.sqrt() * beta / (1 - alpha_bar_t)) * x_0 \
        + ((1 - beta).sqrt() * (1 - alpha_bar_s) / (1 - alpha_bar_t)) * x_t
    return mean, var


# ----------------------------------------------------------------------------------------------------- networks
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps [B] -> [B, dim] (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class Embed(nn.Module):
    """Time embedding, plus an optional class embedding (num_classes + 1 rows: the last is the "null" label of cfg.py)."""

    def __init__(self, dim: int, num_classes: int = 0):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))
        self.label = nn.Embedding(num_classes + 1, 4 * dim) if num_classes else None

    def forward(self, t, y=None):
        emb = self.mlp(timestep_embedding(t, self.dim))
        if self.label is not None:
            y = torch.full_like(t, self.label.num_embeddings - 1) if y is None else y  # no label -> null label
            emb = emb + self.label(y)
        return emb


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # [B, C] -> [B, C, 1, 1]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the H*W positions (used at the lowest resolution only)."""

    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.heads, self.norm = heads, nn.GroupNorm(8, c)
        self.qkv, self.proj = nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """eps_theta(x_t, t[, y]) for images: one residual block per level, GroupNorm, sinusoidal time embedding,
    self-attention at the lowest resolution. 28x28 with ch_mult (1, 2, 2) runs at 28 -> 14 -> 7."""

    def __init__(self, in_ch: int = 1, ch: int = 32, ch_mult: tuple[int, ...] = (1, 2, 2), attn: bool = True,
                 num_classes: int = 0, dropout: float = 0.0, patch: int = 1):
        super().__init__()
        self.embed = Embed(ch, num_classes)
        E = 4 * ch
        # patch > 1: a cheap full-resolution stem. Pixel-unshuffle p x p patches into channels, run the UNet at
        # H/p, and pixel-shuffle back (a departure from Ho et al.'s UNet, which runs its first level at full size).
        self.patch = patch
        in_ch = in_ch * patch * patch
        self.stem = nn.Conv2d(in_ch, ch, 3, padding=1)
        chans = [ch * m for m in ch_mult]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = ch
        for i, co in enumerate(chans):
            self.down.append(ResBlock(c, co, E, dropout))
            self.downsample.append(nn.Conv2d(co, co, 3, stride=2, padding=1) if i < len(chans) - 1 else nn.Identity())
            c = co
        self.mid1, self.mid2 = ResBlock(c, c, E, dropout), ResBlock(c, c, E, dropout)
        self.attn = Attention(c) if attn else nn.Identity()
        self.up = nn.ModuleList()
        for co in reversed(chans):
            self.up.append(ResBlock(c + co, co, E, dropout))  # input: upsampled features + the skip of this level
            c = co
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, in_ch, 3, padding=1))

    def forward(self, x, t, y=None):
        emb = self.embed(t, y)
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)  # [B, C, H, W] -> [B, C p^2, H/p, W/p]
        h, skips = self.stem(x), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1), emb)
        h = self.out(h)
        return F.pixel_shuffle(h, self.patch) if self.patch > 1 else h  # back to [B, C, H, W]


class MLP(nn.Module):
    """eps_theta(x_t, t[, y]) for points [B, D]: residual MLP with the time embedding added to every block."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, num_classes: int = 0):
        super().__init__()
        self.embed = Embed(hidden // 4, num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, t, y=None):
        emb, h = self.embed(t, y), self.inp(x)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)


# ----------------------------------------------------------------------------------------------------- the model
class DDPM(nn.Module):
    """A noise predictor plus its schedule. Works in a normalized space x = (data - shift) / scale (identity for
    images in [-1, 1]; the train set's mean and std for points, so one set of hyperparameters fits every toy)."""

    def __init__(self, net: nn.Module, T: int = 1000, schedule: str | np.ndarray = "linear", prediction: str = "eps",
                 min_snr: float = 0.0, shift=0.0, scale=1.0):
        """`schedule`: linear or cosine (make_betas), or the betas beta_1..beta_T themselves (length T)."""
        super().__init__()
        self.net, self.T, self.prediction, self.min_snr = net, T, prediction, min_snr
        betas = make_betas(schedule, T) if isinstance(schedule, str) else np.asarray(schedule, dtype=np.float64)
        if betas.shape != (T,):
            raise ValueError(f"need {T} betas, got shape {betas.shape}")
        alpha_bar = np.cumprod(1 - betas)
        # float64 copies (plain arrays: no dtype cast, EMA or DDP touches them) for the bound and the samplers; the
        # float32 buffers serve the network's side (q_sample, loss, eps), where training needs no more digits
        self.betas_np, self.alpha_bar_np = betas, alpha_bar
        self.register_buffer("betas", torch.tensor(betas, dtype=torch.float32))
        self.register_buffer("alpha_bar", torch.tensor(alpha_bar, dtype=torch.float32))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    @property
    def betas64(self) -> torch.Tensor:
        return torch.from_numpy(self.betas_np).to(self.alpha_bar.device)

    @property
    def alpha_bar64(self) -> torch.Tensor:
        """alpha_bar in float64 on the model's device: pass it to `sample` (1 - alpha_bar loses digits in float32)."""
        return torch.from_numpy(self.alpha_bar_np).to(self.alpha_bar.device)

    def normalize(self, x):
        return (x - self.shift) / self.scale

    def denormalize(self, x):
        return x * self.scale + self.shift

    def q_sample(self, x_0, t, eps):
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (eq. 4 reparameterized)."""
        ab = self.alpha_bar[t].view(-1, *[1] * (x_0.dim() - 1))
        return ab.sqrt() * x_0 + (1 - ab).sqrt() * eps

    def eps(self, x_t, t, y=None):
        """The predicted noise, whatever the network's target (eps_fn of `sample`)."""
        out = self.net(x_t, t, y)
        if self.prediction == "v":  # v = sqrt(ab) eps - sqrt(1-ab) x_0  =>  eps = sqrt(ab) v + sqrt(1-ab) x_t
            ab = self.alpha_bar[t].view(-1, *[1] * (x_t.dim() - 1))
            return ab.sqrt() * out + (1 - ab).sqrt() * x_t
        return out

    def forward(self, x_0, y=None):
        """The training loss (so that DDP and torch.compile wrap the whole step): see `loss`."""
        return self.loss(x_0, y)

    def loss(self, x_0, y=None):
        """Algorithm 1: t ~ U{1..T}, eps ~ N(0, I), regress the target; weighted by min-SNR-gamma when min_snr > 0."""
        t = torch.randint(0, self.T, (x_0.shape[0],), device=x_0.device)
        eps = torch.randn_like(x_0)
        x_t = self.q_sample(x_0, t, eps)
        ab = self.alpha_bar[t]
        if self.prediction == "v":
            ab_ = ab.view(-1, *[1] * (x_0.dim() - 1))
            target = ab_.sqrt() * eps - (1 - ab_).sqrt() * x_0
        else:
            target = eps
        mse = ((self.net(x_t, t, y).float() - target) ** 2).flatten(1).mean(1)
        if self.min_snr > 0:
            snr = ab / (1 - ab)  # SNR(t) = alpha_bar / (1 - alpha_bar)
            # min-SNR-gamma (Hang et al. eq. 7-8) expressed for an eps target: min(SNR, g) / SNR; for v: / (SNR + 1)
            w = snr.clamp(max=self.min_snr) / (snr + 1 if self.prediction == "v" else snr)
            mse = mse * w
        return mse.mean()

    @torch.no_grad()
    def vlb(self, x_0, n_t: int | None = None, discrete: bool = True, generator=None):
        """Variational bound -log p(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0 (eq. 5), per example, in nats.
        p(x_{t-1} | x_t) = N(mu_theta, beta_tilde_t) with mu_theta the posterior mean at x_0 predicted from eps
        (eqs. 7, 11); L_0 is Ho et al.'s discretized Gaussian decoder (eq. 13, 256 bins on [-1, 1]) with variance
        beta_1 when `discrete`, else a continuous Gaussian. Each term uses one x_t ~ q(x_t | x_0); the sum over t > 0
        is exact (n_t None) or estimated from n_t stratified timesteps."""
        B, T = x_0.shape[0], self.T
        betas, ab = self.betas64.to(x_0.device), self.alpha_bar64.to(x_0.device)  # float64 schedule
        x0 = x_0.double()
        L_T = prior_kl(x0, ab[-1])  # prior term L_T = KL(q(x_T | x_0) || N(0, I))
        if n_t is None or n_t >= T - 1:
            ts, weight = list(range(T)), 1.0
        else:  # L_0 exactly, plus an unbiased stratified estimate of sum_{t=1}^{T-1} L_t (one t per stratum)
            edges = torch.linspace(1, T, n_t + 1)
            u = torch.rand(n_t, generator=generator)
            ts, weight = [0] + (edges[:-1] + u * (edges[1:] - edges[:-1])).long().clamp(1, T - 1).tolist(), (T - 1) / n_t
        L = torch.zeros(B, dtype=torch.float64, device=x_0.device)
        for t_ in ts:
            t = torch.full((B,), t_, device=x_0.device, dtype=torch.long)
            eps = torch.randn(x_0.shape, generator=generator).to(x_0.device, torch.float64)
            x_t = ab[t_].sqrt() * x0 + (1 - ab[t_]).sqrt() * eps  # eq. 4, in float64; the network sees x_0's dtype
            eps_hat = self.eps(x_t.to(x_0.dtype), t).double()
            x0_hat = (x_t - (1 - ab[t_]).sqrt() * eps_hat) / ab[t_].sqrt()  # eq. 15
            if t_ == 0:  # L_0 = -log p(x_0 | x_1), decoder mean = x0_hat, std = sqrt(beta_1)
                L = L + decoder_nll(x0, x0_hat, betas[0].sqrt(), discrete)
                continue
            ab_s = ab[t_ - 1]
            mu_q, var = posterior(ab[t_], ab_s, x_t, x0)
            mu_p, _ = posterior(ab[t_], ab_s, x_t, x0_hat)
            L = L + weight * ((mu_q - mu_p) ** 2).flatten(1).sum(1) / (2 * var)  # KL of equal-variance Gaussians
        return L + L_T


def decoder_nll(x_0, mean, std, discrete: bool):
    """-log p(x_0 | x_1) summed over dims. Discrete: Gaussian mass of each 8-bit bin of width 2/255 on [-1, 1], with
    the edge bins extended to +-inf (Ho et al. eq. 13); continuous: Gaussian density."""
    if not discrete:
        return (0.5 * ((x_0 - mean) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    normal = torch.distributions.Normal(mean, std)
    upper = torch.where(x_0 > 0.999, torch.ones_like(x_0), normal.cdf(x_0 + 1 / 255))
    lower = torch.where(x_0 < -0.999, torch.zeros_like(x_0), normal.cdf(x_0 - 1 / 255))
    return -(upper - lower).clamp(min=1e-12).log().flatten(1).sum(1)


# ----------------------------------------------------------------------------------------------------- samplers
SAMPLERS = ("ddpm", "ddim", "dpm++2m")


def ddim_sigma(alpha_bar_t, alpha_bar_s, eta: float):
    """The noise of the DDIM jump t -> s < t, Song et al. 2020 eq. 16:
    sigma_t(eta) = eta * sqrt((1 - ab_s) / (1 - ab_t)) * sqrt(1 - ab_t / ab_s). eta = 1 gives the posterior std
    sqrt(beta_tilde) of q(x_s | x_t, x_0) (ancestral sampling, Algorithm 2); eta = 0 the deterministic DDIM."""
    return eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)).sqrt()


def timesteps(T: int, steps: int, alpha_bar: torch.Tensor | None = None, spacing: str = "lambda") -> list[int]:
    """`steps` decreasing integer timesteps from T-1 down to 0. "uniform": evenly spaced in t; "lambda": evenly
    spaced in log-SNR lambda = log(alpha / sigma) (DPM-Solver's choice for small images, Lu et al. 2022 sec. 5),
    rounded to the nearest step and made strictly decreasing."""
    if steps == 1:
        return [T - 1]
    if spacing == "uniform" or alpha_bar is None:
        return np.round(np.linspace(T - 1, 0, steps)).astype(int).tolist()
    ab = alpha_bar.double().cpu().numpy()
    lam = 0.5 * np.log(ab / (1 - ab))  # increasing as t decreases
    grid = np.linspace(lam[-1], lam[0], steps)
    ts = [int(np.abs(lam - g).argmin()) for g in grid]
    for i in range(1, steps):  # strictly decreasing (several targets may round to the same step)
        ts[i] = min(ts[i], ts[i - 1] - 1)
    for i in range(steps - 1, -1, -1):  # and non-negative, with the last one at 0
        ts[i] = max(ts[i], steps - 1 - i)
    return ts


@torch.no_grad()
def sample(eps_fn: Callable, alpha_bar: torch.Tensor, x_T: torch.Tensor, sampler: str = "ddim", steps: int = 50,
           eta: float = 0.0, generator: torch.Generator | None = None, spacing: str = "lambda",
           x0_clip: float | None = None) -> torch.Tensor:
    """Generate x_0 from x_T ~ N(0, I), calling eps_fn(x_t, t) exactly `steps` times (t: LongTensor [B]).
    ddpm: ancestral sampling (Algorithm 2) with sigma_t^2 = beta_tilde_t over the respaced steps; with steps = T it
          visits every t, and no noise is added at the last step, as in Algorithm 2.
    ddim: Song et al. eq. 12, sigma_t = eta * sqrt((1 - ab_s) / (1 - ab_t)) * sqrt(1 - ab_t / ab_s); eta = 0 is
          deterministic, eta = 1 equals ddpm.
    dpm++2m: DPM-Solver++(2M) in data prediction (Lu et al. 2022, Algorithm 2), first order at the first step and at
          the final jump to t = 0 noise-free (lambda = inf).
    x0_clip clamps the predicted x_0 (images in [-1, 1]); a departure used by Ho et al.'s code, off by default."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    T = alpha_bar.shape[0]
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and {T}, got {steps}")
    ab = alpha_bar.double().to(x_T.device)
    ts = timesteps(T, steps, alpha_bar, "uniform" if steps == T else spacing)
    x = x_T.double()
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts):
        ab_t = ab[t]
        ab_s = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), dtype=torch.float64, device=x.device)  # s: next
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_fn(x.to(x_T.dtype), t_batch).double()
        x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()  # predicted x_0 (eq. 15)
        if x0_clip is not None:
            x0 = x0.clamp(-x0_clip, x0_clip)
            eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        if sampler in ("ddpm", "ddim"):
            e = 1.0 if sampler == "ddpm" else eta
            sigma = ddim_sigma(ab_t, ab_s, e)  # = sqrt(beta_tilde) when e = 1
            # x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps + sigma z   (eq. 12)
            dir_xt = (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() * eps  # "direction pointing to x_t"
            x = ab_s.sqrt() * x0 + dir_xt
            if i + 1 < len(ts) and e > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        else:
            if i + 1 == len(ts):  # final jump to sigma = 0: h = inf, the first-order update returns x0
                x = x0
                break
            lam_t, lam_s = 0.5 * (ab_t / (1 - ab_t)).log(), 0.5 * (ab_s / (1 - ab_s)).log()  # lambda = log(a / s)
            h = lam_s - lam_t
            if x0_prev is None:
                D = x0
            else:  # second-order multistep correction, r = h_{i-1} / h_i
                r = h_prev / h
                D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            # x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D
            x = ((1 - ab_s) / (1 - ab_t)).sqrt() * x - ab_s.sqrt() * torch.expm1(-h) * D
            x0_prev, h_prev = x0, h
    return x.to(x_T.dtype)


@torch.no_grad()
def ddim_invert(eps_fn: Callable, alpha_bar: torch.Tensor, x_0: torch.Tensor, steps: int = 50,
                spacing: str = "lambda") -> torch.Tensor:
    """DDIM inversion: run the eta = 0 ODE update backwards (x_s -> x_t, t > s), approximating eps(x_t) by
    eps(x_s) (Song et al. 2020 sec. 4.3; Dhariwal & Nichol 2021 appendix F). x_0 -> x_T with `steps` calls."""
    T = alpha_bar.shape[0]
    ts = timesteps(T, steps, alpha_bar, spacing)[::-1]  # increasing: 0 ... T-1
    ab = alpha_bar.double().to(x_0.device)
    x = x_0.double()
    s, s_ab = 0, torch.ones((), dtype=torch.float64, device=x.device)  # source: the clean x_0, evaluated as t = 0
    for t in ts:  # x_s -> x_t with eps(x_s, s): the mirror image of the eta = 0 sampling step
        s_batch = torch.full((x.shape[0],), s, device=x.device, dtype=torch.long)
        eps = eps_fn(x.to(x_0.dtype), s_batch).double()
        x0 = (x - (1 - s_ab).sqrt() * eps) / s_ab.sqrt()
        x = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps
        s, s_ab = t, ab[t]
    return x.to(x_0.dtype)


# ----------------------------------------------------------------------------------------------------- commands
# Everything below is plumbing for the command line; the algorithm is above.
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="DDPM: train a diffusion model, sample it with ddpm/ddim/dpm++2m, bound its likelihood.")
Opt = typer.Option


def build(config: dict, shape: tuple[int, ...], num_classes: int = 0, shift=0.0, scale=1.0) -> DDPM:
    """The model described by a saved config (train's arguments): a UNet for images, an MLP for points."""
    if len(shape) == 3:
        net = UNet(shape[0], config["ch"], tuple(int(m) for m in config["ch_mult"].split(",")), config["attn"],
                   num_classes, config["dropout"], config.get("patch", 1))
    else:
        net = MLP(shape[0], config["hidden"], config["depth"], num_classes)
    return DDPM(net, config["timesteps"], config["schedule"], config["prediction"], config["min_snr"], shift, scale)


def load(path, device: str = "cpu") -> DDPM:
    """The trained model (EMA weights) from a checkpoint, ready to sample."""
    ckpt = training.load_checkpoint(path, "ddpm")
    state = training.ema_state(ckpt)
    cfg = ckpt["config"]
    net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    label_rows = net_state.get("embed.label.weight")
    model = build(cfg, tuple(ckpt["extra"]["shape"]), 0 if label_rows is None else label_rows.shape[0] - 1,
                  state["shift"], state["scale"])
    model.load_state_dict(state)
    model.config, model.shape = cfg, tuple(ckpt["extra"]["shape"])  # what the commands need to sample and score
    return model.to(training.device(device)).eval()


def validate(config: dict) -> None:
    check = training.check
    check(config["schedule"] in ("linear", "cosine"), f"unknown --schedule {config['schedule']!r}; use linear or cosine")
    check(config["prediction"] in ("eps", "v"), f"unknown --prediction {config['prediction']!r}; use eps or v")
    check(config["timesteps"] >= 2, "--timesteps must be at least 2")
    check(config["min_snr"] >= 0, "--min-snr must be >= 0 (0 turns the weighting off)")
    try:
        mult = [int(m) for m in config["ch_mult"].split(",")]
    except ValueError:
        mult = []
    check(bool(mult) and min(mult) > 0, f"--ch-mult must be positive integers like 1,2,2, got {config['ch_mult']!r}")
    check(config.get("patch", 1) >= 1, "--patch must be >= 1")
    check(config["ch"] > 0 and config["ch"] % 8 == 0, "--ch must be a positive multiple of 8 (GroupNorm uses 8 groups)")


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: mnist5k (bundled), mnist, fashion, cifar10, or a 2-D toy such as grid25")] = "mnist5k",
    steps: Annotated[int, Opt(help="optimizer steps")] = 1300,
    batch_size: Annotated[int, Opt(help="examples per step (per process under torchrun)")] = 64,
    lr: Annotated[float, Opt(help="peak AdamW learning rate")] = 2e-3,
    warmup: Annotated[int, Opt(help="linear learning-rate warm-up steps")] = 100,
    timesteps: Annotated[int, Opt(help="number of diffusion steps T")] = 1000,
    schedule: Annotated[str, Opt(help="beta schedule: linear or cosine")] = "linear",
    prediction: Annotated[str, Opt(help="network target: eps (noise) or v")] = "eps",
    min_snr: Annotated[float, Opt(help="min-SNR-gamma loss weighting, gamma (0 = plain L_simple)")] = 5.0,
    ch: Annotated[int, Opt(help="UNet base channels")] = 32,
    ch_mult: Annotated[str, Opt(help="UNet channel multipliers per resolution, comma-separated")] = "1,2,2",
    attn: Annotated[bool, Opt(help="self-attention at the lowest resolution")] = True,
    dropout: Annotated[float, Opt(help="dropout in the residual blocks")] = 0.0,
    patch: Annotated[int, Opt(help="UNet stem: pixel-unshuffle p x p patches (1 = full resolution)")] = 1,
    hidden: Annotated[int, Opt(help="MLP width (points)")] = 256,
    depth: Annotated[int, Opt(help="MLP residual blocks (points)")] = 3,
    ema_decay: Annotated[float, Opt(help="EMA decay of the sampling weights (with warm-up)")] = 0.995,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    device: training.Device = "auto",
    compile: Annotated[bool, Opt(help="torch.compile the network (CUDA)")] = False,
    seed: training.Seed = 0,
    out: Annotated[str | None, Opt(help="run folder (default runs/ddpm-<data>)")] = None,
    resume: training.Resume = False,
    ckpt_every: training.CkptEvery = 250,
) -> Path:
    """Train a DDPM (Algorithm 1) and write ckpt.pt, samples.png and metrics.jsonl to the run folder."""
    config = dict(locals())
    import data as datasets

    validate(config)
    training.seed_everything(seed)  # the initial weights depend on --seed alone
    ds = datasets.load(data)
    out = out or f"runs/ddpm-{data}"
    config["out"] = out
    if ds.kind == "points":  # standardize points so one set of hyperparameters fits every toy
        model = build(config, ds.shape, 0, ds.x.mean(0), ds.x.std(0))
    else:
        model = build(config, ds.shape)
    tr = training.Trainer("ddpm", config, {"model": model}, ds, steps=steps, batch_size=batch_size, lr=lr, out=out,
                          device=device, seed=seed, resume=resume, ema_decay=ema_decay, warmup=warmup,
                          betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip, compile=compile,
                          ckpt_every=ckpt_every, extra={"shape": list(ds.shape)})
    for _, (x, _) in tr:
        with tr.autocast():
            loss = tr.models["model"](model.normalize(x))  # Algorithm 1, through DDP / compile wrappers
        tr.step(loss)

    def sample_fn(n):
        m = tr.sampling_model()
        x_T = torch.randn(n, *ds.shape, device=tr.dev)
        x0 = sample(m.eps, m.alpha_bar64, x_T, "dpm++2m", 20, x0_clip=1.0 if ds.kind == "images" else None)
        return m.denormalize(x0)

    return tr.finish(sample_fn, n=64 if ds.kind == "images" else 2000, reference=ds.x[:2000] if ds.kind == "points" else None)


@app.command("sample")
def sample_cmd(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/ddpm-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    sampler: Annotated[str, Opt(help="ddpm (ancestral), ddim or dpm++2m")] = "dpm++2m",
    steps: Annotated[int, Opt(help="network calls per sample (1..T)")] = 20,
    eta: Annotated[float, Opt(help="DDIM stochasticity: 0 deterministic, 1 = ancestral")] = 0.0,
    spacing: Annotated[str, Opt(help="timestep spacing: lambda (uniform in log-SNR) or uniform")] = "lambda",
    batch_size: Annotated[int, Opt(help="samples per batch")] = 500,
    out: Annotated[str | None, Opt(help=".png grid/scatter or .npz (key x); default next to the checkpoint")] = None,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> torch.Tensor:
    """Sample a trained model with any sampler and number of steps."""
    import data as datasets

    check = training.check
    check(n > 0, f"--n must be positive, got {n}")
    check(sampler in SAMPLERS, f"unknown --sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    check(steps > 0, f"--steps must be positive, got {steps}")
    check(eta >= 0, f"--eta must be >= 0, got {eta}")
    check(spacing in ("lambda", "uniform"), f"unknown --spacing {spacing!r}; use lambda or uniform")
    check(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
    check(out is None or out.endswith((".png", ".npz")), f"--out must end in .png or .npz, got {out!r}")
    model = load(ckpt, device)
    check(steps <= model.T, f"--steps must be at most T = {model.T}, got {steps}")
    dev = model.alpha_bar.device
    images = len(model.shape) == 3
    g = torch.Generator(dev).manual_seed(seed)
    xs = []
    for i in range(0, n, batch_size):
        x_T = torch.randn(min(batch_size, n - i), *model.shape, generator=g, device=dev)
        with training.autocast(dev):
            x0 = sample(model.eps, model.alpha_bar64, x_T, sampler, steps, eta, g, spacing, 1.0 if images else None)
        xs.append(model.denormalize(x0.float()))
    x = torch.cat(xs)
    datasets.write_samples(x, out or Path(ckpt).parent / f"samples-{sampler}-{steps}.png")
    return x


@app.command()
def nll(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/ddpm-mnist5k/ckpt.pt",
    split: Annotated[str, Opt(help="data split to evaluate")] = "test",
    n: Annotated[int, Opt(help="number of examples")] = 200,
    n_t: Annotated[int, Opt(help="timesteps per example in the Monte Carlo sum over t (0 = all T)")] = 100,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> float:
    """Variational bound on -log p(x): bits/dim for images (8-bit, discretized decoder), nats for points."""
    import data as datasets

    training.check(n > 0, f"--n must be positive, got {n}")
    training.check(n_t >= 0, f"--n-t must be >= 0, got {n_t}")
    model = load(ckpt, device)
    ds = datasets.load(model.config["data"], split)
    x = ds.x[torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]].to(model.alpha_bar.device)
    g = torch.Generator().manual_seed(seed)
    images = ds.kind == "images"
    L = torch.cat([model.vlb(model.normalize(xb), n_t or None, discrete=images, generator=g) for xb in x.split(100)])
    if images:
        value = bits_per_dim(L.mean().item(), x[0].numel())  # nats -> bits per dimension
        print(f"DDPM variational bound on {ds.name}:{split} (n={n}, {n_t or model.T} timesteps/example): "
              f"{value:.3f} bits/dim (8-bit data, discretized decoder)")
    else:  # the bound is in the normalized space: -log p(x) = -log p(z) + sum log scale
        value = (L.mean() + model.scale.log().sum()).item()
        print(f"DDPM variational bound on {ds.name}:{split} (n={n}): {value:.3f} nats")
    return value


@app.command()
def invert(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/ddpm-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="test examples to invert")] = 16,
    steps: Annotated[int, Opt(help="network calls each way")] = 50,
    out: Annotated[str | None, Opt(help="PNG: originals above reconstructions")] = None,
    device: training.Device = "auto",
) -> float:
    """DDIM inversion: x_0 -> x_T (deterministic encoder) -> x_0 again; prints the reconstruction error."""
    import data as datasets

    training.check(n > 0, f"--n must be positive, got {n}")
    training.check(steps > 0, f"--steps must be positive, got {steps}")
    model = load(ckpt, device)
    training.check(steps <= model.T, f"--steps must be at most T = {model.T}")
    ds = datasets.load(model.config["data"], "test")
    x_0 = model.normalize(ds.x[:n].to(model.alpha_bar.device))
    x_T = ddim_invert(model.eps, model.alpha_bar64, x_0, steps)
    x_rec = sample(model.eps, model.alpha_bar64, x_T, "ddim", steps)
    rmse = (x_rec - x_0).pow(2).mean().sqrt().item()
    print(f"DDIM inversion with {steps} steps each way: RMSE(x_0, reconstruction) = {rmse:.4f} "
          f"(data std {x_0.std().item():.3f}); x_T std {x_T.std().item():.3f}")
    if ds.kind == "images":
        datasets.write_samples(model.denormalize(torch.cat([x_0, x_rec])), out or Path(ckpt).parent / "inversion.png",
                               nrow=n)
    return rmse


if __name__ == "__main__":
    app()
