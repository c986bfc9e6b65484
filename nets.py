"""The denoiser backbones of the diffusion family (ddpm.py, cfg.py and the files that follow them).

Every backbone is `net(x, t, y=None)` -> a tensor shaped like x: `t` is a float tensor [B] (ddpm.py passes its integer
steps 0..T-1 as floats; continuous-time files pass their own scale), `y` a LongTensor [B] of labels or None, and
`net.num_classes` the number of classes (0: unconditional). A class-conditional backbone has num_classes + 1 label
rows; the last one is the "null" label of classifier-free guidance, and y = None means that null label.

    timestep_embedding, Embed   sinusoidal time embedding (Vaswani et al. 2017) + an MLP, plus the label embedding
    UNet (ResBlock, Attention)  the image network of Ho et al. 2020 (https://arxiv.org/abs/2006.11239), small
    MLP                         a residual MLP for 2-D points
    DiT (DiTBlock)              Diffusion Transformer, Peebles & Xie 2023 (https://arxiv.org/abs/2212.09748): patchify,
                                fixed 2-D sin-cos position embedding, transformer blocks with adaLN-Zero conditioning,
                                zero-initialised final layer, unpatchify; sizes in DIT_MODELS ("DiT-S/4", ...)
    guided                      the classifier-free guidance mix out_u + s (out_c - out_u) from one batched pass
    build, validate             the backbone a saved config describes, and the check of that config

The upper part imports only torch (copy it with the model file). The lower part declares the backbone options of the
train commands once, as typing.Annotated aliases (`ch: nets.Ch = 32`); typer is used there when it is installed.
"""
from __future__ import annotations

import math
from typing import Annotated, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------- embeddings
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps [B] -> [B, dim] (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class Embed(nn.Module):
    """Time embedding, plus an optional class embedding (num_classes + 1 rows: the last is the "null" label of cfg.py).
    [B] -> [B, 4 dim]."""

    def __init__(self, dim: int, num_classes: int = 0):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))
        self.label = nn.Embedding(num_classes + 1, 4 * dim) if num_classes else None

    def forward(self, t, y=None):
        emb = self.mlp(timestep_embedding(t, self.dim))
        if self.label is not None:
            if y is None:  # no label -> the null label (the last row)
                y = torch.full(t.shape, self.label.num_embeddings - 1, dtype=torch.long, device=t.device)
            emb = emb + self.label(y)
        return emb


# ----------------------------------------------------------------------------------------------------- UNet, MLP
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
        self.num_classes = num_classes
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
        self.num_classes = num_classes
        self.embed = Embed(hidden // 4, num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, t, y=None):
        emb, h = self.embed(t, y), self.inp(x)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)


# ----------------------------------------------------------------------------------------------------- DiT
# Named sizes, like DiT's own registry (Peebles & Xie Table 1: S 12 x 384 / 6 heads, B 12 x 768 / 12, L 24 x 1024 / 16),
# scaled down for 28x28 images on a CPU (head width 32). "/p" is the patch size: 28x28 -> (28/p)^2 tokens.
DIT_SIZES = {"DiT-T": dict(depth=3, width=64, heads=2), "DiT-S": dict(depth=4, width=96, heads=3),
             "DiT-B": dict(depth=6, width=160, heads=5), "DiT-L": dict(depth=8, width=256, heads=8)}
DIT_MODELS = {f"{name}/{p}": dict(**size, patch=p) for name, size in DIT_SIZES.items() for p in (2, 4, 7)}
DEFAULT_DIT = "DiT-S/4"  # 4 blocks x 96 wide, 49 tokens of 4x4 pixels: about the default UNet's parameter count


