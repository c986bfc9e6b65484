"""Many seeds of gan.py's point GAN at once: S independent (G, D) pairs stacked along a leading dimension.

Why: the grid25 question of issue 5 is a question about the spread over seeds (how often a recipe loses modes),
and one 100,000-step run of gan.py takes ~17 minutes on a CPU. Here every weight has a leading seed dimension
[S, ...]; layers are batched matmuls; each seed's loss is its own mean and the losses are summed, so each seed gets
exactly its own gradient, and Adam (elementwise) on the stacked tensors is S independent Adams (tests/
test_gan_seeds.py checks both). One process trains many seeds; on the GPU, many seeds cost little more than one.

It is the same recipe as `gan.py train --data grid25` (non-saturating BCE, MLP G with Linear -> BatchNorm -> ReLU,
MLP D with LeakyReLU(0.2) and PacGAN packing, both standardizing the points, Adam(beta1, beta2), TTUR, EMA of G with
the same warm-up, running BatchNorm statistics for sampling), written again with a seed dimension. Differences: the
initial weights and the batches come from one generator for all seeds (so seed i here is not gan.py's --seed i),
and real batches are drawn with replacement. A --variant sets, per group of runs, the learning rates, a linear decay
to 0 (decay_from, a fraction of steps), Adam's beta1, the R1 penalty (r1, as gan.py --r1), top-k G updates (Sinha et
al. 2020, https://arxiv.org/abs/2002.06224) and the mode-seeking term (ms, Mao et al. 2019,
https://arxiv.org/abs/1903.05628).

    python scripts/gan_seeds.py --seeds 16 --steps 100000 --device cuda --out runs/gan-seeds/default.jsonl
Each evaluation appends one JSON line: {"tag", "step", "sec", "variants", "seeds", "raw" / "ema<decay>": {"modes":
[per run], "hq": [per run]}}; runs of variant i are the slices i * seeds ... (i + 1) * seeds - 1. Summary:
    python scripts/gan_seeds.py --summarize bench/gan_seeds/sweep2-*.jsonl --steps 20000 25000
The two sweeps of issue 5 (results in bench/gan_seeds/; one H200; the processes of a sweep shared it; common
options C = --device cuda --ema-decay 0.999 0.9999 --eval-every 5000; V = --variant steps=100000 --variant
steps=50000,decay_from=0.5), stopped by a time limit after 20,000-30,000 steps:
    sweep 1, --seeds 16, one process each: C V --variant lr=2.5e-4,lr_d=5e-4 --variant lr=1e-3,lr_d=2e-3,steps=40000,
      decay_from=0.5 --variant steps=100000,decay_from=0.5 (w128); C V --width 256 (w256); C V --pack 4 (pack4);
      C V --batch-size 1024 (bs1024); C V --g-width 400 --g-depth 4 (g400)
    sweep 2, --device cuda --seeds 12 --steps 100000 --ema-decay 0.999 --eval-every 5000, two processes:
      --variant "" --variant beta1=0 --variant r1=0.1 --variant r1=1 (A);
      --variant topk=0.5 --variant ms=1 --variant steps=60000,decay_from=0.5 --variant lr_d=2e-3 (B)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data as datasets  # noqa: E402
import fid  # noqa: E402


def linear(S: int, i: int, o: int, g: torch.Generator) -> list[torch.Tensor]:
    """nn.Linear's default init, per seed: W, b ~ U(-1/sqrt(i), 1/sqrt(i)); W [S, i, o], b [S, 1, o]."""
    k = 1 / math.sqrt(i)
    return [(torch.rand(S, i, o, generator=g) * 2 - 1) * k, (torch.rand(S, 1, o, generator=g) * 2 - 1) * k]


