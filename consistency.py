"""Consistency models: one network call from noise to data, distilled from ddpm.py or trained from scratch.

What it optimizes (Song et al. 2023, https://arxiv.org/abs/2303.01469): in EDM's noise levels (Karras et al. 2022,
https://arxiv.org/abs/2206.00364) x_sigma = x + sigma z, sigma in [sigma_min, sigma_max], the probability-flow ODE
    dx/dsigma = (x - D(x, sigma)) / sigma      (D(x, sigma) = E[x_0 | x_sigma = x], the denoiser)
carries every point back to a data point. The consistency function f(x_sigma, sigma) = the point at sigma_min of the
trajectory through x_sigma is then one network call from noise to data. f_theta learns it from self-consistency
between adjacent levels sigma_n < sigma_{n+1} of a discretization (Song et al. secs. 3-5):
    L(theta) = E[ lambda(sigma_n) d( f_theta(x + sigma_{n+1} z, sigma_{n+1}), f_theta-(x_hat_n, sigma_n) ) ],
with x_hat_n the point of the same trajectory at sigma_n and theta- a stop-gradient copy:
  - distillation (CD, Algorithm 2): x_hat_n is one ODE step (Euler or Heun) of a trained diffusion model, ddpm.py's,
    from x + sigma_{n+1} z; theta- is an EMA of theta (mu = 0.95); lambda = 1; n uniform.
  - training from scratch (CT, the improved recipe of Song & Dhariwal 2023, https://arxiv.org/abs/2310.14189):
    x_hat_n = x + sigma_n z with the same z (the one-sample estimate of the score, Song et al. Theorem 2);
    theta- = theta (no EMA, iCT sec. 3.2); lambda = 1 / (sigma_{n+1} - sigma_n) (sec. 3.1); pseudo-Huber d with
    c = 0.00054 sqrt(D) (sec. 3.3); n drawn lognormal (sec. 3.5); the number of levels doubling on a schedule
    (sec. 3.4).
What changes from ddpm.py: the network outputs the trajectory's end instead of one denoising step, so sampling is one
call (or a few, re-noising in between: Algorithm 1); there is no likelihood.

Algorithm -> function:
    f(x, sigma) = c_skip x + c_out F(c_in x, sigma), boundary f(x, sigma_min) = x  -> scalings, Consistency.forward
    Karras levels sigma_i (Karras eq. 5), the CT curriculum N(k), lognormal p(n) -> karras_sigmas, ct_levels, level_probs
    the teacher: ddpm.py's model as a denoiser D(x_sigma, sigma)                -> teacher_denoiser
    one ODE step of the teacher (Euler = ddpm.py's DDIM step; Heun)             -> ode_step
    distances: squared L2, pseudo-Huber                                        -> distance
    Algorithm 2 (CD) and iCT's loss (CT); the EMA target theta- <- mu theta- + (1 - mu) theta -> cd_loss, ct_loss,
                                                                                  update_target
    Algorithm 1 (multistep sampling)                                           -> sample (levels: sampling_sigmas)
    samples in data space (the stable surface)                                 -> generate
Departures: the backbone sees sigma as the fractional step of ddpm.py's schedule with that noise level (the teacher's
time input, so a student starts from the teacher's weights: see Consistency); CD's levels are Karras levels moved onto
the teacher's nearest steps (the teacher only knows those), which also sets sigma_min to the teacher's smallest
sigma; images are clamped to [-1, 1] after every call of sample (as Song et al.'s code does).

Commands (idle 2-core development machine, 2026-12-02; README for the numbers):
    python ddpm.py train && python consistency.py train --teacher runs/ddpm-mnist5k/ckpt.pt   # CD, 328 s -> runs/consistency-mnist5k-cd/
    python consistency.py sample --ckpt runs/consistency-mnist5k-cd/ckpt.pt --steps 4   # FID 8.5 in 4 calls (1 call: 12.1)
    python consistency.py train                                  # CT from scratch, 217 s -> runs/consistency-mnist5k/
    python consistency.py sample --n 1000 --out s.npz && python fid.py score s.npz mnist5k:test   # CT 1 call: FID 55
    python consistency.py sample --ckpt runs/consistency-mnist5k-cd/ckpt.pt --sigmas 80,1     # the levels by hand
    python consistency.py train --data grid25 --teacher runs/ddpm-grid25/ckpt.pt --steps 5000 --batch-size 256 --levels 18
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

import ddpm  # the teacher (DESIGN.md: consistency.py -> ddpm.py), and the schedule the backbone's time input follows
import nets  # the networks (UNet, DiT, MLP)
from nets import bcast, noise_device  # tensor helpers the diffusion family shares

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # Karras et al. Table 1 (Song et al. use the same)
P_MEAN, P_STD = -1.1, 2.0  # iCT's lognormal over levels (Song & Dhariwal sec. 3.5)
SIGMA_MID = (1.0, 0.3)  # the re-noising levels of multistep sampling run from 1 down to 0.3 (see sampling_sigmas)
LOSSES, SOLVERS = ("pseudo-huber", "l2"), ("heun", "euler")


# ----------------------------------------------------------------------------------------------------- the model
def scalings(sigma, sigma_min: float, sigma_data: float):
    """(c_skip, c_out, c_in) of Song et al. appendix C, EDM's preconditioning with sigma shifted by sigma_min:
        c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2),  c_out = sd (sigma - sigma_min) / sqrt(sd^2 + sigma^2),
        c_in = 1 / sqrt(sigma^2 + sd^2).
    c_skip(sigma_min) = 1 and c_out(sigma_min) = 0, so f(x, sigma_min) = x whatever the network."""
    c_skip = 1 / (1 + ((sigma - sigma_min) / sigma_data) ** 2)  # = sd^2 / (...), written so that it is exactly 1
    c_out = sigma_data * (sigma - sigma_min) / (sigma_data ** 2 + sigma ** 2).sqrt()
    return c_skip, c_out, 1 / (sigma ** 2 + sigma_data ** 2).sqrt()


class Consistency(nn.Module):
    """f_theta(x, sigma) = c_skip x + c_out F_theta(c_in x, sigma), with F_theta = -net(c_in x, t(sigma)).

    The backbone's time input t(sigma) is the fractional step of a ddpm.py schedule whose noise level sigma_t =
    sqrt((1 - alpha_bar_t) / alpha_bar_t) equals sigma (`log_sigma_steps` holds log sigma_t for t = 0..T-1), and the
    sign makes the network a v-predictor: with sigma_data = 1, ddpm.py's v-prediction model is exactly
    D(x, sigma) = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v(x / sqrt(1 + sigma^2), t(sigma)), which is this f
    at sigma_min = 0. So a student initialized with the teacher's weights starts as the teacher's denoiser (Song et
    al.'s code starts CD from the teacher's weights too). Works in a normalized space x = (data - shift) / scale
    (identity for images; the train set's mean and std for points, as in ddpm.py)."""

    def __init__(self, net: nn.Module, log_sigma_steps, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 sigma_data: float = 1.0, shift=0.0, scale=1.0):
        super().__init__()
        self.net, self.sigma_data = net, sigma_data
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.num_classes = 0  # unconditional (labels: cfg.py, fm.py)
        self.box = None  # points: the train set's box generate clamps x_0 to; build sets it
        self.register_buffer("log_sigma_steps", torch.as_tensor(log_sigma_steps, dtype=torch.float64))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def normalize(self, x):
        return (x - self.shift) / self.scale

    def denormalize(self, x):
        return x * self.scale + self.shift

    def time(self, sigma: torch.Tensor) -> torch.Tensor:
        """t(sigma) [B]: log sigma interpolated linearly between the schedule's steps (and extrapolated past its
        ends: sigma_min = 0.002 lies below ddpm.py's smallest sigma_0 = 0.01)."""
        table, log_sigma = self.log_sigma_steps.double(), sigma.double().log().contiguous()
        i = torch.searchsorted(table, log_sigma).clamp(1, len(table) - 1)
        return ((i - 1) + (log_sigma - table[i - 1]) / (table[i] - table[i - 1])).to(sigma.dtype)

    def forward(self, x, sigma, y=None):
        """f_theta(x, sigma): x [B, ...] at noise level sigma [B] (float)."""
        c_skip, c_out, c_in = scalings(bcast(sigma, x), self.sigma_min, self.sigma_data)
        F = -self.net(c_in * x, self.time(sigma), y)  # a v-prediction, see the class docstring
        return c_skip * x + c_out * F.to(x.dtype)


# ----------------------------------------------------------------------------------------------------- levels
def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO):
    """sigma_1 < ... < sigma_n, float64: sigma_i = (sigma_min^(1/rho) + (i-1)/(n-1) (sigma_max^(1/rho) -
    sigma_min^(1/rho)))^rho (Karras et al. eq. 5, in increasing order as Song et al. index them)."""
    if n < 2:
        raise ValueError(f"need at least 2 levels, got {n}")
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    return (sigma_min ** (1 / rho) + i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def snap_to_steps(sigmas: torch.Tensor, log_sigma_steps: torch.Tensor) -> torch.Tensor:
    """The teacher's steps t_i whose sigma_t is nearest (in log) to each of the increasing sigmas, made strictly
    increasing (LongTensor [n]); the levels CD uses are then sigma_{t_i} exactly."""
    table = log_sigma_steps.double().cpu()
    t = (table[None] - sigmas.double().log()[:, None]).abs().argmin(1)
    for i in range(1, len(t)):
        t[i] = max(int(t[i]), int(t[i - 1]) + 1)
    if t[-1] >= len(table):
        raise ValueError(f"{len(sigmas)} levels do not fit the teacher's {len(table)} steps")
    return t


def ct_levels(k: int, double_every: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1 levels at step k (Song & Dhariwal sec. 3.4, with
    K' = `double_every` given directly instead of derived from the total steps, so that --resume to more steps
    continues the same schedule)."""
    return min(s0 * 2 ** (k // double_every), s1) + 1


def level_probs(sigmas: torch.Tensor, p_mean: float = P_MEAN, p_std: float = P_STD) -> torch.Tensor:
    """p(n) for the pairs (sigma_n, sigma_{n+1}), n = 1..N-1: the mass a lognormal ln sigma ~ N(p_mean, p_std^2)
    puts between them, p(n) oc erf((ln sigma_{n+1} - P_mean) / (sqrt 2 P_std)) - erf((ln sigma_n - P_mean) /
    (sqrt 2 P_std)) (Song & Dhariwal sec. 3.5)."""
    cdf = torch.erf((sigmas.double().log() - p_mean) / (math.sqrt(2) * p_std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def sampling_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> list[float]:
    """The levels of a `steps`-call sample: sigma_max, then steps - 1 levels geometric from SIGMA_MID[0] down to
    SIGMA_MID[1] (each kept above sigma_min): [80], [80, 1], [80, 1, 0.3], [80, 1, 0.55, 0.3]... Song et al. pick the
    intermediate levels by search (iCT's two-step sampling on CIFAR-10 re-noises to 0.821); these are the best of a
    small search on mnist5k (README)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    hi, lo = (max(s, 1.5 * sigma_min) for s in SIGMA_MID)
    mid = [hi] if steps == 2 else torch.logspace(math.log10(hi), math.log10(lo), steps - 1, dtype=torch.float64).tolist()
    return [sigma_max] + mid[:steps - 1]


# ----------------------------------------------------------------------------------------------------- teacher, losses
def log_sigma_of(alpha_bar: torch.Tensor) -> torch.Tensor:
    """log sigma_t = log sqrt((1 - alpha_bar_t) / alpha_bar_t), the noise level of x_t / sqrt(alpha_bar_t) = x_0 +
    sigma_t eps: a ddpm.py schedule on EDM's axis (increasing in t)."""
    return 0.5 * torch.log((1 - alpha_bar) / alpha_bar)


def teacher_denoiser(teacher: "ddpm.DDPM", x0_clip: float | None = None) -> Callable:
    """D(x_sigma, sigma) of a ddpm.py model: at the step t whose sigma_t is nearest to sigma (a training level is
    one exactly), x_t = sqrt(alpha_bar_t) x_sigma (x_sigma = x_t / sqrt(alpha_bar_t)), and D = x0_from_eps(x_t,
    eps_theta(x_t, t)) (Ho et al. eq. 15), clamped to [-x0_clip, x0_clip] if given (as ddpm.py's sampler does)."""
    alpha_bar = teacher.alpha_bar64
    log_sigma = log_sigma_of(alpha_bar)

    def D(x, sigma):
        t = (log_sigma[None] - sigma.double().log()[:, None]).abs().argmin(1)  # [B]
        ab = bcast(alpha_bar[t], x).to(x.dtype)
        x_t = ab.sqrt() * x
        x_0 = ddpm.x0_from_eps(x_t, teacher.eps(x_t, t).to(x.dtype), ab)
        return x_0 if x0_clip is None else x_0.clamp(-x0_clip, x0_clip)
    return D


def ode_step(denoise: Callable, x, sigma, sigma_next, solver: str = "heun"):
    """One step of dx/dsigma = (x - D(x, sigma)) / sigma from sigma to sigma_next ([B] each, both > 0): Euler, or
    Heun (Karras et al. Algorithm 1's second-order correction). Euler is DDIM (eta = 0) in these coordinates:
    x_next = D + sigma_next (x - D) / sigma (Song et al. 2020 sec. 4.3, with x_sigma = x_t / sqrt(alpha_bar))."""
    s, s_next = bcast(sigma, x), bcast(sigma_next, x)
    d = (x - denoise(x, sigma)) / s  # dx/dsigma at sigma
    x_euler = x + (s_next - s) * d
    if solver == "euler":
        return x_euler
    d_next = (x_euler - denoise(x_euler, sigma_next)) / s_next
    return x + (s_next - s) * (d + d_next) / 2


def distance(a, b, kind: str = "pseudo-huber"):
    """d(a, b) per example: "l2" the mean squared difference; "pseudo-huber" sqrt(||a - b||^2 + c^2) - c with
    c = 0.00054 sqrt(D), D the dimension (Song & Dhariwal sec. 3.3): ~ ||a - b||^2 / 2c near 0, ~ ||a - b|| far."""
    diff = (a - b).float().flatten(1)
    if kind == "l2":
        return (diff ** 2).mean(1)
    if kind == "pseudo-huber":
        c = 0.00054 * math.sqrt(diff.shape[1])
        return ((diff ** 2).sum(1) + c ** 2).sqrt() - c
    raise ValueError(f"unknown distance {kind!r}; use {' or '.join(LOSSES)}")


def cd_loss(f: Callable, f_target: Callable, denoise: Callable, x, sigmas: torch.Tensor, solver: str = "heun",
            kind: str = "pseudo-huber", generator=None):
    """Consistency distillation (Song et al. Algorithm 2) per example: n ~ U{1..N-1}, x_{n+1} = x + sigma_{n+1} z,
    x_hat_n = ode_step(D, x_{n+1}, sigma_{n+1} -> sigma_n), loss d(f(x_{n+1}, sigma_{n+1}), f_target(x_hat_n,
    sigma_n)), lambda = 1; the target side and the teacher's step carry no gradient. sigmas: the N increasing levels."""
    n = torch.randint(0, len(sigmas) - 1, (x.shape[0],), generator=generator, device=noise_device(generator, x.device))
    s = sigmas.to(x.device, torch.float32)
    sigma, sigma_next = s[n.to(x.device)], s[n.to(x.device) + 1]
    x_next = x + bcast(sigma_next, x) * torch.randn_like(x)
    with torch.no_grad():
        x_hat = ode_step(denoise, x_next, sigma_next, sigma, solver)
        target = f_target(x_hat, sigma)
    return distance(f(x_next, sigma_next), target, kind)


def ct_loss(f: Callable, x, sigmas: torch.Tensor, probs: torch.Tensor, kind: str = "pseudo-huber", generator=None):
    """Consistency training (Song & Dhariwal) per example: n ~ p(n) (level_probs), the same z at both levels,
    lambda(sigma_n) d(f(x + sigma_{n+1} z, sigma_{n+1}), stopgrad f(x + sigma_n z, sigma_n)), lambda = 1 /
    (sigma_{n+1} - sigma_n); theta- = theta (no EMA)."""
    where = noise_device(generator, x.device)
    n = torch.multinomial(probs.float().to(where), x.shape[0], replacement=True, generator=generator).to(x.device)
    s = sigmas.to(x.device, torch.float32)
    sigma, sigma_next = s[n], s[n + 1]
    z = torch.randn_like(x)
    with torch.no_grad():
        target = f(x + bcast(sigma, x) * z, sigma)
    lam = 1 / (sigma_next - sigma)
    return lam * distance(f(x + bcast(sigma_next, x) * z, sigma_next), target, kind)


@torch.no_grad()
def update_target(target: nn.Module, model: nn.Module, mu: float) -> None:
    """theta- <- stopgrad(mu theta- + (1 - mu) theta) (Algorithm 2), every floating tensor at once."""
    t, m = [p for p in target.parameters()], [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(t, m, 1 - mu)


# ----------------------------------------------------------------------------------------------------- sampler, surface
@torch.no_grad()
def sample(f_fn: Callable, x_T: torch.Tensor, sigmas: list[float], generator: torch.Generator | None = None,
           sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. Algorithm 1), len(sigmas) calls of f_fn(x, sigma) (sigma a float
    tensor [B]): x_T ~ N(0, sigmas[0]^2 I) given, x = f(x_T, sigmas[0]), then for each next sigma: x <- f(x +
    sqrt(sigma^2 - sigma_min^2) z, sigma), z ~ N(0, I) from `generator`."""
    B = x_T.shape[0]
    x = f_fn(x_T, torch.full((B,), float(sigmas[0]), dtype=x_T.dtype, device=x_T.device))
    for sigma in sigmas[1:]:
        z = torch.randn(x.shape, generator=generator, device=noise_device(generator, x.device)).to(x)
        x_hat = x + math.sqrt(sigma ** 2 - sigma_min ** 2) * z
        x = f_fn(x_hat, torch.full((B,), float(sigma), dtype=x_T.dtype, device=x_T.device))
    return x


@torch.no_grad()
def generate(model: Consistency, n: int, *, generator: torch.Generator | None = None, y=None, steps: int = 1,
             sigmas: list[float] | None = None, batch_size: int = 1000) -> torch.Tensor:
    """n samples in data space, float32 on the CPU: per batch x_T = sigma_max z, then `sample` on `sigmas` (default
    sampling_sigmas(steps) of the model's range), all noise from `generator` (drawn on its device), images clamped to
    [-1, 1] after each call and points to the train set's box (ddpm.x0_box's reason: off the data a long-trained
    network's output can be garbage; 4 of 2,500 two-step grid25 samples lay beyond radius 8, one at 187, where the
    grid spans +-4), then denormalized.
    Unconditional: y must be None."""
    if y is not None:
        raise ValueError("consistency.py's models are unconditional: y must be None")
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    sigmas = list(sigmas) if sigmas is not None else sampling_sigmas(steps, model.sigma_min, model.sigma_max)
    if not sigmas or any(not model.sigma_min < s <= model.sigma_max for s in sigmas):
        raise ValueError(f"sigmas must lie in ({model.sigma_min:g}, {model.sigma_max:g}], got {sigmas}")
    dev = model.shift.device
    box = 1.0 if len(model.shape) == 3 else model.box  # None: a checkpoint saved without one

    def f_fn(x, sigma):
        x_0 = model(x, sigma)
        return x_0 if box is None else x_0.clamp(-box, box)

    out = []
    for i in range(0, n, batch_size):
        shape = (min(batch_size, n - i), *model.shape)
        x_T = sigmas[0] * torch.randn(shape, generator=generator, device=noise_device(generator, dev)).to(dev)
        out.append(model.denormalize(sample(f_fn, x_T, sigmas, generator, model.sigma_min)).float().cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------- commands
# Everything below is plumbing for the command line; the algorithm is above.
import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="Consistency models: distill ddpm.py's model (--teacher) or train from scratch; sample in "
                        "1-4 network calls.")
Opt = typer.Option
BACKBONE = ("net", "ch", "ch_mult", "attn", "dropout", "patch", "dit_size", "dit_depth", "dit_width", "dit_heads",
            "dit_patch", "hidden", "depth")  # the options nets.build reads: with --teacher they are the teacher's


def build(config: dict, shape: tuple[int, ...], log_sigma_steps, sigma_min: float, sigma_max: float, shift=0.0,
          scale=1.0) -> Consistency:
    model = Consistency(nets.build(config, shape), log_sigma_steps, sigma_min, sigma_max, config["sigma_data"],
                        shift, scale)
    model.shape, model.box = shape, config.get("box")  # points: the train set's box (generate clamps to it)
    return model


def load(path, device: str = "cpu") -> Consistency:
    """The trained model (EMA weights) from a checkpoint of train, ready to sample."""
    ckpt = training.load_checkpoint(path, "consistency")
    state, cfg, extra = training.ema_state(ckpt), ckpt["config"], ckpt["extra"]
    model = build(cfg, tuple(extra["shape"]), state["log_sigma_steps"], extra["sigma_min"], extra["sigma_max"],
                  state["shift"], state["scale"])
    model.load_state_dict(state)
    model.config = cfg
    return model.to(training.device(device)).eval()


def schedule_log_sigma(schedule: str = "linear", T: int = 1000) -> torch.Tensor:
    """log sigma_t of a ddpm.py schedule, t = 0..T-1: the backbone's time axis."""
    alpha_bar = torch.from_numpy(ddpm.make_betas(schedule, T)).double().neg().add(1).cumprod(0)
    return log_sigma_of(alpha_bar)


def load_teacher(path: str, data: str, device: str) -> "ddpm.DDPM":
    teacher = ddpm.load(path, device)  # one line and exit 2 if missing, corrupt or not ddpm.py's
    training.check(teacher.config["data"] == data, f"--teacher was trained on {teacher.config['data']}, not --data "
                                                   f"{data}: pass --data {teacher.config['data']}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: mnist5k (bundled), mnist, fashion, cifar10, or a 2-D toy such as grid25")] = "mnist5k",
    teacher: Annotated[str | None, Opt(help="a ddpm.py checkpoint: distill it (CD); none: train from scratch (CT)")] = None,
    steps: Annotated[int, Opt(help="optimizer steps")] = 1500,
    batch_size: Annotated[int, Opt(help="examples per step (per process under torchrun)")] = 64,
    lr: Annotated[float, Opt(help="peak AdamW learning rate")] = 1e-3,
    warmup: Annotated[int, Opt(help="linear learning-rate warm-up steps")] = 100,
    loss: Annotated[str, Opt(help="distance d: pseudo-huber (iCT) or l2")] = "pseudo-huber",
    levels: Annotated[int, Opt(help="CD: number N of Karras levels (Song et al.: 18; 6 is best in minutes, README)")] = 6,
    solver: Annotated[str, Opt(help="CD: the teacher's ODE step, heun (2 calls) or euler (1 call = DDIM)")] = "heun",
    target_decay: Annotated[float, Opt(help="CD: EMA rate mu of the target network theta-")] = 0.95,
    ct_start: Annotated[int, Opt(help="CT: s0, the initial number of level intervals")] = 10,
    ct_end: Annotated[int, Opt(help="CT: s1, the final number of level intervals")] = 1280,
    ct_double_every: Annotated[int, Opt(help="CT: K', steps between doublings of the number of levels")] = 300,
    p_mean: Annotated[float, Opt(help="CT: mean of ln sigma in p(n) (iCT: -1.1)")] = P_MEAN,
    p_std: Annotated[float, Opt(help="CT: std of ln sigma in p(n) (iCT: 2.0)")] = P_STD,
    sigma_min: Annotated[float, Opt(help="smallest noise level (CD: at least the teacher's)")] = SIGMA_MIN,
    sigma_max: Annotated[float, Opt(help="largest noise level (CD: at most the teacher's)")] = SIGMA_MAX,
    sigma_data: Annotated[float, Opt(help="sigma_data of the scalings (1 = ddpm.py's v-prediction)")] = 1.0,
    net: nets.Net = "unet",
    ch: nets.Ch = 32,
    ch_mult: nets.ChMult = "1,2,2",
    attn: nets.Attn = True,
    dropout: nets.Dropout = 0.0,
    patch: nets.Patch = 2,
    dit_size: nets.DitSize = nets.DEFAULT_DIT,
    dit_depth: nets.DitDepth = 0,
    dit_width: nets.DitWidth = 0,
    dit_heads: nets.DitHeads = 0,
    dit_patch: nets.DitPatch = 0,
    hidden: nets.Hidden = 256,
    depth: nets.Depth = 3,
    ema_decay: Annotated[float, Opt(help="EMA decay of the sampling weights (with warm-up)")] = 0.999,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    device: training.Device = "auto",
    compile: Annotated[bool, Opt(help="torch.compile the network (CUDA)")] = False,
    seed: training.Seed = 0,
    out: Annotated[str | None, Opt(help="run folder (default runs/consistency-<data>, -cd when distilling)")] = None,
    resume: training.Resume = False,
    ckpt_every: training.CkptEvery = 250,
) -> Path:
    """Train a consistency model: distill a ddpm.py checkpoint (--teacher, CD) or from scratch (CT); writes ckpt.pt,
    samples.png (1 call per sample) and metrics.jsonl to the run folder. With --teacher the network is the
    teacher's (its backbone options replace these) and starts from its weights (a v-prediction teacher's)."""
    config = dict(locals())
    import data as datasets

    check = training.check
    check(loss in LOSSES, f"unknown --loss {loss!r}; use {' or '.join(LOSSES)}")
    check(solver in SOLVERS, f"unknown --solver {solver!r}; use heun or euler")
    check(levels >= 2, f"--levels must be at least 2, got {levels}")
    check(0 <= target_decay < 1, f"--target-decay must be in [0, 1), got {target_decay}")
    check(1 <= ct_start <= ct_end and ct_double_every >= 1, "need 1 <= --ct-start <= --ct-end and --ct-double-every >= 1")
    check(0 < sigma_min < sigma_max, f"need 0 < --sigma-min < --sigma-max, got {sigma_min}, {sigma_max}")
    check(sigma_data > 0, f"--sigma-data must be positive, got {sigma_data}")
    check(p_std > 0, f"--p-std must be positive, got {p_std}")
    training.seed_everything(seed)  # the initial weights depend on --seed alone
    ds = datasets.load(data)
    points = ds.kind == "points"
    if teacher is not None:  # CD: the teacher's network, noise range, time axis and normalization
        ddpm_model = load_teacher(teacher, data, device)
        config.update({k: ddpm_model.config[k] for k in BACKBONE if k in ddpm_model.config})
        log_sigma = log_sigma_of(ddpm_model.alpha_bar64).cpu()
        steps_n = snap_to_steps(karras_sigmas(levels, max(sigma_min, log_sigma[0].exp().item()),
                                              min(sigma_max, log_sigma[-1].exp().item())), log_sigma)
        sigmas = log_sigma[steps_n].exp()  # [N] increasing, the teacher's own noise levels
        lo, hi, shift, scale = sigmas[0].item(), sigmas[-1].item(), ddpm_model.shift.cpu(), ddpm_model.scale.cpu()
    else:
        log_sigma = schedule_log_sigma()
        lo, hi = sigma_min, sigma_max
        shift, scale = (ds.x.mean(0), ds.x.std(0)) if points else (0.0, 1.0)
    try:
        nets.validate(config, ds.shape)
    except ValueError as e:
        training.fail(str(e))
    config["out"] = out = out or f"runs/consistency-{data}" + ("-cd" if teacher else "")
    if points:
        config["box"] = ddpm.points_box(ds.x)  # saved: generate clamps f's x_0 to it
    model = build(config, ds.shape, log_sigma, lo, hi, shift, scale)
    models = {"model": model}
    if teacher is not None:
        if ddpm_model.prediction == "v":  # then the student starts as the teacher's denoiser (see Consistency)
            model.net.load_state_dict(ddpm_model.net.state_dict())  # start from the teacher (Song et al.'s code does)
        else:
            print("note: an eps-prediction teacher; the student starts from fresh weights", file=sys.stderr)
        models["target"] = copy.deepcopy(model).requires_grad_(False)  # theta- = theta at the start
    tr = training.Trainer("consistency", config, models, ds, steps=steps, batch_size=batch_size, lr=lr, out=out,
                          device=device, seed=seed, resume=resume, ema_decay=ema_decay, warmup=warmup,
                          betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip, compile=compile,
                          ckpt_every=ckpt_every, extra={"shape": list(ds.shape), "num_classes": 0, "sigma_min": lo,
                                                        "sigma_max": hi})
    f = tr.models["model"]
    if teacher is not None:
        denoise = teacher_denoiser(ddpm_model, None if points else 1.0)
        target = tr.raw["target"]
    for k, (x, _) in tr:
        x = model.normalize(x)
        with tr.autocast():
            if teacher is not None:
                per_example = cd_loss(f, target, denoise, x, sigmas, solver, loss)
            else:
                N = ct_levels(k, ct_double_every, ct_start, ct_end)
                ct_sigmas = karras_sigmas(N, lo, hi)
                per_example = ct_loss(f, x, ct_sigmas, level_probs(ct_sigmas, p_mean, p_std), loss)
        tr.step(per_example.mean(), **({} if teacher is not None else {"levels": N}))
        if teacher is not None:
            update_target(target, model, target_decay)

    def sample_fn(n):
        m = tr.sampling_model()
        m.shape = ds.shape
        return generate(m, n, generator=torch.Generator().manual_seed(seed))  # one call per sample

    return tr.finish(sample_fn, n=2000 if points else 64, reference=ds.x[:2000] if points else None)


def parse_sigmas(text: str) -> list[float]:
    try:
        sigmas = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sigmas = []
    training.check(bool(sigmas) and all(a > b for a, b in zip(sigmas, sigmas[1:])),
                   f"--sigmas must be decreasing numbers like 80,0.8, got {text!r}")
    return sigmas


@app.command("sample")
def sample_cmd(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/consistency-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    steps: Annotated[int, Opt(help="network calls per sample (Algorithm 1)")] = 1,
    sigmas: Annotated[str, Opt(help="the levels, decreasing and comma-separated (replaces --steps), e.g. 80,0.8")] = "",
    batch_size: Annotated[int, Opt(help="samples per batch")] = 500,
    out: Annotated[str | None, Opt(help=".png grid/scatter or .npz (key x); default next to the checkpoint")] = None,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> torch.Tensor:
    """Sample a consistency model in one call, or a few (re-noising between calls)."""
    import data as datasets

    check = training.check
    check(n > 0, f"--n must be positive, got {n}")
    check(steps > 0, f"--steps must be positive, got {steps}")
    check(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
    levels = parse_sigmas(sigmas) if sigmas else None
    model = load(ckpt, device)
    levels = levels or sampling_sigmas(steps, model.sigma_min, model.sigma_max)
    check(all(model.sigma_min < s <= model.sigma_max for s in levels),
          f"--sigmas must lie in ({model.sigma_min:g}, {model.sigma_max:g}], got {levels}")
    path = datasets.samples_path(out, Path(ckpt).parent / f"samples-{len(levels)}.png")
    dev = model.shift.device
    with training.autocast(dev):
        x = generate(model, n, generator=torch.Generator(dev).manual_seed(seed), sigmas=levels, batch_size=batch_size)
    print(f"{n} samples, {len(levels)} network call(s) each at sigma = {', '.join(f'{s:.4g}' for s in levels)}")
    datasets.write_samples(x, path)
    return x


# How bench.py trains, samples and scores this file (data, read by bench): consistency training from scratch (a
# teacher is a second model, outside an equal-budget comparison); 1 and 2 network calls.
BENCH = {
    "claim": "one to four network calls per sample",
    "kinds": ("points", "images"),
    "options": {"points": {}, "images": {}},  # train's defaults (CT)
    "quick": {"points": {"hidden": 64, "depth": 2}, "images": {"ch": 8, "ch_mult": "1,2", "attn": False, "warmup": 10}},
    "settings": {"points": [{"sampler": "1-step", "steps": 1}, {"sampler": "2-step", "steps": 2}],
                 "images": [{"sampler": "1-step", "steps": 1}, {"sampler": "2-step", "steps": 2}]},
    "network": "net",
    "batch": 1000,
    "samplers": [{"sampler": f"{k}-step", "steps": k} for k in (1, 2, 4)],
    # bench --defaults (the samplers suite at each family's own defaults): distil ddpm.py's default model (CD), as
    # the README's `python consistency.py train --teacher runs/ddpm-mnist5k/ckpt.pt`
    "defaults": {"images": {"teacher": "@ddpm"}},
}


if __name__ == "__main__":
    app()
