"""Quality against network calls of trained mnist5k checkpoints: fm.py's Euler and Heun beside ddpm.py's DPM-Solver++(2M)
and DDIM at the same number of calls (issue 16: "straighter trajectories, fewer ODE steps").

    python scripts/nfe.py fm:runs/fm-mnist5k/ckpt.pt ddpm:runs/ddpm-mnist5k/ckpt.pt --calls 1,2,4,8,16,32

For each checkpoint and each number of calls k: 1,000 samples from seed 0 (fm: euler with k steps, heun with k / 2;
ddpm: dpm++2m and ddim eta 0 with k steps), FID with fid.py's MNIST features against mnist5k:test and the share of
samples fid.py's classifier is more than 90% sure of. One JSON line per point in bench/nfe.jsonl; a markdown table at
the end. Not timed: it may run beside other work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GENMODELS_QUIET", "1")

import data as datasets  # noqa: E402
import fid  # noqa: E402

# family -> [(method label, generate's keyword arguments for k calls, or None where k calls do not fit)]
SAMPLERS = {
    "fm": [("euler", lambda k: {"method": "euler", "steps": k}),
           ("heun", lambda k: {"method": "heun", "steps": k // 2} if k % 2 == 0 else None)],
    "ddpm": [("dpm++2m", lambda k: {"method": "dpm++2m", "steps": k}),
             ("ddim", lambda k: {"method": "ddim", "steps": k, "eta": 0.0}),
             ("ancestral", lambda k: {"method": "ddpm", "steps": k})],
    "consistency": [("multistep", lambda k: {"steps": k})],  # Algorithm 1 on sampling_sigmas(k)
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+", help="FAMILY:PATH, FAMILY one of fm, ddpm, consistency")
    ap.add_argument("--methods", default="", help="only these samplers (comma-separated; default all)")
    ap.add_argument("--calls", default="1,2,4,8,16,32", help="network calls per sample")
    ap.add_argument("--n", type=int, default=1000, help="samples per point")
    ap.add_argument("--results", default="bench/nfe.jsonl")
    a = ap.parse_args()
    calls = [int(c) for c in a.calls.split(",")]
    real = datasets.load("mnist5k", "test").x
    f_real, rows = fid.features(real, "mnist"), []
    for spec in a.ckpts:
        name, _, path = spec.partition(":")
        if name not in SAMPLERS or not Path(path).is_file():
            sys.exit(f"{spec!r}: want FAMILY:PATH with FAMILY in {', '.join(SAMPLERS)} and an existing checkpoint")
        module = __import__(name)
        model = module.load(path, "cpu")
        for method, kwargs in SAMPLERS[name]:
            if a.methods and method not in a.methods.split(","):
                continue
            for k in calls:
                kw = kwargs(k)
                if kw is None or kw["steps"] < 1:
                    continue
                t = time.time()
                x = module.generate(model, a.n, generator=torch.Generator().manual_seed(0), **kw)
                sec = time.time() - t
                probs = fid.classify(x)
                row = dict(model=name, ckpt=path, method=method, calls=k, steps=kw["steps"], n=a.n,
                           fid=round(fid.fid(f_real, fid.features(x, "mnist")), 3),
                           confident=round(float((probs.max(1).values > 0.9).float().mean()), 3),
                           classes=int(probs.argmax(1).unique().numel()), sample_seconds=round(sec, 1),
                           when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
                print(json.dumps(row), flush=True)
                rows.append(row)
                with open(a.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print("\n| model | sampler | " + " | ".join(f"{k} calls" for k in calls) + " |")
    print("|---|---|" + "---|" * len(calls))
    for spec in a.ckpts:
        name = spec.partition(":")[0]
        for method, _ in SAMPLERS[name]:
            by_k = {r["calls"]: r for r in rows if r["model"] == name and r["method"] == method}
            cells = [f"{by_k[k]['fid']:.1f} ({100 * by_k[k]['confident']:.0f}%)" if k in by_k else "-" for k in calls]
            print(f"| {name}.py | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
