"""DiT against UNet on mnist5k at the same CPU seconds: train ddpm.py with each backbone for a wall-clock budget, then
sample 1,000 digits (dpm++2m, 20 calls) and score them with fid.py (FID, precision, recall against mnist5k:test; the
share of samples fid.py's classifier is more than 90% sure of; classes covered), and time one network call.

    python scripts/backbones.py                       # UNet (ddpm.py's default) and DiT-S/4, 300 s of training each
    python scripts/backbones.py --budget 520 --nets unet,dit:DiT-S/4,dit:DiT-T/4

The step count that fits the budget is measured: a 20-step probe gives the seconds per step (metrics.jsonl), then
steps = budget / that. Run it on an idle machine, one job at a time. Writes a JSON line per backbone to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GENMODELS_QUIET", "1")

import ddpm  # noqa: E402
import fid  # noqa: E402
import data as datasets  # noqa: E402


def seconds_per_step(run: Path) -> float:
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (s0, t0), (s1, t1) = (log[0]["step"], log[0]["sec"]), (log[-1]["step"], log[-1]["sec"])
    return (t1 - t0) / (s1 - s0)


def options(net: str) -> dict:
    """"unet" or "dit:<size>" -> ddpm.train options."""
    if net == "unet":
        return {}
    kind, _, size = net.partition(":")
    return dict(net=kind, dit_size=size) if size else dict(net=kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training loop per backbone")
    ap.add_argument("--nets", default="unet,dit:DiT-S/4", help="comma-separated: unet, dit:<size of nets.DIT_MODELS>")
    ap.add_argument("--n", type=int, default=1000, help="samples scored")
    ap.add_argument("--out", default="bench/backbones.jsonl")
    ap.add_argument("--runs", default="runs/backbones")
    a = ap.parse_args()
    real = datasets.load("mnist5k", "test").x
    f_real = fid.features(real, "mnist")
    for net in a.nets.split(","):
        opts = options(net.strip())
        probe = Path(a.runs) / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        ddpm.train(steps=20, out=str(probe), device="cpu", **opts)
        steps = int(a.budget / seconds_per_step(probe))
        run = Path(a.runs) / net.replace(":", "-").replace("/", "_")
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.time()
        ckpt = ddpm.train(steps=steps, out=str(run), device="cpu", **opts)
        wall = time.time() - t0
        model = ddpm.load(ckpt)
        params = sum(p.numel() for p in model.net.parameters())
        g = torch.Generator().manual_seed(0)
        t1 = time.time()
        x = ddpm.generate(model, a.n, generator=g)
        sample_s = time.time() - t1
        xb = torch.randn(100, *model.shape)
        with torch.no_grad():  # one network call on a batch of 100, best of 5
            calls = []
            for _ in range(5):
                t2 = time.perf_counter()
                model.net(xb, torch.full((100,), 500.0))
                calls.append(time.perf_counter() - t2)
        f_fake = fid.features(x, "mnist")
        probs = fid.classify(x)
        row = dict(net=net, params=params, steps=steps, train_loop_s=round(seconds_per_step(run) * steps, 1),
                   train_wall_s=round(wall, 1), fid=fid.fid(f_real, f_fake), **fid.precision_recall(f_real, f_fake),
                   confident=float((probs.max(1).values > 0.9).float().mean()),
                   classes=int(probs.argmax(1).unique().numel()), sample_s=round(sample_s, 1), n=a.n,
                   ms_per_call_batch100=round(1000 * min(calls), 2), sampler="dpm++2m 20",
                   when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load=os.getloadavg()[0])
        print(json.dumps(row), flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
