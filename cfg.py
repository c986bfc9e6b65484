"""Classifier-free guidance: a class-conditional DDPM whose sampler mixes its conditional and unconditional predictions.

What it optimizes (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", https://arxiv.org/abs/2207.12598): one
noise predictor eps_theta(x_t, t, y) is trained with DDPM's L_simple (ddpm.py, Ho et al. 2020 eq. 14) on pairs
(x_0, y), except that y is replaced by a "null" label with probability p_uncond = 0.1. The same network thus learns
the conditional eps_c = eps_theta(x_t, t, y) and the unconditional eps_u = eps_theta(x_t, t, null). Sampling uses

    eps_tilde = eps_u + s (eps_c - eps_u)                                    (guidance scale s)

Ho & Salimans write the same thing as eps_tilde = (1 + w) eps_c - w eps_u (their eq. 6), so s = 1 + w:
    s = 0 (w = -1): the unconditional model;  s = 1 (w = 0): the plain conditional model;  s > 1 (w > 0): guidance.
Read as scores (eps = -sqrt(1 - alpha_bar) grad log p), eps_c - eps_u points along grad log p(y | x_t) of the
implicit classifier p(y | x_t) ∝ p(x_t | y) / p(x_t), so guided sampling aims at p(x | y) p(y | x)^(s - 1).

Algorithm -> function:
    Algorithm 1 (joint training, label dropout)     -> drop_labels, loss  (L_simple itself: ddpm.DDPM.loss)
    Algorithm 2 (guided sampling), eq. 6            -> guided_eps: eps_fn for ddpm.sample (samplers ddpm, ddim,
                                                       dpm++2m); the mix itself, from one batched pass over [x, x]
                                                       with labels [y, null], is nets.guided; samples in data
                                                       space (the stable surface): generate
    network with a label embedding (num_classes+1) -> nets.UNet / nets.DiT / nets.MLP (num_classes; the last row
                                                       is the null label)
Departures from the paper: ddpm.py's discrete T = 1000 linear schedule and min-SNR-weighted loss instead of their
continuous-time model; image samplers clamp the predicted x_0 to [-1, 1] after guidance (ddpm.sample's x0_clip),
which keeps large s from saturating the pixels; the guidance scale is the same at every step, as in the paper.

Commands (times measured on a 2-core CPU shared with other jobs, 1 thread):
    python cfg.py train                  # mnist5k + labels, ddpm.py's default UNet; 15 min CPU -> runs/cfg-mnist5k/
    python cfg.py train --net dit        # the same with a Diffusion Transformer (nets.DiT, adaLN-Zero on t + y)
    python cfg.py sample --guidance 2    # one row per digit, 16 s CPU -> runs/cfg-mnist5k/samples-all-s2.png
    python cfg.py sample --label 7 --guidance 3 --n 64 --sampler ddim --steps 50
    python cfg.py sweep                  # FID, P/R, accuracy, IS against s; 25 min CPU -> sweep.{md,json,png}
    python cfg.py train --data grid25 --steps 3000   # 2-D toy; the label is the mode index (25 classes)
Measured by `python cfg.py sweep` (1000 samples per scale, FID on fid.py's MNIST features against mnist5k:test): FID
12.0 (s = 0), 4.2 (s = 1), 2.9 (s = 1.5, best), 4.9 (s = 2), 10.1 (s = 3), 17.2 (s = 5); precision 0.56 -> 0.83 and
label accuracy 0.10 -> 1.00 rise with s while recall falls 0.88 -> 0.25: as in Ho & Salimans' Table 1, FID is best at
small guidance and the (MNIST) inception score keeps rising (5.7 -> 9.5).
"""
from __future__ import annotations

import torch

import ddpm  # the schedule, loss and samplers (DESIGN.md: cfg.py reuses ddpm.py)
import nets  # the networks and the guidance mix

P_UNCOND = 0.1  # Ho & Salimans sec. 4: p_uncond in {0.1, 0.2} worked best on ImageNet 64x64


