"""GPU check for a lent device: train DDPM a few hundred steps on CUDA (bf16 autocast), sample, print throughput.

    python scripts/gpu_smoke.py --steps 300 --out runs/gpu-smoke

Prints training images/second, sampling images/second (dpm++2m, 20 calls) and writes samples.png; exits 2 with one
line when no CUDA device is visible. Not part of the test suite (CI has no GPU)."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import typer  # noqa: E402

import ddpm  # noqa: E402
import training  # noqa: E402

app = training.App(help=__doc__)


@app.command()
def main(steps: int = 300, batch_size: int = 256, ch: int = 64, compile: bool = False, out: str = "runs/gpu-smoke",
         n: int = 1000) -> None:
    training.check(torch.cuda.is_available(), "no CUDA device visible; this script is for a GPU machine")
    t0 = time.time()
    ckpt = ddpm.train(steps=steps, batch_size=batch_size, ch=ch, device="cuda", compile=compile, out=out)
    train_s = time.time() - t0
    model = ddpm.load(ckpt, "cuda")
    x_T = torch.randn(n, *model.shape, device="cuda")
    with training.autocast(torch.device("cuda")):
        ddpm.sample(model.eps, model.alpha_bar, x_T[:8], "dpm++2m", 20)  # warm-up
        torch.cuda.synchronize()
        t0 = time.time()
        x = ddpm.sample(model.eps, model.alpha_bar, x_T, "dpm++2m", 20, x0_clip=1.0)
        torch.cuda.synchronize()
    sample_s = time.time() - t0
    print(f"{torch.cuda.get_device_name()}: train {steps * batch_size / train_s:.0f} img/s "
          f"({train_s:.1f} s incl. start-up), sample {n / sample_s:.0f} img/s (dpm++2m, 20 calls, bf16)")
    import data
    data.save_samples(x[:64].float().cpu(), Path(out) / "samples-gpu.png")


if __name__ == "__main__":
    app()
