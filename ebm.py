"""Energy-based model: contrastive divergence with SGLD negatives and a replay buffer.

What it optimizes (Du & Mordatch 2019, "Implicit Generation and Generalization in Energy-Based Models",
https://arxiv.org/abs/1903.08689): a network E_theta(x) defines p_theta(x) = exp(-E_theta(x)) / Z(theta). The gradient
of the negative log-likelihood needs samples of the model itself:
    grad_theta -log p_theta(x+) = grad_theta E_theta(x+) - E_{x- ~ p_theta}[grad_theta E_theta(x-)],
so each step lowers the energy of data x+ and raises that of negatives x- drawn by Langevin dynamics:
    x^k = x^{k-1} - step_size * grad_x E_theta(x^{k-1}) + noise_std * w,   w ~ N(0, I)
(Du & Mordatch write step_size = lambda / 2; with noise_std = sqrt(2 step_size) it is the unadjusted Langevin
algorithm, whose stationary law approaches p_theta as the step shrinks). Z never has to be computed.
Loss (Algorithm 1):  L = mean E(x+) - mean E(x-) + alpha * mean(E(x+)^2 + E(x-)^2),
the second term keeping energies near zero; parameter gradients are clipped (Trainer's --grad-clip).
The chains start from a replay buffer of past negatives (about 10,000 samples, 5% restarted from uniform
noise each step), so a short chain per step continues a long one. The buffer is Trainer state: it is checkpointed
and restored by --resume, so resuming is exact.

Samples: long Langevin chains from noise (`sample --langevin-steps`), or on points Metropolis-adjusted Langevin
(`sample --sampler mala`), whose accept/reject step makes exp(-E) / Z exactly invariant: the learned wells of grid25
are too narrow for ULA at any step that also travels between them (README). Likelihood: only on 2-D points can the
partition function be computed, by integrating exp(-E) on a grid (log Z = logsumexp(-E) + log cell area); in higher
dimension the grid grows as n^D, which is why EBMs report no likelihood on images.

Departures, all marked in the code. Images use Du & Mordatch / JEM-style cold chains (step 1, noise 0.01, far below
ULA's sqrt(2) = 1.4, so the samples are a tempered sampler's, not p_theta's; Grathwohl et al. 2019,
https://arxiv.org/abs/1912.03263) clamped to [-1, 1] after each step. Points use ULA proper (noise_std =
sqrt(2 step_size)), so the grid likelihood describes the sampler's own target; the energy MLP reads Fourier features
of the point and includes a Gaussian base measure |x|^2 / (2 * 2^2); the training chains step at 1e-3 and the final
chains at 1e-4, because the learned wells become too narrow for ULA at 1e-3 (see DEFAULTS).

Algorithm -> function:
    energy networks (MLP for points, CNN for images)     -> EnergyMLP, EnergyCNN, EBM
    Langevin dynamics                                    -> langevin
    Metropolis-adjusted Langevin (Roberts & Tweedie 1996) -> mala
    replay buffer with 5% restarts                       -> negatives
    contrastive divergence loss + regularizer (Alg. 1)   -> cd_loss
    exact log-likelihood on 2-D points (grid)            -> log_partition, EBM.nll; the box checked by mass_outside
    the surface shared with the other files              -> generate (samples in data space), likelihood (grid), BENCH

Commands:
    python ebm.py train                                  # mnist5k, 288 s on 2 CPU cores -> runs/ebm-mnist5k/
    python ebm.py sample --langevin-steps 1000           # -> runs/ebm-mnist5k/sample.png (.npz: raw samples)
    python ebm.py train --data grid25                    # 2-D toy, MLP energy
    python ebm.py sample --ckpt runs/ebm-grid25/ckpt.pt --sampler mala --langevin-steps 500   # exp(-E) exactly
    python ebm.py nll --ckpt runs/ebm-grid25/ckpt.pt     # exact NLL (nats) on the test points by grid integration
    torchrun --nproc_per_node=2 ebm.py train             # DDP (gloo on CPU, NCCL on GPU)
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn as nn


# ----------------------------------------------------------------------------------------------------- networks
class EnergyMLP(nn.Module):
    """E(x) for points [B, D] -> [B]: an MLP with SiLU (smooth, so grad_x E is continuous for Langevin) on the
    point and, with octaves > 0, its Fourier features sin/cos(pi 2^k x), k < octaves (Tancik et al. 2020,
    https://arxiv.org/abs/2006.10739), which let the MLP carve wells as narrow as grid25's modes."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, octaves: int = 4):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(octaves))
        layers, c = [], dim * (1 + 2 * octaves)
        for _ in range(depth):
            layers += [nn.Linear(c, hidden), nn.SiLU()]
            c = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 1))

    def forward(self, x):
        angles = (x[..., None] * self.freqs).flatten(1)  # [B, D, octaves] -> [B, D * octaves]
        return self.net(torch.cat([x, angles.sin(), angles.cos()], 1)).squeeze(1)  # [B, 1] -> [B]


