"""Normalizing flow: an invertible network f with a tractable Jacobian gives the EXACT log-likelihood.

What it optimizes (change of variables; Dinh et al. 2017, RealNVP, https://arxiv.org/abs/1605.08803, eq. 3):
    log p(x) = log N(f(x); 0, I) + log |det df/dx|,   maximized directly (no bound, unlike vae.py).
f is a stack of layers with cheap log-determinants:
- affine coupling (RealNVP eq. 7-9): y = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x)), log-det = sum (1-b)*s, with checkerboard
  and channel masks b. Departure: s is bounded, s = S_MAX * tanh(raw / S_MAX) (RealNVP uses a learned scale times tanh),
  so exp(-s) in the inverse can never overflow and inversion never gives NaN or inf;
- squeeze (RealNVP Sec. 3.6): [C, H, W] -> [4C, H/2, W/2], and the multi-scale architecture: after each scale half of
  the channels are factored out as latents (standard normal), the rest go on;
- ActNorm (Kingma & Dhariwal 2018, Glow, https://arxiv.org/abs/1807.03039, Sec. 3.1): per-channel affine, initialized
  from data to give zero mean and unit variance; log-det = H W sum log|s|;
- invertible 1x1 convolution, LU-parametrized (Glow Sec. 3.2, eq. 10): W = P L (U + diag(sign(s) exp(log|s|))),
  log-det = H W sum log|s|. One Glow step = ActNorm -> 1x1 conv (when C > 1) -> coupling (Glow Fig. 2a).
Points [B, d] run the same layers on [B, d] tensors: their couplings are MLPs (nn.Linear), alternating channel masks,
the 1x1 convolution a d x d matrix; coordinates are standardized by the training mean/std inside the model (log-det
-sum log std). `--no-actnorm` / `--no-lu` leave those layers out (on 2-D points plain RealNVP is the default: see README).

Images: uniform dequantization and the logit transform (RealNVP Sec. 4.1). 8-bit pixels k in {0..255} (data.py's
x = k / 127.5 - 1) become y = (k + u) / 256, u ~ U[0, 1)^D (`dequantize`); the flow models the density p(y) on [0, 1]^D:
its first layer is y' = alpha + (1 - 2 alpha) y, v = logit(y'), alpha = 0.05, with log-det
sum [log(1 - 2 alpha) - log y' - log(1 - y')]. Bits/dim, the protocol shared with vae.py:
    bpd = (-log p(y) + D log 256) / (D log 2)                                   (`bits_per_dim`)
an upper bound on the discrete code length -log2 P(k) / D (Theis et al. 2016). For MNIST in these units, RealNVP 1.06
and Glow 1.05 are the numbers of FFJORD's Table 2 (Grathwohl et al. 2019, https://arxiv.org/abs/1810.01367), which
trained both on MNIST; the RealNVP and Glow papers themselves report no MNIST result. `Flow.forward`, `inverse`, `log_prob` and `sample` work in y-space for images ([0, 1]) and in raw
coordinates for points; the commands write images in data space x = 2y - 1.

Algorithm -> function: coupling `AffineCoupling`; masks `checkerboard`, `channel_mask`; `squeeze`; `ActNorm` (+ data
init `Flow.initialize`); `InvConv1x1`; multi-scale f `Flow.forward` / f^-1 `Flow.inverse`; exact likelihood
`Flow.log_prob`; temperature sampling z ~ N(0, T^2 I), x = f^-1(z) (Glow Sec. 5) `Flow.sample`.
The surface shared with the other model files: `generate(model, n)` (samples in data space, images x = 2y - 1) and
`likelihood(model, x)` (exact: nats on points, bits/dim on images); `BENCH` (how bench.py runs this file).

Commands (times measured on a 2-core CPU shared with other jobs; see README):
    python flow.py train --data moons                        # MLP couplings on points
    python flow.py train                                     # multi-scale RealNVP/Glow on mnist5k
    python flow.py sample --ckpt runs/flow-mnist5k/ckpt.pt --temperature 0.7   # -> runs/flow-mnist5k/sample.png
    python flow.py nll --ckpt runs/flow-mnist5k/ckpt.pt      # exact: bits/dim (images) or nats (points)
    python flow.py train --device cuda --data mnist --hidden 256 --blocks 4 --steps 50000 --batch-size 128  # GPU
    python flow.py train --cond --out runs/flow-mnist5k-cond   # conditional flow p(x|c) on the digits' labels
    python flow.py sample --ckpt runs/flow-mnist5k-cond/ckpt.pt --label 7 --temperature 0.7
    python flow.py classify --ckpt runs/flow-mnist5k-cond/ckpt.pt   # Bayes classifier: test accuracy

Conditional flow (`--cond`): the couplings' (s, t) = NN(b*x, c) and the base N(mu_c, I), so that
    log p(x|c) = log N(f(x; c); mu_c, I) + log|det df(x; c)/dx|   (exact, as above),
and the flow is a classifier by Bayes' rule, p(c|x) = p(x|c) p(c) / sum_c' p(x|c') p(c') (`Flow.log_posterior`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

S_MAX = 2.0  # bound on the coupling's log-scale: |s| <= 2 per layer
ALPHA = 0.05  # logit transform margin (RealNVP Sec. 4.1)
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------------- layers
class ActNorm(nn.Module):
    """y = (x + b) * exp(log_s) per channel (Glow Sec. 3.1); log-det = H W sum log_s."""

    def __init__(self, channels: int, ndim: int = 4):  # ndim 4: images [B, C, H, W]; 2: points [B, d]
        super().__init__()
        shape = (1, channels) + (1,) * (ndim - 2)
        self.b = nn.Parameter(torch.zeros(shape))
        self.log_s = nn.Parameter(torch.zeros(shape))
        self.pending_init = False  # set by Flow.initialize: the next forward sets b, log_s from its batch

    def forward(self, x, label=None):  # label: unused (only couplings and the base see the class)
        if self.pending_init:  # data-dependent init: b = -mean, s = 1 / std over (batch, H, W) -> y ~ zero mean, unit var
            over = (0,) + tuple(range(2, x.dim()))  # batch and pixels
            with torch.no_grad():
                self.b.copy_(-x.mean(over, keepdim=True))
                self.log_s.copy_(-torch.log(x.std(over, keepdim=True, unbiased=False) + 1e-6))
            self.pending_init = False
        log_det = x[0, 0].numel() * self.log_s.sum()  # H W (1 for points)
        return (x + self.b) * self.log_s.exp(), log_det.expand(len(x))

    def inverse(self, y, label=None):
        return y * torch.exp(-self.log_s) - self.b


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution y = W x at every pixel, W = P L (U + diag(sign_s exp(log_s))) (Glow eq. 10)."""

    def __init__(self, channels: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # random rotation (Glow's init): log|det W| = 0
        P, L, U = torch.linalg.lu(w)
        s = torch.diagonal(U)
        self.register_buffer("P", P)  # fixed permutation
        self.register_buffer("sign_s", torch.sign(s))  # fixed signs
        self.register_buffer("lower", torch.tril(torch.ones(channels, channels), -1))  # strictly lower mask
        self.L = nn.Parameter(L * self.lower)
        self.U = nn.Parameter(torch.triu(U, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def weight(self) -> torch.Tensor:
        eye = torch.eye(len(self.P), device=self.P.device)
        return self.P @ (self.L * self.lower + eye) @ (self.U * self.lower.T + torch.diag(self.sign_s * self.log_s.exp()))

    def forward(self, x, label=None):  # images [B, C, H, W]: a 1x1 convolution; points [B, d]: y = x W^T
        log_det = x[0, 0].numel() * self.log_s.sum()  # log|det W| = H W sum log|s| (L unit-diagonal, |det P| = 1)
        w = self.weight()
        return (F.linear(x, w) if x.dim() == 2 else F.conv2d(x, w[:, :, None, None])), log_det.expand(len(x))

    def inverse(self, y, label=None):
        w = self.weight()
        w = (w.cpu() if w.device.type == "mps" else w).double()  # double: an exact-as-possible inverse (MPS has none)
        w_inv = torch.linalg.inv(w).to(y)
        return F.linear(y, w_inv) if y.dim() == 2 else F.conv2d(y, w_inv[:, :, None, None])


class AffineCoupling(nn.Module):
    """RealNVP eq. 9 with mask b [1, C, H, W]: y = b*x + (1-b)*(x*exp(s) + t), (s, t) = NN(b*x); log-det = sum (1-b)*s.
    Conditional (num_classes > 0): (s, t) = NN(b*x, c), the class embedding e_c added to the first layer's output
    (for the 1x1 convolutions of points exactly a one-hot c concatenated to the input; for 3x3 ones, a constant
    label channel up to the zero padding). The Jacobian stays triangular: c does not depend on x.
    kernel 0: points [B, d], mask [1, d], the network an MLP of nn.Linear layers (the same map as 1x1 convolutions on
    [B, d, 1, 1], without the convolution's per-call cost)."""

    def __init__(self, mask: torch.Tensor, hidden: int, kernel: int, num_classes: int = 0):
        super().__init__()
        C = mask.shape[1]
        self.register_buffer("mask", mask)
        if kernel == 0:  # points: an MLP
            self.net = nn.Sequential(nn.Linear(C, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * C))
        else:
            self.net = nn.Sequential(nn.Conv2d(C, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                                     nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                     nn.Conv2d(hidden, 2 * C, kernel, padding=kernel // 2))
        nn.init.zeros_(self.net[-1].weight)  # start as the identity (Glow Sec. 3.3)
        nn.init.zeros_(self.net[-1].bias)
        if num_classes:  # zero: the conditional flow starts as the unconditional one
            self.label_emb = nn.Embedding(num_classes, hidden)
            nn.init.zeros_(self.label_emb.weight)

    def _s_t(self, x_masked, label=None):
        if label is None:
            out = self.net(x_masked)
        else:  # first layer + e_c ([B, hidden, 1, 1] on images, [B, hidden] on points), then the rest
            e = self.label_emb(label)
            out = self.net[1:](self.net[0](x_masked) + e.view(*e.shape, *[1] * (x_masked.dim() - 2)))
        raw, t = out.chunk(2, 1)  # [B, C, H, W] (points [B, d]) each
        s = S_MAX * torch.tanh(raw / S_MAX)  # departure: bounded log-scale (see the docstring)
        return s * (1 - self.mask), t * (1 - self.mask)  # zero where b = 1: those entries pass unchanged

    def forward(self, x, label=None):
        s, t = self._s_t(self.mask * x, label)
        return x * s.exp() + t, s.flatten(1).sum(1)  # = b*x + (1-b)*(x*e^s + t), since s = t = 0 where b = 1

    def inverse(self, y, label=None):
        s, t = self._s_t(self.mask * y, label)  # b*y = b*x: the conditioner sees the same input
        return (y - t) * torch.exp(-s)


def checkerboard(C: int, H: int, W: int, parity: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return ((i + j) % 2 == parity).float().expand(1, C, H, W).clone()  # [1, C, H, W]


def channel_mask(C: int, H: int, W: int, parity: int) -> torch.Tensor:
    b = torch.zeros(1, C, H, W)
    b[:, :C // 2] = 1  # first half conditions the second (parity 0), or the reverse
    return b if parity == 0 else 1 - b


def squeeze(x):  # [B, C, H, W] -> [B, 4C, H/2, W/2], each 2x2 block into channels (RealNVP Fig. 3)
    B, C, H, W = x.shape
    return x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x):  # [B, 4C, H, W] -> [B, C, 2H, 2W]
    B, C4, H, W = x.shape
    return x.view(B, C4 // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3).reshape(B, C4 // 4, 2 * H, 2 * W)


def point_mask(C: int, H: int, W: int, parity: int) -> torch.Tensor:  # points: the channel mask as [1, d]
    return channel_mask(C, 1, 1, parity).flatten(1)


def glow_steps(C: int, H: int, W: int, n: int, mask_fn, hidden: int, kernel: int,
               num_classes: int = 0, actnorm: bool = True, lu: bool = True) -> nn.ModuleList:
    """n steps of ActNorm -> InvConv1x1 (if C > 1) -> AffineCoupling, the mask parity alternating; kernel 0: points
    [B, d]. actnorm / lu False leave out that layer (points: plain RealNVP, alternating masks)."""
    ndim = 2 if kernel == 0 else 4
    steps = []
    for i in range(n):
        layers = ([ActNorm(C, ndim)] if actnorm else []) + ([InvConv1x1(C)] if C > 1 and lu else []) + \
                 [AffineCoupling(mask_fn(C, H, W, i % 2), hidden, kernel, num_classes)]
        steps.extend(layers)
    return nn.ModuleList(steps)


# ----------------------------------------------------------------------------------------------------- the flow
class Flow(nn.Module):
    """Points: shape (d,), 4 * `blocks` steps with MLP couplings. Images: shape (C, H, W); per scale `blocks` checkerboard
    steps, squeeze, `blocks` channel steps, factor out half; then `blocks` + 1 checkerboard steps (RealNVP Sec. 3.6).
    num_classes > 0: the conditional flow p(x|c): every coupling takes the class c, and the base is N(mu_c, I)."""

    def __init__(self, shape=(2,), hidden: int = 64, blocks: int = 4, scales: int = 2, num_classes: int = 0,
                 actnorm: bool = True, lu: bool = True):
        super().__init__()
        self.shape, self.images = tuple(shape), len(shape) == 3
        self.levels = nn.ModuleList()
        K = num_classes
        if not self.images:
            self.top = glow_steps(shape[0], 1, 1, 4 * blocks, point_mask, hidden, 0, K, actnorm, lu)  # MLPs on [B, d]
            d = shape[0]
        else:
            C, H, W = shape
            for _ in range(scales):
                lvl = nn.ModuleDict({"checker": glow_steps(C, H, W, blocks, checkerboard, hidden, 3, K, actnorm, lu)})
                C, H, W = 4 * C, H // 2, W // 2  # squeeze
                lvl["channel"] = glow_steps(C, H, W, blocks, channel_mask, hidden, 3, K, actnorm, lu)
                self.levels.append(lvl)
                C = C - C // 2  # half of the channels factored out
            self.top = glow_steps(C, H, W, blocks + 1, checkerboard, hidden, 3, K, actnorm, lu)
            self.top_shape = (C, H, W)
            d = 1
        self.register_buffer("shift", torch.zeros(d))  # points: training mean and std, set by `train`
        self.register_buffer("scale", torch.ones(d))
        self.num_classes = num_classes
        if num_classes:  # the base mean mu_c [D] per class, zero at first; p(c): the training frequencies
            self.base_mean = nn.Embedding(num_classes, math.prod(shape))
            nn.init.zeros_(self.base_mean.weight)
            self.register_buffer("log_pc", torch.full((num_classes,), -math.log(num_classes)))

    def forward(self, x, label=None):
        """f: x -> (z [B, D], log|det df/dx| [B]); images x = y in [0, 1]^(C, H, W), points raw [B, d].
        With class labels [B]: z - mu_c, the last step of f, volume preserving (log-det 0), so that
        log N(f(x); mu_c, I) = log N(z - mu_c; 0, I) and the training loss keeps one form."""
        if self.images:  # logit transform: v = logit(alpha + (1 - 2 alpha) y)
            y1 = ALPHA + (1 - 2 * ALPHA) * x
            h = torch.log(y1) - torch.log1p(-y1)
            log_det = (math.log(1 - 2 * ALPHA) - torch.log(y1) - torch.log1p(-y1)).sum((1, 2, 3))
        else:  # standardize: u = (x - shift) / scale
            h = (x - self.shift) / self.scale  # [B, d]
            log_det = -self.scale.log().sum().expand(len(x))
        zs = []
        for lvl in self.levels:
            for layer in lvl["checker"]:
                h, ld = layer(h, label)
                log_det = log_det + ld
            h = squeeze(h)
            for layer in lvl["channel"]:
                h, ld = layer(h, label)
                log_det = log_det + ld
            z_i, h = h.chunk(2, 1)  # factor out half of the channels
            zs.append(z_i.flatten(1))
        for layer in self.top:
            h, ld = layer(h, label)
            log_det = log_det + ld
        z = torch.cat(zs + [h.flatten(1)], 1)  # z [B, D]
        return (z, log_det) if label is None else (z - self.base_mean(label), log_det)

    def inverse(self, z, label=None):
        """f^-1: z [B, D] -> x (the inverse of every layer, in reverse order); with labels, z + mu_c first."""
        z = z if label is None else z + self.base_mean(label)
        B, i = len(z), z.shape[1]
        if not self.images:
            h = z
        else:
            n_top = math.prod(self.top_shape)
            h, i = z[:, i - n_top:].reshape(B, *self.top_shape), i - n_top
        for layer in reversed(self.top):
            h = layer.inverse(h, label)
        for lvl in reversed(self.levels):
            n_i = h[0].numel()  # the factored-out half has as many entries as the part that went on
            h, i = torch.cat([z[:, i - n_i:i].reshape(h.shape), h], 1), i - n_i
            for layer in reversed(lvl["channel"]):
                h = layer.inverse(h, label)
            h = unsqueeze(h)
            for layer in reversed(lvl["checker"]):
                h = layer.inverse(h, label)
        if self.images:  # y = (sigmoid(v) - alpha) / (1 - 2 alpha)
            return (torch.sigmoid(h) - ALPHA) / (1 - 2 * ALPHA)
        return h.flatten(1) * self.scale + self.shift

    def log_prob(self, x, label=None):
        """Exact log p(x) = log N(f(x); 0, I) + log|det df/dx| per example, nats (RealNVP eq. 3). Conditional flow:
        log p(x|c) = log N(f(x; c); mu_c, I) + log|det df(x; c)/dx| with labels [B]; without them the marginal
        log p(x) = log sum_c p(x|c) p(c), exact as well."""
        if self.num_classes and label is None:
            return torch.logsumexp(self.log_joint(x), 1)
        z, log_det = self(x, label)
        return (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(1) + log_det

    def log_joint(self, x):
        """log p(x|c) + log p(c) for every class c -> [B, C]."""
        return torch.stack([self.log_prob(x, torch.full((len(x),), c, device=x.device))
                            for c in range(self.num_classes)], 1) + self.log_pc

    def log_posterior(self, x):
        """The flow as a generative classifier, Bayes' rule with exact densities -> log p(c|x) [B, C]:
            p(c|x) = p(x|c) p(c) / sum_c' p(x|c') p(c')."""
        log_pxc = self.log_joint(x)
        return log_pxc - torch.logsumexp(log_pxc, 1, keepdim=True)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, batch: int = 1000,
               label: torch.Tensor | None = None):
        """x = f^-1(T * eps), eps ~ N(0, I) (Glow Sec. 5: T < 1 trades diversity for fidelity); with labels [n],
        x = f^-1(mu_c + T * eps; c). eps [n, D] is drawn first, where `generator` lives, then inverted `batch` rows
        at a time (the batch does not change the draws)."""
        dev, D = self.shift.device, math.prod(self.shape)
        eps = torch.randn(n, D, generator=generator, device=generator.device if generator is not None else dev)
        z = temperature * eps.to(dev)
        labels = [None] * len(z.split(batch)) if label is None else label.to(dev).split(batch)
        return torch.cat([self.inverse(zb, lb) for zb, lb in zip(z.split(batch), labels)])

    @torch.no_grad()
    def initialize(self, x):
        """ActNorm data-dependent init (Glow Sec. 3.1): one forward pass in which every ActNorm sets its statistics."""
        for m in self.modules():
            if isinstance(m, ActNorm):
                m.pending_init = True
        self(x)


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] (k / 127.5 - 1) -> y = (k + u) / 256, u ~ U[0, 1): uniform dequantization into [0, 1)."""
    k = torch.round((x + 1) * 127.5)
    return (k + torch.rand(x.shape, generator=generator, device=x.device)) / 256


def bits_per_dim(log_p_y: torch.Tensor, dims: int) -> torch.Tensor:
    """bpd = (-log p(y) + D log 256) / (D log 2) for a density on [0, 1]^D of y = (k + u) / 256 (same as vae.py)."""
    return (-log_p_y + dims * math.log(256)) / (dims * math.log(2))


# ----------------------------------------------------------------------------------------------------- the surface
def labels_for(n: int, num_classes: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Class labels of n samples (CPU): an int -> n copies, or [n] ids in 0..C-1; None -> c ~ U{0..C-1} drawn from
    `generator` first (a conditional flow) or None (an unconditional one)."""
    if not num_classes:
        if y is not None:
            raise ValueError("flow.py's Flow is unconditional (trained without --cond): y must be None")
        return None
    if y is None:
        where = generator.device if generator is not None else "cpu"
        return torch.randint(num_classes, (n,), generator=generator, device=where).cpu()
    c = torch.as_tensor(y, dtype=torch.long).cpu()
    c = c.expand(n) if c.dim() == 0 else c
    if c.shape != (n,) or not bool(((c >= 0) & (c < num_classes)).all()):
        raise ValueError(f"y must be one class or {n} classes in 0..{num_classes - 1}, got {c.tolist()[:8]}")
    return c


@torch.no_grad()
def generate(model: Flow, n: int, *, generator: torch.Generator | None = None, y=None, temperature: float = 1.0,
             batch: int = 1000) -> torch.Tensor:
    """n samples in data space on the CPU: x = f^-1(T eps); images y in [0, 1] -> x = 2y - 1, clamped to [-1, 1]
    (a sample may leave the cube slightly); points as they come. Conditional flow: y = the class labels
    (`labels_for`; None: drawn uniformly, first). One generator runs through."""
    label = labels_for(n, model.num_classes, y, generator)
    x = model.sample(n, temperature, generator, batch, label)
    return ((2 * x - 1).clamp(-1, 1) if model.images else x).cpu()


@torch.no_grad()
def likelihood(model: Flow, x: torch.Tensor, *, seed: int = 0, batch: int = 256, y: torch.Tensor | None = None) -> dict:
    """Exact mean -log p on data x in data space; kind "exact". Points: {"nll_nats"}. Images: {"nll_bpd"} of
    y = dequantize(x), one draw of u per image from a generator seeded with `seed` (the bpd protocol above).
    Conditional flow: -log p(x|c) with class labels y [N], the marginal -log p(x) without. "per_example": [N]."""
    dev = model.shift.device
    g = torch.Generator(dev).manual_seed(seed)
    per = []
    for i, xb in enumerate(x.split(batch)):
        xb = xb.to(dev)
        lb = None if y is None else y[i * batch:(i + 1) * batch].to(dev)
        if model.images:
            per.append(bits_per_dim(model.log_prob(dequantize(xb, g), lb), math.prod(model.shape)).cpu())
        else:
            per.append(-model.log_prob(xb, lb).cpu())  # -log p(x), nats
    per = torch.cat(per)  # [N], in the unit of the mean: the anomaly score of bench.py
    return {"nll_bpd" if model.images else "nll_nats": float(per.mean()), "kind": "exact", "n": len(x), "per_example": per}


# ----------------------------------------------------------------------------------------------------- commands
import typer  # noqa: E402  (the lower part of the file: CLI, data and training plumbing)

import data as datasets  # noqa: E402
import training  # noqa: E402

app = training.App(help="Normalizing flow (RealNVP/Glow): exact likelihood training, sampling with temperature, NLL.")
Opt = typer.Option


def load(path: str | Path, device: str = "cpu") -> Flow:
    """Rebuild the flow from ckpt["config"] and load its EMA weights; eval mode."""
    ckpt = training.load_checkpoint(path, "flow")
    model = Flow(**ckpt["config"]["model"])
    ref = model.state_dict()  # a point flow saved before its layers ran on [B, d] kept [.., 1, 1] shapes: reshaped
    model.load_state_dict({k: v.reshape(ref[k].shape) if k in ref and v.numel() == ref[k].numel() else v
                           for k, v in training.ema_state(ckpt).items()})
    return model.to(device).eval()


# Defaults per data kind (the options below default to None = these). Points: plain RealNVP, 64 wide, batch 256,
# 7,000 steps, about a minute on one CPU thread; in 2-D, ActNorm and the LU mixing bought nothing by then (README,
# "Small models at full speed").
DEFAULTS = {"points": dict(hidden=64, blocks=2, actnorm=False, lu=False, steps=7000, batch_size=256),
            "images": dict(hidden=32, blocks=2, actnorm=True, lu=True, steps=1500, batch_size=64)}


@app.command()
def train(
    data: Annotated[str, Opt(help="dataset: moons, grid25, ring8, checkerboard, swissroll, mnist5k, mnist, fashion, cifar10")] = "mnist5k",
    hidden: Annotated[int | None, Opt(min=1, help="channels (width) of each coupling network [points 64, images 32]")] = None,
    blocks: Annotated[int | None, Opt(min=1, help="Glow steps per stage (points: 4 * blocks steps in all) [2]")] = None,
    scales: Annotated[int, Opt(min=1, help="images: number of squeeze + factor-out scales")] = 2,
    actnorm: Annotated[bool | None, Opt("--actnorm/--no-actnorm", help="ActNorm layers (Glow) [points off, images on]")] = None,
    lu: Annotated[bool | None, Opt("--lu/--no-lu", help="LU-parametrized 1x1 convolutions (Glow) [points off, images on]")] = None,
    steps: Annotated[int | None, Opt(help="optimizer steps [points 7000, images 1500]")] = None,
    batch_size: Annotated[int | None, Opt(help="examples per step [points 256, images 64]")] = None,
    lr: Annotated[float, Opt(help="AdamW learning rate")] = 1e-3,
    warmup: Annotated[int, Opt(min=0, help="linear learning-rate warm-up steps")] = 100,
    cond: Annotated[bool, Opt("--cond/--no-cond", help="conditional flow p(x|c) on the data's labels (couplings and "
                                                        "base mean take the class); then sample --label K, classify")] = False,
    ema_decay: Annotated[float, Opt(help="EMA decay of the weights used to sample")] = 0.995,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    device: training.Device = "auto",
    seed: training.Seed = 0,
    out: Annotated[str, Opt(help="output folder (default runs/flow-<data>)")] = "",
    resume: training.Resume = False,
) -> Path:
    """Maximum likelihood: minimize -log p(x) (nats, points) or bits/dim of dequantized images."""
    config = dict(locals())
    ds = datasets.load(data, "train")
    for k, v in DEFAULTS[ds.kind].items():  # the options left unset take their data kind's default (README: why)
        config[k] = v if config[k] is None else config[k]
    hidden, blocks, actnorm, lu, steps, batch_size = (config[k] for k in DEFAULTS["points"])
    training.check(hidden >= 1 and blocks >= 1 and scales >= 1, "--hidden, --blocks and --scales must be >= 1")
    if ds.kind == "images":
        H, W = ds.shape[1:]
        training.check(H % 2 ** scales == 0 and W % 2 ** scales == 0,
                       f"--scales {scales}: image size {H}x{W} must be divisible by {2 ** scales}")
    training.check(not cond or (ds.y is not None and ds.num_classes > 1), f"--cond needs a labelled dataset; {data} has none")
    config["model"] = dict(shape=list(ds.shape), hidden=hidden, blocks=blocks, scales=scales, actnorm=actnorm, lu=lu)
    if cond:  # the label count travels in the checkpoint's model config (absent: 0, an unconditional flow)
        config["model"]["num_classes"] = ds.num_classes
    torch.manual_seed(seed)  # the 1x1 convolutions' random init
    model = Flow(**config["model"])
    if ds.kind == "points":
        model.shift.copy_(ds.x.mean(0))
        model.scale.copy_(ds.x.std(0))
    if cond:  # p(c): the training set's class frequencies (the Bayes classifier's prior)
        model.log_pc.copy_(torch.bincount(ds.y, minlength=ds.num_classes).float().div(len(ds)).log())
    g = torch.Generator().manual_seed(seed)
    x0 = ds.x[torch.randperm(len(ds), generator=g)[:512]]
    model.initialize(dequantize(x0, g) if model.images else x0)  # ActNorm data init, before the EMA copy is made
    tr = training.Trainer("flow", config, {"model": model}, ds, steps=steps, batch_size=batch_size, lr=lr,
                          out=out or f"runs/flow-{data}", device=device, seed=seed, resume=resume,
                          ema_decay=ema_decay, warmup=warmup, betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip)
    for step, (x, c) in tr:
        # no autocast: the log-determinants are sums over many layers and dims, kept in float32
        c = c if cond else None  # conditional: z = f(x; c) - mu_c, so log p(x|c) has the form below as well
        if model.images:
            z, log_det = tr.models["model"](dequantize(x), c)
        else:
            z, log_det = tr.models["model"](x, c)
        log_p = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(1) + log_det
        if model.images:
            bpd = bits_per_dim(log_p, math.prod(model.shape)).mean()
            tr.step(bpd)  # the loss is the bits/dim (logged as "loss"; no host sync per step)
        else:
            tr.step(-log_p.mean())  # the loss is the NLL in nats
    sorted_labels = (lambda n: torch.arange(n) * ds.num_classes // n) if cond else (lambda n: None)  # class by class
    return tr.finish(lambda n: generate(tr.sampling_model(), n, y=sorted_labels(n)), reference=ds.x[:2000])


@app.command()
def sample(
    ckpt: Annotated[str, Opt(help="checkpoint")] = "runs/flow-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="number of samples")] = 64,
    temperature: Annotated[float, Opt(help="z ~ N(0, T^2 I); T < 1 gives cleaner, less diverse samples")] = 1.0,
    out: Annotated[str, Opt(help=".png (grid or scatter) or .npz (raw samples under key x, data space); default "
                                 "<ckpt folder>/sample.png")] = "",
    label: Annotated[int | None, Opt(help="conditional flow: the class to draw (default: the classes in turn); needs "
                                           "a model trained with --cond")] = None,
    seed: training.Seed = 0,
    device: training.Device = "auto",
) -> Path:
    """x = f^-1(T * eps); conditional: x = f^-1(mu_c + T * eps; c)."""
    training.check(n > 0, f"--n must be positive, got {n}")
    training.check(temperature > 0 and math.isfinite(temperature), f"--temperature must be > 0, got {temperature}")
    path = datasets.samples_path(out, Path(ckpt).parent / "sample.png")
    model = load(ckpt, str(training.device(device)))
    K = model.num_classes
    training.check(label is None or K > 0, "--label needs a model trained with --cond; this one is unconditional")
    training.check(label is None or 0 <= label < K, f"--label must be in 0..{K - 1}, got {label}")
    c = (torch.full((n,), label) if label is not None else torch.arange(n) * K // n) if K else None
    x = generate(model, n, generator=torch.Generator().manual_seed(seed), temperature=temperature, y=c)
    training.check(bool(torch.isfinite(x).all()), "sampling produced non-finite values; try a lower --temperature")
    ref = None if model.images else _test_data(ckpt)[:2000]
    if c is not None and training.load_checkpoint(ckpt, "flow")["config"]["data"] in ("mnist5k", "mnist"):
        import fid  # the share of samples in which fid.py's MNIST classifier sees the class asked for

        acc = float((fid.classify(x).argmax(1) == c).float().mean())
        print(f"label accuracy (fid.classify): {acc:.4f} on {n} samples")
    return datasets.write_samples(x, path, reference=ref)


def _test_data(ckpt: str) -> torch.Tensor:
    return datasets.load(training.load_checkpoint(ckpt, "flow")["config"]["data"], "test").x


@app.command()
def classify(
    ckpt: Annotated[str, Opt(help="checkpoint of a conditional flow (train --cond)")] = "runs/flow-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="test examples, a random subset (0 = the whole test split)")] = 0,
    seed: Annotated[int, Opt(help="random seed (the subset, the dequantization noise)")] = 0,
    device: training.Device = "cpu",
) -> dict:
    """Bayes classifier argmax_c p(x|c) p(c) with the flow's exact densities: its test accuracy (images: one
    dequantization draw per image, shared by every class), beside fid.py's discriminative classifier's."""
    training.check(n >= 0, f"--n must be >= 0, got {n}")
    model = load(ckpt, str(training.device(device)))
    training.check(model.num_classes > 0, f"{ckpt} is an unconditional flow; classify needs one trained with --cond")
    name = training.load_checkpoint(ckpt, "flow")["config"]["data"]
    ds = datasets.load(name, "test")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n] if n else torch.arange(len(ds))
    with torch.no_grad():
        pred = torch.cat([model.log_posterior((dequantize(xb, g) if model.images else xb).to(model.shift.device))
                          .argmax(1).cpu() for xb in ds.x[idx].split(100)])
    res = dict(model="flow", data=name, n=len(idx), accuracy=float((pred == ds.y[idx]).float().mean()))
    msg = f"Bayes classifier p(c|x) of the flow: test accuracy {100 * res['accuracy']:.2f}% on {len(idx)} {name} examples"
    if name in ("mnist5k", "mnist"):
        import fid

        res["fid_classifier_accuracy"] = float((fid.classify(ds.x[idx]).argmax(1) == ds.y[idx]).float().mean())
        msg += f" (fid.py's discriminative classifier on the same: {100 * res['fid_classifier_accuracy']:.2f}%)"
    print(msg)
    return res


@app.command()
def nll(
    ckpt: Annotated[str, Opt(help="checkpoint")] = "runs/flow-mnist5k/ckpt.pt",
    n: Annotated[int, Opt(help="test examples to use (0 = the whole test split)")] = 0,
    seed: Annotated[int, Opt(help="random seed (the dequantization noise)")] = 0,
    device: training.Device = "cpu",
) -> dict:
    """Exact -log p on the test split: bits/dim (images, one dequantization draw per image) or nats (points)."""
    training.check(n >= 0, f"--n must be >= 0, got {n}")
    model = load(ckpt, str(training.device(device)))
    x = _test_data(ckpt)
    r = likelihood(model, x[:n] if n else x, seed=seed)
    res = dict(model="flow", data=training.load_checkpoint(ckpt, "flow")["config"]["data"], n=r["n"])
    if model.images:
        res["nll_bpd"] = r["nll_bpd"]
        print(f"NLL {res['nll_bpd']:.4f} bits/dim (exact given one dequantization draw) on {r['n']} test images")
    else:
        res["nll_nats"] = r["nll_nats"]
        print(f"NLL {res['nll_nats']:.4f} nats (exact) on {r['n']} test points")
    return res


# How bench.py trains, samples and scores this file (data, read by bench; the numbers of its earlier adapters).
BENCH = {
    "claim": "exact likelihood, slowish",
    "kinds": ("points", "images"),
    "options": {"points": {}, "images": {}},
    "defaults": {kind: {"steps": d["steps"]} for kind, d in DEFAULTS.items()},  # bench --defaults: train's per-kind steps
    "quick": {"points": {"hidden": 16, "blocks": 2}, "images": {"hidden": 8, "blocks": 1}},
    "settings": {"points": [{"sampler": "f^-1(z)"}], "images": [{"sampler": "f^-1(z)"}]},
    "quick_settings": {"points": [{"sampler": "f^-1(z)"}], "images": [{"sampler": "f^-1(z)"}]},
    "likelihood": {"points": {"n": 1000, "seed": 0}, "images": {"n": 1000, "seed": 0}},
    "quick_likelihood": {"points": {"n": 200, "seed": 0}, "images": {"n": 200, "seed": 0}},
    "network": "inverse",  # one pass of f^-1 per sample
    "batch": 10_000,  # one generate call: it draws all noise first and inverts 1000 at a time
    # the conditional suite: the conditional flow (train --cond) and its Bayes classifier (the classify command)
    "conditional_options": {"cond": True},
    "conditional": [{"sampler": "f^-1(z)"}, {"sampler": "f^-1(0.7 z)", "temperature": 0.7}],
    "classifier": {"n": 1000},
    "quick_classifier": {"n": 20},
}


if __name__ == "__main__":
    app()
