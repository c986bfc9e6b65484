"""Small models at full speed (issue 20): a bare PyTorch loop beside this project's command, same machine, one run.

    python scripts/toyspeed.py flow                  # moons: flow.py's default command vs a bare RealNVP loop given
                                                     # the same wall-clock time; test NLL (nats, exact) of both
    python scripts/toyspeed.py flow-config --steps 3000 --hidden 64 --no-actnorm   # one flow.py point config:
                                                     # wall seconds and test NLL (the time-to-NLL curve's points)
    python scripts/toyspeed.py bare --seconds 15 30 60    # the bare loop's test NLL at those times (one run)
    python scripts/toyspeed.py families --steps 300  # grid25: steps/s of every family's train command, the project's
                                                     # Trainer vs a bare loop (`Bare`) over the same network and loss

One thread throughout (torch.set_num_threads(1)); time only on an idle machine. The bare RealNVP loop is written here
(8 affine couplings, 64-wide MLPs, log-scale s = 2 tanh(raw / 2), standardized points, Adam 1e-3, batch 256, no EMA,
no clipping, no warm-up). For `families`, the "bare loop" is each file's own train function (its network and its
loss, line for line) driven by `Bare`, a minimal stand-in for training.Trainer: random batches, zero_grad, backward,
Adam step, nothing else (no EMA, no clipping, no progress bar, no logging, no checkpoints); the project side is the
same call with training.Trainer. Both sides are timed over the training loop only (Trainer.seconds and its
equivalent), so setup and the final sample figure do not count.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data as datasets  # noqa: E402
import training  # noqa: E402

torch.set_num_threads(1)
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------- the bare RealNVP loop
def bare_realnvp(x, x_test, seconds: list[float], hidden=64, couplings=8, batch=256, lr=1e-3, seed=0) -> list[dict]:
    """Trains until each time in `seconds` (cumulative, evaluation time excluded) and returns the test NLL there."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0)
    u_train, d = (x - mu) / sd, x.shape[1]
    masks = [torch.arange(d).remainder(2).eq(i % 2).float() for i in range(couplings)]  # alternate coordinates
    nets = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                       nn.Linear(hidden, 2 * d)) for _ in range(couplings))
    for net in nets:  # identity at the start
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)

    def log_prob(u):  # log N(f(u); 0, I) + sum of log-scales - sum log sd
        log_det = -sd.log().sum()
        for m, net in zip(masks, nets):
            raw, t = net(u * m).chunk(2, 1)
            s = 2.0 * torch.tanh(raw / 2.0) * (1 - m)
            u = u * s.exp() + t * (1 - m)
            log_det = log_det + s.sum(1)
        return (-0.5 * u ** 2 - 0.5 * LOG_2PI).sum(1) + log_det

    opt = torch.optim.Adam(nets.parameters(), lr=lr)
    out, trained, steps = [], 0.0, 0
    for budget in sorted(seconds):
        t0 = time.perf_counter()
        while trained + (time.perf_counter() - t0) < budget:
            idx = torch.randint(len(u_train), (batch,))
            loss = -log_prob(u_train[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        trained += time.perf_counter() - t0
        with torch.no_grad():
            nll = float(-log_prob((x_test - mu) / sd).mean())
        out.append(dict(seconds=round(trained, 2), steps=steps, nll_nats=round(nll, 4)))
    return out


def flow_run(**kw) -> dict:
    """flow.py's train command from Python (as bench and the tests call it), then its exact test NLL."""
    import flow

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ckpt = flow.train(data=kw.pop("data", "moons"), out=tmp, device="cpu", **kw)
        wall = time.perf_counter() - t0
        model = flow.load(ckpt)
        cfg = training.load_checkpoint(ckpt, "flow")["config"]
        nll = flow.likelihood(model, datasets.load(cfg["data"], "test").x)["nll_nats"]
    keys = ("hidden", "blocks", "batch_size", "lr", "steps", "actnorm", "lu", "ema_decay", "warmup")
    return dict(config={k: cfg[k] for k in keys if k in cfg}, wall_s=round(wall, 2), nll_nats=round(nll, 4))


# ----------------------------------------------------------------------------------------------- families
class Done(Exception):
    pass


class Bare:
    """The least a training loop does, with Trainer's interface: batches drawn at random, Adam, nothing else."""

    def __init__(self, name, config, models, ds, *, steps, batch_size, lr, seed=0, betas=(0.9, 0.999), **_):
        torch.manual_seed(seed)
        self.steps, self.batch_size, self.dev, self.is_main, self.extra = steps, batch_size, torch.device("cpu"), True, \
            dict(_.get("extra") or {})
        self.raw = self.models = models
        self.x, self.y, self.ds = ds.x, ds.y, ds
        self.opts = {k: torch.optim.Adam(m.parameters(), lr=lr[k] if isinstance(lr, dict) else lr,
                                         betas=betas[k] if isinstance(betas, dict) else betas)
                     for k, m in models.items() if any(p.requires_grad for p in m.parameters())}
        self.batches = self  # gan.py draws extra batches through tr.batches.next()

    def next(self):
        return torch.randint(len(self.x), (self.batch_size,))

    def autocast(self):
        return contextlib.nullcontext()

    def __iter__(self):
        t0 = time.perf_counter()
        for s in range(self.steps):
            idx = self.next()
            yield s, (self.x[idx], None if self.y is None else self.y[idx])
        self.seconds = time.perf_counter() - t0

    def step(self, loss, part=None, **metrics):
        opt = self.opts[part or next(iter(self.opts))]
        opt.zero_grad()
        loss.backward()
        opt.step()

    def log(self, **metrics):
        pass

    def sampling_model(self):
        return next(iter(self.raw.values())).eval()

    def finish(self, *a, **k):
        raise Done(self.seconds)


class Timed(training.Trainer):
    """The project's Trainer, stopped at finish (after the loop and its checkpoints) with its loop time."""

    def finish(self, *a, **k):
        raise Done(self.seconds)


FAMILIES = ["vae", "gan", "flow", "ebm", "score", "ddpm", "cfg", "fm", "consistency"]


def family_seconds(name: str, trainer, steps: int) -> float:
    mod = importlib.import_module(name)
    real = training.Trainer
    training.Trainer = trainer
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mod.train(data="grid25", steps=steps, out=tmp, device="cpu")
    except Done as d:
        return float(d.args[0])
    finally:
        training.Trainer = real
    raise RuntimeError(f"{name}: train returned without finish")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flow")
    f.add_argument("--repeat", type=int, default=1)
    c = sub.add_parser("flow-config")
    for k, t in (("steps", int), ("hidden", int), ("blocks", int), ("batch-size", int), ("lr", float),
                 ("ema-decay", float), ("warmup", int)):
        c.add_argument(f"--{k}", type=t)
    c.add_argument("--no-actnorm", action="store_true")
    c.add_argument("--no-lu", action="store_true")
    c.add_argument("--actnorm", action="store_true")
    c.add_argument("--lu", action="store_true")
    b = sub.add_parser("bare")
    b.add_argument("--seconds", type=float, nargs="+", default=[15, 30, 60])
    b.add_argument("--data", default="moons")
    fa = sub.add_parser("families")
    fa.add_argument("--steps", type=int, default=300)
    fa.add_argument("--only", nargs="*", default=FAMILIES)
    fa.add_argument("--repeat", type=int, default=2, help="runs of each side, alternating; the fastest counts")
    a = p.parse_args()
    import os

    os.environ.setdefault("GENMODELS_QUIET", "")
    print(json.dumps({"loadavg": open("/proc/loadavg").read().split()[:3], "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))
    if a.cmd == "bare":
        x, xt = datasets.load(a.data, "train").x, datasets.load(a.data, "test").x
        for r in bare_realnvp(x, xt, a.seconds):
            print(json.dumps(dict(kind="bare RealNVP", data=a.data, **r)), flush=True)
    elif a.cmd == "flow-config":
        kw = {k: v for k, v in dict(steps=a.steps, hidden=a.hidden, blocks=a.blocks, batch_size=a.batch_size, lr=a.lr,
                                    ema_decay=a.ema_decay, warmup=a.warmup).items() if v is not None}
        if a.no_actnorm or a.actnorm:
            kw["actnorm"] = a.actnorm
        if a.no_lu or a.lu:
            kw["lu"] = a.lu
        print(json.dumps(dict(kind="flow.py", **flow_run(**kw))), flush=True)
    elif a.cmd == "flow":
        x, xt = datasets.load("moons", "train").x, datasets.load("moons", "test").x
        for _ in range(a.repeat):
            r = flow_run()  # `python flow.py train --data moons`, its defaults
            print(json.dumps(dict(kind="flow.py train --data moons (defaults)", **r)), flush=True)
            for rb in bare_realnvp(x, xt, [r["wall_s"]]):
                print(json.dumps(dict(kind="bare RealNVP, same wall time", **rb)), flush=True)
    else:
        for name in a.only:
            runs = [(family_seconds(name, Timed, a.steps), family_seconds(name, Bare, a.steps)) for _ in range(a.repeat)]
            proj, bare = min(r[0] for r in runs), min(r[1] for r in runs)
            print(json.dumps(dict(family=name, data="grid25", steps=a.steps, bare_steps_per_s=round(a.steps / bare, 1),
                                  project_steps_per_s=round(a.steps / proj, 1), ratio=round(proj / bare, 3))),
                  flush=True)


if __name__ == "__main__":
    main()
