"""GAN: a generator and a discriminator in a two-player game; DCGAN for images, an MLP GAN for 2-D points.

What it optimizes (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661, eq. 1):
    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))],   D(x) = sigmoid(logit(x)).
G is trained with the non-saturating loss -log D(G(z)) (same paper, sec. 3). Alternatives here: the hinge loss
(Lim & Ye 2017, https://arxiv.org/abs/1705.02894; Miyato et al. 2018 eq. 16) and WGAN-GP (Gulrajani et al. 2017,
https://arxiv.org/abs/1704.00028, Algorithm 1: critic loss D(x~) - D(x) + lambda (||grad D(x^)||_2 - 1)^2,
lambda = 10, n_critic critic steps per G step). Stabilizers: spectral normalization of every D layer (Miyato et al.
2018, https://arxiv.org/abs/1802.05957), separate learning rates for G and D (TTUR, Heusel et al. 2017,
https://arxiv.org/abs/1706.08500), an exponential moving average of G's weights for sampling (Yazici et al. 2019,
https://arxiv.org/abs/1806.04498), packing: D judges k samples at once (PacGAN, Lin et al. 2018,
https://arxiv.org/abs/1712.04086), which penalizes a G that drops modes, and the R1 penalty gamma/2 E||grad D(x)||^2
on real data (Mescheder et al. 2018, https://arxiv.org/abs/1801.04406, eq. 9), which damps the circling around the
equilibrium that loses modes (on grid25: all 25 modes in 12 of 12 stacked runs at 20,000 steps, 4 of 12 without).

Algorithm -> function:
    DCGAN generator / discriminator (Radford et al. 2016, https://arxiv.org/abs/1511.06434) -> ConvG / ConvD
    MLP generator / discriminator for 2-D points                                            -> MLPG / MLPD
    D and G losses: bce (non-saturating), hinge, wgan-gp                                    -> d_loss / g_loss
    gradient penalty, WGAN-GP Algorithm 1 lines 4-8                                         -> gradient_penalty
    R1 penalty on real data, Mescheder et al. eq. 9                                         -> r1_penalty
    alternating updates, n_critic D steps per G step                                        -> train
    samples x = G(z), z ~ N(0, I), in data space (the surface shared with the other files)   -> generate
No likelihood: G defines a distribution only through its samples. `BENCH` says how bench.py runs this file.
The training log (runs/gan-<data>/metrics.jsonl) holds what a practitioner watches: loss_D, loss_G, the mean D output
on real and fake batches (d_real, d_fake: logits for bce), the gradient norms of D and G (grad_norm_D, grad_norm_G),
and on grid25 / ring8 the modes covered and the high-quality fraction (PacGAN definitions, fid.mode_coverage).

Commands:
    python gan.py train                        # DCGAN on mnist5k, 264 s on 2 CPU cores -> runs/gan-mnist5k/
    python gan.py sample --out digits.png      # EMA generator; .npz writes the raw samples (key x)
    python gan.py train --data grid25          # BN G, TTUR, PacGAN2, R1, EMA: 25 modes, 73% hq (3 seeds, 226 s; README)
    python gan.py train --data grid25 --steps 150000   # the same, longer: 25 modes, 95.3% hq (PacGAN4: 24.8, 93.6%)
    python gan.py train --data grid25 --no-g-bn --pack 1 --lr-d 5e-4 --r1 0 --ema-decay 0   # plain: 17.3 modes, 71% hq
    python gan.py train --loss wgan-gp --no-sn --data grid25    # WGAN-GP: n_critic 5, Adam (0, 0.9) by default
    python gan.py train --cond --out runs/gan-mnist5k-cond       # cGAN: G(z, y), projection D (Miyato & Koyama 2018)
    python gan.py sample --ckpt runs/gan-mnist5k-cond/ckpt.pt --label 7   # sevens; prints fid.classify's label accuracy

Conditional GAN (`--cond`): G(z, y) takes a class embedding; D is a projection discriminator (Miyato & Koyama 2018,
https://arxiv.org/abs/1802.05637, eq. 3) D(x, y) = psi(phi(x)) + y^T V phi(x) -> `projection`, packed as PacGAN packs.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

LOSSES = ("bce", "hinge", "wgan-gp")


# ----------------------------------------------------------------------------------------------------- networks
def _sn(layer: nn.Module, on: bool) -> nn.Module:
    """Spectral norm: W / sigma(W), sigma estimated by one power iteration per forward pass (Miyato et al. alg. 1)."""
    return spectral_norm(layer) if on else layer


def projection(phi: torch.Tensor, embed: nn.Embedding, y: torch.Tensor, pack: int) -> torch.Tensor:
    """The projection discriminator's class term y^T V phi(x) (Miyato & Koyama 2018, https://arxiv.org/abs/1802.05637,
    eq. 3: D(x, y) = psi(phi(x)) + y^T V phi(x)), phi [B/k, F]. Packed (PacGAN): y is the k one-hots of the packed
    samples side by side, so V has a row per (slot j, class) and y^T V = sum_j V[j C + y_j] [B/k, F]."""
    y = y.view(-1, pack)  # [B/k, k]
    slots = torch.arange(pack, device=y.device) * (embed.num_embeddings // pack)
    return (embed(y + slots).sum(1) * phi).sum(1)  # [B/k]


class MLPG(nn.Module):
    """z [B, z_dim] -> point [B, 2] in raw coordinates. The net works on standardized points: x = mean + std * net(z).
    bn: Linear -> BatchNorm -> ReLU hidden layers, the kind of generator PacGAN uses on the grid (Lin et al.
    2018, grid experiments; measured here without R1 at 20,000 steps: 22-25 modes, plain GAN 14-19, README);
    otherwise Linear -> LeakyReLU(0.2). In eval mode BN uses running statistics, so each z is sampled on its own."""

    def __init__(self, z_dim: int = 16, width: int = 256, depth: int = 3, dim: int = 2, bn: bool = False,
                 num_classes: int = 0):
        super().__init__()
        layers, d = [], z_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.BatchNorm1d(width), nn.ReLU()] if bn else \
                [nn.Linear(d, width), nn.LeakyReLU(0.2)]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, dim))
        self.z_dim, self.num_classes = z_dim, num_classes
        self.register_buffer("mean", torch.zeros(dim))  # training-set mean and std, filled in by train
        self.register_buffer("std", torch.ones(dim))
        if num_classes:  # cGAN: made last, so that an unconditional G's initial weights stay what they were
            self.embed = nn.Embedding(num_classes, width)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # cGAN: a one-hot y concatenated to z (Mirza & Osindero 2014, https://arxiv.org/abs/1411.1784) is, in the first
        # layer, W [z; onehot(y)] = W_z z + W_y[:, y]: the class embedding added to its output
        h = self.net(z) if y is None else self.net[1:](self.net[0](z) + self.embed(y))
        return self.mean + self.std * h


class MLPD(nn.Module):
    """points [B, 2] -> logits [B / pack]: standardize, then pack k points into one input of 2k numbers (PacGAN)."""

    def __init__(self, width: int = 256, depth: int = 3, pack: int = 1, sn: bool = True, dim: int = 2,
                 num_classes: int = 0):
        super().__init__()
        layers, d = [], dim * pack
        for _ in range(depth):
            layers += [_sn(nn.Linear(d, width), sn), nn.LeakyReLU(0.2)]
            d = width
        self.net = nn.Sequential(*layers, _sn(nn.Linear(d, 1), sn))
        self.pack, self.num_classes = pack, num_classes
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if num_classes:  # projection: V, one row of phi's width per (packed slot, class)
            self.embed = _sn(nn.Embedding(pack * num_classes, width), sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = ((x - self.mean) / self.std).reshape(-1, x.shape[1] * self.pack)  # [B, 2] -> [B/k, 2k]
        if y is None:
            return self.net(h).squeeze(1)
        phi = self.net[:-1](h)  # [B/k, width]
        return self.net[-1](phi).squeeze(1) + projection(phi, self.embed, y, self.pack)  # psi(phi) + y^T V phi


class ConvG(nn.Module):
    """DCGAN generator: z [B, z_dim] -> 4x4 -> 8x8 -> 16x16 -> 32x32 by stride-2 transposed convolutions with
    BatchNorm + ReLU, tanh output (Radford et al. sec. 3). 28x28 data: the centre 28x28 of the 32x32 output is kept."""

    def __init__(self, z_dim: int = 64, ch: int = 32, shape: tuple = (1, 28, 28), num_classes: int = 0):
        super().__init__()
        c = shape[0]

        def up(i, o):  # doubles the resolution
            return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.net = nn.Sequential(nn.ConvTranspose2d(z_dim, 4 * ch, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * ch),
                                 nn.ReLU(), *up(4 * ch, 2 * ch), *up(2 * ch, ch),
                                 nn.ConvTranspose2d(ch, c, 4, 2, 1), nn.Tanh())
        self.z_dim, self.shape, self.num_classes = z_dim, tuple(shape), num_classes
        if num_classes:  # cGAN: the first layer's [4ch, 4, 4] output per class (a one-hot y concatenated to z)
            self.embed = nn.Embedding(num_classes, 4 * ch * 16)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            x = self.net(z[:, :, None, None])  # [B, z_dim, 1, 1] -> [B, C, 32, 32]
        else:
            a = self.net[0](z[:, :, None, None])  # [B, 4ch, 4, 4]
            x = self.net[1:](a + self.embed(y).view(a.shape))
        top, left = (32 - self.shape[1]) // 2, (32 - self.shape[2]) // 2
        return x[:, :, top:top + self.shape[1], left:left + self.shape[2]]  # crop back to the data's size


class ConvD(nn.Module):
    """DCGAN discriminator: images [B, C, H, W] (padded with -1, the background, to 32x32) -> logits [B / pack]:
    stride-2 convolutions with LeakyReLU(0.2). Departure: no BatchNorm in D, so D(x) depends on x alone, which the
    gradient penalty needs (Gulrajani et al. sec. 4) and which SN-DCGAN also does (Miyato et al. table 3)."""

    def __init__(self, ch: int = 32, shape: tuple = (1, 28, 28), pack: int = 1, sn: bool = True,
                 num_classes: int = 0):
        super().__init__()
        c = shape[0] * pack  # k packed images are stacked along channels

        def down(i, o):  # halves the resolution
            return [_sn(nn.Conv2d(i, o, 4, 2, 1), sn), nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(*down(c, ch), *down(ch, 2 * ch), *down(2 * ch, 4 * ch),
                                 _sn(nn.Conv2d(4 * ch, 1, 4, 1, 0), sn))  # 32 -> 16 -> 8 -> 4 -> 1
        self.pack, self.num_classes = pack, num_classes
        if num_classes:  # projection: V, one row per (packed slot, class) of phi's 4ch * 4 * 4 features
            self.embed = _sn(nn.Embedding(pack * num_classes, 4 * ch * 16), sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        dh, dw = 32 - x.shape[2], 32 - x.shape[3]
        x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=-1.0)  # [B, C, 28, 28] -> [B, C, 32, 32]
        x = x.reshape(-1, x.shape[1] * self.pack, 32, 32)  # [B, C, 32, 32] -> [B/k, kC, 32, 32]
        if y is None:
            return self.net(x).flatten()
        phi = self.net[:-1](x)  # [B/k, 4ch, 4, 4]; the last conv (4x4 -> 1) is psi, linear in phi
        return self.net[-1](phi).flatten() + projection(phi.flatten(1), self.embed, y, self.pack)


# ----------------------------------------------------------------------------------------------------- losses
def d_loss(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """D's loss from its outputs (logits / critic values) on a real and a fake batch, averaged."""
    if kind == "bce":  # -log sigmoid(r) - log(1 - sigmoid(f)) = softplus(-r) + softplus(f)   (eq. 1, negated)
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if kind == "hinge":  # max(0, 1 - r) + max(0, 1 + f)   (Miyato et al. eq. 16)
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if kind == "wgan-gp":  # D(x~) - D(x), WGAN-GP Algorithm 1 line 7, without the penalty (added in train)
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")