# ----------------------------------------------------------------------------------------------------- labels
def null_label(model: ddpm.DDPM) -> int:
    """The id of the null label: num_classes, the last row of the network's label embedding (nets.Embed)."""
    num_classes = getattr(model.net, "num_classes", 0)
    if not num_classes:
        raise ValueError("this model was trained without labels (its network has no label embedding); "
                         "classifier-free guidance needs a class-conditional model from cfg.py train")
    return num_classes


def drop_labels(y: torch.Tensor, null: int, p_uncond: float = P_UNCOND, generator=None) -> torch.Tensor:
    """Algorithm 1, line 3: c <- null with probability p_uncond, independently for each example."""
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, null), y)


# ----------------------------------------------------------------------------------------------------- loss
def loss(model, x_0: torch.Tensor, y: torch.Tensor, null: int, p_uncond: float = P_UNCOND) -> torch.Tensor:
    """Algorithm 1: DDPM's L_simple on (x_0, y) with labels dropped to null. `model` is a ddpm.DDPM (or its DDP /
    compile wrapper), whose forward(x_0, y) is the loss; x_0 in the model's normalized space."""
    return model(x_0, drop_labels(y, null, p_uncond))


# ----------------------------------------------------------------------------------------------------- sampler
def guided_eps(model: ddpm.DDPM, y, s: float):
    """eps_fn(x_t, t) for ddpm.sample: eps_u + s (eps_c - eps_u), i.e. Ho & Salimans eq. 6 with w = s - 1.
    y: one label (int) for the whole batch, or a LongTensor [B] of labels in 0..num_classes-1.
    Both predictions come from ONE forward pass of the network on the doubled batch [x, x] with labels [y, null]."""
    null = null_label(model)
    y = torch.as_tensor(y, dtype=torch.long)
    if y.dim() > 1 or ((y < 0) | (y >= null)).any():
        raise ValueError(f"labels must be a scalar or a [B] tensor of ids in 0..{null - 1} (got {y.tolist()})")

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y_c = y.to(x_t.device).expand(x_t.shape[0])  # [B]; a [B'] tensor with B' != B fails here
        return nets.guided(model.eps, x_t, t, y_c, s, null)  # eps_u + s (eps_c - eps_u), one pass on [x, x]

    return eps_fn


@torch.no_grad()
def generate(model: ddpm.DDPM, n: int, *, generator: torch.Generator | None = None, y=None, guidance: float = 2.0,
             method: str = "dpm++2m", steps: int = 20, eta: float = 0.0, spacing: str = "lambda",
             rho: float = 3.0, x0_clip: float | None = 1.0, batch_size: int = 500) -> torch.Tensor:
    """n guided samples in data space, float32 on the CPU (images in [-1, 1]): Algorithm 2 with
    eps_tilde = eps_u + s (eps_c - eps_u), s = `guidance` (guided_eps), through ddpm.sample (`method` "ddpm", "ddim"
    with `eta`, or "dpm++2m", `steps` passes of the network on the doubled batch), then x = x_0 * scale + shift.
    y: the labels, an int (every sample) or a LongTensor [n] of ids in 0..num_classes-1; None: drawn uniformly from
    the classes. Batch by batch of `batch_size`, one generator running through: per batch the labels (when y is
    None), then x_T ~ N(0, I), then the sampler's own noise; drawn on the generator's device and moved to the model's,
    so a CPU generator gives the same samples on any device. x0_clip clamps the predicted x_0 of images after
    guidance; points are clamped to the train set's box (ddpm.x0_box: guidance pushes a few off the data); None: off."""
    null = null_label(model)  # = num_classes; fails on a model without labels
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    if y is not None:
        y = torch.as_tensor(y, dtype=torch.long).cpu()
        y = y.expand(n) if y.dim() == 0 else y
        if y.shape != (n,):
            raise ValueError(f"y must be one label or {n} labels, got shape {tuple(y.shape)}")
    dev = model.alpha_bar.device
    where = ddpm.noise_device(generator, dev)
    clip = ddpm.x0_box(model, x0_clip)
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        y_b = torch.randint(null, (b,), generator=generator, device=where) if y is None else y[i:i + b]  # y ~ U{0..C-1}
        x_T = torch.randn((b, *model.shape), generator=generator, device=where).to(dev)  # x_T ~ N(0, I)
        x_0 = ddpm.sample(guided_eps(model, y_b.to(dev), guidance), model.alpha_bar64, x_T, method, steps, eta,
                          generator, spacing, clip, rho)
        out.append(model.denormalize(x_0).float().cpu())  # x = x_0 * scale + shift
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------- commands
# Everything below is plumbing for the command line; the algorithm is above.
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import numpy as np  # noqa: E402
import typer  # noqa: E402

