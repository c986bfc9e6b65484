"""Flow matching / rectified flow: regress the velocity of a straight path from noise to data; sample with an ODE.

What it optimizes (Lipman et al. 2023, https://arxiv.org/abs/2210.02747; Liu et al. 2023, rectified flow,
https://arxiv.org/abs/2209.03003): time runs from t = 0, noise x_0 ~ N(0, I), to t = 1, data x_1. Between a pair the
path is the straight line x_t = (1 - t) x_0 + t x_1, whose velocity u = dx_t/dt = x_1 - x_0 is the same at every t
(Lipman et al. eqs. 20-23 with sigma_min = 0; Liu et al. eq. 1), and a network regresses it:
    L(theta) = E_{t, (x_0, x_1)} || v_theta(x_t, t) - (x_1 - x_0) ||^2 .
The minimizer is the marginal velocity v*(x, t) = E[x_1 - x_0 | x_t = x], whose ODE dx/dt = v*(x, t) carries N(0, I)
at t = 0 to the data at t = 1 (Lipman et al. Theorems 1-2; Liu et al. Theorem 3.3). What changes from ddpm.py: no noise
schedule and no eps target, but a straight path and a velocity target; sampling is solving an ODE (any ODE solver is a
sampler), and the likelihood is exact up to the solver's error.

Algorithm -> function:
    path x_t and target u = x_1 - x_0                -> interpolate, target; the loss: FM.loss
    t logit-normal (the default; Esser et al. 2024, SD3, https://arxiv.org/abs/2403.03206, sec. 3.1) or U[0, 1]
                                                     -> sample_t
    minibatch OT coupling (Tong et al. 2023, https://arxiv.org/abs/2302.00482), exact per batch -> ot_permutation
    ODE samplers, one function each (NFE: euler 1, midpoint 2, heun 2 per step) -> euler_step, midpoint_step,
                                                       heun_step, integrated by sample (NFE: nfe)
    log p(x_1) by the instantaneous change of variables (Chen et al. 2018, https://arxiv.org/abs/1806.07366, Thm. 1),
    exact trace or Hutchinson (FFJORD, Grathwohl et al. 2019, https://arxiv.org/abs/1810.01367) -> log_likelihood,
                                                       divergence; bits/dim (flow.py's protocol): dequantize, bits_per_dim
    straightness S(Z) of Liu et al. and reflow (their Algorithm 1, k = 2) -> straightness, `reflow`
    classifier-free guidance v_u + s (v_c - v_u) (Ho & Salimans 2022) -> guided_velocity (the mix: nets.guided),
                                                       label dropout: drop_labels
    the network v_theta(x, t)                        -> nets.py: UNet (images), DiT (--net dit), MLP (points)
    samples in data space / the likelihood (the stable surface) -> generate, likelihood
Departures: the default logit-normal t has scale 1.2 (SD3: 1), so that logit(t) = -ln sigma ~ N(0, 1.2^2) are
ddpm.py's noise levels (README: FID 6.99 against 8.60 for uniform t, 3.06 bits/dim against 2.39); the backbone sees
1000 t (nets' sinusoidal embedding is made for DDPM's step range); images are trained on dequantized pixels (the
data the likelihood is measured on) and the samples clamped to [-1, 1]; points' samplers clamp the predicted
endpoint x + (1 - t) v to the train set's box (clamped_velocity; the likelihood uses v as is); the likelihood's ODE
runs on a grid uniform in log-SNR log(t / (1 - t)), not on uniform steps (see log_likelihood).

Commands (times on the 2-core development machine, 2026-12-05):
    python fm.py train                    # mnist5k, ddpm.py's network, steps, EMA, noise levels: 375 s -> runs/fm-mnist5k/
    python fm.py sample --n 1000 --out s.npz && python fid.py score s.npz mnist5k:test   # midpoint 10 steps: FID 6.99
    python fm.py sample --method euler --steps 8         # 8 network calls -> runs/fm-mnist5k/samples-euler-8.png
    python fm.py nll                                     # 3.06 bits/dim (Hutchinson, 200 test digits), 32 s
    python fm.py train --data moons --steps 5000 --batch-size 256 --lr 1e-3 && python fm.py nll --ckpt runs/fm-moons/ckpt.pt --n 5000   # 38 s, 0.329 nats
    python fm.py train --data grid25 --steps 10000 --t-sampling logit-normal --t-mean 2.5 --t-std 1.2 --t-uniform 0.1 \
        --ema-decay 0.995                                  # the toy recipe (ddpm.py's noise levels; README)
    python fm.py train --data moons --steps 5000 --batch-size 256 --lr 1e-3 --coupling ot --out runs/fm-moons-ot
    python fm.py straightness --ckpt runs/fm-moons/ckpt.pt --ckpt runs/fm-moons-ot/ckpt.pt   # S, 1/2/4-step quality
    python fm.py reflow                                  # 2-rectified flow of runs/fm-mnist5k: 1-step FID 383 -> 35, 354 s
    python fm.py train --labels --out runs/fm-labels && python fm.py sample --ckpt runs/fm-labels/ckpt.pt --guidance 2 --label 7
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment

import nets  # the networks and the guidance mix (DESIGN.md: the copyable unit is this file + nets.py)
from nets import bcast, noise_device  # tensor helpers the diffusion family shares

TIME_SCALE = 1000.0  # the backbone sees 1000 t
T_SAMPLING, COUPLINGS, METHODS = ("uniform", "logit-normal"), ("independent", "ot"), ("euler", "midpoint", "heun")
P_UNCOND = 0.1  # label dropout (Ho & Salimans sec. 4)


# ----------------------------------------------------------------------------------------------------- path, t, coupling
def interpolate(x_0, x_1, t):
    """x_t = (1 - t) x_0 + t x_1, t [B] (Lipman et al. eq. 22 with sigma_min = 0)."""
    t = bcast(t, x_0)
    return (1 - t) * x_0 + t * x_1


def target(x_0, x_1):
    """u = d x_t / dt = x_1 - x_0 (Lipman et al. eq. 23 with sigma_min = 0)."""
    return x_1 - x_0


def sample_t(n: int, how: str = "uniform", generator=None, device="cpu", m: float = 0.0, s: float = 1.0,
             uniform: float = 0.0) -> torch.Tensor:
    """t [n]: uniform on [0, 1], or logit-normal t = sigmoid(z), z ~ N(m, s^2) (Esser et al. eq. 19; SD3 trains with
    m = 0, s = 1: more training in the middle of the path, where the velocity is hardest to predict). Here t = 1 is
    data, so the noise-to-signal ratio of x_t is sigma = (1 - t) / t and ln sigma = -logit(t): m = 2.5, s = 1.2 draws
    ddpm.py's toy noise levels, ln sigma ~ N(-2.5, 1.2^2) (SD3 runs time the other way and would write m = -2.5).
    A fraction `uniform` of the logit-normal draws is uniform instead (ddpm.py's --t-uniform, a departure from SD3):
    the likelihood's ODE runs the whole path, and where m = 2.5 leaves t < 0.5 with 2% of the draws, one 300 s
    grid25 seed's ODE sent a test point to 2e52 nats."""
    where = noise_device(generator, device)
    if how == "uniform":
        return torch.rand(n, generator=generator, device=where).to(device)
    if how == "logit-normal":
        t = torch.sigmoid(m + s * torch.randn(n, generator=generator, device=where))
        if uniform > 0:  # the mixture: t ~ U[0, 1] with probability `uniform`
            mix = torch.rand(n, generator=generator, device=where) < uniform
            t = torch.where(mix, torch.rand(n, generator=generator, device=where), t)
        return t.to(device)
    raise ValueError(f"unknown t sampling {how!r}; use {' or '.join(T_SAMPLING)}")


def ot_permutation(x_0: torch.Tensor, x_1: torch.Tensor) -> torch.Tensor:
    """Minibatch OT (Tong et al. 2023, OT-CFM): the permutation p minimizing sum_i ||x_0[p_i] - x_1[i]||^2 over the
    batch, solved exactly by the Hungarian algorithm (scipy). Pair x_1[i] with x_0[p_i]."""
    cost = torch.cdist(x_1.flatten(1).double(), x_0.flatten(1).double()) ** 2  # C_ij = ||x_1_i - x_0_j||^2  [B, B]
    rows, cols = linear_sum_assignment(cost.cpu().numpy())  # rows = 0..B-1 in order
    return torch.as_tensor(cols, device=x_0.device)


def drop_labels(y: torch.Tensor, null: int, p_uncond: float = P_UNCOND) -> torch.Tensor:
    """Classifier-free guidance's label dropout: y <- null with probability p_uncond (Ho & Salimans Algorithm 1)."""
    return torch.where(torch.rand(y.shape, device=y.device) < p_uncond, torch.full_like(y, null), y)


# ----------------------------------------------------------------------------------------------------- the model
class FM(nn.Module):
    """A velocity network plus its training choices, in a normalized space x = (data - shift) / scale (identity for
    images; the train set's mean and std for points, as in ddpm.py)."""

    def __init__(self, net: nn.Module, t_sampling: str = "uniform", coupling: str = "independent", shift=0.0,
                 scale=1.0, t_mean: float = 0.0, t_std: float = 1.0, t_uniform: float = 0.0):
        super().__init__()
        self.net, self.t_sampling, self.coupling = net, t_sampling, coupling
        self.t_mean, self.t_std, self.t_uniform = t_mean, t_std, t_uniform  # logit-normal t: logit(t) ~ N(m, s^2)
        self.num_classes = getattr(net, "num_classes", 0)
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.box = None  # points: the box of the standardized train set (train saves it; generate's clamped_velocity)

    def normalize(self, x):
        return (x - self.shift) / self.scale

    def denormalize(self, x):
        return x * self.scale + self.shift

    def velocity(self, x, t, y=None):
        """v_theta(x, t): t a float tensor [B] in [0, 1]; y None = the null label of a conditional network."""
        return self.net(x, TIME_SCALE * t, y)

    def forward(self, x_1, y=None, x_0=None):
        return self.loss(x_1, y, x_0)  # so that DDP and torch.compile wrap the whole step

    def loss(self, x_1, y=None, x_0=None, t=None):
        """Per-example ||v_theta(x_t, t) - (x_1 - x_0)||^2 / D and the t drawn: (mse [B], t [B]). x_0 None: fresh
        noise, paired with x_1 by the coupling (independent, or `ot`); given: the coupled noise as is (reflow)."""
        if x_0 is None:
            x_0 = torch.randn_like(x_1)  # x_0 ~ N(0, I)
            if self.coupling == "ot":
                x_0 = x_0[ot_permutation(x_0, x_1)]
        if t is None:
            t = sample_t(x_1.shape[0], self.t_sampling, device=x_1.device, m=self.t_mean, s=self.t_std,
                         uniform=self.t_uniform)
        x_t = interpolate(x_0, x_1, t)
        return ((self.velocity(x_t, t, y).float() - target(x_0, x_1)) ** 2).flatten(1).mean(1), t


def loss_by_t(mse: torch.Tensor, t: torch.Tensor, buckets: int = 4) -> dict:
    """The loss per quarter of [0, 1] (minRF's habit: where on the path the velocity is hard; NaN = empty bucket)."""
    k = (t * buckets).long().clamp(0, buckets - 1)
    sums = torch.zeros(buckets, device=mse.device).index_add_(0, k, mse.detach().float())
    counts = torch.zeros(buckets, device=mse.device).index_add_(0, k, torch.ones_like(mse.detach().float()))
    return {f"loss_t{i / buckets:g}-{(i + 1) / buckets:g}": v for i, v in enumerate(sums / counts)}


# ----------------------------------------------------------------------------------------------------- samplers
# One function per ODE step, all (f, x, t, h) -> x(t + h), with f(x, t) = dx/dt at the float time t.
def euler_step(f: Callable, x, t: float, h: float):
    """x + h f(x, t): first order, 1 call."""
    return x + h * f(x, t)


def midpoint_step(f: Callable, x, t: float, h: float):
    """x + h f(x + h/2 f(x, t), t + h/2): second order, 2 calls."""
    return x + h * f(x + h / 2 * f(x, t), t + h / 2)


def heun_step(f: Callable, x, t: float, h: float):
    """Heun (explicit trapezoid): d1 = f(x, t), d2 = f(x + h d1, t + h), x + h (d1 + d2) / 2: second order, 2 calls."""
    d1 = f(x, t)
    d2 = f(x + h * d1, t + h)
    return x + h / 2 * (d1 + d2)


STEPPERS = {"euler": euler_step, "midpoint": midpoint_step, "heun": heun_step}
CALLS = {"euler": 1, "midpoint": 2, "heun": 2}  # network calls per step


def nfe(method: str, steps: int) -> int:
    """Network calls per sample of `sample(..., steps, method)` (doubled by guidance's batch [x, x])."""
    return CALLS[method] * steps


def time_grid(steps: int, spacing: str = "uniform", lam: float = 7.0) -> list[float]:
    """steps + 1 times from 0 to 1: uniform, or "logit": uniform in the path's log-SNR lambda = log(t / (1 - t)) over
    [-lam, lam], ends at 0 and 1. The logit grid is fine near both ends, where the velocity of dequantized images
    changes on the scale of one 8-bit bin (it contracts like -1 / (1 - t) down to 1 - t ~ 1/255)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if spacing == "uniform" or steps < 3:
        return [k / steps for k in range(steps + 1)]
    if spacing == "logit":
        return [0.0] + torch.sigmoid(torch.linspace(-lam, lam, steps - 1, dtype=torch.float64)).tolist() + [1.0]
    raise ValueError(f"unknown spacing {spacing!r}; use uniform or logit")


def integrate(f: Callable, x, ts: list[float], method: str):
    """x(ts[-1]) of dx/dt = f(x, t) from x(ts[0]) = x, one step of `method` per interval of the times ts (decreasing
    times run backwards)."""
    if method not in STEPPERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = STEPPERS[method](f, x, t, t_next - t)
    return x


@torch.no_grad()
def sample(v_fn: Callable, x_0: torch.Tensor, steps: int = 10, method: str = "midpoint") -> torch.Tensor:
    """x_1 from x_0 ~ N(0, I): integrate dx/dt = v_fn(x, t) (t a float tensor [B]) from t = 0 to 1, calling v_fn
    nfe(method, steps) times. The state runs in float64, v_fn sees x_0's dtype; returns x_0's dtype."""
    B, dtype = x_0.shape[0], x_0.dtype

    def f(x, t):
        return v_fn(x.to(dtype), torch.full((B,), t, dtype=dtype, device=x.device)).double()

    return integrate(f, x_0.double(), time_grid(steps), method).to(dtype)  # uniform steps


# ----------------------------------------------------------------------------------------------------- likelihood
def divergence(v_fn: Callable, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None):
    """(v, div v) at x [B, ...], per example: the trace of dv/dx exactly (one backward pass per dimension; the
    examples of a batch do not interact), or, given a probe eps, Hutchinson's eps^T (dv/dx) eps (one backward pass),
    unbiased when E[eps eps^T] = I (Rademacher; FFJORD sec. 3.1)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = v_fn(x, t)
        if not v.requires_grad:  # v does not depend on x
            return v.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if eps is not None:
            (eps_J,) = torch.autograd.grad(v, x, grad_outputs=eps)  # eps^T J, a vector-Jacobian product
            return v.detach(), (eps_J * eps).flatten(1).sum(1)
        flat, div = v.flatten(1), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
            div = div + g.flatten(1)[:, i]  # d v_i / d x_i
        return v.detach(), div


def log_likelihood(v_fn: Callable, x_1: torch.Tensor, steps: int = 50, method: str = "midpoint", exact: bool = True,
                   generator: torch.Generator | None = None, spacing: str = "logit") -> torch.Tensor:
    """log p_1(x_1) per example, nats, by the instantaneous change of variables d log p_t(x_t)/dt = -div v(x_t, t)
    (Chen et al. Thm. 1): log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v dt. Integrated from t = 1 back to 0 with
    the state (x_t, l_t), l_1 = 0, dl/dt = div v, so l_0 = -int_0^1 div v dt. exact: the autograd trace; else
    Hutchinson with one Rademacher probe per example from `generator`, fixed along the path (FFJORD). `steps` steps
    on time_grid(steps, spacing): uniform steps underestimate -log p of images badly (25 Heun steps: 0.001 bits/dim)."""
    B, D, shape, dtype = x_1.shape[0], x_1[0].numel(), x_1.shape[1:], x_1.dtype
    eps = None
    if not exact:
        eps = torch.randint(0, 2, x_1.shape, generator=generator, device=noise_device(generator, x_1.device))
        eps = (2.0 * eps - 1).to(x_1.device, dtype)  # +-1 with equal probability
    def f(z, t):  # the state z = [x_t flattened, l_t]  [B, D + 1]
        v, div = divergence(v_fn, z[:, :D].reshape(B, *shape).to(dtype), torch.full((B,), t, dtype=dtype,
                                                                                    device=z.device), eps)
        return torch.cat([v.flatten(1).double(), div.double()[:, None]], 1)

    z = torch.cat([x_1.flatten(1).double(), torch.zeros(B, 1, dtype=torch.float64, device=x_1.device)], 1)
    z = integrate(f, z, time_grid(steps, spacing)[::-1], method)  # from t = 1 back to 0
    x_0, l_0 = z[:, :D], z[:, D]
    return -0.5 * (x_0 ** 2).sum(1) - 0.5 * D * math.log(2 * math.pi) + l_0  # log N(x_0; 0, I) + l_0


def dequantize(x: torch.Tensor, generator=None) -> torch.Tensor:
    """8-bit images x = k / 127.5 - 1 -> z = x + (u - 1/2) / 127.5, u ~ U[0, 1)^D: uniform over each value's bin.
    z is flow.py's y = (k + u) / 256 under z = (256 y - 1/2) / 127.5 - 1 (dz/dy = 256 / 127.5), so flow.py's
    bpd = (-log p(y) + D log 256) / (D log 2) with log p(y) = log p(z) + D log(256 / 127.5) is bits_per_dim below."""
    u = torch.rand(x.shape, generator=generator, device=noise_device(generator, x.device)).to(x.device)
    return x + (u - 0.5) / 127.5


def bits_per_dim(log_p_z: torch.Tensor, D: int) -> torch.Tensor:
    """bpd = (-log p(z) + D log 127.5) / (D log 2) for z = dequantize(x) (the protocol of flow.py and vae.py)."""
    return (-log_p_z + D * math.log(127.5)) / (D * math.log(2))


@torch.no_grad()
def straightness(v_fn: Callable, x_0: torch.Tensor, steps: int = 64) -> tuple[float, float]:
    """Liu et al.'s S(Z) = int_0^1 E||(Z_1 - Z_0) - dZ_t/dt||^2 dt (0 iff every path is straight), on Euler paths of
    `steps` steps: with v_k the velocity at step k, Z_1 - Z_0 = mean_k v_k, so S = E[mean_k ||v_k||^2 -
    ||mean_k v_k||^2] (the spread of the velocity along each path), squared norms summed over dimensions.
    Returns S and E||Z_1 - Z_0||^2 (the scale to read S against)."""
    x, B = x_0.double(), x_0.shape[0]
    total, sq = torch.zeros_like(x), torch.zeros(B, dtype=torch.float64, device=x.device)
    for k in range(steps):
        v = v_fn(x.to(x_0.dtype), torch.full((B,), k / steps, dtype=x_0.dtype, device=x.device)).double()
        total, sq = total + v / steps, sq + (v ** 2).flatten(1).sum(1) / steps
        x = x + v / steps  # Euler
    dist = (total ** 2).flatten(1).sum(1)  # ||Z_1 - Z_0||^2
    return float((sq - dist).mean()), float(dist.mean())


# ----------------------------------------------------------------------------------------------------- guidance, surface
def clamped_velocity(v_fn: Callable, box: float) -> Callable:
    """v_fn whose predicted endpoint x_1_hat = x + (1 - t) v (the straight path's data point) is clamped to the box
    [-box, box]^D: v_c = v + (clip(x_1_hat) - x_1_hat) / (1 - t), which is v itself wherever x_1_hat lies inside (and
    at t = 1). A departure from Lipman et al.'s sampler, for points only (as ddpm.py clamps x_0): off the data a
    trained network can be garbage; a 300 s grid25 model sent one noise draw in 2,500 (x_0 at -4.4 std) to 1e11 and
    NaN by t = 0.7, and with the clamp it lands on a mode like the rest (hq 0.798 either way)."""
    def v_c(x, t):
        v = v_fn(x, t)
        rest = bcast(1 - t, x)  # 1 - t, [B, 1, ...]
        x_1 = x + rest * v
        return torch.where(rest > 0, v + (x_1.clamp(-box, box) - x_1) / rest.clamp(min=1e-12), v)
    return v_c


def guided_velocity(model: FM, y: torch.Tensor, s: float) -> Callable:
    """v_fn for `sample`: v_u + s (v_c - v_u), classifier-free guidance on velocities (as SD3 does), both from one
    pass on [x, x] with labels [y, null] (nets.guided); s = 1 is the conditional velocity alone (one pass on x)."""
    def v_fn(x, t):
        y_c = y.to(x.device).expand(x.shape[0])
        return model.velocity(x, t, y_c) if s == 1 else nets.guided(model.velocity, x, t, y_c, s, model.num_classes)
    return v_fn


@torch.no_grad()
def generate(model: FM, n: int, *, generator: torch.Generator | None = None, y=None, method: str = "midpoint",
             steps: int = 10, guidance: float = 1.0, batch_size: int = 1000) -> torch.Tensor:
    """n samples in data space, float32 on the CPU: per batch, the labels (a conditional model with y None: uniform
    over the classes), then x_0 ~ N(0, I), both from `generator` (drawn on its device), x_1 = sample(v, x_0, steps,
    method) with v guided by s = `guidance` for a conditional model, then x = x_1 * scale + shift (images clamped
    to [-1, 1]). y: an int or a LongTensor [n] of class ids; None for an unconditional model."""
    C = model.num_classes
    if (y is not None or guidance != 1) and not C:
        raise ValueError("this model was trained without labels (python fm.py train --labels): y must be None and "
                         "guidance 1")
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    if y is not None:
        y = torch.as_tensor(y, dtype=torch.long).cpu()
        y = y.expand(n) if y.dim() == 0 else y
        if y.shape != (n,) or ((y < 0) | (y >= C)).any():
            raise ValueError(f"y must be one label or {n} labels, class ids in 0..{C - 1}")
    dev = model.shift.device
    where, out = noise_device(generator, dev), []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        y_b = (torch.randint(C, (b,), generator=generator, device=where) if y is None else y[i:i + b]) if C else None
        x_0 = torch.randn((b, *model.shape), generator=generator, device=where).to(dev)
        v_fn = guided_velocity(model, y_b.to(dev), guidance) if C else model.velocity
        if model.box is not None:  # points: the predicted endpoint stays in the train set's box
            v_fn = clamped_velocity(v_fn, model.box)
        x = model.denormalize(sample(v_fn, x_0, steps, method)).float().cpu()
        out.append(x.clamp(-1, 1) if len(model.shape) == 3 else x)
    return torch.cat(out)


def likelihood(model: FM, x: torch.Tensor, *, steps: int = 50, method: str = "midpoint", spacing: str = "logit",
               exact: bool | None = None, seed: int = 0, generator: torch.Generator | None = None,
               batch_size: int = 500) -> dict:
    """Mean -log p(x) over data-space x by log_likelihood (unconditional velocity), kind "exact" (up to the ODE
    solver's error; Hutchinson's is unbiased). exact None: the trace for points, Hutchinson for images. The noise
    (dequantization, probes) comes from `generator` (default: seeded with `seed`). Points: {"nll_nats"}, with
    log p(x) = log p(z) - sum_d log scale_d for z = normalize(x). Images: {"nll_bpd"} of z = dequantize(x).
    "per_example": [N], same unit."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    images, dev = len(model.shape) == 3, model.shift.device
    exact = not images if exact is None else exact
    logp = []
    for xb in x.split(batch_size):
        z = dequantize(xb, g).to(dev) if images else model.normalize(xb.to(dev))
        logp.append(log_likelihood(model.velocity, z, steps, method, exact, g, spacing).cpu())
    logp = torch.cat(logp)
    out = {"kind": "exact", "n": len(x), "steps": steps, "method": method, "spacing": spacing, "nfe": nfe(method, steps),
           "divergence": "exact" if exact else "hutchinson"}
    if images:
        out["per_example"] = bits_per_dim(logp, x[0].numel())  # [N], the anomaly score of bench.py
        out["nll_bpd"] = float(out["per_example"].mean())
    else:
        out["nll_nats"] = float(-logp.mean() + model.scale.log().sum().cpu())
        out["per_example"] = -logp + model.scale.log().sum().cpu()
    return out


# ----------------------------------------------------------------------------------------------------- commands
# Everything below is plumbing for the command line; the algorithm is above.
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="Flow matching: train a velocity field, sample it with an ODE solver, compute its exact "
                        "likelihood, rectify it (reflow).")
Opt = typer.Option
Method = Annotated[str, Opt(help="ODE solver: euler (1 call per step), midpoint or heun (2 calls per step)")]


def build(config: dict, shape: tuple[int, ...], num_classes: int = 0, shift=0.0, scale=1.0) -> FM:
    """The model a saved config describes: nets.build's backbone (UNet / DiT for images, MLP for points)."""
    model = FM(nets.build(config, shape, num_classes), config["t_sampling"], config["coupling"], shift, scale,
               config.get("t_mean", 0.0), config.get("t_std", 1.0), config.get("t_uniform", 0.0))  # (issue 21)
    model.shape = shape
    model.box = config.get("box")  # points: the standardized train set's box; None for images and older checkpoints
    return model


def load(path, device: str = "cpu") -> FM:
    """The trained model (EMA weights) from a checkpoint of train or reflow, ready to sample."""
    ckpt = training.load_checkpoint(path, "fm")
    state, cfg, extra = training.ema_state(ckpt), ckpt["config"], ckpt["extra"]
    model = build(cfg, tuple(extra["shape"]), int(extra["num_classes"]), state["shift"], state["scale"])
    model.load_state_dict(state)
    model.config = cfg
    return model.to(training.device(device)).eval()


def validate(config: dict, shape) -> None:
    check = training.check
    check(config["t_sampling"] in T_SAMPLING, f"unknown --t-sampling {config['t_sampling']!r}; use uniform or logit-normal")
    check(config.get("t_std", 1.0) > 0, f"--t-std must be positive, got {config.get('t_std')}")
    check(0 <= config.get("t_uniform", 0.0) <= 1, f"--t-uniform must be in [0, 1], got {config.get('t_uniform')}")
    check(config["coupling"] in COUPLINGS, f"unknown --coupling {config['coupling']!r}; use independent or ot")
    check(0 < config["p_uncond"] < 1, f"--p-uncond must be in (0, 1), got {config['p_uncond']}")
    try:
        nets.validate(config, shape)
    except ValueError as e:
        training.fail(str(e))


def check_sampler(method: str, steps: int) -> None:
    training.check(method in METHODS, f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    training.check(steps > 0, f"--steps must be positive, got {steps}")


def run_loop(tr: training.Trainer, model: FM, images: bool, p_uncond: float, pairs: bool = False) -> None:
    """The training loop of train and reflow: L(theta) on data (dequantized images, normalized points) or on the
    (x_0, x_1) pairs of reflow, labels dropped to null with probability p_uncond; the loss logged per t bucket."""
    for _, (x, y) in tr:
        x_0, x_1 = (x[:, 0], x[:, 1]) if pairs else (None, dequantize(x) if images else model.normalize(x))
        y = drop_labels(y, model.num_classes, p_uncond) if model.num_classes else None
        with tr.autocast():
            mse, t = tr.models["model"](x_1, y, x_0)
        tr.step(mse.mean(), **loss_by_t(mse, t))


def sample_fn(tr: training.Trainer, seed: int):
    def fn(n):  # the PNG after training: one block of rows per class for a conditional model
        m = tr.sampling_model()
        y = (torch.arange(n) * m.num_classes) // n if m.num_classes else None
        with tr.autocast():
            return generate(m, n, generator=torch.Generator().manual_seed(seed), y=y)
    return fn


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: mnist5k (bundled), mnist, fashion, cifar10, or a 2-D toy such as grid25")] = "mnist5k",
    steps: Annotated[int, Opt(help="optimizer steps")] = 2500,
    batch_size: Annotated[int, Opt(help="examples per step (per process under torchrun)")] = 64,
    lr: Annotated[float, Opt(help="peak AdamW learning rate")] = 2e-3,
    warmup: Annotated[int, Opt(help="linear learning-rate warm-up steps")] = 100,
    t_sampling: Annotated[str, Opt(help="training times: logit-normal (SD3) or uniform (Lipman et al.)")] = "logit-normal",
    t_mean: Annotated[float, Opt(help="logit-normal t: mean m of logit(t) (SD3: 0; t = 1 is data, so m > 0 trains nearer the data)")] = 0.0,
    t_std: Annotated[float, Opt(help="logit-normal t: std s of logit(t) (SD3: 1; 1.2 is ddpm.py's noise levels)")] = 1.2,
    t_uniform: Annotated[float, Opt(help="logit-normal t: fraction of draws uniform instead (trains the whole path the likelihood's ODE runs)")] = 0.0,
    coupling: Annotated[str, Opt(help="noise-data pairing: independent or ot (minibatch optimal transport)")] = "independent",
    labels: Annotated[bool, Opt(help="class-conditional, with label dropout (for guidance)")] = False,
    p_uncond: Annotated[float, Opt(help="label dropout: probability of training on the null label")] = P_UNCOND,
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
    out: Annotated[str | None, Opt(help="run folder (default runs/fm-<data>)")] = None,
    resume: training.Resume = False,
    ckpt_every: training.CkptEvery = 250,
) -> Path:
    """Train a flow-matching model (L(theta) above); writes ckpt.pt, samples.png and metrics.jsonl to the run folder."""
    config = dict(locals())
    import data as datasets

    training.seed_everything(seed)  # the initial weights depend on --seed alone
    ds = datasets.load(data)
    validate(config, ds.shape)
    training.check(not labels or ds.num_classes > 0, f"--labels: --data {data} has no labels")
    config["out"] = out = out or f"runs/fm-{data}"
    C = ds.num_classes if labels else 0
    points = ds.kind == "points"  # standardize points so one set of hyperparameters fits every toy
    if points:  # saved: generate clamps the predicted endpoint to it (clamped_velocity)
        config["box"] = float(((ds.x - ds.x.mean(0)) / ds.x.std(0)).abs().max())
    model = build(config, ds.shape, C, *((ds.x.mean(0), ds.x.std(0)) if points else ()))
    tr = training.Trainer("fm", config, {"model": model}, ds, steps=steps, batch_size=batch_size, lr=lr, out=out,
                          device=device, seed=seed, resume=resume, ema_decay=ema_decay, warmup=warmup,
                          betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip, compile=compile,
                          ckpt_every=ckpt_every, extra={"shape": list(ds.shape), "num_classes": C})
    run_loop(tr, model, not points, p_uncond)
    return tr.finish(sample_fn(tr, seed), n=2000 if points else 100 if C else 64, reference=ds.x[:2000] if points else None)


@app.command("sample")
def sample_cmd(
    ckpt: Annotated[str, Opt(help="checkpoint written by train or reflow")] = "runs/fm-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    method: Method = "midpoint",
    steps: Annotated[int, Opt(help="ODE steps (network calls: x1 euler, x2 midpoint/heun)")] = 10,
    guidance: Annotated[float, Opt(help="guidance scale s (conditional models): 0 unconditional, 1 conditional")] = 1.0,
    label: Annotated[int, Opt(help="class to draw (conditional models); -1 = every class in turn")] = -1,
    batch_size: Annotated[int, Opt(help="samples per batch")] = 500,
    out: Annotated[str | None, Opt(help=".png grid/scatter or .npz (key x); default next to the checkpoint")] = None,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> torch.Tensor:
    """Sample a trained model with any ODE solver and number of steps."""
    import data as datasets

    check = training.check
    check(n > 0, f"--n must be positive, got {n}")
    check_sampler(method, steps)
    check(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
    path = datasets.samples_path(out, Path(ckpt).parent / f"samples-{method}-{steps}.png")
    model = load(ckpt, device)
    C = model.num_classes
    check(C > 0 or (label == -1 and guidance == 1), "--label and --guidance need a model trained with --labels")
    check(-1 <= label < max(C, 1), f"--label {label} is not a class of {model.config['data']} (0..{C - 1}, or -1)")
    y = (torch.full((n,), label) if label >= 0 else (torch.arange(n) * C) // n) if C else None
    dev = model.shift.device
    with training.autocast(dev):
        x = generate(model, n, generator=torch.Generator(dev).manual_seed(seed), y=y, method=method, steps=steps,
                     guidance=guidance, batch_size=batch_size)
    calls = nfe(method, steps) * (1 if not C or guidance == 1 else 2)
    print(f"{n} samples, {method} with {steps} steps: {calls} network evaluations per sample")
    datasets.write_samples(x, path, **({"y": y} if y is not None else {}))
    return x


@app.command()
def nll(
    ckpt: Annotated[str, Opt(help="checkpoint written by train or reflow")] = "runs/fm-mnist5k/ckpt.pt",
    split: Annotated[str, Opt(help="data split to evaluate")] = "test",
    n: Annotated[int, Opt(help="number of examples (the first n of a seeded permutation)")] = 200,
    method: Method = "midpoint",
    steps: Annotated[int, Opt(help="ODE steps from t = 1 back to 0")] = 50,
    spacing: Annotated[str, Opt(help="time grid: logit (fine near t = 0 and 1) or uniform")] = "logit",
    divergence_: Annotated[str, Opt("--divergence", help="auto (exact for points, hutchinson for images), exact or hutchinson")] = "auto",
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> float:
    """Exact -log p(x) by the ODE (instantaneous change of variables): nats for points, bits/dim for images."""
    import data as datasets

    training.check(n > 0, f"--n must be positive, got {n}")
    check_sampler(method, steps)
    training.check(divergence_ in ("auto", "exact", "hutchinson"), f"unknown --divergence {divergence_!r}")
    training.check(spacing in ("logit", "uniform"), f"unknown --spacing {spacing!r}; use logit or uniform")
    model = load(ckpt, device)
    ds = datasets.load(model.config["data"], split)
    x = ds.x[torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]]
    r = likelihood(model, x, steps=steps, method=method, spacing=spacing, seed=seed,
                   exact=None if divergence_ == "auto" else divergence_ == "exact")
    value, unit = (r["nll_bpd"], "bits/dim (dequantized 8-bit data)") if "nll_bpd" in r else (r["nll_nats"], "nats")
    print(f"FM NLL on {ds.name}:{split} (n={len(x)}, {method} {steps} {spacing} steps, {r['nfe']} calls, {r['divergence']} "
          f"divergence): {value:.4f} {unit}")
    return value


@app.command()
def reflow(
    ckpt: Annotated[str, Opt(help="the 1-rectified flow: a checkpoint of train")] = "runs/fm-mnist5k/ckpt.pt",
    pairs: Annotated[int, Opt(help="(x_0, x_1 = ODE(x_0)) pairs to draw from it")] = 4000,
    pair_method: Method = "midpoint",
    pair_steps: Annotated[int, Opt(help="ODE steps per pair")] = 8,
    steps: Annotated[int, Opt(help="optimizer steps of the 2-rectified flow (initialized from the 1-RF)")] = 1000,
    batch_size: Annotated[int, Opt(help="pairs per step")] = 64,
    lr: Annotated[float, Opt(help="AdamW learning rate")] = 2e-4,
    ema_decay: Annotated[float, Opt(help="EMA decay of the sampling weights (with warm-up)")] = 0.995,
    eval_n: Annotated[int, Opt(help="samples for the straightness and the few-step scores")] = 1000,
    device: training.Device = "auto",
    seed: training.Seed = 0,
    out: Annotated[str | None, Opt(help="run folder (default: the checkpoint's folder + -reflow)")] = None,
    resume: training.Resume = False,
) -> Path:
    """Reflow (Liu et al. Algorithm 1): train the 2-rectified flow on (x_0, ODE_1(x_0)) pairs of the 1-RF, then
    compare both (the straightness command's report)."""
    args = dict(locals())
    import data as datasets

    training.check(pairs >= batch_size > 0, f"--pairs must be >= --batch-size > 0, got {pairs}, {batch_size}")
    check_sampler(pair_method, pair_steps)
    training.check(eval_n >= 2, f"--eval-n must be at least 2, got {eval_n}")
    base = load(ckpt, device)
    config = {**base.config, **{k: v for k, v in args.items() if k not in ("eval_n", "out", "resume")}}
    config["out"] = out = out or f"{Path(ckpt).parent}-reflow"
    dev, C, shape = base.shift.device, base.num_classes, base.shape
    pairs_file = Path(out) / "pairs.pt"
    if resume and pairs_file.exists():
        xy = torch.load(pairs_file, weights_only=True)
    else:  # x_0 ~ N(0, I), x_1 = ODE_1(x_0) in the normalized space; labels uniform (guidance 1) if conditional
        g = torch.Generator().manual_seed(seed)
        x_0 = torch.randn((pairs, *shape), generator=g)
        y = torch.randint(C, (pairs,), generator=g) if C else None
        x_1 = torch.cat([sample(guided_velocity(base, y[i:i + 500].to(dev), 1.0) if C else base.velocity,
                                x_0[i:i + 500].to(dev), pair_steps, pair_method).cpu() for i in range(0, pairs, 500)])
        xy = {"x": torch.stack([x_0, x_1], 1), "y": y}  # [N, 2, ...]
        pairs_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(xy, pairs_file)
    model = build(base.config, shape, C, base.shift, base.scale)
    model.load_state_dict(base.state_dict())  # Liu et al. start the k+1-th flow from the k-th
    tr = training.Trainer("fm", config, {"model": model}, datasets.Dataset(xy["x"], xy["y"], "pairs"), steps=steps,
                          batch_size=batch_size, lr=lr, out=out, device=device, seed=seed, resume=resume,
                          ema_decay=ema_decay, warmup=0, betas=(0.9, 0.999), weight_decay=0.0, grad_clip=1.0,
                          ckpt_every=250, extra={"shape": list(shape), "num_classes": C})
    run_loop(tr, model, len(shape) == 3, base.config["p_uncond"], pairs=True)
    path = tr.finish(sample_fn(tr, seed), n=2000 if len(shape) == 1 else 64)
    if tr.is_main:
        report({"1-RF": base, "2-RF": load(path, device)}, eval_n, seed, Path(out) / "reflow.json")
    return path


def report(models: dict[str, FM], n: int, seed: int, out: Path | None = None) -> list[dict]:
    """For each model: the straightness S on 64 Euler steps (relative: S / E||Z_1 - Z_0||^2) and the Euler quality at
    1, 2 and 4 steps (Frechet distance on raw coordinates for points, FID on fid.py's MNIST features for images,
    against the test split); printed, and written to `out` as JSON."""
    import data as datasets
    import fid

    first = next(iter(models.values()))
    real = datasets.load(first.config["data"], "test").x
    extractor = "mnist" if real.dim() == 4 else "points"
    f_real, rows = fid.features(real, extractor), []
    for name, m in models.items():
        x_0 = torch.randn((n, *m.shape), generator=torch.Generator().manual_seed(seed + 1)).to(m.shift.device)
        C = m.num_classes
        v = guided_velocity(m, torch.arange(n, device=x_0.device) % C, 1.0) if C else m.velocity
        S, dist = straightness(v, x_0, 64)
        row = {"model": name, "S": S, "S_relative": S / dist}
        for k in (1, 2, 4):
            x = m.denormalize(sample(v, x_0, k, "euler")).float().cpu()
            row[f"{'fid' if extractor == 'mnist' else 'fd'}_euler{k}"] = fid.fid(
                f_real, fid.features(x.clamp(-1, 1) if extractor == "mnist" else x, extractor))
        rows.append(row)
        print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    if out is not None:
        out.write_text(json.dumps({"n": n, "reference": f"{first.config['data']}:test ({len(real)}), {extractor}",
                                   "rows": rows}, indent=1))
    return rows


@app.command("straightness")
def straightness_cmd(
    ckpt: Annotated[list[str], Opt(help="checkpoint(s) written by train or reflow (repeat to compare)")] = ["runs/fm-mnist5k/ckpt.pt"],  # noqa: B006
    n: Annotated[int, Opt(help="samples")] = 1000,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> list[dict]:
    """Straightness S of the learned flow and its quality at 1, 2 and 4 Euler steps (the few-step regime)."""
    training.check(n >= 2, f"--n must be at least 2, got {n}")
    return report({c: load(c, device) for c in ckpt}, n, seed)


# How bench.py trains, samples and scores this file (data, read by bench).
BENCH = {
    "claim": "straight paths: good samples in few steps",
    "kinds": ("points", "images"),
    # images: train's defaults. points: ddpm.py's toy noise levels (its BENCH says why), written as SD3's logit-normal
    # t: logit(t) = -ln sigma ~ N(2.5, 1.2^2). Measured at 10k steps (hq, midpoint-50 / euler-10, one seed; NLL in
    # nats, midpoint 25): grid25 uniform t 0.37 / 0.38, 1.64; m = 1.5 0.82 / 0.67; m = 2.5 0.89 / 0.72, 0.41;
    # m = 3.5 0.89 / 0.77. ring8 uniform 0.57 / 0.79, -3.46; m = 2.5 0.90 / 0.90, -3.96 (README, "On the toys").
    # A tenth uniform (t_uniform), as ddpm.py's: at 300 s without it one grid25 seed's NLL was 2e49 nats.
    # images: ddpm.py's image noise levels, ln sigma ~ N(0, 1.2^2), i.e. logit(t) ~ N(0, 1.2^2) (SD3's scale is 1)
    "options": {"points": {"t_sampling": "logit-normal", "t_mean": 2.5, "t_std": 1.2, "t_uniform": 0.1,
                           "ema_decay": 0.995},
                "images": {"t_sampling": "logit-normal", "t_std": 1.2}},
    "quick": {"points": {"hidden": 64, "depth": 2}, "images": {"ch": 8, "ch_mult": "1,2", "attn": False, "warmup": 10}},
    # "method" is generate's ODE solver; "sampler" is the row's label
    "settings": {"points": [{"sampler": "midpoint-50", "method": "midpoint", "steps": 50},
                            {"sampler": "euler-10", "method": "euler", "steps": 10}],
                 "images": [{"sampler": "midpoint-10", "method": "midpoint", "steps": 10}]},
    "quick_settings": {"points": [{"sampler": "midpoint-10", "method": "midpoint", "steps": 10},
                                  {"sampler": "euler-10", "method": "euler", "steps": 10}],
                       "images": [{"sampler": "midpoint-5", "method": "midpoint", "steps": 5}]},
    # "n" test examples (the first n of a seed-0 permutation of the test split, as the nll command takes them)
    "likelihood": {"points": {"n": 1000, "steps": 25, "seed": 0}, "images": {"n": 100, "steps": 10, "seed": 0}},
    "quick_likelihood": {"points": {"n": 200, "steps": 10, "seed": 0}, "images": {"n": 20, "steps": 5, "seed": 0}},
    "network": "net",  # v_theta: 1 call per Euler step, 2 per midpoint or Heun step
    "batch": 1000,
    "variants": {"dit": {"images": {"net": "dit"}}},  # the mnist suite's backbone variant (rows "fm+dit")
    # the samplers suite: quality against network calls on one checkpoint
    "samplers": [{"sampler": f"euler-{k}", "method": "euler", "steps": k} for k in (1, 2, 4, 8, 16, 32)]
    + [{"sampler": f"{m}-{k}", "method": m, "steps": k} for m in ("midpoint", "heun") for k in (1, 2, 4, 8, 16)],
    # the conditional and guidance suites: train --labels, the conditional velocity (s = 1) and guided (s = 1.5, the
    # README's best); the guidance suite's dial from unconditional (s = 0) to past the best (s = 5)
    "conditional_options": {"labels": True},
    "guidance": [{"sampler": f"midpoint-10 s={s:g}", "method": "midpoint", "steps": 10, "guidance": s}
                 for s in (0.0, 1.0, 1.5, 2.0, 3.0, 5.0)],
    "quick_guidance": [{"sampler": f"midpoint-5 s={s:g}", "method": "midpoint", "steps": 5, "guidance": s}
                       for s in (0.0, 1.0, 3.0)],
    "conditional": [{"sampler": "midpoint-10 s=1", "method": "midpoint", "steps": 10, "guidance": 1.0},
                    {"sampler": "midpoint-10 s=1.5", "method": "midpoint", "steps": 10, "guidance": 1.5}],
}


if __name__ == "__main__":
    app()
