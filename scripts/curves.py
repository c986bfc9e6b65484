"""Time-to-quality curves of ddpm.py (and fm.py) recipes on mnist5k: FID and classifier confidence of the EMA weights
against seconds of training, at equal time, one run at a time (issues 15 and 16).

    python scripts/curves.py train old-default --budget 340  # train, keeping EMA snapshots at 1/4, 2/4, 3/4, 4/4
    python scripts/curves.py eval old-default                # 1,000 samples per snapshot (dpm++2m, 20 calls), scored
    python scripts/curves.py plot                            # the figure of the README and a table of the last points
    python scripts/curves.py plot old-default fm patch2-edm-ema999 fm-patch2-ema999 patch2-edm-ema999-pm0 --png assets/readme/fm-curves.png
    python scripts/curves.py list                            # the recipes (ddpm.train options) this script knows
    python scripts/curves.py train patch2-edm-ema999-pm0 --steps 3134 --results bench/curves-equal-steps.jsonl
    python scripts/curves.py eval patch2-edm-ema999-pm0 --ddpm-spacing auto --results bench/curves-equal-steps.jsonl
                                                             # equal steps; ddpm scored with its default karras steps

`train` runs ddpm.train itself with the recipe's options and stops it once `--budget` seconds of the training loop
have passed (wall clock from the loop's start, without the time spent writing snapshots), so every recipe gets the
same time whatever its seconds per step. Run it on an idle machine (`cat /proc/loadavg`), nothing else at the same
time. `eval` is not timed and may run beside other work. Results: one JSON line per snapshot in bench/curves.jsonl.
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
import training  # noqa: E402

# ddpm.py's defaults before issue 15; every recipe is these plus its changes, so that a recipe means the same run
# whatever ddpm.py's defaults are today
BEFORE = dict(patch=1, ch=32, batch_size=64, lr=2e-3, prediction="eps", min_snr=5.0, t_sampling="uniform",
              schedule="linear", ema_decay=0.995)
# fm.py's recipes (names "fm..."): the same backbone, batch, learning rate and EMA as BEFORE, flow matching's loss
FM_BEFORE = dict(patch=1, ch=32, batch_size=64, lr=2e-3, t_sampling="uniform", coupling="independent", ema_decay=0.995)
# name -> (the changes to BEFORE, or to FM_BEFORE for a name starting with "fm", what the recipe tests)
RECIPES = {
    "old-default": ({}, "ddpm.py's defaults before issue 15: UNet 32/64/64 at 28x28, batch 64, eps + min-SNR-5"),
    "patch2": ({"patch": 2}, "the same UNet on 2x2 patches: its first level at 14x14, 4x cheaper a step"),
    "patch2-ch48": ({"patch": 2, "ch": 48}, "patch 2 with the width the saved time buys"),
    "patch2-ch64": ({"patch": 2, "ch": 64}, "patch 2, twice the width"),
    "bs32": ({"batch_size": 32}, "half the batch, twice the steps"),
    "v": ({"prediction": "v"}, "v-prediction with min-SNR-5 (Salimans & Ho 2022; Hang et al. 2023)"),
    "edm": ({"prediction": "v", "min_snr": 0, "t_sampling": "lognormal"},
            "EDM's training (Karras et al. 2022): log-normal noise levels, the unit-weight F target (= v for "
            "sigma_data = 1)"),
    "lognormal": ({"t_sampling": "lognormal"}, "EDM's log-normal noise levels with eps + min-SNR-5"),
    "cosine": ({"schedule": "cosine"}, "cosine schedule (Nichol & Dhariwal 2021)"),
    "patch2-edm": ({"patch": 2, "prediction": "v", "min_snr": 0, "t_sampling": "lognormal"},
                   "patch 2 with EDM's training"),
    "patch2-edm-ema999": ({"patch": 2, "prediction": "v", "min_snr": 0, "t_sampling": "lognormal",
                           "ema_decay": 0.999}, "patch 2, EDM's training, a longer EMA (0.999: ~1,000 steps)"),
    "patch2-edm-bs32": ({"patch": 2, "prediction": "v", "min_snr": 0, "t_sampling": "lognormal", "batch_size": 32},
                        "patch 2, EDM's training, batch 32"),
    "ch16-first": ({"ch": 16, "ch_mult": "1,4,4"}, "a cheaper first level: 16 channels at 28x28, 64 below"),
    "patch2-edm-ema999-pm0": ({"patch": 2, "prediction": "v", "min_snr": 0, "t_sampling": "lognormal",
                               "ema_decay": 0.999, "p_mean": 0.0},
                              "ddpm's default with EDM's P_mean moved from -1.2 to 0: ln sigma centred where fm.py's "
                              "uniform t puts it (ln sigma = -logit t for the straight path)"),
    "patch2-edm-ema999-pm0.5": ({"patch": 2, "prediction": "v", "min_snr": 0, "t_sampling": "lognormal",
                                 "ema_decay": 0.999, "p_mean": 0.5}, "P_mean further up, to 0.5: more noise still"),
    "fm": ({}, "fm.py's flow matching (straight path, velocity target, uniform t) on old-default's backbone"),
    "fm-patch2-ema999": ({"patch": 2, "ema_decay": 0.999}, "fm.py on patch2-edm-ema999's backbone and EMA"),
    "fm-patch2-ema999-ln": ({"patch": 2, "ema_decay": 0.999, "t_sampling": "logit-normal", "t_std": 1.2},
                            "fm.py's default: the same with logit-normal t, logit(t) = -ln sigma ~ N(0, 1.2^2), the "
                            "noise levels of patch2-edm-ema999-pm0"),
}


def family(name: str):
    """The model file of a recipe and the options it starts from."""
    import fm
    return (fm, FM_BEFORE) if name.startswith("fm") else (ddpm, BEFORE)


class Budget(Exception):
    """Raised inside the training loop when the time budget is spent."""


def train(name: str, budget: float, points: int, runs: Path, steps: int = 0) -> None:
    """Train until `budget` seconds of loop (or, with steps > 0, `steps` optimizer steps: equal steps, which a
    machine shared with other work cannot distort), keeping `points` EMA snapshots evenly spaced in time (in steps)."""
    module, before = family(name)
    opts = {**before, **RECIPES[name][0]}
    run = runs / name
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    total = steps or budget
    marks = [total * (i + 1) / points for i in range(points)]
    original, paused = training.Trainer.step, [0.0]

    def step(self, loss, part=None, **metrics):  # before the step: the EMA holds every step so far
        elapsed = time.time() - self.t0 - paused[0]
        if (self.step_num if steps else elapsed) >= marks[0]:
            t = time.time()
            snap = run / f"snap-{points - len(marks) + 1}.pt"
            torch.save({"config": self.config, "ema": self.ema.module.state_dict(), "step": self.step_num,
                        "sec": round(elapsed, 1), "shape": list(self.ds.shape)}, snap)
            marks.pop(0)
            paused[0] += time.time() - t
            if not marks:
                raise Budget
        original(self, loss, part, **metrics)

    training.Trainer.step = step
    print(f"{name}: training {f'{steps} steps' if steps else f'{budget:.0f} s'}, load {os.getloadavg()[0]:.2f}",
          file=sys.stderr)
    try:
        module.train(**{**opts, "steps": 10 ** 7, "out": str(run / "run"), "device": "cpu", "ckpt_every": 10 ** 7})
    except Budget:
        pass
    finally:
        training.Trainer.step = original


def evaluate(name: str, n: int, runs: Path, results: Path, spacing: str = "lambda") -> None:
    import data as datasets
    import fid

    real = datasets.load("mnist5k", "test").x
    f_real = fid.features(real, "mnist")
    snaps = sorted((runs / name).glob("snap-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    module = family(name)[0]
    for path in snaps:
        s = torch.load(path, weights_only=False)
        model = module.build(s["config"], tuple(s["shape"]))
        model.load_state_dict(s["ema"])
        model.shape = tuple(s["shape"])
        model.eval()
        # 20 calls: ddpm's dpm++2m 20 (`spacing`: lambda, the log-SNR steps of the committed rows, or auto, its
        # generate's default: karras rho 3 on images), fm's midpoint 10
        x = module.generate(model, n, generator=torch.Generator().manual_seed(0),
                            **({"spacing": spacing} if module is ddpm else {}))
        probs = fid.classify(x)
        row = dict(recipe=name, options=RECIPES[name][0], sec=s["sec"], step=s["step"],
                   fid=round(fid.fid(f_real, fid.features(x, "mnist")), 3),
                   confident=round(float((probs.max(1).values > 0.9).float().mean()), 3),
                   classes=int(probs.argmax(1).unique().numel()), n=n,
                   sampler="midpoint 10" if module.__name__ == "fm" else
                   "dpm++2m 20" + ("" if spacing == "lambda" else f", spacing {spacing}"),
                   when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(json.dumps(row), flush=True)
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")


def plot(results: Path, png: Path, only: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in results.read_text().splitlines()]
    rows = [r for r in rows if not only or r["recipe"] in only]  # the named recipes, in their order
    rows.sort(key=lambda r: only.index(r["recipe"]) if only else 0)
    latest: dict[tuple[str, float], dict] = {}
    for r in rows:  # the last evaluation of each (recipe, time) wins
        latest[(r["recipe"], r["sec"])] = r
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    by_recipe: dict[str, list[dict]] = {}
    for r in latest.values():
        by_recipe.setdefault(r["recipe"], []).append(r)
    for name, rs in by_recipe.items():
        rs.sort(key=lambda r: r["sec"])
        a1.plot([r["sec"] for r in rs], [r["fid"] for r in rs], "o-", label=name)
        a2.plot([r["sec"] for r in rs], [100 * r["confident"] for r in rs], "o-", label=name)
    a1.set(xlabel="training seconds (2 CPU cores)", ylabel="FID (fid.py MNIST features, 1,000 samples)", yscale="log")
    a2.set(xlabel="training seconds (2 CPU cores)", ylabel="% of samples the classifier is > 90% sure of")
    a1.set_yticks([6, 8, 10, 15, 20, 30, 40, 60], ["6", "8", "10", "15", "20", "30", "40", "60"])
    a1.minorticks_off()
    a1.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    print("| recipe | options | steps | seconds | FID | > 90% sure | classes |\n|---|---|---|---|---|---|---|")
    for name, rs in by_recipe.items():
        r = rs[-1]
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in r["options"].items()) or "(defaults)"
        print(f"| {name} | `{opts}` | {r['step']} | {r['sec']:.0f} | {r['fid']:.2f} | {100 * r['confident']:.0f}% | "
              f"{r['classes']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["train", "eval", "plot", "list"])
    ap.add_argument("recipes", nargs="*", help="recipe names (see `list`)")
    ap.add_argument("--budget", type=float, default=340.0, help="seconds of training loop per recipe")
    ap.add_argument("--steps", type=int, default=0, help="train: stop after this many steps instead of --budget")
    ap.add_argument("--points", type=int, default=4, help="EMA snapshots per run, evenly spaced in time")
    ap.add_argument("--n", type=int, default=1000, help="samples scored per snapshot")
    ap.add_argument("--ddpm-spacing", default="lambda", choices=["lambda", "auto"],
                    help="eval: ddpm's dpm++2m steps, lambda (the committed rows) or auto (generate's default)")
    ap.add_argument("--runs", default="runs/curves")
    ap.add_argument("--results", default="bench/curves.jsonl")
    ap.add_argument("--png", default="assets/readme/ddpm-curves.png")
    a = ap.parse_args()
    unknown = [r for r in a.recipes if r not in RECIPES]
    if unknown:
        sys.exit(f"unknown recipe {unknown[0]!r}; `python scripts/curves.py list` shows them")
    if a.command == "list":
        for name, (opts, why) in RECIPES.items():
            print(f"{name:16s} {json.dumps(opts):60s} {why}")
    for name in a.recipes:
        if a.command == "train":
            train(name, a.budget, a.points, Path(a.runs), a.steps)
        elif a.command == "eval":
            evaluate(name, a.n, Path(a.runs), Path(a.results), a.ddpm_spacing)
    if a.command == "plot":
        plot(Path(a.results), Path(a.png), a.recipes)


if __name__ == "__main__":
    main()
