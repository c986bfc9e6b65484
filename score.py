"""Score model (NCSN): denoising score matching over noise levels, sampled by annealed Langevin dynamics.

What it optimizes (Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution",
https://arxiv.org/abs/1907.05600): a network s_theta(x, sigma) estimates the score grad_x log q_sigma(x) of the data
blurred by Gaussian noise, q_sigma = p_data * N(0, sigma^2 I), at L noise levels sigma_1 > ... > sigma_L (a geometric
sequence). For one level, denoising score matching (Vincent 2011) minimizes (eq. 5)
    l(theta; sigma) = 1/2 E_{x ~ p_data, x~ ~ N(x, sigma^2 I)} || s_theta(x~, sigma) + (x~ - x) / sigma^2 ||^2,
whose minimizer is the score of q_sigma; over all levels with weight lambda(sigma) = sigma^2 (eq. 6)
    L(theta) = 1/L sum_i sigma_i^2 l(theta; sigma_i) = 1/L sum_i 1/2 E || sigma_i s_theta(x~, sigma_i) + z ||^2
with x~ = x + sigma_i z, z ~ N(0, I).
No likelihood and no partition function appear anywhere: the score of exp(-E)/Z does not depend on Z.
Sampling runs Langevin dynamics at each level in turn, from the largest sigma to the smallest (Algorithm 1,
x <- x + alpha_i / 2 s_theta(x, sigma_i) + sqrt(alpha_i) z with alpha_i = eps sigma_i^2 / sigma_L^2), then
optionally one denoising step x + sigma_L^2 s_theta(x, sigma_L) (Tweedie's formula, Efron 2011; the final denoising
step recommended by Jolicoeur-Martineau et al. 2021, https://arxiv.org/abs/2009.05475). Not in the paper: every step
uses the score whose Tweedie estimate is clipped to the data's box (clip_denoised, as DDPM clips its x_0 estimate);
without it a few toy chains diverge once the network is trained long (off the data its score is garbage).

Networks. Points: a residual MLP on the point's Fourier features, with features of log sigma added in every block.
Images: a small UNet (28 -> 14 -> 7) conditioned on log sigma through an embedding added in every residual block.
Both output net(x, sigma) / sigma: the NCSNv2 parametrization (Song & Ermon 2020, https://arxiv.org/abs/2006.09011,
technique 3, there without the conditioning input), which makes the target sigma * s = -z of unit scale at every
level. sigma_1 is chosen from the data's spread for points (NCSNv2 technique 1: about the largest pairwise distance
of the training points); images keep Song & Ermon 2019's sigma_1 = 1, sigma_L = 0.01, L = 10.

Algorithm -> function:
    geometric noise levels sigma_1 > ... > sigma_L        -> geometric_sigmas
    perturbation x~ = x + sigma z and the DSM target       -> perturb
    weighted DSM objective (eqs. 5-6)                      -> dsm_loss
    Algorithm 1, annealed Langevin dynamics                -> annealed_langevin
    Tweedie denoising x + sigma^2 s(x, sigma)              -> tweedie_denoise
    its estimate clipped to the data's box (not in NCSN)   -> clip_denoised
    samples in data space (uniform x_0, Alg. 1, Tweedie)   -> generate (the surface shared with the other files)
No likelihood: the score leaves log Z, hence log p, undetermined. `BENCH` says how bench.py runs this file.

Commands:
    python score.py train                              # mnist5k, small UNet, 360 s on 2 CPU cores -> runs/score-mnist5k/
    python score.py sample                             # 10 levels x 100 Langevin steps, then Tweedie denoising
                                                       # -> runs/score-mnist5k/sample.png (.npz: raw samples)
    python score.py train --data grid25                # 2-D toy, MLP, sigma_1 from the data (~1 min on CPU)
    python score.py sample --ckpt runs/score-grid25/ckpt.pt --n 2000 --out grid.npz
    torchrun --nproc_per_node=2 score.py train         # DDP (gloo on CPU, NCCL on GPU)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------- networks
def sigma_features(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """log sigma [B] -> [B, dim] sin/cos features at frequencies 1, 2, 4, ... (log sigma spans about -5..2)."""
    freqs = 2.0 ** torch.arange(dim // 2, device=sigma.device, dtype=torch.float32) / 4
    angles = sigma.float().log()[:, None] * freqs[None]  # [B, dim/2]
    return torch.cat([angles.sin(), angles.cos()], 1)


class PointScore(nn.Module):
    """s(x, sigma) for points [B, D]: a residual MLP on [x, sin/cos(pi 2^k x), k < 4] (Fourier features, Tancik
    et al. 2020, https://arxiv.org/abs/2006.10739: near sigma_L the score of sharp modes is a steep sawtooth that a
    plain MLP learns very slowly), with the embedding of log sigma added in every block; output / sigma."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, octaves: int = 4):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(octaves))
        self.inp = nn.Linear(dim * (1 + 2 * octaves), hidden)
        self.embed = nn.Sequential(nn.Linear(16, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                                  nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, sigma):
        angles = (x[..., None] * self.freqs).flatten(1)  # [B, D, octaves] -> [B, D * octaves]
        h = self.inp(torch.cat([x, angles.sin(), angles.cos()], 1))
        e = self.embed(sigma_features(sigma, 16))
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h) / sigma[:, None]  # NCSNv2 technique 3: the output scaled by 1 / sigma