class StackedG:
    """z [S, B, z] -> standardized points [S, B, 2]: (Linear -> BatchNorm -> ReLU) x depth -> Linear."""

    def __init__(self, S, z, width, depth, g, dev):
        self.p, self.run, d = [], [], z
        for _ in range(depth):
            self.p += linear(S, d, width, g) + [torch.ones(S, 1, width), torch.zeros(S, 1, width)]  # W, b, gamma, beta
            self.run += [torch.zeros(S, 1, width), torch.ones(S, 1, width)]  # BN running mean, running var
            d = width
        self.p += linear(S, d, 2, g)
        self.p = [t.to(dev).requires_grad_(True) for t in self.p]
        self.run = [t.to(dev) for t in self.run]
        self.depth, self.z = depth, z

    def __call__(self, z, p=None, run=None, train=True):
        p, run = p or self.p, run or self.run
        h = z
        for l in range(self.depth):
            W, b, gamma, beta = p[4 * l: 4 * l + 4]
            h = torch.baddbmm(b, h, W)
            if train:  # batch statistics; running statistics updated as nn.BatchNorm1d does (momentum 0.1)
                mu, var = h.mean(1, keepdim=True), h.var(1, keepdim=True, unbiased=False)
                with torch.no_grad():
                    n = h.shape[1]
                    run[2 * l].lerp_(mu, 0.1)
                    run[2 * l + 1].lerp_(var * n / (n - 1), 0.1)
            else:
                mu, var = run[2 * l], run[2 * l + 1]
            h = F.relu((h - mu) / torch.sqrt(var + 1e-5) * gamma + beta)
        return torch.baddbmm(p[-1], h, p[-2])