def pos_embedding_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / DiT), [h w, dim], tokens in row-major order (i * w + j). The first
    half of the channels encodes the row i, the second half the column j, each as a 1-D sin-cos embedding:
    with K = dim / 4 and omega_k = 10000^(-k / K), k = 0..K-1,
        pe[i w + j] = [sin(i omega), cos(i omega), sin(j omega), cos(j omega)]      (4 blocks of K channels)."""
    K = dim // 4
    omega = 10_000.0 ** (-torch.arange(K, dtype=torch.float64, device=device) / K)  # [K]
    i, j = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    a_i = i.reshape(-1, 1).double() * omega  # [h w, K]
    a_j = j.reshape(-1, 1).double() * omega
    return torch.cat([a_i.sin(), a_i.cos(), a_j.sin(), a_j.cos()], 1).float()


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, C p p] tokens, N = (H/p)(W/p) in row-major order, each token a flattened C x p x p
    patch (the order in which the patch-embedding conv with stride p reads it)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p)  # [B, C, h, p, w, p]
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)  # [B, h, w, C, p, p] -> tokens


def unpatchify(tokens: torch.Tensor, p: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of patchify: [B, N, C p p] -> [B, C, H, W] with (C, H, W) = shape."""
    C, H, W = shape
    x = tokens.reshape(tokens.shape[0], H // p, W // p, C, p, p)  # [B, h, w, C, p, p]
    return x.permute(0, 3, 1, 4, 2, 5).reshape(tokens.shape[0], C, H, W)  # [B, C, h, p, w, p] -> image


def modulate(x, shift, scale):
    """adaLN: LayerNorm(x) (1 + scale) + shift, with shift, scale [B, D] regressed from the conditioning."""
    return x * (1 + scale[:, None]) + shift[:, None]  # [B, D] -> [B, 1, D] against tokens [B, N, D]


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero (Peebles & Xie sec. 3.2): from the conditioning c, a zero-initialised linear
    layer regresses shift, scale and a gate alpha for each of the two residual branches,
        x <- x + alpha_1 * Attn(modulate(LN(x), shift_1, scale_1))
        x <- x + alpha_2 * MLP(modulate(LN(x), shift_2, scale_2)),
    so that at initialisation alpha = 0 and the block is the identity."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: every gate, shift and scale starts at 0
        nn.init.zeros_(self.ada[1].bias)

    def attention(self, h):
        B, N, D = h.shape
        q, k, v = self.qkv(h).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, N, d]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D/heads]
        return self.proj(out.transpose(1, 2).reshape(B, N, D))

    def forward(self, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, 1)  # 6 x [B, D]
        x = x + gate1[:, None] * self.attention(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """eps_theta(x_t, t[, y]) for images as a Diffusion Transformer (Peebles & Xie 2023): patchify with a conv of
    stride p, add the fixed 2-D sin-cos position embedding, `depth` adaLN-Zero blocks conditioned on
    c = embed(t) + embed(y), a final adaLN + zero-initialised linear layer to p p C values per token, unpatchify.
    At initialisation the output is exactly 0. Departures: the time/label embedding is Embed (width / 4 sinusoidal
    channels, not 256); no learned sigma (ddpm.py fixes the variances); H and W must be multiples of p."""

    def __init__(self, in_ch: int = 1, patch: int = 4, width: int = 96, depth: int = 4, heads: int = 3,
                 num_classes: int = 0, dropout: float = 0.0):
        super().__init__()
        self.num_classes, self.patch, self.width = num_classes, patch, width
        self.embed = Embed(width // 4, num_classes)  # [B] -> [B, width]
        self.patch_embed = nn.Conv2d(in_ch, width, patch, stride=patch)  # a linear map of each p x p patch
        self.blocks = nn.ModuleList(DiTBlock(width, heads, dropout) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.final = nn.Linear(width, patch * patch * in_ch)
        for block in self.blocks:  # DiT's initialisation of the transformer layers: Xavier-uniform, zero bias
            for layer in (block.qkv, block.proj, block.mlp[0], block.mlp[3]):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        for layer in (self.final_ada[1], self.final):  # zero-initialised final layer: the output starts at 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, t, y=None):
        B, C, H, W = x.shape
        p = self.patch
        c = self.embed(t, y)  # [B, D]
        h = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, D, H/p, W/p] -> [B, N, D], row-major tokens
        h = h + pos_embedding_2d(H // p, W // p, self.width, x.device).to(h.dtype)  # fixed, not learned
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, 1)
        h = self.final(modulate(self.final_norm(h), shift, scale))  # [B, N, C p p]
        return unpatchify(h, p, (C, H, W))


# ----------------------------------------------------------------------------------------------------- guidance
def bcast(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example tensor [B] viewed as [B, 1, ..., 1], to broadcast against x [B, ...]."""
    return a.view(-1, *[1] * (x.dim() - 1))


def noise_device(generator: torch.Generator | None, default) -> torch.device:
    """Where to draw noise: on the generator's own device (a CPU generator then gives the same numbers whatever the
    model's device; the draw is moved there after), else on `default`."""
    return generator.device if generator is not None else torch.device(default)


def guided(net_fn: Callable, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: float, null: int) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 with s = 1 + w): out_u + s (out_c - out_u), where
    out_c = net_fn(x, t, y) and out_u = net_fn(x, t, null) come from ONE call on the doubled batch [x, x] with labels
    [y, null]. The mix is the same for an eps, v or velocity prediction. y: LongTensor [B]."""
    B = x.shape[0]
    y_u = torch.full_like(y, null)
    out = net_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_u]))  # [2B, ...]
    out_c, out_u = out[:B], out[B:]  # conditional half first, unconditional half second
    return out_u + s * (out_c - out_u)  # = (1 + w) out_c - w out_u  with  w = s - 1


# ----------------------------------------------------------------------------------------------------- from a config
NETS = ("unet", "dit")


def ch_mult(text: str) -> tuple[int, ...]:
    """Parse --ch-mult: "1,2,2" -> (1, 2, 2)."""
    return tuple(int(m) for m in text.split(","))


def dit_config(config: dict) -> dict:
    """depth, width, heads and patch of a DiT: the named size --dit-size, each overridden by --dit-<name> when > 0."""
    size = DIT_MODELS[config.get("dit_size", DEFAULT_DIT)]
    return {k: config.get(f"dit_{k}") or v for k, v in size.items()}


def build(config: dict, shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    """The backbone that a saved config (a train command's arguments) describes, for data of `shape` without the batch
    dim: the MLP for points [D]; the UNet or the DiT (config["net"]) for images [C, H, W]. Configs written before
    --net existed are UNets."""
    net = config.get("net", "unet")
    if len(shape) == 1:
        if net != "unet":
            raise ValueError(f"--net {net} needs images; 2-D points use the MLP (--hidden, --depth)")
        return MLP(shape[0], config["hidden"], config["depth"], num_classes)
    if net == "unet":
        return UNet(shape[0], config["ch"], ch_mult(config["ch_mult"]), config["attn"], num_classes,
                    config["dropout"], config.get("patch", 1))
    if net == "dit":
        return DiT(shape[0], num_classes=num_classes, dropout=config["dropout"], **dit_config(config))
    raise ValueError(f"unknown --net {net!r}; choose one of {', '.join(NETS)}")


def validate(config: dict, shape: tuple[int, ...] | None = None) -> None:
    """Raise ValueError (one line) for a backbone option out of range, or one that does not fit data of `shape`."""
    def check(ok, message):
        if not ok:
            raise ValueError(message)

    net = config.get("net", "unet")
    check(net in NETS, f"unknown --net {net!r}; choose one of {', '.join(NETS)}")
    try:
        mult = ch_mult(config["ch_mult"])
    except ValueError:
        mult = ()
    check(bool(mult) and min(mult) > 0, f"--ch-mult must be positive integers like 1,2,2, got {config['ch_mult']!r}")
    check(config.get("patch", 1) >= 1, "--patch must be >= 1")
    check(config["ch"] > 0 and config["ch"] % 8 == 0, "--ch must be a positive multiple of 8 (GroupNorm uses 8 groups)")
    check(0 <= config["dropout"] < 1, f"--dropout must be in [0, 1), got {config['dropout']}")
    points = shape is not None and len(shape) == 1
    check(not points or net == "unet", f"--net {net} needs images; 2-D points use the MLP (--hidden, --depth)")
    if points:
        check(config["hidden"] > 0 and config["hidden"] % 8 == 0 and config["depth"] >= 0,  # Embed(hidden / 4)
              f"--hidden must be a positive multiple of 8 and --depth >= 0, got {config['hidden']}, {config['depth']}")
    if net == "dit":
        size = config.get("dit_size", DEFAULT_DIT)
        check(size in DIT_MODELS, f"unknown --dit-size {size!r}; choose one of {', '.join(DIT_MODELS)}")
        for k in ("depth", "width", "heads", "patch"):
            check(config.get(f"dit_{k}", 0) >= 0, f"--dit-{k} must be >= 0 (0 = from --dit-size), got "
                                                  f"{config.get(f'dit_{k}')}")
        d = dit_config(config)
        check(d["width"] % 8 == 0 and d["width"] % d["heads"] == 0,  # 8: Embed(width / 4) needs an even dim
              f"DiT width {d['width']} must be a multiple of 8 and of the {d['heads']} heads")
        if shape is not None:
            check(shape[1] % d["patch"] == 0 and shape[2] % d["patch"] == 0,
                  f"DiT patch {d['patch']} must divide the image size {shape[1]}x{shape[2]}")


# ----------------------------------------------------------------------------------------------------- options
# The backbone options of every diffusion-family train command, declared once (each command keeps its defaults):
#     net: nets.Net = "unet"   ch: nets.Ch = 32   ch_mult: nets.ChMult = "1,2,2"   dit_size: nets.DitSize = "DiT-S/4"
# With typer installed the metadata is a typer.Option (its help text); without, a plain string, so that the networks
# above stay usable in a project without typer.
try:
    import typer

    def _option(help: str):
        return typer.Option(help=help)
except ImportError:  # pragma: no cover
    def _option(help: str):
        return help

Net = Annotated[str, _option("image backbone: unet or dit (2-D points always use the MLP)")]
Ch = Annotated[int, _option("UNet base channels")]
ChMult = Annotated[str, _option("UNet channel multipliers per resolution, comma-separated")]
Attn = Annotated[bool, _option("self-attention at the lowest resolution (UNet)")]
Dropout = Annotated[float, _option("dropout in the residual blocks (UNet) or the transformer MLPs (DiT)")]
Patch = Annotated[int, _option("UNet stem: pixel-unshuffle p x p patches (1 = full resolution)")]
DitSize = Annotated[str, _option(f"DiT size/patch: {', '.join(DIT_MODELS)} (depth x width / heads: "
                                 + ", ".join(f"{k} {v['depth']}x{v['width']}/{v['heads']}" for k, v in
                                             DIT_SIZES.items()) + ")")]
DitDepth = Annotated[int, _option("DiT blocks (0 = from --dit-size)")]
DitWidth = Annotated[int, _option("DiT token width (0 = from --dit-size)")]
DitHeads = Annotated[int, _option("DiT attention heads (0 = from --dit-size)")]
DitPatch = Annotated[int, _option("DiT patch size p (0 = from --dit-size)")]
Hidden = Annotated[int, _option("MLP width (points)")]
Depth = Annotated[int, _option("MLP residual blocks (points)")]