class Block(nn.Module):
    """Residual block: GroupNorm, SiLU, 3x3 conv, plus the sigma embedding as a per-channel bias."""

    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]  # [B, C] -> [B, C, 1, 1]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class ImageScore(nn.Module):
    """s(x, sigma) for images: a small UNet with one residual block per level (ch, 2ch, 2ch at 28, 14, 7 for
    MNIST), skip connections by concatenation, and the embedding of log sigma in every block; output / sigma."""

    def __init__(self, in_ch: int = 1, ch: int = 32):
        super().__init__()
        E, chans = 4 * ch, [ch, 2 * ch, 2 * ch]
        self.ch = ch
        self.embed = nn.Sequential(nn.Linear(ch, E), nn.SiLU(), nn.Linear(E, E))
        self.stem = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList(Block(ci, co, E) for ci, co in zip([ch] + chans[:-1], chans))
        self.pool = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in chans[:-1])
        self.mid = Block(chans[-1], chans[-1], E)
        self.up = nn.ModuleList(Block(2 * c, c_next, E) for c, c_next in zip(chans[::-1], chans[::-1][1:] + [ch]))
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, in_ch, 3, padding=1))

    def forward(self, x, sigma):
        e = F.silu(self.embed(sigma_features(sigma, self.ch)))
        h, skips = self.stem(x), []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)  # 28 -> 14 -> 7
        h = self.mid(h, e)
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")  # 7 -> 14 -> 28 (no-op at the lowest level)
            h = block(torch.cat([h, skip], 1), e)
        return self.out(h) / sigma[:, None, None, None]  # NCSNv2 technique 3