import training  # noqa: E402

app = training.App(help="Classifier-free guidance: train a class-conditional DDPM with label dropout, sample it "
                        "with guidance, sweep the guidance scale.")
Opt = typer.Option
LABELLED = "mnist5k, mnist, fashion, cifar10, grid25, ring8 or moons"


def build(config: dict, shape: tuple[int, ...], num_classes: int, shift=0.0, scale=1.0) -> ddpm.DDPM:
    """ddpm.build with a label embedding of num_classes + 1 rows (the last one is the null label)."""
    model = ddpm.build(config, shape, num_classes, shift, scale)
    model.num_classes = num_classes
    return model


def load(path, device: str = "cpu") -> ddpm.DDPM:
    """The trained class-conditional model (EMA weights) from a cfg.py checkpoint, ready to sample."""
    ckpt = training.load_checkpoint(path, "cfg")
    state = training.ema_state(ckpt)
    shape, num_classes = tuple(ckpt["extra"]["shape"]), int(ckpt["extra"]["num_classes"])
    model = build(ckpt["config"], shape, num_classes, state["shift"], state["scale"])
    model.load_state_dict(state)
    model.config, model.shape = ckpt["config"], shape
    return model.to(training.device(device)).eval()


def load_guidable(path, device: str = "cpu") -> ddpm.DDPM:
    """`load`, but an unconditional ddpm.py checkpoint gets a one-line error that says why it cannot be guided."""
    ckpt = training.load_checkpoint(path)
    if ckpt.get("model_name") == "ddpm":
        training.fail(f"{path} is a ddpm.py model, trained without labels: classifier-free guidance needs a "
                      f"class-conditional model (python cfg.py train)")
    return load(path, device)