class EnergyCNN(nn.Module):
    """E(x) for images [B, C, H, W] -> [B]: 3x3 convs with stride 2 (28 -> 14 -> 7 -> 4 for MNIST), SiLU, linear."""

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), ch: int = 16):
        super().__init__()
        c = shape[0]
        self.convs = nn.Sequential(
            nn.Conv2d(c, ch, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * ch, 4 * ch, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(4 * ch, 4 * ch, 3, 2, 1), nn.SiLU())
        n = self.convs(torch.zeros(1, *shape)).numel()  # flattened size, e.g. 4ch * 4 * 4 for 28x28
        self.head = nn.Linear(n, 1)

    def forward(self, x):
        return self.head(self.convs(x).flatten(1)).squeeze(1)  # [B, n] -> [B]


class EBM(nn.Module):
    """An energy network working in a normalized space x = (data - shift) / scale (identity for images in [-1, 1];
    the train set's mean and std for points, so one set of hyperparameters fits every toy).
    base_std > 0 adds |x|^2 / (2 base_std^2), i.e. p(x) ~ exp(-net(x)) N(x; 0, base_std^2 I): a departure for points
    that keeps exp(-E) integrable and turns chains back where the network was never trained (far from the data)."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...], shift=0.0, scale=1.0, base_std: float = 0.0):
        super().__init__()
        self.net, self.shape, self.base_std = net, tuple(shape), base_std
        self.images = len(self.shape) == 3
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x):
        E = self.net(x)  # [B]
        if self.base_std > 0:
            E = E + (x ** 2).flatten(1).sum(1) / (2 * self.base_std ** 2)  # Gaussian base measure
        return E

    def normalize(self, x):
        return (x - self.shift) / self.scale

    def denormalize(self, x):
        return x * self.scale + self.shift

    def noise(self, n: int, generator=None) -> torch.Tensor:
        """Chain starts: uniform on [-1, 1] per pixel (images), on [-2, 2]^D in normalized units (points); drawn where
        `generator` lives (the CPU's global RNG without one), then moved to the model's device."""
        width = 1.0 if self.images else 2.0
        u = torch.rand((n, *self.shape), generator=generator, device=generator.device if generator is not None else None)
        return ((u * 2 - 1) * width).to(self.shift.device)

    @torch.no_grad()
    def nll(self, x: torch.Tensor, box: float = 4.0, n: int = 1000, check: bool = True, log_z=None) -> torch.Tensor:
        """-log p(x) in nats for 2-D points x in data space [N, 2]: E(u) + log Z over u = normalize(x), plus the
        log-Jacobian sum(log scale) of the normalization, since p_x(x) = p_u(u) / prod(scale). Exact up to the grid
        (see log_partition; pass `log_z` if it is known); with `check`, warns when doubling the box would change
        log Z by 0.01 nats or more."""
        log_z = log_partition(self, box, n, self.shift.device) if log_z is None else log_z
        if check and (lost := mass_outside(self, box, n, self.shift.device, log_z)) >= 0.01:
            warnings.warn(f"exp(-E) has mass outside [-{box:g}, {box:g}]^2: doubling the box raises log Z by "
                          f"{lost:.3f} nats, so this NLL is too low by about that much; pass a larger box")
        return self(self.normalize(x)) + log_z + self.scale.log().sum()


# ----------------------------------------------------------------------------------------------------- sampler
def langevin(energy_fn: Callable, x: torch.Tensor, steps: int, step_size: float, noise_std: float,
             generator: torch.Generator | None = None, clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """x <- x - step_size * grad_x E(x) + noise_std * N(0, I), `steps` times (energy_fn: [B, ...] -> [B]).
    With noise_std = sqrt(2 step_size) this is the unadjusted Langevin algorithm. `clamp` (a departure used by
    Du & Mordatch's code for images) projects x back into a box after each step. The noise is drawn where `generator`
    lives (a CPU generator can drive chains on a GPU); without one, from the global RNG of x's device. Returns a
    detached tensor."""
    x = x.detach().clone()
    where = generator.device if generator is not None else x.device
    with torch.enable_grad():  # also under no_grad (Trainer.finish samples inside torch.no_grad)
        for _ in range(steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy_fn(x).sum(), x)  # sum over the batch: per-example gradients
            w = torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)  # w ~ N(0, I)
            x = (x - step_size * grad + noise_std * w).detach()
            if clamp is not None:
                x = x.clamp(*clamp)
    return x


def mala(energy_fn: Callable, x: torch.Tensor, steps: int, step_size: float,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996, https://doi.org/10.2307/3318418): the ULA proposal
    y = x - h grad E(x) + sqrt(2h) w, accepted with probability min(1, exp(E(x) - E(y)) q(x | y) / q(y | x)),
    q(y | x) = N(y; x - h grad E(x), 2h I), otherwise x stays. p_theta = exp(-E) / Z is then exactly invariant at any
    step h, where ULA's own stationary law drifts from it as h grows (on a Gaussian of variance s^2 ULA's is
    s^2 / (1 - h / (2 s^2))). Returns (x detached, the mean acceptance rate)."""
    h = step_size
    where = generator.device if generator is not None else x.device

    def energy_and_grad(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            E = energy_fn(z)
            (grad,) = torch.autograd.grad(E.sum(), z)
        return E.detach(), grad

    def log_q(to, frm, grad_frm):  # log N(to; frm - h grad E(frm), 2h I) up to a constant that cancels
        return -((to - frm + h * grad_frm) ** 2).flatten(1).sum(1) / (4 * h)

    x = x.detach().clone()
    E, grad = energy_and_grad(x)
    accepted = torch.zeros((), device=x.device)  # accepted moves, summed on the device: one sync at the end
    for _ in range(steps):
        w = torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)  # w ~ N(0, I)
        y = x - h * grad + math.sqrt(2 * h) * w
        E_y, grad_y = energy_and_grad(y)
        log_alpha = E - E_y + log_q(x, y, grad_y) - log_q(y, x, grad)
        u = torch.rand(x.shape[0], generator=generator, device=where, dtype=x.dtype).to(x.device)
        accept = u.log() < log_alpha  # [B]
        keep = accept.view(-1, *[1] * (x.dim() - 1))
        x, E, grad = torch.where(keep, y, x), torch.where(accept, E_y, E), torch.where(keep, grad_y, grad)
        accepted += accept.sum()
    return x, accepted.item() / (max(steps, 1) * x.shape[0])  # 0.0 for no steps


def negatives(energy_fn: Callable, buffer: torch.Tensor, fresh: Callable[[int], torch.Tensor], batch_size: int,
              steps: int, step_size: float, noise_std: float, restart: float = 0.05,
              clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """Replay buffer (Du & Mordatch): take batch_size stored chains, restart a fraction `restart` of them from noise,
    run `steps` Langevin steps, write them back in place, return them as the negatives x-."""
    idx = torch.randint(len(buffer), (batch_size,), device=buffer.device)
    x = buffer[idx]
    new = torch.rand(batch_size, device=buffer.device) < restart  # 5% fresh chains keep exploring
    x = torch.where(new.view(-1, *[1] * (x.dim() - 1)), fresh(batch_size), x)
    x = langevin(energy_fn, x, steps, step_size, noise_std, clamp=clamp)
    buffer[idx] = x
    return x


# ----------------------------------------------------------------------------------------------------- loss
def cd_loss(E_pos: torch.Tensor, E_neg: torch.Tensor, alpha: float) -> torch.Tensor:
    """Algorithm 1: L = mean E(x+) - mean E(x-) + alpha * mean(E(x+)^2 + E(x-)^2)."""
    return E_pos.mean() - E_neg.mean() + alpha * (E_pos ** 2 + E_neg ** 2).mean()


# ----------------------------------------------------------------------------------------------------- likelihood
def _sum_exp_neg_E(energy_fn: Callable, grid: torch.Tensor) -> torch.Tensor:
    """logsumexp of -E over the points of a grid [M, 2], in chunks, in float64."""
    return torch.logsumexp(torch.cat([-energy_fn(chunk).double() for chunk in grid.split(65536)]), 0)


@torch.no_grad()
def log_partition(energy_fn: Callable, box: float = 4.0, n: int = 1000, device=None) -> torch.Tensor:
    """log Z = log int exp(-E(u)) du over the square [-box, box]^2, by the midpoint rule on an n x n grid:
    log Z ~ logsumexp_ij(-E(u_ij)) + log(h^2), h = 2 box / n. Possible only in 2-D (n^D evaluations); it assumes
    that exp(-E) has negligible mass outside the box, which nothing in training guarantees: `mass_outside` checks."""
    h = 2 * box / n
    u = torch.linspace(-box + h / 2, box - h / 2, n, device=device)
    return (_sum_exp_neg_E(energy_fn, torch.cartesian_prod(u, u)) + 2 * math.log(h)).float()  # grid [n*n, 2]


@torch.no_grad()
def mass_outside(energy_fn: Callable, box: float = 4.0, n: int = 1000, device=None, log_box=None) -> float:
    """log Z over the doubled box minus log Z over the box, log(1 + Z_ring / Z_box), in nats: how much -log p
    would rise if the integral took in the ring [-2 box, 2 box]^2 minus [-box, box]^2. The ring is integrated at
    twice the cell width (its mass is meant to be tiny, so its relative precision matters little): 3/4 of the
    inner grid's cost."""
    m = (n + 1) // 2  # coarse cells per axis inside the box
    h = 2 * box / m
    inner = torch.linspace(-box + h / 2, box - h / 2, m, device=device)
    outer = box + h / 2 + h * torch.arange(math.ceil(box / h), device=device)  # cell centres beyond +box
    axis = torch.cat([-outer.flip(0), inner, outer])
    grid = torch.cartesian_prod(axis, axis)
    ring = grid[grid.abs().amax(1) > box]  # [M, 2], the cells outside [-box, box]^2
    log_ring = _sum_exp_neg_E(energy_fn, ring) + 2 * math.log(h)
    log_box = torch.as_tensor(log_partition(energy_fn, box, n, device) if log_box is None else log_box).double()
    return float(torch.logaddexp(log_box, log_ring) - log_box)


@torch.no_grad()
def likelihood(model: EBM, x: torch.Tensor, box: float = 4.0, grid: int = 1000) -> dict:
    """Mean -log p(x) in nats on 2-D points by grid integration of exp(-E) (the stable surface): {"nll_nats",
    "kind": "grid", "log_z", "mass_outside_nats", "per_example"}, mass_outside_nats being how much doubling the box
    would add to log Z."""
    if model.images:
        raise ValueError("the grid likelihood needs 2-D points (an image would need grid^D energies)")
    dev = model.shift.device
    log_z = log_partition(model, box, grid, dev)
    lost = mass_outside(model, box, grid, dev, log_z)
    per = model.nll(x.to(dev), box, grid, check=False, log_z=log_z).cpu()  # [N]
    return {"nll_nats": float(per.mean()), "kind": "grid", "log_z": float(log_z), "mass_outside_nats": lost,
            "per_example": per}


@torch.no_grad()
def energy(model: EBM, x: torch.Tensor, batch_size: int = 500) -> dict:
    """E(x) per example for data x in data space (images too): -log p(x) up to the constant log Z (+ the log-Jacobian
    of the normalization), the unnormalized NLL that ranks examples as the NLL does. {"per_example": [N], "kind":
    "energy"}: bench.py's anomaly score where no grid integral is possible."""
    dev = model.shift.device
    E = torch.cat([model(model.normalize(xb.to(dev))).float().cpu() for xb in x.split(batch_size)])
    return {"per_example": E, "kind": "energy", "n": len(x)}


# ----------------------------------------------------------------------------------------------------- commands
import sys  # noqa: E402  (below: the CLI, which uses data.py and training.py)
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="Energy-based model: contrastive divergence with Langevin negatives and a replay buffer.")
# What the 0 / -1 defaults of train's options mean, by data kind. Images: Du & Mordatch / JEM-style cold chains (step
# 1, noise 0.01; Grathwohl et al. 2019), lr 1e-4. Points: ULA; training chains at step 1e-3, final samples at 1e-4,
# because the learned wells get narrow enough that ULA at 1e-3 is unstable in them (measured on grid25: 25/25 modes,
# ~45% high quality at 1e-4; 8-11 modes, ~1% at 3e-4), lr 1e-3.
DEFAULTS = {"images": dict(lr=1e-4, step_size=1.0, noise_std=0.01, sample_step_size=1.0),
            "points": dict(lr=1e-3, step_size=1e-3, noise_std=-1.0, sample_step_size=1e-4)}
# MALA's default step on points (normalized units): on a grid25 model at 300 s (hq of 2,500 chains from noise, 500
# steps) h = 1e-4 0.04, 1e-3 0.33, 1e-2 0.66 (acceptance 0.24), 3e-2 0.62, 1e-1 0.49; ULA 1e-4 0.04 (README)
MALA_STEP = 1e-2
SAMPLERS = ("ula", "mala")


def build(config: dict) -> EBM:
    """The untrained model that a config describes; train sets shift/scale, load reads them. The model keeps the
    config (`model.config`, also in its EMA copy): `generate` reads the sampling chain's defaults from it."""
    shape = tuple(config["shape"])
    if config["kind"] == "points":
        net = EnergyMLP(shape[0], config["hidden"], octaves=config["octaves"])
        model = EBM(net, shape, torch.zeros(shape), torch.ones(shape), config["base_std"])
    else:
        model = EBM(EnergyCNN(shape, config["ch"]), shape)
    model.config = config
    return model


def resolve(config: dict, name: str) -> float:
    """An option's value, or the default for the data kind when it was left at 0 (-1 for noise_std)."""
    value = config[name]
    unset = value < 0 if name == "noise_std" else value == 0  # noise 0 is a valid choice (gradient descent)
    return DEFAULTS[config["kind"]][name] if unset else value


def train_chain(config: dict) -> tuple[float, float, tuple[float, float] | None]:
    """(step_size, noise_std, clamp) of the training chains; noise -1 means ULA, sqrt(2 step_size)."""
    step, noise = resolve(config, "step_size"), resolve(config, "noise_std")
    return step, math.sqrt(2 * step) if noise < 0 else noise, (-1.0, 1.0) if config["kind"] == "images" else None


def chain_settings(config: dict, step_size: float = 0.0) -> tuple[float, float, tuple[float, float] | None]:
    """(step_size, noise_std, clamp) of the sampling chains: the training chains' temperature (ULA for points,
    noise 0.01 for images) at step `step_size`, or at the config's sample_step_size when that is 0."""
    step, noise, clamp = train_chain(config)
    sample_step = step_size or resolve(config, "sample_step_size")
    if config["kind"] == "points" and resolve(config, "noise_std") < 0:
        noise = math.sqrt(2 * sample_step)  # ULA at the sampling step
    return sample_step, noise, clamp


def load(path: str | Path, device: str = "cpu") -> EBM:
    """Rebuild the model from a checkpoint's config and load its EMA weights, ready to sample."""
    ckpt = training.load_checkpoint(path, "ebm")
    model = build(ckpt["config"])
    try:
        model.load_state_dict(training.ema_state(ckpt, "model"))
    except (RuntimeError, KeyError) as e:
        training.fail(f"{path} does not match its own config ({str(e).splitlines()[0][:120]})")
    return model.to(device).eval()


def generate(model: EBM, n: int, *, generator: torch.Generator | None = None, y=None, steps: int = 1000,
             step_size: float = 0.0, noise_std: float = -1.0, batch: int = 500, method: str = "ula") -> torch.Tensor:
    """n samples in data space on the CPU: chains of `steps` steps from noise (EBM.noise), `batch` chains at a time
    with one generator running through. method "ula" (Langevin): step_size 0 and noise_std -1 are the checkpoint's
    sampling chain (chain_settings: ULA at sample_step_size for points, the cold clamped chain for images). "mala"
    (points only): Metropolis-adjusted Langevin at step_size, 0 = MALA_STEP."""
    if y is not None:
        raise ValueError("ebm.py's EBM is unconditional: y must be None")
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; use {' or '.join(SAMPLERS)}")
    if method == "mala" and model.images:  # images are trained against cold chains, not exp(-E) itself
        raise ValueError("mala samples exp(-E) itself: points only (images use the cold chains the model was trained with)")
    step, noise, clamp = chain_settings(model.config, step_size)
    noise = noise if noise_std < 0 else noise_std
    out = []
    for start in range(0, n, batch):
        x = model.noise(min(batch, n - start), generator)
        if method == "mala":
            x, _ = mala(model, x, steps, step_size or MALA_STEP, generator)
        else:
            x = langevin(model, x, steps, step, noise, generator, clamp)
        out.append(model.denormalize(x).cpu())
    return torch.cat(out)


@app.command()
def train(
    data: Annotated[str, typer.Option(help="dataset: mnist5k, mnist, fashion, cifar10, or a 2-D toy (grid25, ...)")]
    = "mnist5k",
    steps: Annotated[int, typer.Option(help="training steps")] = 1000,
    batch_size: Annotated[int, typer.Option(help="data examples (and negatives) per step")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate; 0 = 1e-4 for images, 1e-3 for points")] = 0.0,
    alpha: Annotated[float, typer.Option(help="energy regularizer alpha * (E+^2 + E-^2); it caps the data/sample "
                                             "energy gap near 1/alpha")] = 0.01,
    langevin_steps: Annotated[int, typer.Option(help="K, Langevin steps per training step")] = 20,
    step_size: Annotated[float, typer.Option(help="step of the training chains; 0 = 1.0 for images (JEM), 1e-3 for "
                                                  "points (normalized units)")] = 0.0,
    noise_std: Annotated[float, typer.Option(help="Langevin noise; -1 = 0.01 for images (JEM), sqrt(2 step) = ULA "
                                                  "for points")] = -1.0,
    sample_step_size: Annotated[float, typer.Option(help="step of the sampling chains; 0 = 1.0 for images, 1e-4 "
                                                         "for points")] = 0.0,
    buffer_size: Annotated[int, typer.Option(help="replay buffer size")] = 10_000,
    restart: Annotated[float, typer.Option(help="fraction of chains restarted from noise each step")] = 0.05,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    max_energy: Annotated[float, typer.Option(help="stop when |E| exceeds this (diverging energies)")] = 1000.0,
    ch: Annotated[int, typer.Option(help="CNN base channels (images)")] = 16,
    hidden: Annotated[int, typer.Option(help="MLP width (points)")] = 128,
    octaves: Annotated[int, typer.Option(help="Fourier-feature octaves of the MLP input (points; 0 = plain x)")] = 4,
    base_std: Annotated[float, typer.Option(help="Gaussian base measure N(0, base_std^2) in normalized units "
                                                 "(points; 0 = none)")] = 2.0,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of the weights used to sample")] = 0.999,
    sample_steps: Annotated[int, typer.Option(help="Langevin steps from noise for the final samples.png")] = 1000,
    device: training.Device = "auto",
    seed: training.Seed = 0,
    out: Annotated[str, typer.Option(help="output folder; default runs/ebm-<data>")] = "",
    resume: training.Resume = False,
) -> Path:
    """Train E_theta by contrastive divergence with replay-buffer Langevin negatives."""
    config = dict(locals())  # every option above, saved in the checkpoint
    import data as datasets

    check = training.check
    check(langevin_steps >= 1 and sample_steps >= 1, "--langevin-steps and --sample-steps must be positive")
    check(lr >= 0 and step_size >= 0 and sample_step_size >= 0, "--lr, --step-size and --sample-step-size must be "
          ">= 0 (0 = the default for the data)")
    check(noise_std >= 0 or noise_std == -1, f"--noise-std must be >= 0 (or -1 = default), got {noise_std}")
    check(buffer_size >= batch_size, f"--buffer-size ({buffer_size}) must be at least --batch-size ({batch_size})")
    check(0 <= restart <= 1, f"--restart must be in [0, 1], got {restart}")
    check(alpha >= 0 and grad_clip >= 0 and max_energy > 0, "--alpha, --grad-clip >= 0 and --max-energy > 0")
    check(ch >= 1 and hidden >= 1, "--ch and --hidden must be positive")
    ds = datasets.load(data, "train")
    config.update(kind=ds.kind, shape=list(ds.shape))  # derived, so that load() can rebuild the network
    training.seed_everything(seed)  # the initial weights depend on --seed only
    model = build(config)
    if ds.kind == "points":  # normalize toys by the train set's mean and std
        model.shift.copy_(ds.x.mean(0))
        model.scale.copy_(ds.x.std(0))
    step, noise, clamp = train_chain(config)
    buffer = model.noise(buffer_size, torch.Generator().manual_seed(seed))  # [buffer_size, *shape], uniform noise
    tr = training.Trainer("ebm", config, {"model": model}, ds, steps=steps, batch_size=batch_size,
                          lr=resolve(config, "lr"),
                          out=out or f"runs/ebm-{data}", device=device, seed=seed, resume=resume,
                          ema_decay=ema_decay, betas=(beta1, beta2), weight_decay=weight_decay,
                          grad_clip=grad_clip, extra={"buffer": buffer})
    tr.extra["buffer"] = tr.extra["buffer"].to(tr.dev)  # (a resumed buffer is already there)
    for s, (x, _) in tr:
        # negatives from the replay buffer; chains run on the unwrapped model (no DDP hooks for input gradients)
        x_neg = negatives(model, tr.extra["buffer"], model.noise, len(x), langevin_steps, step, noise, restart, clamp)
        with tr.autocast():
            E = tr.models["model"](torch.cat([model.normalize(x), x_neg])).float()  # one pass: [2B]
        E_pos, E_neg = E[:len(x)], E[len(x):]
        if not torch.isfinite(E).all() or E.abs().max() > max_energy:
            raise training.TrainingFailed(
                f"energies diverged at step {s}: mean E(data) {E_pos.mean():.4g}, mean E(samples) {E_neg.mean():.4g}, "
                f"max |E| {E.abs().max():.4g} > --max-energy {max_energy:g}; try a lower --lr, a larger --alpha or "
                f"a smaller --step-size")
        tr.step(cd_loss(E_pos, E_neg, alpha), e_pos=E_pos.mean().detach(), e_neg=E_neg.mean().detach())

    def sample_fn(n):
        return generate(tr.sampling_model(), n, steps=sample_steps)

    path = tr.finish(sample_fn, n=1000 if ds.kind == "points" else 64,
                     reference=ds.x[:5000] if ds.kind == "points" else None)
    if ds.kind == "points" and tr.is_main:
        grid_nll(tr.sampling_model(), datasets.load(data, "test").x.to(tr.dev), "test NLL")
    return path


@app.command()
def sample(
    ckpt: Annotated[str, typer.Option(help="checkpoint written by train")] = "runs/ebm-mnist5k/ckpt.pt",
    n: Annotated[int, typer.Option(help="number of samples")] = 64,
    out: Annotated[str, typer.Option(help=".png (grid or scatter) or .npz (raw samples under key x, data space); "
                                          "default <ckpt folder>/sample.png")] = "",
    langevin_steps: Annotated[int, typer.Option(help="length of each chain from noise")] = 1000,
    step_size: Annotated[float, typer.Option(help="Langevin step; 0 = the checkpoint's sampling step (mala: 1e-2)")] = 0.0,
    noise_std: Annotated[float, typer.Option(help="Langevin noise; -1 = the checkpoint's sampling noise")] = -1.0,
    sampler: Annotated[str, typer.Option(help="ula (Langevin, as trained) or mala (Metropolis-adjusted: exactly "
                                              "exp(-E) at any step; points; step 0 = 1e-2)")] = "ula",
    seed: training.Seed = 0,
    device: training.Device = "auto",
) -> Path:
    """Draw samples by long Langevin chains from noise."""
    import data as datasets

    training.check(n >= 1, f"--n must be positive, got {n}")
    training.check(langevin_steps >= 1, f"--langevin-steps must be positive, got {langevin_steps}")
    training.check(step_size >= 0 and (noise_std >= 0 or noise_std == -1),
                   "--step-size must be >= 0 and --noise-std >= 0 (or -1)")
    training.check(sampler in SAMPLERS, f"unknown --sampler {sampler!r}; use {' or '.join(SAMPLERS)}")
    training.check(sampler == "ula" or noise_std == -1, "--noise-std is ULA's: mala's noise is sqrt(2 step)")
    path = datasets.samples_path(out, Path(ckpt).parent / "sample.png")
    model = load(ckpt, training.device(device))
    training.check(sampler == "ula" or not model.images, "--sampler mala samples exp(-E) itself: points only (the "
                   "image model is trained against cold chains)")
    x = generate(model, n, generator=torch.Generator().manual_seed(seed), steps=langevin_steps, step_size=step_size,
                 noise_std=noise_std, method=sampler)  # by default the chain of train's samples.png
    ref = datasets.load(model.config["data"], "test").x[:2000] if model.config["kind"] == "points" else None
    return datasets.write_samples(x, path, reference=ref)  # .npz: raw samples under key x; .png: grid or scatter


@app.command()
def nll(
    ckpt: Annotated[str, typer.Option(help="checkpoint of a model trained on 2-D points")] = "runs/ebm-grid25/ckpt.pt",
    split: Annotated[str, typer.Option(help="train or test")] = "test",
    box: Annotated[float, typer.Option(help="integrate over [-box, box]^2 in normalized units")] = 4.0,
    grid: Annotated[int, typer.Option(help="grid points per axis")] = 1000,
) -> float:
    """Exact mean -log p(x) in nats on 2-D points: log Z by integrating exp(-E) on a grid (impossible on images)."""
    import data as datasets

    training.check(box > 0 and grid >= 2, "--box must be positive and --grid at least 2")
    model = load(ckpt)
    training.check(model.config["kind"] == "points", "nll needs a model of 2-D points: the grid integral of "
                   "exp(-E) is only feasible in 2-D (an image would need grid^784 evaluations)")
    return grid_nll(model, datasets.load(model.config["data"], split).x, f"{model.config['data']} {split}: NLL",
                    box, grid)


def grid_nll(model: EBM, x: torch.Tensor, what: str, box: float = 4.0, grid: int = 1000) -> float:
    """`likelihood`, printed with log Z and the box check (and a warning line if mass is lost)."""
    r = likelihood(model, x, box, grid)
    print(f"{what} {r['nll_nats']:.4f} nats per point (log Z = {r['log_z']:.4f} over [-{box:g}, {box:g}]^2 in "
          f"normalized units, {grid}x{grid} grid; doubling the box adds {r['mass_outside_nats']:.2g} nats)")
    if r["mass_outside_nats"] >= 0.01:
        print(f"warning: exp(-E) has mass outside the box; this NLL is too low by about "
              f"{r['mass_outside_nats']:.3f} nats (pass a larger --box)", file=sys.stderr)
    return r["nll_nats"]


# How bench.py trains, samples and scores this file (data, read by bench; the numbers of its earlier adapters).
BENCH = {
    "claim": "slow sampling",
    "kinds": ("points", "images"),
    "options": {"points": {"sample_steps": 100}, "images": {"sample_steps": 50}},  # train's own samples.png: short
    "quick": {"points": {"hidden": 16, "langevin_steps": 5, "sample_steps": 5},
              "images": {"ch": 4, "langevin_steps": 5, "sample_steps": 5}},
    # points: the chain the model trains with (ULA) and the Metropolis-adjusted one that samples exp(-E) exactly
    "settings": {"points": [{"sampler": "langevin-500", "steps": 500},
                            {"sampler": "mala-500", "steps": 500, "method": "mala"}],
                 "images": [{"sampler": "langevin-100", "steps": 100}]},
    "quick_settings": {"points": [{"sampler": "langevin-20", "steps": 20}],
                       "images": [{"sampler": "langevin-20", "steps": 20}]},
    # the whole test split of a toy (5,000 points); the grid integral is only feasible in 2-D
    "likelihood": {"points": {"n": 5000, "box": 4.0, "grid": 1000}, "images": None},
    "quick_likelihood": {"points": {"n": 5000, "box": 4.0, "grid": 200}, "images": None},
    "network": "",  # the energy: one forward + backward (grad_x E) per Langevin step
    "batch": 500,
    # bench's anomaly suite on images: the energy E(x) ranks examples as -log p(x) does (log Z is a constant)
    "anomaly": {"images": {"function": "energy"}},
}


if __name__ == "__main__":
    app()