def g_loss(d_fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """G's loss from D's outputs on a fake batch."""
    if kind == "bce":  # non-saturating: -log sigmoid(f) = softplus(-f)   (Goodfellow et al. sec. 3)
        return F.softplus(-d_fake).mean()
    if kind in ("hinge", "wgan-gp"):  # -D(G(z))   (Algorithm 1 line 11; Miyato et al. eq. 17)
        return -d_fake.mean()
    raise ValueError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")


def critic_grad(critic, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """grad_x D(x) [B, ...] at the points x (a penalty on it is trained: create_graph) and the number of outputs."""
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad, out.shape[0]


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator=None) -> torch.Tensor:
    """E[(||grad_x^ D(x^)||_2 - 1)^2] at x^ = eps x + (1 - eps) x~, eps ~ U[0, 1] (WGAN-GP Algorithm 1 lines 4-8).
    The norm is taken per critic output, so with packing it is the gradient w.r.t. the k packed samples together."""
    eps = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device, generator=generator)
    grad, outputs = critic_grad(critic, eps * real + (1 - eps) * fake.detach())
    grad = grad.reshape(outputs, -1)  # [B, ...] -> [outputs, k * dims of one sample]
    return (grad.norm(dim=1) - 1).pow(2).mean()


def r1_penalty(critic, real: torch.Tensor, scale=None) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real data, the R1 regularizer (Mescheder et al. 2018, https://arxiv.org/abs/1801.04406,
    eq. 9; D's loss adds gamma/2 times it). It makes the real points flat for D, which damps the orbiting around the
    equilibrium that drops modes. scale (e.g. the data's std) measures the gradient in standardized coordinates,
    d D / d(x / scale) = scale * d D / dx, so one gamma fits data of any spread. Packed: one norm per critic output."""
    grad, outputs = critic_grad(critic, real)
    grad = grad if scale is None else grad * scale
    return grad.reshape(outputs, -1).pow(2).sum(1).mean()  # [B, ...] -> [outputs, k * dims of one sample]


def build(config: dict, shape: tuple) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the data's shape: MLPs for points [2], DCGAN for images [C, H, W] up to 32x32; with
    config["num_classes"] > 0 a conditional G and a projection D."""
    c = config
    K = c.get("num_classes", 0)  # absent in checkpoints from before --cond: unconditional
    if len(shape) == 1:
        return (MLPG(c["z_dim"], c["width"], c["depth"], shape[0], c.get("g_bn", False), K),
                MLPD(c["width"], c["depth"], c["pack"], c["sn"], shape[0], K))
    return ConvG(c["z_dim"], c["channels"], shape, K), ConvD(c["channels"], shape, c["pack"], c["sn"], K)


def labels_for(n: int, num_classes: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The labels of n samples (CPU): an int -> n copies, or [n] ids in 0..C-1; None: y ~ U{0..C-1} from `generator`,
    drawn before any z, for a conditional G, and None for an unconditional one."""
    if not num_classes:
        if y is not None:
            raise ValueError("gan.py's generator is unconditional (trained without --cond): y must be None")
        return None
    if y is None:
        where = generator.device if generator is not None else "cpu"
        return torch.randint(num_classes, (n,), generator=generator, device=where).cpu()
    y = torch.as_tensor(y, dtype=torch.long).cpu()
    y = y.expand(n) if y.dim() == 0 else y
    if y.shape != (n,) or not bool(((y >= 0) & (y < num_classes)).all()):
        raise ValueError(f"y must be one label or {n} labels in 0..{num_classes - 1}, got {y.tolist()[:8]}")
    return y


@torch.no_grad()
def generate(G: nn.Module, n: int, *, generator: torch.Generator | None = None, y=None,
             batch: int = 1000) -> torch.Tensor:
    """n samples x = G(z), z ~ N(0, I) (cGAN: x = G(z, y), labels y from `labels_for`), in data space (raw
    coordinates; images in [-1, 1]), on the CPU; `batch` z at a time, each drawn where `generator` lives (a CPU
    generator can drive G on a GPU) just before its G call."""
    y = labels_for(n, getattr(G, "num_classes", 0), y, generator)
    dev = next(G.parameters()).device
    where = generator.device if generator is not None else dev
    return torch.cat([G(torch.randn(min(batch, n - i), G.z_dim, device=where, generator=generator).to(dev),
                        None if y is None else y[i:i + batch].to(dev)).cpu() for i in range(0, n, batch)])


# ----------------------------------------------------------------------------------------------------- commands
import os  # noqa: E402  (the commands below use data.py and training.py; the part above is standalone)
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="GAN: DCGAN (images) and MLP GAN (points); bce / hinge / WGAN-GP, spectral norm, TTUR, EMA.")
Opt = typer.Option


# Defaults that differ by kind of data (None in train's signature). Images: SN-DCGAN with TTUR (Miyato et al.,
# Heusel et al.). Points: the stable recipe measured in the README (no SN: a 1-Lipschitz D cannot resolve grid25's
# 0.05-wide modes in a few thousand steps; packing and a BatchNorm generator against collapse; larger batches and
# learning rates; R1, without which most seeds lose a mode or more). On grid25 the high-quality fraction keeps rising
# with --steps (73% at 20,000, 92.9% at 100,000, 95.3% at 150,000) with all 25 modes on 3 of 3 seeds (README).
DEFAULTS = {"images": dict(steps=3000, batch_size=64, lr=1e-4, lr_d=4e-4, beta2=0.9, sn=True, pack=1, r1=0.0),
            "points": dict(steps=20000, batch_size=512, lr=5e-4, lr_d=1e-3, beta2=0.999, sn=False, pack=2, r1=0.1)}
COMMON = dict(beta1=0.5, n_critic=1)
WGAN_GP = dict(beta1=0.0, beta2=0.9, n_critic=5, r1=0.0)  # Gulrajani et al. 2017, Algorithm 1's defaults


def coverage(x: torch.Tensor, name: str) -> dict | None:
    """PacGAN mode coverage {"modes", "hq"} of points x on grid25 / ring8 (None for other data)."""
    import data as datasets
    import fid

    if name not in datasets.MODES:
        return None
    centers, std = datasets.MODES[name]
    return fid.mode_coverage(x.float().cpu(), centers, std)


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: mnist5k (bundled), mnist, fashion, cifar10, or a 2-D toy such as grid25")] = "mnist5k",
    steps: Annotated[int | None, Opt(help="G steps, each after n-critic D steps (images 3000, points 20000)")] = None,
    batch_size: Annotated[int | None, Opt(help="examples per step, per process (images 64, points 512)")] = None,
    loss: Annotated[str, Opt(help="bce (non-saturating), hinge or wgan-gp")] = "bce",
    lr: Annotated[float | None, Opt(help="learning rate of G (images 1e-4, points 5e-4)")] = None,
    lr_d: Annotated[float | None, Opt(help="learning rate of D; TTUR: larger than G's (images 4e-4, points 1e-3)")] = None,
    beta1: Annotated[float | None, Opt(help="Adam beta1, both nets (0.5; wgan-gp 0, as in its Algorithm 1)")] = None,
    beta2: Annotated[float | None, Opt(help="Adam beta2, both nets (images 0.9, points 0.999; wgan-gp 0.9)")] = None,
    n_critic: Annotated[int | None, Opt(help="D steps per G step (1; wgan-gp 5, as in its Algorithm 1)")] = None,
    gp_weight: Annotated[float, Opt(help="lambda of the gradient penalty (wgan-gp)")] = 10.0,
    weight_decay: training.WeightDecay = 0.0,
    grad_clip: Annotated[float, Opt(help="clip each net's gradient norm (0 = off: the norms are logged as a diagnostic)")] = 0.0,
    r1: Annotated[float | None, Opt(help="gamma of the R1 penalty gamma/2 E||grad D(real)||^2 (points: in standardized "
                                         "coordinates; 0 = off; images 0, points 0.1)")] = None,
    sn: Annotated[bool | None, Opt("--sn/--no-sn", help="spectral norm on every D layer (images on, points off)")] = None,
    pack: Annotated[int | None, Opt(help="PacGAN: D judges k samples at once, 1 = off (images 1, points 2)")] = None,
    ema_decay: Annotated[float, Opt(help="EMA decay of G's sampling weights (0 = off)")] = 0.999,
    z_dim: Annotated[int, Opt(help="latent dimension")] = 64,
    channels: Annotated[int, Opt(help="DCGAN base channels (images)")] = 32,
    width: Annotated[int, Opt(help="MLP width (points)")] = 128,
    depth: Annotated[int, Opt(help="MLP hidden layers (points)")] = 3,
    g_bn: Annotated[bool, Opt("--g-bn/--no-g-bn", help="BatchNorm + ReLU in the MLP generator (points; else LeakyReLU)")] = True,
    cond: Annotated[bool, Opt("--cond/--no-cond", help="conditional GAN on the data's labels: G(z, y) and a projection "
                                                        "D (Miyato & Koyama 2018); then sample --label K")] = False,
    eval_every: Annotated[int, Opt(help="mode coverage of 2,500 EMA samples every N steps (grid25/ring8; 0 = end only)")] = 500,
    device: training.Device = "auto",
    seed: training.Seed = 0,
    out: Annotated[str | None, Opt(help="run folder (default runs/gan-<data>)")] = None,
    resume: training.Resume = False,
    ckpt_every: training.CkptEvery = 500,
) -> Path:
    """Train a GAN (alternating D and G steps) and write ckpt.pt, samples.png and metrics.jsonl to the run folder."""
    config = dict(locals())
    import data as datasets

    check = training.check
    ds = datasets.load(data)
    # Options left at None take the default of the loss, then of the data's kind. WGAN-GP: its Algorithm 1's
    # n_critic = 5, Adam beta1 = 0, beta2 = 0.9, and no R1 (it has its own penalty).
    for k, v in {**COMMON, **DEFAULTS[ds.kind], **(WGAN_GP if loss == "wgan-gp" else {})}.items():
        config[k] = v if config[k] is None else config[k]
    steps, batch_size, lr, lr_d, beta2, sn, pack, r1 = (config[k] for k in DEFAULTS["points"])
    beta1, n_critic = config["beta1"], config["n_critic"]
    check(loss in LOSSES, f"unknown --loss {loss!r}; use one of {', '.join(LOSSES)}")
    for name in ("steps", "batch_size", "n_critic", "pack", "z_dim", "channels", "width", "depth"):
        check(config[name] > 0, f"--{name.replace('_', '-')} must be positive, got {config[name]}")
    check(batch_size % pack == 0, f"--batch-size ({batch_size}) must be a multiple of --pack ({pack})")
    check(ds.kind == "images" or not g_bn or batch_size > 1,
          "--g-bn (BatchNorm in G) needs --batch-size of at least 2; pass a larger batch or --no-g-bn")
    check(0 <= beta1 < 1 and 0 <= beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
    check(lr > 0 and lr_d > 0, "--lr and --lr-d must be positive")
    check(gp_weight >= 0, f"--gp-weight must be >= 0, got {gp_weight}")
    check(r1 >= 0, f"--r1 must be >= 0, got {r1}")
    check(eval_every >= 0 and eval_every % 10 == 0, "--eval-every must be a multiple of 10 (the log interval)")
    check((loss != "wgan-gp" and r1 == 0) or int(os.environ.get("WORLD_SIZE", 1)) == 1,
          "--loss wgan-gp and --r1 need double backward, which DDP does not support; "
          "under torchrun use bce or hinge with --r1 0")
    check(ds.kind == "points" or (ds.shape[1] <= 32 and ds.shape[2] <= 32), "DCGAN takes images up to 32x32")
    check(not cond or (ds.y is not None and ds.num_classes > 1), f"--cond needs a labelled dataset; {data} has none")
    out = out or f"runs/gan-{data}"
    config["out"] = out
    if cond:  # the label count travels in the checkpoint's config (absent: 0, an unconditional GAN)
        config["num_classes"] = ds.num_classes
    training.seed_everything(seed)  # the initial weights depend on the seed
    G, D = build(config, ds.shape)
    if ds.kind == "points":  # standardize points inside both nets, so one set of hyperparameters fits every toy
        for m in (G, D):
            m.mean.copy_(ds.x.mean(0))
            m.std.copy_(ds.x.std(0))
    tr = training.Trainer("gan", config, {"G": G, "D": D}, ds, steps=steps, batch_size=batch_size,
                          lr={"G": lr, "D": lr_d}, betas=(beta1, beta2), out=out, device=device, seed=seed,
                          resume=resume, ema="G", ema_decay=ema_decay, weight_decay=weight_decay,
                          grad_clip=grad_clip, ckpt_every=ckpt_every, extra={"shape": list(ds.shape)})
    D_raw = tr.raw["D"]
    eval_g = torch.Generator(tr.dev)
    for step, (x, y) in tr:
        G_, D_ = tr.models["G"], tr.models["D"]
        y = y if cond else None  # cGAN: the fakes are drawn for the labels of the real batch
        for i in range(n_critic):  # D steps: Algorithm 1 lines 2-9 (a fresh real batch for each)
            if i > 0:
                idx = tr.batches.next().to(tr.dev)
                x, y = tr.x[idx], tr.y[idx] if cond else None
            with torch.no_grad():
                x_fake = G_(torch.randn(batch_size, G.z_dim, device=tr.dev), y)  # x~ = G(z) (or G(z, y))
            critic = D_ if y is None else (lambda v, y=y: D_(v, y))  # D(., y): the penalties' gradients are in x
            with tr.autocast():
                d_real, d_fake = critic(x), critic(x_fake)
                L_D = d_loss(d_real, d_fake, loss)
                gp = gradient_penalty(critic, x, x_fake) if loss == "wgan-gp" else torch.zeros(())
                L_D = L_D + gp_weight * gp
                r1_term = r1_penalty(critic, x, D_raw.std if ds.kind == "points" else None) if r1 > 0 else torch.zeros(())
                L_D = L_D + r1 / 2 * r1_term
            tr.step(L_D, part="D", d_real=d_real.detach().float().mean(), d_fake=d_fake.detach().float().mean(),
                    gp=gp.detach(), r1=r1_term.detach())
        D_raw.requires_grad_(False)  # G step: gradients flow through D to G but D's own weights get none
        with tr.autocast():
            L_G = g_loss(D_raw(G_(torch.randn(batch_size, G.z_dim, device=tr.dev), y), y), loss)
        tr.step(L_G, part="G")
        D_raw.requires_grad_(True)
        if data in datasets.MODES and ((eval_every and step % eval_every == 0) or step + 1 == steps):
            eval_g.manual_seed(seed)  # a generator of its own: evaluating does not change the training noise
            tr.log(**coverage(generate(tr.sampling_model(), 2500, generator=eval_g), data))

    sorted_labels = (lambda n: torch.arange(n) * ds.num_classes // n) if cond else (lambda n: None)  # class by class
    ckpt = tr.finish(lambda n: generate(tr.sampling_model(), n, y=sorted_labels(n)), n=64 if ds.kind == "images" else 2500,
                     reference=ds.x[:2500] if ds.kind == "points" else None)
    if data in datasets.MODES and tr.is_main:
        cov = coverage(generate(tr.sampling_model(), 2500, generator=eval_g.manual_seed(seed)), data)
        print(f"{data}: {cov['modes']} modes covered, {100 * cov['hq']:.1f}% high quality (2,500 EMA samples)")
    return ckpt


def load(path: str | Path, device: str = "cpu", ema: bool = True) -> nn.Module:
    """The generator of a checkpoint (EMA weights unless ema=False), in eval mode, ready to sample."""
    ckpt = training.load_checkpoint(path, "gan")
    G, _ = build(ckpt["config"], tuple(ckpt["extra"]["shape"]))
    G.load_state_dict(training.ema_state(ckpt, "G") if ema else ckpt["models"]["G"])
    return G.to(training.device(device)).eval()


@app.command("sample")
def sample_cmd(
    ckpt: Annotated[str, Opt(help="checkpoint written by train")] = "runs/gan-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    out: Annotated[str, Opt(help=".png (grid or scatter) or .npz (raw samples under key x, data space); default "
                                 "<ckpt folder>/sample.png")] = "",
    ema: Annotated[bool, Opt(help="sample the EMA generator (--no-ema: the last raw weights)")] = True,
    label: Annotated[int | None, Opt(help="cGAN: the class to draw (default: the classes in turn); needs a model "
                                           "trained with --cond")] = None,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> Path:
    """Draw n samples x = G(z) (cGAN: G(z, y)); on grid25 / ring8 also print the modes covered and the high-quality
    fraction; on MNIST the classes (unconditional) or the label accuracy (conditional) by fid.py's classifier."""
    import data as datasets

    training.check(n > 0, f"--n must be positive, got {n}")
    path = datasets.samples_path(out, Path(ckpt).parent / "sample.png")
    G = load(ckpt, device, ema)
    name = training.load_checkpoint(ckpt, "gan")["config"]["data"]
    K = G.num_classes
    training.check(label is None or K > 0, "--label needs a model trained with --cond; this one is unconditional")
    training.check(label is None or 0 <= label < K, f"--label must be in 0..{K - 1}, got {label}")
    y = (torch.full((n,), label) if label is not None else torch.arange(n) * K // n) if K else None
    x = generate(G, n, generator=torch.Generator().manual_seed(seed), y=y)
    ref = datasets.load(name, "test").x[:2000] if x.dim() == 2 else None
    datasets.write_samples(x, path, reference=ref)
    cov = coverage(x, name)
    if cov is not None:
        print(f"{name}: {cov['modes']} modes covered, {100 * cov['hq']:.1f}% high quality ({n} samples)")
    elif name in ("mnist5k", "mnist"):  # diversity of digits, by the MNIST classifier that fid.py ships
        import fid

        probs = fid.classify(x)
        cc = fid.class_coverage(probs)
        print(f"digits (fid.classify): {cc['classes']}/10 classes, KL(histogram || uniform) = "
              f"{cc['kl_uniform']:.3f} nats, counts {cc['histogram']}")
        if y is not None:
            print(f"label accuracy (fid.classify): {float((probs.argmax(1) == y).float().mean()):.4f} on {n} samples")
    return path


# How bench.py trains, samples and scores this file (data, read by bench; the numbers of its earlier adapters).
BENCH = {
    "claim": "sharp samples, unstable training, mode collapse",
    "kinds": ("points", "images"),
    "options": {"points": {"eval_every": 0}, "images": {"eval_every": 0}},  # no coverage runs inside the timed loop
    "quick": {"points": {"eval_every": 0, "width": 32, "depth": 2, "z_dim": 8},
              "images": {"eval_every": 0, "channels": 8}},
    "settings": {"points": [{"sampler": "G(z)"}], "images": [{"sampler": "G(z)"}]},
    "quick_settings": {"points": [{"sampler": "G(z)"}], "images": [{"sampler": "G(z)"}]},
    "likelihood": None,  # a GAN has none
    "quick_likelihood": None,
    "network": "",  # the generator itself: one call per sample
    "batch": 1000,
    # the conditional suite: the cGAN (train --cond: G(z, y), projection discriminator)
    "conditional_options": {"cond": True},
    "conditional": [{"sampler": "G(z)"}],
}


if __name__ == "__main__":
    app()