def class_labels(label: int, n: int, num_classes: int) -> torch.Tensor:
    """label >= 0: n copies of it; label = -1: n // num_classes of every class in turn (one grid row per class)."""
    if label >= 0:
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(num_classes).repeat_interleave(n // num_classes)  # [C * (n // C)]


@app.command()
def train(
    data: Annotated[str, Opt(help=f"labelled dataset: {LABELLED}")] = "mnist5k",
    steps: Annotated[int, Opt(help="optimizer steps")] = 1500,
    batch_size: Annotated[int, Opt(help="examples per step (per process under torchrun)")] = 64,
    lr: Annotated[float, Opt(help="peak AdamW learning rate")] = 2e-3,
    warmup: Annotated[int, Opt(help="linear learning-rate warm-up steps")] = 100,
    p_uncond: Annotated[float, Opt(help="label dropout: probability of training on the null label")] = P_UNCOND,
    timesteps: Annotated[int, Opt(help="number of diffusion steps T")] = 1000,
    schedule: Annotated[str, Opt(help="beta schedule: linear or cosine")] = "linear",
    prediction: Annotated[str, Opt(help="network target: eps (noise) or v")] = "eps",
    min_snr: Annotated[float, Opt(help="min-SNR-gamma loss weighting, gamma (0 = plain L_simple)")] = 5.0,
    t_sampling: Annotated[str, Opt(help="training t: uniform (Ho et al.) or lognormal (EDM's noise levels)")] = "uniform",
    p_mean: Annotated[float, Opt(help="lognormal t: mean of ln sigma (EDM's P_mean is -1.2; its std P_std is 1.2)")] = -1.2,
    net: nets.Net = "unet",
    ch: nets.Ch = 32,
    ch_mult: nets.ChMult = "1,2,2",
    attn: nets.Attn = True,
    dropout: nets.Dropout = 0.0,
    patch: nets.Patch = 1,
    dit_size: nets.DitSize = nets.DEFAULT_DIT,
    dit_depth: nets.DitDepth = 0,
    dit_width: nets.DitWidth = 0,
    dit_heads: nets.DitHeads = 0,
    dit_patch: nets.DitPatch = 0,
    hidden: nets.Hidden = 256,
    depth: nets.Depth = 3,
    guidance: Annotated[float, Opt(help="guidance scale s of the samples.png written at the end")] = 2.0,
    ema_decay: Annotated[float, Opt(help="EMA decay of the sampling weights (with warm-up)")] = 0.995,
    grad_clip: training.GradClip = 1.0,
    weight_decay: training.WeightDecay = 0.0,
    beta1: training.Beta1 = 0.9,
    beta2: training.Beta2 = 0.999,
    device: training.Device = "auto",
    compile: Annotated[bool, Opt(help="torch.compile the network (CUDA)")] = False,
    seed: training.Seed = 0,
    out: Annotated[str | None, Opt(help="run folder (default runs/cfg-<data>)")] = None,
    resume: training.Resume = False,
    ckpt_every: training.CkptEvery = 250,
) -> Path:
    """Train a class-conditional DDPM with label dropout (Algorithm 1); writes ckpt.pt, samples.png, metrics.jsonl."""
    config = dict(locals())
    import data as datasets

    training.check(0 < p_uncond < 1, f"--p-uncond must be in (0, 1) (both models need training), got {p_uncond}")
    ds = datasets.load(data)
    ddpm.validate(config, ds.shape)  # the schedule options are ddpm.py's, the network's nets.py's
    training.check(ds.y is not None and ds.num_classes > 0,
                   f"--data {data} has no labels; classifier-free guidance needs a labelled set: {LABELLED}")
    out = out or f"runs/cfg-{data}"
    config["out"] = out
    C = ds.num_classes
    training.seed_everything(seed)  # the initial weights depend on --seed alone
    if ds.kind == "points":  # standardize points so one set of hyperparameters fits every toy
        config["box"] = ddpm.points_box(ds.x)  # saved: the samplers clamp x_0 to it (ddpm.x0_box)
        model = build(config, ds.shape, C, ds.x.mean(0), ds.x.std(0))
    else:
        model = build(config, ds.shape, C)
    tr = training.Trainer("cfg", config, {"model": model}, ds, steps=steps, batch_size=batch_size, lr=lr, out=out,
                          device=device, seed=seed, resume=resume, ema_decay=ema_decay, warmup=warmup,
                          betas=(beta1, beta2), weight_decay=weight_decay, grad_clip=grad_clip, compile=compile,
                          ckpt_every=ckpt_every, extra={"shape": list(ds.shape), "num_classes": C})
    for _, (x, y) in tr:
        with tr.autocast():
            l_simple = loss(tr.models["model"], model.normalize(x), y, C, p_uncond)  # Algorithm 1
        tr.step(l_simple)

    def sample_fn(n):
        m = tr.sampling_model()
        m.shape = ds.shape
        y = class_labels(-1, n, C)  # one grid row per class
        with tr.autocast():
            return generate(m, len(y), generator=torch.Generator(tr.dev).manual_seed(seed), y=y, guidance=guidance,
                            batch_size=250)

    images = ds.kind == "images"
    return tr.finish(sample_fn, n=10 * C if images else 2000, reference=None if images else ds.x[:2000])


def write(x: torch.Tensor, y: torch.Tensor, out: str, per_row: int | None = None, reference=None) -> None:
    """`.npz` -> samples under key x (data space) and their labels under y; else a PNG grid or scatter."""
    import data as datasets

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out.endswith(".npz"):
        np.savez_compressed(out, x=x.cpu().numpy(), y=y.cpu().numpy())
    else:
        datasets.save_samples(x.cpu(), out, nrow=per_row, reference=reference)
    print(f"wrote {out}")


def check_sampler(sampler: str, steps: int, eta: float, spacing: str, batch_size: int, rho: float = 3.0) -> None:
    check = training.check
    check(sampler in ddpm.SAMPLERS, f"unknown --sampler {sampler!r}; choose one of {', '.join(ddpm.SAMPLERS)}")
    check(steps > 0, f"--steps must be positive, got {steps}")
    check(eta >= 0, f"--eta must be >= 0, got {eta}")
    ddpm.check_spacing(spacing, rho, ddpm.SPACINGS)  # (no "auto": cfg.generate takes the spacing as given)
    check(batch_size > 0, f"--batch-size must be positive, got {batch_size}")


@app.command("sample")
def sample_cmd(
    ckpt: Annotated[str, Opt(help="checkpoint written by cfg.py train")] = "runs/cfg-mnist5k/ckpt.pt",
    label: Annotated[int, Opt(help="class to draw; -1 = every class, one grid row each")] = -1,
    guidance: Annotated[float, Opt(help="guidance scale s = 1 + w: 0 unconditional, 1 conditional, >1 guided")] = 2.0,
    n: Annotated[int, Opt(help="number of samples (with --label -1: split evenly over the classes)")] = 100,
    sampler: Annotated[str, Opt(help="ddpm (ancestral), ddim or dpm++2m")] = "dpm++2m",
    steps: Annotated[int, Opt(help="sampler steps; each runs the network once on the doubled batch")] = 20,
    eta: Annotated[float, Opt(help="DDIM stochasticity: 0 deterministic, 1 = ancestral")] = 0.0,
    spacing: Annotated[str, Opt(help="timestep spacing: lambda (log-SNR even), karras (sigma^(1/rho) even) or uniform")] = "lambda",
    rho: Annotated[float, Opt(help="karras spacing: rho (large: like lambda; small: fewer steps at low noise)")] = 3.0,
    batch_size: Annotated[int, Opt(help="samples per batch")] = 250,
    out: Annotated[str | None, Opt(help=".png grid/scatter or .npz (keys x, y); default: next to the ckpt")] = None,
    device: training.Device = "auto",
    seed: training.Seed = 0,
) -> torch.Tensor:
    """Sample with guidance scale s: one class (--label K) or one row per class (--label -1)."""
    check = training.check
    check(n > 0, f"--n must be positive, got {n}")
    check_sampler(sampler, steps, eta, spacing, batch_size, rho)
    model = load_guidable(ckpt, device)
    C, data = model.num_classes, model.config["data"]
    check(-1 <= label < C, f"--label {label} is not a class of {data} (0..{C - 1}, or -1 for one row per class)")
    check(label >= 0 or n >= C, f"--n must be at least the number of classes ({C}) with --label -1, got {n}")
    check(steps <= model.T, f"--steps must be at most T = {model.T}, got {steps}")
    y = class_labels(label, n, C)
    dev = model.alpha_bar.device
    g = torch.Generator(dev).manual_seed(seed)
    with training.autocast(dev):
        x = generate(model, len(y), generator=g, y=y, guidance=guidance, method=sampler, steps=steps, eta=eta,
                     spacing=spacing, rho=rho, batch_size=batch_size)
    name = f"samples-{'all' if label < 0 else label}-s{guidance:g}.png"
    per_row = len(y) // C if label < 0 else None
    import data as datasets

    ref = datasets.load(data, "test").x[:2000] if x.dim() == 2 else None
    write(x, y, out or str(Path(ckpt).parent / name), per_row, ref)
    return x


def nearest_label(x: torch.Tensor, ref_x: torch.Tensor, ref_y: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Points: the majority label of the k nearest training points (the toy sets' stand-in for a classifier)."""
    idx = torch.cdist(x.float(), ref_x.float()).topk(k, largest=False).indices  # [N, k]
    return ref_y[idx].mode(1).values


@app.command()
def sweep(
    ckpt: Annotated[str, Opt(help="checkpoint written by cfg.py train")] = "runs/cfg-mnist5k/ckpt.pt",
    scales: Annotated[str, Opt(help="guidance scales s, comma-separated")] = "0,1,1.5,2,3,5",
    n: Annotated[int, Opt(help="samples per scale, split evenly over the classes")] = 1000,
    sampler: Annotated[str, Opt(help="ddpm (ancestral), ddim or dpm++2m")] = "dpm++2m",
    steps: Annotated[int, Opt(help="sampler steps")] = 20,
    batch_size: Annotated[int, Opt(help="samples per batch")] = 250,
    out: Annotated[str | None, Opt(help="folder for sweep.md, .json, .png (default: the checkpoint's)")] = None,
    device: training.Device = "auto",
    seed: Annotated[int, Opt(help="random seed (the same noise and labels at every scale)")] = 0,
) -> list[dict]:
    """Sample at several guidance scales; table and plot of FID, precision, recall and label accuracy against s."""
    import data as datasets
    import fid

    check = training.check
    try:
        s_list = [float(s) for s in scales.split(",")]
    except ValueError:
        s_list = []
    check(bool(s_list), f"--scales must be numbers like 0,1,2,3, got {scales!r}")
    check_sampler(sampler, steps, 0.0, "lambda", batch_size)
    model = load_guidable(ckpt, device)
    C, data = model.num_classes, model.config["data"]
    check(n >= max(C, 4), f"--n must be at least {max(C, 4)} (one sample per class, 4 for k-NN precision), got {n}")
    check(steps <= model.T, f"--steps must be at most T = {model.T}, got {steps}")
    images = len(model.shape) == 3
    check(not images or data in ("mnist5k", "mnist"),
          f"sweep scores images with fid.py's MNIST classifier; {data} is not MNIST (use mnist5k, mnist or a toy)")
    real = datasets.load(data, "test").x
    f_real = fid.features(real, "mnist" if images else "points")
    train_ds = datasets.load(data, "train") if not images else None
    y = class_labels(-1, n, C)
    rows = []
    for s in s_list:
        t0 = time.time()
        dev = model.alpha_bar.device
        g = torch.Generator(dev).manual_seed(seed)  # common random numbers across scales
        with training.autocast(dev):
            x = generate(model, len(y), generator=g, y=y, guidance=s, method=sampler, steps=steps,
                         batch_size=batch_size)
        f_fake = fid.features(x, "mnist" if images else "points")
        row = {"s": s, "w": s - 1, "fid": fid.fid(f_real, f_fake), **fid.precision_recall(f_real, f_fake)}
        if images:  # accuracy of fid.py's classifier on the requested label; inception score on its probabilities
            p = fid.classify(x)
            row["accuracy"] = float((p.argmax(1) == y).float().mean())
            row["is"] = fid.inception_score(p, splits=min(10, len(x)))["mean"]
        else:
            row["accuracy"] = float((nearest_label(x, train_ds.x, train_ds.y) == y).float().mean())
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print("  ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    folder = Path(out or Path(ckpt).parent)
    folder.mkdir(parents=True, exist_ok=True)
    prov = fid.provenance(len(real), len(y), f"{data}:test", "mnist" if images else "points")
    prov.update(sampler=sampler, steps=steps, nfe=2 * steps, ckpt=str(ckpt),  # per sample: [x, x] each step
                accuracy="fid.py MNIST classifier" if images else "10-NN label of the train points")
    (folder / "sweep.json").write_text(json.dumps({"provenance": prov, "rows": rows}, indent=1))
    cols = ["s", "w", "fid", "precision", "recall", "accuracy"] + (["is"] if images else [])
    md = [f"Guidance sweep of {ckpt}: {len(y)} samples per scale ({len(y) // C} per class), {sampler} {steps} steps, "
          f"FID against {data}:test ({len(real)}) on {prov['extractor']}.", "",
          "| " + " | ".join(c if c != "s" else "s (= 1 + w)" for c in cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{r[c]:.3g}" if c in ("s", "w") else f"{r[c]:.3f}" for c in cols) + " |" for r in rows]
    (folder / "sweep.md").write_text("\n".join(md) + "\n")
    plot(rows, folder / "sweep.png", f"{data}: {len(y)} samples, {sampler} {steps}")
    print("\n".join(md) + f"\nwrote {folder / 'sweep.md'}, {folder / 'sweep.json'}, {folder / 'sweep.png'}")
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    """FID, precision/recall, accuracy (and IS) against the guidance scale s, one panel each (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [r["s"] for r in rows]
    panels = [("FID (lower is better)", ["fid"]), ("precision / recall", ["precision", "recall"]),
              ("label accuracy", ["accuracy"])]
    if "is" in rows[0]:
        panels.append(("inception score (MNIST classifier)", ["is"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), dpi=100)
    for ax, (name, keys) in zip(axes, panels):
        for k in keys:
            ax.plot(s, [r[k] for r in rows], "o-", label=k)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("guidance scale s = 1 + w")
        if keys[0] in ("precision", "accuracy"):
            ax.set_ylim(-0.02, 1.02)  # fractions
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# How bench.py trains, samples and scores this file (data, read by bench; the numbers of its earlier adapters).
BENCH = {
    "claim": "guidance trades diversity for quality",
    "kinds": ("points", "images"),
    # images: train's defaults; points: ddpm.py's toy recipe (v, lognormal t with P_mean -2.5; its BENCH says why)
    "options": {"points": {"prediction": "v", "min_snr": 0.0, "t_sampling": "lognormal", "p_mean": -2.5},
                "images": {}},
    "quick": {"points": {"hidden": 64, "depth": 2}, "images": {"ch": 8, "ch_mult": "1,2", "attn": False, "warmup": 10}},
    # labels drawn uniformly (y = None); "method" is generate's sampling algorithm, "sampler" the row's label
    "settings": {
        "points": [{"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
                   {"sampler": "dpm++2m-20 s=3", "guidance": 3.0, "method": "dpm++2m", "steps": 20}],
        "images": [{"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
                   {"sampler": "dpm++2m-20 s=3", "guidance": 3.0, "method": "dpm++2m", "steps": 20}],
    },
    "quick_settings": {
        "points": [{"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
                   {"sampler": "dpm++2m-20 s=3", "guidance": 3.0, "method": "dpm++2m", "steps": 20}],
        "images": [{"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
                   {"sampler": "dpm++2m-20 s=3", "guidance": 3.0, "method": "dpm++2m", "steps": 20}],
    },
    "likelihood": None,  # no likelihood (a guided sampler has no density of its own)
    "quick_likelihood": None,
    "network": "net",  # one call per step on the doubled batch [x, x]: 2 evaluations per sample and step
    "batch": 500,
    # the guidance suite: the scale s against quality and diversity
    "guidance": [
        {"sampler": "dpm++2m-20 s=0", "guidance": 0.0, "method": "dpm++2m", "steps": 20},
        {"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
        {"sampler": "dpm++2m-20 s=2", "guidance": 2.0, "method": "dpm++2m", "steps": 20},
        {"sampler": "dpm++2m-20 s=3", "guidance": 3.0, "method": "dpm++2m", "steps": 20},
        {"sampler": "dpm++2m-20 s=5", "guidance": 5.0, "method": "dpm++2m", "steps": 20},
    ],
    "quick_guidance": [
        {"sampler": "dpm++2m-20 s=0", "guidance": 0.0, "method": "dpm++2m", "steps": 20},
        {"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
        {"sampler": "dpm++2m-20 s=3", "guidance": 3.0, "method": "dpm++2m", "steps": 20},
    ],
    # the conditional suite: the conditional model alone (s = 1) and guided near the sweep's best FID (s = 1.5)
    "conditional": [{"sampler": "dpm++2m-20 s=1", "guidance": 1.0, "method": "dpm++2m", "steps": 20},
                    {"sampler": "dpm++2m-20 s=1.5", "guidance": 1.5, "method": "dpm++2m", "steps": 20}],
}


if __name__ == "__main__":
    app()
