"""The cost of latent against pixel diffusion, measured in one process: per network call (milliseconds at a batch,
FLOPs per sample by torch.utils.flop_counter) and end to end (latent DDIM-50 + decoder against pixel ancestral
DDPM-1000, and pixel DDIM-50 to separate the sampler's share from the latent's).

    python scripts/ldm_cost.py --ldm runs/ldm-mnist5k/ckpt.pt --ddpm runs/ddpm-mnist5k/ckpt.pt --batch 100
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ddpm  # noqa: E402
import ldm  # noqa: E402


def flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as fc:
        fn(*args)
    return fc.get_total_flops()


def ms(fn, *args, reps: int = 5) -> float:
    """Median wall milliseconds of one call over `reps` (after one warm-up call)."""
    fn(*args)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ldm", required=True)
    ap.add_argument("--ddpm", required=True)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lat, pix = ldm.load(a.ldm), ddpm.load(a.ddpm)
    B = a.batch
    t = torch.full((B,), 500.0)
    z, x = torch.randn(B, *lat.latent_shape), torch.randn(B, *pix.shape)
    rows = {}
    with torch.no_grad():
        for name, net, inp in [("latent denoiser " + str(list(lat.latent_shape)), lat.denoiser, z),
                               ("pixel denoiser " + str(list(pix.shape)), pix.net, x)]:
            rows[name] = (ms(net, inp, t), flops(net, inp[:1], t[:1]))
        rows["decoder"] = (ms(lat.decode, z), flops(lat.decode, z[:1]))
        for name, (m, f) in rows.items():
            print(f"{name:32s} {m:9.2f} ms per call at batch {B}   {f / 1e6:9.2f} MFLOPs per sample")
        (ml, fl), (mp, fp) = list(rows.values())[:2]
        print(f"per-call ratio pixel / latent: {mp / ml:.1f}x in time, {fp / fl:.1f}x in FLOPs")
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        e2e = {}
        for name, fn in [("latent ddim-50 + decoder", lambda: ldm.generate(lat, B, generator=g(), method="ddim",
                                                                           steps=50, batch_size=B)),
                         ("pixel ddim-50", lambda: ddpm.generate(pix, B, generator=g(), method="ddim", steps=50,
                                                                 batch_size=B)),
                         ("pixel ddpm-1000 (ancestral)", lambda: ddpm.generate(pix, B, generator=g(), method="ddpm",
                                                                               steps=1000, batch_size=B))]:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            e2e[name] = (1000 * (time.perf_counter() - t0) / B, 1000 * (time.process_time() - c0) / B)
            print(f"{name:32s} {e2e[name][0]:9.2f} ms per sample (wall)  {e2e[name][1]:9.2f} ms (process CPU)")
        base = e2e["pixel ddpm-1000 (ancestral)"][1]
        for name, (_, c) in e2e.items():
            print(f"speed-up of {name} over pixel ddpm-1000 (process CPU): {base / c:.1f}x")


if __name__ == "__main__":
    main()