class NCSN(nn.Module):
    """A score network plus its noise levels, working in a normalized space x = (data - shift) / scale (identity for
    images in [-1, 1]; the train set's mean and std for points, so one set of hyperparameters fits every toy)."""

    def __init__(self, net: nn.Module, sigmas: torch.Tensor, shape: tuple[int, ...], shift=0.0, scale=1.0,
                 box: float | None = None):
        super().__init__()
        self.net, self.shape = net, tuple(shape)  # shape of one example: (D,) or (C, H, W)
        self.box = box  # the data lie in [-box, box]^D in normalized units (None: unknown, nothing is clipped)
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x, sigma):
        return self.net(x, sigma)

    def normalize(self, x):
        return (x - self.shift) / self.scale

    def denormalize(self, x):
        return x * self.scale + self.shift


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """sigma_1 = sigma_max > ... > sigma_L = sigma_min with a constant ratio sigma_{i-1} / sigma_i (sec. 4.2)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels))


def max_pairwise_distance(x: torch.Tensor, n: int = 4000) -> float:
    """NCSNv2 technique 1: sigma_1 about the largest Euclidean distance between training points (on a subsample)."""
    x = x.flatten(1)[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n]].double()
    return float(torch.cdist(x, x).max())


# ----------------------------------------------------------------------------------------------------- loss
def perturb(x: torch.Tensor, sigma: torch.Tensor, generator=None):
    """x~ = x + sigma z, z ~ N(0, I), and the DSM target (eq. 5)
    grad_x~ log N(x~; x, sigma^2 I) = -(x~ - x) / sigma^2 = -z / sigma,  with sigma: [B].
    Its conditional mean E[target | x~] is the score of q_sigma (Vincent 2011), which is why eq. 5 learns it."""
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    s = sigma.view(-1, *[1] * (x.dim() - 1))  # [B] -> [B, 1, ...]
    return x + s * z, -z / s


def dsm_loss(score_fn: Callable, x: torch.Tensor, sigmas: torch.Tensor, generator=None) -> torch.Tensor:
    """Eq. 6 with lambda(sigma) = sigma^2: one level per example drawn uniformly (as in NCSN's training code),
    mean over the batch of 1/2 sigma^2 || s(x~, sigma) - target ||^2 = 1/2 || sigma s(x~, sigma) + z ||^2."""
    i = torch.randint(len(sigmas), (x.shape[0],), generator=generator, device=sigmas.device)
    sigma = sigmas[i].to(x.device)
    x_tilde, target = perturb(x, sigma, generator)
    s = sigma.view(-1, *[1] * (x.dim() - 1))
    return 0.5 * ((s * (score_fn(x_tilde, sigma).float() - target)) ** 2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------------------------------- sampler
@torch.no_grad()
def annealed_langevin(score_fn: Callable, x: torch.Tensor, sigmas, steps_per_level: int = 100, eps: float = 2e-5,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 of Song & Ermon 2019. sigmas: largest to smallest; score_fn(x, sigma) with sigma a float tensor [B].
        for i = 1..L:  alpha_i = eps * sigma_i^2 / sigma_L^2
            for t = 1..T:  x <- x + alpha_i / 2 * s(x, sigma_i) + sqrt(alpha_i) z_t,  z_t ~ N(0, I)
    The step keeps alpha_i / sigma_i^2 constant, so every level mixes at the same rate relative to its own scale.
    Convention: this is the paper's Algorithm 1 (drift alpha / 2, noise sqrt(alpha)). The official NCSN code
    (ermongroup/ncsn, anneal_Langevin_dynamics) writes x + a s + sqrt(2 a) z with a = step_lr sigma_i^2 / sigma_L^2,
    the same chain with alpha = 2 a: so eps here is twice its step_lr, and the same number (e.g. the default
    2e-5 in both) takes half the official code's step. To reproduce that code, pass eps = 2 * step_lr.
    The noise is drawn where `generator` lives (a CPU generator can drive chains on a GPU); without one, from the
    global RNG of x's device."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).to(x.device)
    where = generator.device if generator is not None else x.device
    for sigma in sigmas:
        alpha = eps * sigma ** 2 / sigmas[-1] ** 2  # step size alpha_i (Alg. 1 line 3)
        sigma_b = sigma.expand(x.shape[0])  # [B]
        for _ in range(steps_per_level):
            z = torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)
            x = x + alpha / 2 * score_fn(x, sigma_b) + alpha.sqrt() * z  # Alg. 1 line 6
    return x


@torch.no_grad()
def tweedie_denoise(score_fn: Callable, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x_clean | x] = x + sigma^2 grad log q_sigma(x) (Tweedie's formula): removes the last level's noise."""
    sigma_b = torch.full((x.shape[0],), float(sigma), device=x.device)
    return x + sigma ** 2 * score_fn(x, sigma_b)


def clip_denoised(score_fn: Callable, box: float) -> Callable:
    """s(x, sigma) whose Tweedie estimate D = x + sigma^2 s (the posterior mean E[x_0 | x], which lies in the data's
    convex hull) is clipped to the data's box [-box, box]:  s_c = s + (clip(D) - D) / sigma^2.
    Where D is already inside the box s_c = s exactly; elsewhere s_c points back towards the data with the true far
    score's gain 1 / sigma^2. Departs from Algorithm 1, as DDPM's sampler clips its x_0 estimate (Ho et al. 2020):
    Langevin chains in the tail of one level (a 2-D chain at 4 sigma_1) reach points the next level's network never
    saw in training, where its score can be 10^4 times too large and the chain diverges (2 of 2,500 toy chains after
    40k training steps)."""
    def s_c(x, sigma):
        s = score_fn(x, sigma)
        var = sigma.view(-1, *[1] * (x.dim() - 1)) ** 2  # [B] -> [B, 1, ...]
        d = x + var * s  # Tweedie: E[x_0 | x]
        return s + (d.clamp(-box, box) - d) / var
    return s_c


@torch.no_grad()
def generate(model: NCSN, n: int, *, generator: torch.Generator | None = None, y=None, steps_per_level: int = 100,
             eps: float = 2e-5, denoise: bool = True, clip: bool = True, batch: int = 500) -> torch.Tensor:
    """n samples in data space on the CPU: x_0 uniform on [-1, 1]^D (as in NCSN; normalized units for points),
    Algorithm 1 over model.sigmas, then (`denoise`) the Tweedie step at sigma_L; `clip`: with the score of
    clip_denoised (where the model knows its data's box); `batch` chains at a time, with one generator running
    through (x_0 drawn where it lives)."""
    if y is not None:
        raise ValueError("score.py's NCSN is unconditional: y must be None")
    dev, out = model.sigmas.device, []
    where = generator.device if generator is not None else None
    score_fn = clip_denoised(model, model.box) if clip and model.box is not None else model
    for start in range(0, n, batch):
        x = (torch.rand((min(batch, n - start), *model.shape), generator=generator, device=where) * 2 - 1).to(dev)
        x = annealed_langevin(score_fn, x, model.sigmas, steps_per_level, eps, generator=generator)
        if denoise:
            x = tweedie_denoise(score_fn, x, float(model.sigmas[-1]))
        out.append(model.denormalize(x).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------- commands
from pathlib import Path  # noqa: E402  (below: the CLI, which uses data.py and training.py)
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="Score model (NCSN): denoising score matching + annealed Langevin dynamics.")



def build(config: dict) -> NCSN:
    """The untrained model that a config describes; train sets the buffers (sigmas, shift, scale), load reads them."""
    shape = tuple(config["shape"])
    if config["kind"] == "points":  # box: from the train set (None in checkpoints written before it was saved)
        return NCSN(PointScore(shape[0], config["hidden"]), torch.ones(config["levels"]), shape,
                    torch.zeros(shape), torch.ones(shape), config.get("box"))
    return NCSN(ImageScore(shape[0], config["ch"]), torch.ones(config["levels"]), shape, box=1.0)  # pixels in [-1, 1]


def load(path: str | Path, device: str = "cpu") -> NCSN:
    """Rebuild the model from a checkpoint's config and load its EMA weights, ready to sample."""
    ckpt = training.load_checkpoint(path, "score")
    model = build(ckpt["config"])
    try:
        model.load_state_dict(training.ema_state(ckpt, "model"))
    except (RuntimeError, KeyError) as e:
        training.fail(f"{path} does not match its own config ({str(e).splitlines()[0][:120]})")
    model.config = ckpt["config"]
    return model.to(device).eval()


@app.command()
def train(
    data: Annotated[str, typer.Option(help="dataset: mnist5k, mnist, fashion, cifar10, or a 2-D toy (grid25, ...)")]
    = "mnist5k",
    steps: Annotated[int, typer.Option(help="training steps")] = 2500,
    batch_size: Annotated[int, typer.Option(help="examples per step")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 2e-3,
    warmup: Annotated[int, typer.Option(help="linear learning-rate warm-up steps")] = 100,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    levels: Annotated[int, typer.Option(help="L, the number of noise levels")] = 10,
    sigma_max: Annotated[float, typer.Option(help="sigma_1; 0 = choose: 1.0 for images (Song & Ermon 2019), the "
                                                  "largest pairwise distance of the normalized data for points")] = 0.0,
    sigma_min: Annotated[float, typer.Option(help="sigma_L (in normalized units for points)")] = 0.01,
    ch: Annotated[int, typer.Option(help="UNet base channels (images)")] = 16,
    hidden: Annotated[int, typer.Option(help="MLP width (points)")] = 128,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of the weights used to sample (NCSNv2 technique 5)")]
    = 0.999,
    steps_per_level: Annotated[int, typer.Option(help="T, Langevin steps per level for the final samples")] = 100,
    eps: Annotated[float, typer.Option(help="epsilon of Algorithm 1 (step at sigma_L) for the final samples")] = 2e-5,
    device: training.Device = "auto",
    seed: training.Seed = 0,
    out: Annotated[str, typer.Option(help="output folder; default runs/score-<data>")] = "",
    resume: training.Resume = False,
) -> Path:
    """Train s_theta(x, sigma) by denoising score matching over geometric noise levels."""
    config = dict(locals())  # every option above, saved in the checkpoint
    import data as datasets

    training.check(warmup >= 0, f"--warmup must be >= 0, got {warmup}")
    training.check(levels >= 1, f"--levels must be at least 1, got {levels}")
    training.check(sigma_min > 0 and sigma_max >= 0, "--sigma-min must be positive and --sigma-max >= 0")
    training.check(ch >= 8 and ch % 8 == 0 and hidden >= 1, f"--ch must be a positive multiple of 8 (GroupNorm), "
                   f"got {ch}; --hidden must be positive")
    training.check(steps_per_level >= 1 and eps > 0, "--steps-per-level and --eps must be positive")
    ds = datasets.load(data, "train")
    config.update(kind=ds.kind, shape=list(ds.shape))  # derived, so that load() can rebuild the network
    training.seed_everything(seed)  # the initial weights depend on --seed only
    model = build(config)
    if ds.kind == "points":  # normalize toys by the train set's mean and std
        model.shift.copy_(ds.x.mean(0))
        model.scale.copy_(ds.x.std(0))
        model.box = config["box"] = float(model.normalize(ds.x).abs().max())  # clip_denoised's box, saved
    s1 = sigma_max or (max_pairwise_distance(model.normalize(ds.x)) if ds.kind == "points" else 1.0)
    training.check(s1 > sigma_min, f"sigma_1 = {s1:g} must exceed --sigma-min {sigma_min:g}")
    model.sigmas.copy_(geometric_sigmas(s1, sigma_min, levels))
    tr = training.Trainer("score", config, {"model": model}, ds, steps=steps, batch_size=batch_size, lr=lr,
                          out=out or f"runs/score-{data}", device=device, seed=seed, resume=resume,
                          ema_decay=ema_decay, warmup=warmup, betas=(beta1, beta2), weight_decay=weight_decay,
                          grad_clip=grad_clip)
    sigmas = model.sigmas.to(tr.dev)
    for step, (x, _) in tr:
        with tr.autocast():
            loss = dsm_loss(tr.models["model"], model.normalize(x), sigmas)
        tr.step(loss)

    def sample_fn(n):
        return generate(tr.sampling_model(), n, steps_per_level=steps_per_level, eps=eps)

    reference = ds.x[:5000] if ds.kind == "points" else None
    return tr.finish(sample_fn, n=1000 if ds.kind == "points" else 64, reference=reference)


@app.command()
def sample(
    ckpt: Annotated[str, typer.Option(help="checkpoint written by train")] = "runs/score-mnist5k/ckpt.pt",
    n: Annotated[int, typer.Option(help="number of samples")] = 64,
    out: Annotated[str, typer.Option(help=".png (grid or scatter) or .npz (raw samples under key x, data space); "
                                          "default <ckpt folder>/sample.png")] = "",
    steps_per_level: Annotated[int, typer.Option(help="T, Langevin steps per noise level")] = 100,
    eps: Annotated[float, typer.Option(help="epsilon of Algorithm 1: the step size at sigma_L")] = 2e-5,
    denoise: Annotated[bool, typer.Option(help="finish with the Tweedie step x + sigma_L^2 s(x, sigma_L)")] = True,
    clip: Annotated[bool, typer.Option(help="clip the Tweedie estimate x + sigma^2 s to the data's box at every "
                                            "step (clip_denoised)")] = True,
    seed: training.Seed = 0,
    device: training.Device = "auto",
) -> Path:
    """Draw samples by annealed Langevin dynamics (Algorithm 1)."""
    import data as datasets

    training.check(n >= 1, f"--n must be positive, got {n}")
    training.check(steps_per_level >= 1, f"--steps-per-level must be positive, got {steps_per_level}")
    training.check(eps > 0, f"--eps must be positive, got {eps}")
    path = datasets.samples_path(out, Path(ckpt).parent / "sample.png")
    model = load(ckpt, training.device(device))
    x = generate(model, n, generator=torch.Generator().manual_seed(seed), steps_per_level=steps_per_level, eps=eps,
                 denoise=denoise, clip=clip)
    ref = datasets.load(model.config["data"], "test").x[:2000] if model.config["kind"] == "points" else None
    return datasets.write_samples(x, path, reference=ref)  # .npz: raw samples under key x; .png: grid or scatter


# How bench.py trains, samples and scores this file (data, read by bench; the numbers of its earlier adapters).
BENCH = {
    "claim": "high quality, slow sampling (no likelihood)",
    "kinds": ("points", "images"),
    "options": {"points": {"steps_per_level": 20}, "images": {"steps_per_level": 5}},  # train's own samples.png
    "quick": {"points": {"hidden": 16, "steps_per_level": 2}, "images": {"ch": 8, "steps_per_level": 2}},
    # label: L x T Langevin steps for the default L = 10 levels (+ 1 Tweedie call, counted in the NFE)
    # images: the learning curve's snapshots with train's 10 x 5 (cheap), the final model also with sample's
    # default 10 x 100 (at 10 x 5 the 300 s model drew two classes: README, "bench.py")
    "settings": {"points": [{"sampler": "ald-1000", "steps_per_level": 100}],
                 "images": [{"sampler": "ald-50", "steps_per_level": 5},
                            {"sampler": "ald-1000", "steps_per_level": 100}]},
    "quick_settings": {"points": [{"sampler": "ald-20", "steps_per_level": 2}],
                       "images": [{"sampler": "ald-20", "steps_per_level": 2}]},
    "likelihood": None,  # no likelihood (see the docstring)
    "quick_likelihood": None,
    "network": "",  # the score network: one call per Langevin step, one for the Tweedie step
    "batch": 500,
}


if __name__ == "__main__":
    app()