class StackedD:
    """standardized points [S, B, 2] -> logits [S, B/k]: pack k points into 2k inputs, (Linear -> LeakyReLU) x depth."""

    def __init__(self, S, width, depth, pack, g, dev):
        self.p, d = [], 2 * pack
        for _ in range(depth):
            self.p += linear(S, d, width, g)
            d = width
        self.p += linear(S, d, 1, g)
        self.p = [t.to(dev).requires_grad_(True) for t in self.p]
        self.pack = pack

    def __call__(self, x):
        S, B, _ = x.shape
        h = x.reshape(S, B // self.pack, 2 * self.pack)  # [S, B, 2] -> [S, B/k, 2k]
        for l in range(len(self.p) // 2 - 1):
            h = F.leaky_relu(torch.baddbmm(self.p[2 * l + 1], h, self.p[2 * l]), 0.2)
        return torch.baddbmm(self.p[-1], h, self.p[-2]).squeeze(2)


VARIANT_KEYS = {"lr": float, "lr_d": float, "steps": int, "decay_from": float, "beta1": float, "r1": float,
                "topk": float, "ms": float}


def adam_(params, grads, m, v, t, lr, beta1, beta2, eps=1e-8):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) with a learning rate and beta1 per run: lr [S] scales slice s of
    every tensor, so stacked runs can differ in their learning rate and schedule. Same update as torch.optim.Adam."""
    for m_, g_ in zip(m, grads):  # m = beta1 m + (1 - beta1) g, beta1 [S] per run
        m_.lerp_(g_, (1 - beta1).view(-1, 1, 1))
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, grads, grads, 1 - beta2)  # v = beta2 v + (1 - beta2) g^2
    denom = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(v), math.sqrt(1 - beta2 ** t)), eps)
    step = (lr / (1 - beta1 ** t)).view(-1, 1, 1)
    for p, m_hat, d in zip(params, m, denom):  # p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
        p.sub_(m_hat / d * step)


def variant_lines(rec: dict, ema: str) -> list[str]:
    """For each variant of one evaluation record: runs with all modes, mean modes (min), mean high-quality fraction."""
    n, K = rec["seeds"], rec.get("modes_total", 25)  # (the sweeps' files, written before modes_total, are grid25)
    lines = []
    for i in range(len(rec["variants"])):
        m, h = rec[ema]["modes"][i * n:(i + 1) * n], rec[ema]["hq"][i * n:(i + 1) * n]  # runs of variant i
        lines.append(f"{sum(x == K for x in m)}/{n} with {K} modes, mean {sum(m) / n:.1f} modes (min {min(m)}), "
                     f"hq {100 * sum(h) / n:.1f}%")
    return lines


def summarize(paths: list[str], steps: set[int] | None = None, ema: str = "ema0.999") -> None:
    """One line per variant and evaluation of the given files."""
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            if not steps or r["step"] in steps:
                for i, (v, text) in enumerate(zip(r["variants"], variant_lines(r, ema))):
                    print(f"{Path(path).stem} v{i} {v} step {r['step']}: {text}")


def main():
    if sys.argv[1:2] == ["--summarize"]:  # python scripts/gan_seeds.py --summarize FILE.jsonl ... [--steps 20000 ...]
        args = sys.argv[2:]
        cut = args.index("--steps") if "--steps" in args else len(args)
        return summarize(args[:cut], {int(x) for x in args[cut + 1:]} or None)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", default=[],
                    help="runs of one recipe, e.g. 'lr=5e-4,lr_d=1e-3,steps=50000,decay_from=0.5' (keys: "
                         + ", ".join(VARIANT_KEYS) + "); each gets --seeds slices; repeatable")
    ap.add_argument("--seeds", type=int, default=16, help="runs per variant")
    ap.add_argument("--seed", type=int, default=0, help="seed of the one generator behind all runs")
    ap.add_argument("--steps", type=int, default=100000, help="steps of the longest variant (the default for all)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--lr-d", type=float, default=1e-3)
    ap.add_argument("--beta1", type=float, default=0.5)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--pack", type=int, default=2)
    ap.add_argument("--ema-decay", type=float, nargs="+", default=[0.999], help="one EMA of G per value; all evaluated")
    ap.add_argument("--z-dim", type=int, default=64)
    ap.add_argument("--width", type=int, default=128, help="D width (and G width unless --g-width)")
    ap.add_argument("--g-width", type=int, default=0)
    ap.add_argument("--depth", type=int, default=3, help="D hidden layers (and G's unless --g-depth)")
    ap.add_argument("--g-depth", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=5000)
    ap.add_argument("--data", default="grid25")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    dev = torch.device(a.device)
    variants = []
    for spec in a.variant or [""]:  # a variant's options; unset keys take the command's values
        v = {"lr": a.lr, "lr_d": a.lr_d, "steps": a.steps, "decay_from": 1.0, "beta1": a.beta1, "r1": 0.0,
             "topk": 1.0, "ms": 0.0}
        for kv in filter(None, spec.split(",")):
            k, val = kv.split("=")
            v[k] = VARIANT_KEYS[k](val)
        variants.append(v)
    S, B = a.seeds * len(variants), a.batch_size

    def per_run(key):  # [S]: the variant's value for each run
        return torch.tensor([float(v[key]) for v in variants for _ in range(a.seeds)], dtype=torch.float64)

    lr_G, lr_D, end, decay_at = per_run("lr"), per_run("lr_d"), per_run("steps"), per_run("decay_from")
    beta1, r1, topk, ms = (per_run(k).float().to(dev) for k in ("beta1", "r1", "topk", "ms"))
    g = torch.Generator().manual_seed(a.seed)
    ds = datasets.load(a.data)
    X = ds.x.to(dev)
    centers, std = datasets.MODES[a.data]
    G = StackedG(S, a.z_dim, a.g_width or a.width, a.g_depth or a.depth, g, dev)
    D = StackedD(S, a.width, a.depth, a.pack, g, dev)
    mean, sd = X.mean(0), X.std(0)
    adam_state = {id(net): ([torch.zeros_like(t) for t in net.p], [torch.zeros_like(t) for t in net.p])  # m, v
                  for net in (G, D)}
    emas = {d: ([t.detach().clone() for t in G.p], [t.clone() for t in G.run]) for d in a.ema_decay}
    gd = torch.Generator(dev).manual_seed(a.seed + 1)  # training noise and batches
    z_eval = torch.randn(S, 2500, a.z_dim, generator=torch.Generator().manual_seed(0)).to(dev)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    log = open(a.out, "a")
    t0 = time.time()

    def gen(z, p=None, run=None, train=True):
        return mean + sd * G(z, p, run, train)

    def d_in(x):
        return (x - mean) / sd

    def update(net, loss, lr, step):
        grads = torch.autograd.grad(loss, net.p)
        with torch.no_grad():
            adam_(net.p, list(grads), *adam_state[id(net)], step + 1, lr, beta1, a.beta2)

    for step in range(int(end.max())):
        f = (step / end).clamp(max=1.0)  # linear decay to 0 from decay_from * steps to steps; 0 after the end
        scale = torch.where(f < decay_at, 1.0, (1 - f) / (1 - decay_at).clamp(min=1e-12)).clamp(min=0.0)
        scale[step >= end] = 0.0
        lrG, lrD = (lr_G * scale).float().to(dev), (lr_D * scale).float().to(dev)
        x = X[torch.randint(0, len(X), (S, B), device=dev, generator=gd)]  # [S, B, 2]
        with torch.no_grad():
            x_fake = gen(torch.randn(S, B, a.z_dim, device=dev, generator=gd))
        x_in = d_in(x).requires_grad_(bool(r1.any()))
        d_real, d_fake = D(x_in), D(d_in(x_fake))
        L_D = F.softplus(-d_real).mean(1) + F.softplus(d_fake).mean(1)  # per-run BCE [S]
        if r1.any():  # R1 (Mescheder et al. 2018, eq. 9): r1/2 E ||grad_x D(x)||^2 on real data, standardized x
            (g_x,) = torch.autograd.grad(d_real.sum(), x_in, create_graph=True)
            L_D = L_D + r1 / 2 * g_x.reshape(S, d_real.shape[1], -1).pow(2).sum(2).mean(1)
        update(D, L_D.sum(), lrD, step)  # summed over runs: each run gets its own gradient
        z = torch.randn(S, B, a.z_dim, device=dev, generator=gd)
        out = G(z)  # standardized points [S, B, 2]
        d_fake_G = D(d_in(mean + sd * out))
        per = F.softplus(-d_fake_G)  # non-saturating G loss per packed fake [S, B/k]; D's weights not updated
        if (topk < 1).any():  # top-k (Sinha et al. 2020): only the k fakes D rates most real train G; k anneals
            k_frac = torch.clamp(torch.full_like(topk, 0.99 ** (step / 100)), min=topk)  # from B to topk * B
            rank = d_fake_G.argsort(1, descending=True).argsort(1)  # 0 = most real
            keep = (rank < (k_frac * per.shape[1]).ceil()[:, None]).float()
            L_G = (per * keep).sum(1) / keep.sum(1)
        else:
            L_G = per.mean(1)
        if ms.any():  # mode seeking (Mao et al. 2019, eq. 3): + ms / (mean|G(z1)-G(z2)| / mean|z1-z2| + 1e-5)
            h = B // 2
            ratio = (out[:, :h] - out[:, h:2 * h]).abs().mean((1, 2)) / (z[:, :h] - z[:, h:2 * h]).abs().mean((1, 2))
            L_G = L_G + ms / (ratio + 1e-5)
        update(G, L_G.sum(), lrG, step)
        with torch.no_grad():  # EMA with warm-up, as training.Trainer: decay_n = min(decay, (1 + n) / (10 + n))
            for dcy_max, (ep, er) in emas.items():
                dcy = min(dcy_max, (1 + step) / (10 + step)) if step > 0 else 0.0
                torch._foreach_lerp_(ep, [t.detach() for t in G.p], 1 - dcy)
                torch._foreach_lerp_(er, G.run, 1 - dcy)
        if (step + 1) % a.eval_every == 0 or step + 1 == int(end.max()):
            rec = {"tag": a.tag, "step": step + 1, "sec": round(time.time() - t0, 1), "variants": variants,
                   "seeds": a.seeds, "modes_total": len(centers)}
            with torch.no_grad():
                for name, (p, run) in [("raw", (G.p, G.run))] + [(f"ema{d}", e) for d, e in emas.items()]:
                    xs = gen(z_eval, p, run, False).cpu()
                    cov = [fid.mode_coverage(xs[i], centers, std) for i in range(S)]
                    rec[name] = {"modes": [c["modes"] for c in cov], "hq": [round(c["hq"], 4) for c in cov]}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            for i, text in enumerate(variant_lines(rec, f"ema{a.ema_decay[0]}")):
                print(f"{a.tag} v{i} step {step + 1} {time.time() - t0:.0f}s: {text}", flush=True)


if __name__ == "__main__":
    main()
