"""bench.py: the lesson's trade-off table (quality, diversity, stability, likelihood, sampling speed), measured.

Every family (vae, gan, flow, ebm, score, ddpm, cfg, fm, consistency, ldm) is trained on the same data under the same
wall-clock budget and scored by the same protocol (fid.py), so that each claim of the lesson's table holds or fails on
one machine:
    VAE: good likelihood, blurry samples   GAN: sharp, unstable, mode collapse   flow: exact likelihood, slowish
    EBM: slow sampling                     diffusion (ddpm, score): high quality, slow sampling
and the frontier's: flow matching trains faster and needs fewer ODE steps, consistency models sample in 1-4 calls with
a moderate FID penalty, latent diffusion cuts the per-step cost 16-64x.

Suites (`--suite`):
    toy       grid25 and ring8 (PacGAN protocol: 2,500 samples, modes covered and the high-quality fraction within
              3 std of a mode), Frechet distance on raw coordinates, precision/recall (k = 3), KID, NLL in nats where
              the family has one (flow exact, VAE IWAE, DDPM variational bound, EBM grid integration), NFE (network
              calls per sample, counted), ms per sample, training seconds; 3 seeds: mean and spread (the spread is the
              measured "stability").
    mnist     mnist5k: FID/KID with fid.py's MNIST features against the test split, precision/recall, inception
              score, classes covered, the classifier's confidence, bits/dim where available; ddpm and fm also on
              nets.py's DiT (BENCH "variants": rows ddpm+dit, fm+dit).
              Both suites train each model along a learning curve (CURVE: snapshots at fractions of the budget, each
              resumed from the one before; curves.png): the last snapshot is the verdict, the one at SHORT = 1/5 of
              the budget the speed-of-convergence column.
    samplers  every family whose BENCH lists "samplers", one checkpoint each: ddpm at 1000 steps, ddim at 10/20/50/100
              with eta 0 and 1, dpm++2m at 10/15/20; consistency at 1/2/4 calls; ldm DDIM-50 and dpm++2m 20; fm Euler
              at 1..32 and midpoint / Heun at 1..16 steps: quality against NFE (fid_vs_nfe.png) and the lesson's
              Method/Steps/Speed/Quality-drop table beside its speed column. `--defaults` samples each family at its
              own default training (the README's commands; consistency distils the ddpm default), `--ckpt` given
              checkpoints; otherwise the mnist / toy suite's checkpoints.
    guidance  the classifier-free guidance sweep (guidance scale against FID / precision / recall / label accuracy)
              of every family whose BENCH lists "guidance" (cfg, fm), trained with its "conditional_options".
    conditional  the lesson's "Conditional gen." row: every family whose BENCH has "conditional" settings, trained
              with its "conditional_options" (--cond, --labels), asked for every label equally often: accuracy of the
              requested label (fid.py's classifier; toys: the 10 nearest training points), per class, FID overall and
              per class (stratified FID: the samples of class c against the test examples of class c), and for the
              families with a generative classifier (BENCH "classifier": the file's `classify` command) its accuracy.
    anomaly   the lesson's "Likelihood for anomaly" row: every family with a likelihood (per example) or BENCH "anomaly"
              (ebm: the energy) scores n mnist5k test digits and their OOD versions (pixels permuted, mirrored,
              inverted, uniform noise); AUROC per set (below 0.5: the model prefers the OOD images).

Budgets. `--budget S` seconds of training loop per model (default per suite). The step count that fits is chosen by
measurement: a short probe run gives the seconds per step (from the run's metrics.jsonl), then steps = S / that, and
the first snapshot of the learning curve measures it again over its whole length (Runs.refine); the plan is cached in
<runs>/plan.json, so that later runs ask for the same steps and reuse the checkpoints under <runs> whose saved config
matches (otherwise they train again).

Interfaces used (DESIGN.md's stable surface; bench holds no per-family code): each name in MODELS is a model file
with `train(**options) -> checkpoint path`, `load(path)`, `generate(model, n, *, generator, y, **settings)` (samples in
data space), `likelihood(model, x, **settings)` where the family has one, and a `BENCH` dict (data: the train options
per data kind and under --quick, the sampler settings, the likelihood settings, the network whose calls are counted,
the lesson's claim; "samplers" / "guidance" settings put a family in those suites), plus fid.py's metrics. A family
whose file is missing, does not import or lacks the surface is reported as "not available"; one whose training or
sampling fails is reported as "failed: ...". Adding a family is a file with the surface plus its name in MODELS
(bench_report.py).

Commands:
    python bench.py                                  # toy suite, 3 seeds, 300 s per model, curves at 30/60/150/300 s
    python bench.py --quick                          # tiny budgets, 1 seed, few samples (< 3 min; the tests run it)
    python bench.py --suite mnist                    # mnist5k, 300 s of training per model, curves at 60/150/300 s
    python bench.py --suite samplers --defaults --samplers-data mnist5k   # the lesson's sampler table
    python bench.py --suite anomaly --defaults       # AUROC of every likelihood against OOD digits
    python bench.py --suite all
    python bench.py --report                         # rewrite results.md and the figures from results.json only
Outputs (--out, default bench/): results.json (one row per model x data x sampler setting), results.md (tables and
the trade-off table with measured numbers and the frontier claims checked), samples.png (every model's samples),
fid_vs_nfe.png, curves.png (quality against training seconds). This file trains and scores; bench_report.py writes
results.md and the figures from the rows.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

import data as datasets
import fid
import training
from bench_report import (MODELS, OOD, SHORT, SUITES, TOYS, anomaly_markdown, claims, frontier_claims, print_table,
                          write_figures, write_markdown)

ROOT = Path(__file__).resolve().parent
# Seconds of training loop per model: the verdict budget (bench/curves.png shows the learning curves: at 300 s the
# score model, and on ring8 the flow, fm, CFG and the GAN, have flattened; the rest still climb slowly, README). The
# setting suites reuse the toy / mnist checkpoints, so they take those budgets.
BUDGET = {"toy": 300.0, "mnist": 300.0}
QUICK_BUDGET = {"toy": 1.0, "mnist": 3.0}
# Learning-curve snapshots, as fractions of the budget: a run is trained to the first, resumed to the next, and so on,
# and each snapshot is scored with the family's first sampler setting. The snapshot at SHORT (bench_report.py) is
# the speed-of-convergence column.
CURVE = {"toy": (0.1, 0.2, 0.5, 1.0), "mnist": (0.2, 0.5, 1.0)}
QUICK_CURVE = {"toy": (0.5, 1.0), "mnist": (1.0,)}


# ----------------------------------------------------------------------------------------------------- NFE counting
@contextlib.contextmanager
def count_rows(target):
    """Count the examples that pass through `target` while sampling: an nn.Module (forward pre-hook) or (obj, "method")
    (the method is wrapped for the duration). NFE per sample = rows / n, whatever the batching."""
    box = {"rows": 0}

    def add(x):
        box["rows"] += int(x.shape[0]) if torch.is_tensor(x) and x.dim() > 0 else 1

    if isinstance(target, torch.nn.Module):
        handle = target.register_forward_pre_hook(lambda m, args: add(args[0]) if args else None)
        try:
            yield box
        finally:
            handle.remove()
    else:
        obj, name = target
        original = getattr(obj, name)

        def wrapped(x, *a, **k):
            add(x)
            return original(x, *a, **k)

        object.__setattr__(obj, name, wrapped)
        try:
            yield box
        finally:
            object.__delattr__(obj, name)


# ----------------------------------------------------------------------------------------------------- the families
# MODELS (bench_report.py): every model file bench measures. Each has this surface:
SURFACE = ("train", "load", "generate", "BENCH")  # likelihood(model, x, **settings) where the family has one


@dataclass
class Family:
    """A model file seen through its surface: `train(**options)` -> checkpoint, `load(path)`, `generate(model, n, *,
    generator, y, **settings)` -> samples in data space, `likelihood(model, x, **settings)` and the BENCH dict (train
    options per data kind and under --quick, sampler settings, likelihood settings, the network to count, the claim)."""

    name: str
    mod: Any

    @property
    def spec(self) -> dict:
        return self.mod.BENCH

    @property
    def kinds(self) -> tuple:
        return tuple(self.spec.get("kinds", ("points", "images")))

    def options(self, kind: str, quick: bool) -> dict:
        return dict(self.spec["quick" if quick else "options"].get(kind) or {})

    def settings(self, kind: str, quick: bool, key: str = "settings") -> list[dict]:
        chosen = self.spec.get(f"quick_{key}") if quick else None
        chosen = chosen if chosen is not None else self.spec.get(key)
        chosen = chosen.get(kind, []) if isinstance(chosen, dict) else chosen
        return [dict(s) for s in chosen or []]

    def likelihood_settings(self, kind: str, quick: bool) -> dict | None:
        chosen = (self.spec.get("quick_likelihood") if quick else None) or self.spec.get("likelihood") or {}
        return dict(chosen[kind]) if hasattr(self.mod, "likelihood") and chosen.get(kind) is not None else None

    def network(self, model):
        """What one network evaluation is: a submodule (counted by a forward pre-hook) or (model, method name)."""
        name = self.spec.get("network", "")
        target = getattr(model, name) if name else model
        return target if isinstance(target, torch.nn.Module) else (model, name)

    def generate(self, model, n: int, setting: dict, g: torch.Generator, y: torch.Tensor | None = None):
        """n samples in batches of BENCH["batch"], one generator running through; setting minus its label."""
        kw = {k: v for k, v in setting.items() if k != "sampler"}
        batch = int(self.spec.get("batch") or n)
        out = []
        for i in range(0, n, batch):
            yb = None if y is None else y[i:i + batch]
            out.append(self.mod.generate(model, min(batch, n - i), generator=g, **({"y": yb} if yb is not None else {}),
                                         **kw).float().cpu())
        return torch.cat(out)


def _quiet(fn, *args, **kwargs):
    """Call a model file's function with its prints captured (its own log lines would drown the table)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def import_family(name: str) -> tuple[Family | None, str | None]:
    """(Family, None) or (None, reason): a missing file, one that fails to import or lacks the surface is 'not
    available'."""
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 (an unfinished file may fail in any way)
        return None, f"not available ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})"
    missing = [a for a in SURFACE if not hasattr(mod, a)]
    if missing:
        return None, f"not available ({name}.py lacks {', '.join(missing)})"
    return Family(name, mod), None


def held_out(data: str, n: int = 0):
    """The first n (0: all) of one seed-0 permutation of a data set's test split -> (x, y or None), the examples every
    likelihood, reference and anomaly score of bench uses (the mnist5k test split is sorted by class)."""
    ds = datasets.load(data, "test")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n or len(ds)]
    return ds.x[perm], (ds.y[perm] if ds.y is not None else None)


def likelihood_row(fam: Family, model, data: str, kind: str, quick: bool) -> dict | None:
    """The family's likelihood on a fixed random subset of the test split (seed 0, the first n of one permutation):
    {"nll_nats" | "nll_bpd": value} (+ "nll_mass_outside_nats", the grid likelihood's box check), or None."""
    spec = fam.likelihood_settings(kind, quick)
    if spec is None:
        return None
    x, _ = held_out(data, spec.pop("n", 0))
    r = _quiet(fam.mod.likelihood, model, x, **spec)
    out = {k: float(r[k]) for k in ("nll_nats", "nll_bpd") if r.get(k) is not None}
    if r.get("mass_outside_nats") is not None:
        out["nll_mass_outside_nats"] = float(r["mass_outside_nats"])
    return out


# ----------------------------------------------------------------------------------------------------- budgeted training
def max_steps(budget: float) -> int:
    """The most steps a plan may give one model: a guard against a misjudged rate, 200,000 per 300 s of budget (a
    fixed 200,000 stopped the toy VAE, 2.5 ms per step, at about 500 s of a 1,200 s budget)."""
    return int(max(200_000, 200_000 * budget / 300))


def clamp_steps(total: float, budget: float) -> int:
    """A plan's step count: at least 10, at most max_steps(budget)."""
    return int(min(max_steps(budget), max(10, total)))


def _log_seconds(run_dir: Path, path: Path | None = None) -> list[tuple[int, float]]:
    """(step, seconds since the loop started) from a run's metrics.jsonl (a resumed run appends records whose seconds
    start again from 0)."""
    out = []
    path = Path(path) if path is not None else Path(run_dir) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out.append((int(rec["step"]), float(rec["sec"])))
            except (ValueError, KeyError):
                continue
    return out


def _loop_seconds(run_dir: Path) -> float:
    """Seconds of training loop in a run folder: the end of every segment (a resume starts the clock again) of every
    metrics.jsonl in it, its sub-runs included (ldm.py's stage 1 writes <out>/ae/metrics.jsonl)."""
    total = 0.0
    for path in sorted(Path(run_dir).rglob("metrics.jsonl")):
        last = 0.0
        for _, sec in _log_seconds(run_dir, path):
            if sec < last:  # a new segment
                total += last
            last = sec
        total += last
    return total


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on path + ".lock" (two bench processes may share a run folder or an output folder)."""
    import fcntl

    with open(str(path) + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _file_sha1(path: Path) -> str:
    """Which version of a file ran: the first 10 hex digits of the sha1 of its content."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:10]


class Runs:
    """The run folder of bench: checkpoints, the step plan (plan.json) and the sample cache."""

    def __init__(self, root: Path, device: str, quick: bool):
        self.root, self.device, self.quick = Path(root), device, quick
        self.root.mkdir(parents=True, exist_ok=True)
        self.plan_path = self.root / "plan.json"
        self.plan = json.loads(self.plan_path.read_text()) if self.plan_path.exists() else {}

    def _plan_key(self, fam: Family, data: str, opts: dict, budget: float) -> str:
        code = _file_sha1(fam.mod.__file__)  # a changed model file is re-timed
        return json.dumps([fam.name, data, budget, opts, self.device, torch.get_num_threads(), code], sort_keys=True)

    def _save_plan(self, key: str, entry: dict) -> dict:
        with locked(self.plan_path):  # merge with what another bench process may have written meanwhile
            self.plan = json.loads(self.plan_path.read_text()) if self.plan_path.exists() else {}
            self.plan[key] = entry
            self.plan_path.write_text(json.dumps(self.plan, indent=1))
        return entry

    def steps_for(self, fam: Family, data: str, opts: dict, budget: float) -> dict:
        """Steps that fit `budget` seconds of training loop: probe a few steps, measure seconds per step."""
        key = self._plan_key(fam, data, opts, budget)
        if key in self.plan and not (200_000 <= self.plan[key]["steps"] < max_steps(budget)):
            return self.plan[key]  # (a plan at the old fixed ceiling of 200,000 steps is measured again)
        probe = 6 if self.quick else 30
        out = self.root / "_probe" / f"{fam.name}-{data}-{_key(key)}-{os.getpid()}"  # its own: suites run side by side

        def seconds_per_step(n: int) -> float:
            shutil.rmtree(out, ignore_errors=True)
            _quiet(fam.mod.train, data=data, steps=n, seed=0, out=str(out), device=self.device, **opts)
            log = _log_seconds(out)
            late = [r for r in log if r[0] > n // 3]
            log = late if len(late) >= 2 else log
            if len(log) >= 2 and log[-1][0] > log[0][0]:
                return (log[-1][1] - log[0][1]) / (log[-1][0] - log[0][0])  # without the first (warm-up) steps
            if not log:  # (a guessed rate once planned 99,000 steps for a 300 s budget)
                raise RuntimeError(f"the probe run wrote no step times to {out / 'metrics.jsonl'}")
            return log[-1][1] / n

        per_step = seconds_per_step(probe)
        if not self.quick and per_step * probe < 2.0:  # a fast step: 30 of them are mostly warm-up (R1's double
            probe = int(min(20_000, 3.0 / max(per_step, 1e-6)))  # backward, allocator); time about 3 s of steps,
            per_step = seconds_per_step(probe)  # the last two thirds of them
        steps = clamp_steps(budget / max(per_step, 1e-6), budget)
        entry = {"steps": steps, "sec_per_step": per_step, "probe_steps": probe,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        shutil.rmtree(out, ignore_errors=True)
        return self._save_plan(key, entry)

    def refine(self, fam: Family, data: str, opts: dict, budget: float, steps: int, seconds: float) -> dict:
        """The plan re-measured on a learning curve's first snapshot (`steps` steps in `seconds` of loop): a probe of
        a few seconds misjudged the steady rate by up to 40% (warm-up, the allocator, a shared CPU); the rest of the
        curve (every seed) uses the refined total, and the first snapshot keeps its steps (`first_steps`), so that
        every seed's snapshots stay at the same steps. The correction is bounded to [0.6, 3] x the probe's total (a
        later snapshot must stay past the first)."""
        key = self._plan_key(fam, data, opts, budget)
        entry = dict(self.plan[key])
        if "first_steps" in entry or seconds <= 0:
            return entry
        total = budget / (seconds / steps)  # seconds per step, measured over the whole first snapshot
        total = min(3.0 * entry["steps"], max(0.6 * entry["steps"], total))
        entry.update(first_steps=steps, probe_total=entry["steps"], steps=clamp_steps(total, budget),
                     sec_per_step=seconds / steps)
        return self._save_plan(key, entry)

    def checkpoint(self, fam: Family, data: str, opts: dict, steps: int, seed: int, prev: Path | None = None,
                   label: str = "") -> tuple[Path, dict]:
        """A checkpoint trained with exactly these options: reused when its saved config matches, else trained; or,
        given `prev` (a checkpoint of the same options and seed at fewer steps), its run folder copied and resumed to
        `steps` (a learning curve's next snapshot; the trainer's constant learning-rate tail keeps that the same
        run)."""
        kw = dict(data=data, steps=steps, seed=seed, **opts)
        out = self.root / data / f"{label or fam.name}-s{seed}-{_key(kw)}"
        ckpt, side = out / "ckpt.pt", out / "bench.json"
        if ckpt.exists() and side.exists():
            try:
                ck = training.load_checkpoint(ckpt)
                want = dict(self.defaults(fam.mod), **kw)  # every option of the file's current train(), not only ours
                same = all(k in ck["config"] and ck["config"][k] == v for k, v in want.items()) and \
                    ck.get("step") == steps
            except training.UserError:
                same = False
            if same:
                return ckpt, dict(json.loads(side.read_text()), reused=True)
        shutil.rmtree(out, ignore_errors=True)
        before = 0.0
        if prev is not None:
            shutil.copytree(Path(prev).parent, out)
            (out / "bench.json").unlink(missing_ok=True)
            before = json.loads((Path(prev).parent / "bench.json").read_text())["train_wall_seconds"]
        t0 = time.perf_counter()
        path = Path(_quiet(fam.mod.train, out=str(out), device=self.device, **kw, **({"resume": True} if prev else {})))
        wall = before + time.perf_counter() - t0
        loop = _loop_seconds(out)
        info = {"train_seconds": loop or wall, "train_wall_seconds": wall, "steps": steps}
        side.write_text(json.dumps(info))
        return path, dict(info, reused=False)

    @staticmethod
    def defaults(mod) -> dict:
        """The defaults of mod.train's options (a file that gained an option since the checkpoint was written
        no longer matches it), leaving out those that do not change the model."""
        import inspect

        skip = {"out", "device", "resume", "compile", "ckpt_every"}
        out = {}
        for name, p in inspect.signature(mod.train).parameters.items():
            if name in skip or p.default is inspect.Parameter.empty or p.default is None:
                continue  # None: the file resolves it per data kind (gan.py), and saves the resolved value
            out[name] = p.default
        return out

    def sample_file(self, data: str, name: str, budget: float) -> Path:
        """Where the samples of one row are kept for samples.png: per budget, so that runs at other budgets (which
        share this root) do not overwrite the samples of the row a report draws."""
        return self.root / "samples" / f"{data}__{name}__{budget:g}s.pt"

    def cache_samples(self, data: str, name: str, budget: float, x: torch.Tensor) -> None:
        self.sample_file(data, name, budget).parent.mkdir(exist_ok=True)
        torch.save(x[:1000 if x.dim() == 2 else 36].float().clone(), self.sample_file(data, name, budget))

    def cached_samples(self, data: str, name: str, budget: float) -> torch.Tensor | None:
        p = self.sample_file(data, name, budget)
        return torch.load(p, weights_only=True) if p.exists() else None


# ----------------------------------------------------------------------------------------------------- metrics
class Reference:
    """Real test data and its features for one data set (computed once)."""

    def __init__(self, name: str, n: int):
        self.name, self.kind = name, datasets.load(name, "test").kind
        self.x, self.y = held_out(name, n)
        self.feats = fid.features(self.x, "points" if self.kind == "points" else "mnist")
        self.modes = datasets.MODES.get(name)
        self.extractor = "raw coordinates" if self.kind == "points" else "fid.py MNIST features (128-d)"


@functools.lru_cache(maxsize=None)
def _real_fids(data: str, n: int, n_ref: int, draws: int = 5) -> tuple[float, ...]:
    """FID of `draws` independent draws of n real training examples against the n_ref-example test reference."""
    ref, train = Reference(data, n_ref), datasets.load(data, "train")
    g = torch.Generator().manual_seed(0)
    return tuple(score_samples(train.x[torch.randperm(len(train), generator=g)[:n]], ref)["fid"] for _ in range(draws))


def fid_noise(data: str, n: int, n_ref: int) -> dict:
    """The FID's own noise at n samples: real training examples scored like a model's samples. The mean is the floor
    a perfect model gets at this n (the estimator's bias); the std is how far apart two equally good models land."""
    f = np.array(_real_fids(data, n, n_ref))
    return {"fid_real": float(f.mean()), "fid_real_std": float(f.std(ddof=1))}


def score_samples(x: torch.Tensor, ref: Reference) -> dict:
    """fid (Frechet distance on coordinates or MNIST features), kid, precision, recall; modes/hq; IS/classes."""
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        return {"note": f"{int((~torch.isfinite(x)).sum())} non-finite sample values: no metrics"}
    if ref.kind == "images":  # the data range; a sampler may overshoot it (score.py's Langevin chains do)
        x = x.clamp(-1, 1)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fid.features(x, "points" if ref.kind == "points" else "mnist")
        out = {"fid": fid.fid(ref.feats, f), "kid": fid.kid(ref.feats, f, subsets=20)["mean"]}  # (mean only)
        out.update(fid.precision_recall(ref.feats, f, k=3))
        if ref.modes is not None:
            out.update(fid.mode_coverage(x, *ref.modes))
        if ref.kind == "images":
            probs = fid.classify(x)
            out["is"] = fid.inception_score(probs, splits=min(10, len(x)))["mean"]
            out["classes"] = int(probs.argmax(1).unique().numel())
            out["confident"] = float((probs.max(1).values > 0.9).float().mean())  # the classifier > 90% sure
    return out


def timed_sample(fam: Family, model, n: int, setting: dict, seed: int, y=None) -> tuple[torch.Tensor, float, float]:
    """(samples, NFE per sample counted through the network, ms per sample)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    with count_rows(fam.network(model)) as box:
        t0 = time.perf_counter()
        with torch.no_grad():
            x = fam.generate(model, n, setting, g, y)
        ms = (time.perf_counter() - t0) * 1000 / n
    return x.detach().float().cpu(), box["rows"] / n, ms


def predicted_labels(x: torch.Tensor, data: str) -> torch.Tensor:
    """The class a sample looks like: fid.py's MNIST classifier on images, the majority label of the 10 nearest
    training points on 2-D points."""
    x = x.float().cpu()
    if x.dim() > 2:
        return fid.classify(x.clamp(-1, 1)).argmax(1)
    train = datasets.load(data, "train")
    nearest = torch.cdist(x, train.x).topk(10, largest=False).indices  # [n, 10]
    return train.y[nearest].mode(1).values


def label_accuracy(x: torch.Tensor, y: torch.Tensor, data: str) -> float:
    """How often a sample is of the class it was asked for (predicted_labels)."""
    return float((predicted_labels(x, data) == y).float().mean())


def per_class(x: torch.Tensor, y: torch.Tensor, ref: "Reference", data: str) -> dict:
    """The conditional suite's per-class view: label accuracy per requested class, and the stratified FID, the Frechet
    distance between the samples asked for class c and the reference examples of class c (on the features of
    score_samples), per class, their mean and the worst class."""
    x = x.float().cpu()
    x = x.clamp(-1, 1) if ref.kind == "images" else x
    hit = (predicted_labels(x, data) == y).float()
    classes = sorted(int(c) for c in y.unique())
    out = {"accuracy_per_class": [round(float(hit[y == c].mean()), 4) for c in classes]}
    if ref.y is not None:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = fid.features(x, "points" if ref.kind == "points" else "mnist")
            fids = [fid.fid(ref.feats[(ref.y == c).numpy()], f[(y == c).numpy()]) for c in classes]
        out.update(fid_per_class=[round(v, 3) for v in fids], fid_class_mean=float(np.mean(fids)),
                   fid_class_worst=float(np.max(fids)), fid_class_worst_label=classes[int(np.argmax(fids))])
    return out


# ----------------------------------------------------------------------------------------------------- suites
METRICS = ("fid", "kid", "precision", "recall", "modes", "hq", "is", "classes", "confident", "nll_nats", "nll_bpd",
           "nll_mass_outside_nats", "nfe", "ms_per_sample", "train_seconds", "steps")


def aggregate(per_seed: list[dict]) -> dict:
    """Mean over seeds of every metric, and <metric>_std (population std over seeds) where there are several."""
    out = {}
    for m in METRICS:
        vals = [r[m] for r in per_seed if r.get(m) is not None and math.isfinite(r[m])]
        if vals:
            out[m] = float(np.mean(vals))
            if len(per_seed) > 1:
                out[m + "_std"] = float(np.std(vals))
    if len(per_seed) > 1:  # the per-seed values of the headline metrics (stability)
        out["per_seed"] = {m: [r.get(m) for r in per_seed] for m in ("fid", "modes", "hq") if per_seed[0].get(m) is not None}
    return out


def seed_warning(per_seed: list[dict]) -> str | None:
    """The seeds whose samples gave no metrics (score_samples' note: non-finite values), named in the row, so that a
    mean over the other seeds is not read as the mean of all of them."""
    bad = [f"seed {r['seed']}: {r['note']}" for r in per_seed if r.get("note")]
    return "; ".join(bad) + f"; the mean is over the other {len(per_seed) - len(bad)}" if bad else None


def not_run(base: dict, status: str) -> list[dict]:
    return [dict(base, sampler="-", nfe=None, ms_per_sample=None, train_seconds=None, status=status)]


def curve_point(fam: Family, model, setting: dict, n: int, ref: "Reference", info: dict, frac: float, seed: int) -> dict:
    """One learning-curve snapshot: the budget fraction, training seconds and steps, and the quality metrics of n
    samples with one setting."""
    x, _, _ = timed_sample(fam, model, n, setting, seed)
    return curve_entry(frac, info, score_samples(x, ref))


def curve_entry(frac: float, info: dict, metrics: dict) -> dict:
    """A learning curve's point: budget fraction, training seconds and steps, and the quality metrics."""
    return dict(frac=frac, sec=info["train_seconds"], steps=info["steps"],
                **{k: metrics[k] for k in ("fid", "hq", "modes", "precision", "recall", "confident") if k in metrics})


def snapshot_steps(plan: dict, fracs: tuple, k: int) -> int:
    """The steps of a learning curve's k-th snapshot: the first keeps the steps it was trained at once the plan was
    refined on it (Runs.refine's first_steps), the others are their fraction of the (refined) total."""
    if k == 0 and "first_steps" in plan:
        return plan["first_steps"]
    return max(1, round(fracs[k] * plan["steps"]))


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """The seed-mean learning curve (the points of every seed at the same budget fractions)."""
    out = []
    for points in zip(*curves):
        keys = [k for k in points[0] if all(p.get(k) is not None for p in points)]
        out.append({k: (points[0][k] if k == "frac" else float(np.mean([p[k] for p in points]))) for k in keys})
    return out


def bench_family(name: str, data: str, ref: Reference, runs: Runs, cfg: dict, log, variant: str = "") -> list[dict]:
    """Train (or reuse) one family (or one of its BENCH "variants", e.g. another backbone) on one data set for every
    seed, along its learning curve (CURVE: snapshots at fractions of the budget, each resumed from the one before);
    one row per sampler setting of the final snapshot, with the seed-mean curve and the SHORT snapshot beside it."""
    label = f"{name}+{variant}" if variant else name
    base = dict(suite=cfg["suite"], model=label, data=data, budget_s=cfg["budget"], seeds=cfg["seeds"])
    fam, why = import_family(name)
    if fam is None:
        return not_run(base, why)
    kind = ref.kind
    if kind not in fam.kinds:
        return not_run(base, "not applicable")
    opts = fam.options(kind, cfg["quick"])
    if variant:
        opts.update(fam.spec["variants"][variant][kind])
    settings = fam.settings(kind, cfg["quick"])
    curve_setting = next((s for s in settings if s["sampler"] == fam.spec.get("curve_sampler")), settings[0])
    fracs = cfg["curve"]
    try:
        plan = runs.steps_for(fam, data, opts, cfg["budget"])
    except BaseException as e:  # noqa: BLE001 (a failing file must not stop the bench)
        if isinstance(e, KeyboardInterrupt):
            raise
        return not_run(base, f"failed: probe run: {type(e).__name__}: {str(e)[:160]}")
    per = {s["sampler"]: [] for s in settings}
    curves, failures = [], []
    for seed in range(cfg["seeds"]):
        try:
            prev, curve, done = None, [], 0
            for k, frac in enumerate(fracs):
                steps = snapshot_steps(plan, fracs, k)
                if steps <= done:
                    continue  # a tiny plan: two fractions round to the same step
                done = steps
                ckpt, info = runs.checkpoint(fam, data, opts, steps, seed, prev=prev, label=label)
                prev = ckpt
                if k == 0 and len(fracs) > 1:  # the first snapshot's measured rate sets the rest of the plan
                    plan = runs.refine(fam, data, opts, cfg["budget"], steps, info["train_seconds"])
                log(f"  {label} {data} seed {seed}: {'reused' if info['reused'] else 'trained'} {ckpt} "
                    f"({steps} steps, {info['train_seconds']:.1f}s)")
                model = fam.mod.load(str(ckpt))
                if frac < fracs[-1]:
                    curve.append(curve_point(fam, model, curve_setting, cfg["n"], ref, info, frac, seed))
            likelihood = likelihood_row(fam, model, data, kind, cfg["quick"])
            for i, s in enumerate(settings):
                x, nfe, ms = timed_sample(fam, model, cfg["n"], s, seed)
                r = dict(score_samples(x, ref), nfe=nfe, ms_per_sample=ms, train_seconds=info["train_seconds"],
                         steps=info["steps"], seed=seed, **(likelihood or {}))
                per[s["sampler"]].append(r)
                if s is curve_setting:
                    curve.append(curve_entry(fracs[-1], info, r))
                if seed == 0 and i == 0:
                    runs.cache_samples(data, label, cfg["budget"], x)
            curves.append(curve)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            failures.append(f"seed {seed}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            log(f"  {label} {data} seed {seed}: FAILED {failures[-1]}")
    curve = mean_curve(curves) if curves else []
    short = next((p for p in curve if abs(p["frac"] - SHORT) < 1e-9), None)
    rows = []
    for s in settings:
        agg = aggregate(per[s["sampler"]])
        ok = len(per[s["sampler"]])
        status = "ok" if not failures else f"failed {len(failures)}/{cfg['seeds']} seeds: " + "; ".join(failures)
        row = dict(base, sampler=s["sampler"], nfe=agg.pop("nfe", None), ms_per_sample=agg.pop("ms_per_sample", None),
                   train_seconds=agg.pop("train_seconds", None), **agg, seeds_ok=ok, n_samples=cfg["n"],
                   reference=f"{data}:test ({len(ref.x)}), {ref.extractor}", status=status if ok else
                   "failed: " + "; ".join(failures))
        if warning := seed_warning(per[s["sampler"]]):
            row["warning"] = warning
        if s is curve_setting and curve:  # the learning curve (seed mean) and the speed-of-convergence snapshot
            row.update(curve=curve, curve_sampler=s["sampler"], **({f"short_{k}": v for k, v in short.items()
                                                                    if k != "frac"} if short else {}))
        rows.append(row)
    return rows


def suite_models(suite: str, cfg: dict, runs: Runs, families: list[str], log) -> list[dict]:
    names = cfg["data"] or (TOYS if suite == "toy" else ("mnist5k",))
    rows = []
    for data in names:
        ref = Reference(data, cfg["n_real"])
        for name in families:
            log(f"{suite}: {name} on {data}")
            rows += bench_family(name, data, ref, runs, cfg, log)
            fam, _ = import_family(name)
            for variant, kinds in ((fam.spec.get("variants") or {}).items() if fam else ()):
                if ref.kind in kinds:  # another backbone: its own row, e.g. ddpm+dit
                    log(f"{suite}: {name}+{variant} on {data}")
                    rows += bench_family(name, data, ref, runs, cfg, log, variant)
    return rows


# The suites of one trained model and many settings: "samplers" (the families whose BENCH lists "samplers": quality
# against network calls), "guidance" (those whose BENCH lists "guidance": the guidance scale against quality and
# diversity, with labels asked for evenly and the label accuracy measured), "conditional" (BENCH "conditional") and
# "anomaly" (every family with a likelihood or BENCH "anomaly" on images: AUROC of its score at telling test digits
# from OOD sets).
SETTING_SUITES = {"samplers": "samplers", "guidance": "guidance", "conditional": "conditional", "anomaly": "anomaly"}
LABELLED = ("conditional", "guidance")  # the suites that sample each family's conditional model, every label alike


def suite_samples(key: str, kind: str, quick: bool) -> int:
    """Samples per setting when --samples is 0 (anomaly: test digits per OOD set). The labelled suites ask for each
    of 10 digits (toys: 8 or 25 modes) equally often, so their image counts are multiples of 10."""
    labelled = key in LABELLED
    if quick:
        return 40 if labelled else 16 if key == "anomaly" else 32
    return 2500 if kind == "points" else 100 if key == "samplers" else 1000 if labelled else 200


def ood_sets(x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Out-of-distribution versions of test images x [N, 1, H, W] in [-1, 1], all on the same 8-bit grid: every
    image's pixels in a random order of its own (the same intensity histogram), mirrored left-right, inverted
    (x -> -x, i.e. 255 - k), and uniform 8-bit noise."""
    g = torch.Generator().manual_seed(seed)
    flat = x.flatten(1)
    order = torch.rand(flat.shape, generator=g).argsort(1)  # one permutation per image
    return {"permuted": flat.gather(1, order).view_as(x), "flipped": x.flip(-1), "inverted": -x,
            "noise": torch.randint(0, 256, x.shape, generator=g).float() / 127.5 - 1}


def auroc(score_in, score_out) -> float:
    """P(score_out > score_in) + P(tie) / 2 over all pairs (the Mann-Whitney U statistic / (n_in n_out)): 1 = the
    score (an NLL or energy, higher = less likely) ranks every OOD example above every test example, 0.5 = chance,
    below 0.5 = the model finds the OOD data MORE likely (Nalisnick et al. 2019)."""
    from scipy.stats import rankdata

    a, b = np.asarray(score_in, dtype=np.float64), np.asarray(score_out, dtype=np.float64)
    ranks = rankdata(np.concatenate([a, b]))  # average ranks for ties
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def anomaly_spec(fam: Family, kind: str, quick: bool) -> dict | None:
    """What the anomaly suite calls: BENCH["anomaly"][kind] ({"function": name, **settings}), else the likelihood's
    settings; None for a family with neither."""
    spec = (fam.spec.get("anomaly") or {}).get(kind)
    if spec is not None:
        return dict(spec)
    spec = fam.likelihood_settings(kind, quick)
    return None if spec is None else dict(spec, function="likelihood")


def anomaly_row(fam: Family, model, data: str, spec: dict, n: int) -> dict:
    """The per-example score (-log p, a bound of it, or the energy) of n test examples (a seed-0 permutation of the
    test split) and of their OOD versions: mean score and AUROC per OOD set."""
    spec = dict(spec)
    fn = getattr(fam.mod, spec.pop("function"))
    spec.pop("n", None)
    x, _ = held_out(data, n)
    scores = {}
    t0 = time.perf_counter()
    for name, xs in {"test": x, **ood_sets(x)}.items():
        r = _quiet(fn, model, xs, **spec)
        scores[name] = r["per_example"].double().numpy()
    kind = r.get("kind", "")
    unit = "bits/dim" if "nll_bpd" in r else "nats" if "nll_nats" in r else "energy"
    out = dict(score=f"{kind} ({unit})", n_samples=n, ms_per_example=(time.perf_counter() - t0) * 1000 / (n * 5),
               **{f"score_{k}": float(v.mean()) for k, v in scores.items()},
               **{f"auroc_{k}": auroc(scores["test"], scores[k]) for k in OOD})
    out["auroc_mean"] = float(np.mean([out[f"auroc_{k}"] for k in OOD]))
    return out


def family_checkpoint(fam: Family, data: str, kind: str, cfg: dict, runs: Runs, opts: dict, chosen: dict):
    """The checkpoint a setting suite samples: --ckpt NAME=PATH if given; with --defaults the family's own defaults
    (train()'s steps and options, plus BENCH "defaults", where "@name" is the checkpoint chosen for that family in
    this suite, e.g. a distillation's teacher; in the labelled suites with its conditional_options); else the toy /
    mnist suite's checkpoint (seed 0, same options and budget: reused; the labelled suites' conditional models are
    the conditional suite's). -> (path, info)."""
    if fam.name in cfg["ckpts"]:
        path = Path(cfg["ckpts"][fam.name])
        ck = training.load_checkpoint(path)
        training.check(ck.get("config", {}).get("data") in (data, None),
                       f"--ckpt {fam.name}={path} was trained on {ck['config'].get('data')}, not {data}")
        return path, {"train_seconds": _loop_seconds(path.parent) or None, "steps": ck.get("step"), "reused": True}
    if cfg["defaults"]:
        extra = dict((fam.spec.get("defaults") or {}).get(kind) or {})
        extra.update({k: opts[k] for k in fam.spec.get("conditional_options") or {} if k in opts})  # labelled suites
        for k, v in extra.items():
            if isinstance(v, str) and v.startswith("@"):
                training.check(v[1:] in chosen, f"{fam.name}'s defaults need {v[1:]}'s checkpoint: add --families "
                               f"{v[1:]} (before {fam.name})")
                extra[k] = str(chosen[v[1:]])
        steps = extra.pop("steps", None) or Runs.defaults(fam.mod).get("steps")  # (a per-kind default: in BENCH)
        training.check(steps is not None, f"{fam.name}.py: no default --steps for {kind}; give BENCH['defaults']")
        return runs.checkpoint(fam, data, extra, steps, 0, label=f"{fam.name}-defaults")
    # the budget: as bench_family's learning curve, trained to its first snapshot, re-planned, resumed to the end (the
    # same steps and checkpoints as the toy / mnist suite's seed 0 with these options, so either reuses the other's)
    fracs = (QUICK_CURVE if cfg["quick"] else CURVE)["toy" if kind == "points" else "mnist"]
    plan = runs.steps_for(fam, data, opts, cfg["budget"])
    if len(fracs) == 1:
        return runs.checkpoint(fam, data, opts, plan["steps"], 0)
    first = snapshot_steps(plan, fracs, 0)
    ckpt, info = runs.checkpoint(fam, data, opts, first, 0)
    plan = runs.refine(fam, data, opts, cfg["budget"], first, info["train_seconds"])
    return runs.checkpoint(fam, data, opts, plan["steps"], 0, prev=ckpt) if plan["steps"] > first else (ckpt, info)


def setting_rows(cfg: dict, runs: Runs, families: list[str], data: str, log) -> list[dict]:
    """One checkpoint per family (family_checkpoint), sampled with every setting of the suite; common random numbers
    across settings."""
    key = SETTING_SUITES[cfg["suite"]]
    cfg = dict(cfg, budget=cfg["budget_given"] or (QUICK_BUDGET if cfg["quick"] else BUDGET)[
        "toy" if data in TOYS else "mnist"])
    conditional, anomaly, labelled = key == "conditional", key == "anomaly", key in LABELLED
    rows, chosen = [], {}
    for name in families:
        fam, why = import_family(name)
        if fam is None:
            continue  # a missing file takes no part
        if anomaly:
            if datasets.load(data, "test").kind != "images" or anomaly_spec(fam, "images", cfg["quick"]) is None:
                continue  # the anomaly suite: images, families with a likelihood or an energy
        elif not fam.settings("points", cfg["quick"], key) + fam.settings("images", cfg["quick"], key):
            continue  # a family without this suite's settings takes no part (the file may be missing)
        base = dict(suite=cfg["suite"], model=name, data=data, budget_s=cfg["budget"], seeds=1)
        try:
            ref = Reference(data, 500 if cfg["quick"] else 5000 if data in TOYS else 1000)
            kind = ref.kind
            n = cfg["samples"] or suite_samples(key, kind, cfg["quick"])
            opts = fam.options(kind, cfg["quick"])
            if labelled:  # the family's switch to its conditional model (--cond, --labels)
                opts.update(fam.spec.get("conditional_options") or {})
            ckpt, info = family_checkpoint(fam, data, kind, cfg, runs, opts, chosen)
            chosen[name] = ckpt
            source = "given" if name in cfg["ckpts"] else "defaults" if cfg["defaults"] else "budget"
            base.update(checkpoint=str(ckpt), checkpoint_from=source,
                        budget_s=None if source != "budget" else cfg["budget"])
            log(f"{cfg['suite']}: {name} {data}: {'reused' if info['reused'] else 'trained'} {ckpt}")
            model = fam.mod.load(str(ckpt))
            common = dict(train_seconds=info["train_seconds"], steps=info["steps"], status="ok",
                          reference=f"{data}:test ({len(ref.x)}), {ref.extractor}")
            if anomaly:
                r = dict(base, sampler="-", **common, **anomaly_row(fam, model, data, anomaly_spec(fam, kind, cfg["quick"]), n))
                log(f"  AUROC " + ", ".join(f"{k} {r['auroc_' + k]:.3f}" for k in OOD))
                rows.append(r)
                continue
            C = int(getattr(model, "num_classes", 0) or 0)
            if labelled and not C:
                raise ValueError(f"{name}'s checkpoint ({source}) has no labels: this suite needs its conditional "
                                 f"model (BENCH conditional_options)")
            y = torch.arange(n) % C if labelled else None  # every class equally often
            classifier = fam.spec.get("quick_classifier" if cfg["quick"] else "classifier") if conditional else None
            gen_acc = None
            if classifier is not None:  # the generative classifier: the file's classify command, Bayes' rule
                gen_acc = _quiet(fam.mod.classify, ckpt=str(ckpt), device="cpu", seed=0, **classifier)["accuracy"]
            if key == "samplers":  # how far apart FIDs at this n are by chance alone (frontier_claims uses it)
                common.update(fid_noise(data, n, len(ref.x)))
            for s in fam.settings(kind, cfg["quick"], key):
                x, nfe, ms = timed_sample(fam, model, n, s, 0, y)
                r = dict(base, sampler=s["sampler"], nfe=nfe, ms_per_sample=ms, **common, **score_samples(x, ref),
                         n_samples=n, **{("sampler_steps" if k == "steps" else k): v for k, v in s.items()
                                         if k != "sampler"})
                if y is not None:
                    r["accuracy"] = label_accuracy(x, y, data)
                if conditional:
                    r.update(per_class(x, y, ref, data), classifier_accuracy=gen_acc)
                log(f"  {s['sampler']}: NFE {nfe:g}, {ms:.2f} ms/sample, FID {r.get('fid', float('nan')):.3f}")
                rows.append(r)
        except Exception as e:  # noqa: BLE001 (a model file changed under it, a diverged run: one row, no crash)
            msg = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            log(f"  {cfg['suite']} {name} {data}: {msg}")
            rows += not_run(base, msg)
    return rows


# ----------------------------------------------------------------------------------------------------- outputs
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}, {platform.system()}")


def describe_load(load: float, cores: int, threads: int) -> str:
    """The machine's load when a run started, and whether other work shared the cores this run's threads needed (two
    one-thread runs side by side on 2 cores do not slow each other down; a two-thread run beside one does)."""
    busy = load + threads > cores + 0.5
    return (f"load average {load:.1f} on {cores} cores at the start, {threads} torch thread{'s' * (threads != 1)}" +
            (" (other jobs shared the CPU: timings inflated)" if busy else ""))



# ----------------------------------------------------------------------------------------------------- command
app = training.App(help="Train every generative model on the same data and budget; measure the lesson's trade-offs.",
                   no_args_is_help=False)


def run(suite: str = "toy", quick: bool = False, budget: float = 0.0, seeds: int = 0, out: str = "bench",
        runs: str = "runs/bench", families: str = "", device: str = "cpu", threads: int = 0, samples: int = 0,
        samplers_data: str = "grid25,mnist5k", verbose: bool = True, data: str = "", defaults: bool = False,
        ckpt: str = "") -> list[dict]:
    """The Python entry: run one suite (or all), merge its rows into <out>/results.json (replacing the rows of the
    same suite, data set and model), write the report."""
    training.check(suite in SUITES + ("all",), f"unknown --suite {suite!r}; use {', '.join(SUITES)} or all")
    training.check(budget >= 0 and seeds >= 0 and samples >= 0 and threads >= 0,
                   "--budget, --seeds, --samples and --threads must be >= 0")
    names = [f.strip() for f in families.split(",") if f.strip()] or list(MODELS)
    unknown = [f for f in names if f not in MODELS]
    training.check(not unknown, f"unknown family {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    training.check(all(d.strip() in datasets.DATASETS for d in (data or "grid25").split(",")),
                   f"unknown --data {data!r}; use data set names, comma-separated")
    training.check(all(d.strip() in datasets.DATASETS for d in samplers_data.split(",")),
                   f"unknown --samplers-data {samplers_data!r}; use data set names, comma-separated")
    ckpts = {}
    for item in (c.strip() for c in ckpt.split(",") if c.strip()):
        fam_name, _, path = item.partition("=")
        training.check(fam_name in MODELS and path, f"--ckpt {item!r}: use NAME=PATH with NAME one of {', '.join(MODELS)}")
        training.check(Path(path).is_file(), f"--ckpt {item!r}: no checkpoint file at {path}")
        ckpts[fam_name] = path
    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("GENMODELS_QUIET", "1")  # no progress bars from the trainers
    t_start = time.time()
    load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = Runs(Path(runs), device, quick)

    def log(msg):
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    new_rows = []
    for s in (SUITES if suite == "all" else (suite,)):
        cfg = dict(suite=s, quick=quick, data=tuple(d.strip() for d in data.split(",") if d.strip()),
                   budget_given=budget, budget=budget or (QUICK_BUDGET if quick else BUDGET).get(s, 0.0),
                   curve=(QUICK_CURVE if quick else CURVE).get(s), defaults=defaults, ckpts=ckpts,
                   seeds=seeds or (1 if quick or s != "toy" else 3),
                   n=samples or ((500 if s == "toy" else 100) if quick else 2500 if s == "toy" else 200),
                   n_real=500 if quick else 5000 if s == "toy" else 1000, samples=samples)
        if s in ("toy", "mnist"):
            rows = suite_models(s, cfg, r, names, log)
        else:
            rows = [row for d in samplers_data.split(",")
                    for row in setting_rows(cfg, r, names, d.strip(), log)]
        if verbose:
            if s == "anomaly":  # its own columns (AUROC per OOD set), not the sample-quality table
                print(f"bench --suite anomaly\n{anomaly_markdown(rows)}")
            else:
                print_table(rows, f"bench --suite {s}" + (" --quick" if quick else ""))
        new_rows += rows
    cmd = "python bench.py " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "bench.py" else \
        f"bench.run(suite={suite!r}, quick={quick}, budget={budget}, seeds={seeds})"
    load_note = describe_load(load_1m, os.cpu_count() or 1, torch.get_num_threads())
    code = {f: _file_sha1(ROOT / f"{f}.py")
            for f in MODELS if (ROOT / f"{f}.py").exists()}  # which version of each file ran
    meta = dict(command=cmd, machine=machine(), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
                wall_s=round(time.time() - t_start), load=load_note, code_sha1=code)
    for row in new_rows:
        row["run"] = meta
    # merge: replace the rows of the suites just run, keep the others (locked: suites may run in parallel)
    path = out_dir / "results.json"
    with locked(r.root / "results"):  # the lock file lives in the run folder, not next to the committed outputs
        old = json.loads(path.read_text()) if path.exists() else []
        key = lambda row: (row.get("suite"), row.get("data"), row.get("model"))  # noqa: E731
        done = {key(row) for row in new_rows}  # replace what was just measured, keep the rest
        rows = [row for row in old if key(row) not in done] + new_rows
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                for row in rows]
        path.write_text(json.dumps(rows, indent=1))
        write_markdown(rows, out_dir)
        write_figures(rows, out_dir, r)
    log(f"wrote {path}, {out_dir / 'results.md'}, {out_dir / 'samples.png'}" +
        (f", {out_dir / 'fid_vs_nfe.png'}" if any(x["suite"] == "samplers" for x in rows) else "") +
        f" in {time.time() - t_start:.0f} s")
    return rows


def report(out: str = "bench", runs: str = "runs/bench") -> list[dict]:
    """Rewrite <out>/results.md and the figures from <out>/results.json, training and sampling nothing (after a
    change to the report code, or rows merged from several machines). samples.png draws on <runs>' sample cache."""
    path = Path(out) / "results.json"
    training.check(path.is_file(), f"no {path}: run a suite first (python bench.py --suite toy --out {out})")
    try:
        rows = json.loads(path.read_text())
        assert isinstance(rows, list) and all(isinstance(r, dict) and "suite" in r for r in rows)
    except (ValueError, AssertionError):
        raise training.UserError(f"{path} is not bench's results (a JSON list of rows): run a suite again") from None
    r = Runs(Path(runs), "cpu", False)
    with locked(r.root / "results"):
        write_markdown(rows, Path(out))
        write_figures(rows, Path(out), r)
    return rows


@app.command()
def main(
    suite: Annotated[str, typer.Option(help="toy | mnist | samplers | guidance | conditional | anomaly | all")]
    = "toy",
    quick: Annotated[bool, typer.Option(help="tiny budgets, 1 seed, few samples (< 3 min on 2 CPU cores)")] = False,
    budget: Annotated[float, typer.Option(help="seconds of training loop per model (0 = the suite's default: "
                                               "toy 60, mnist 60 x 5 = 300; quick 1 / 3)")] = 0.0,
    seeds: Annotated[int, typer.Option(help="seeds per model (0 = 3 on toy, 1 elsewhere and with --quick)")] = 0,
    out: Annotated[str, typer.Option(help="folder for results.json, results.md, samples.png, fid_vs_nfe.png")] = "bench",
    runs: Annotated[str, typer.Option(help="folder for checkpoints (reused when their config matches) and the plan")]
    = "runs/bench",
    families: Annotated[str, typer.Option(help="comma-separated subset of " + ",".join(MODELS) + " (default all)")]
    = "",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps (training)")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 0,
    samples: Annotated[int, typer.Option(help="samples per model (0 = 2,500 on toys, 200 on mnist5k, 100 for mnist5k "
                                                "samplers, 1,000 conditional and guidance; anomaly: test digits per "
                                                "set, 200)")]
    = 0,
    samplers_data: Annotated[str, typer.Option(help="data set(s) of the samplers, guidance, conditional and anomaly "
                                                    "suites (anomaly: image sets only), "
                                                    "comma-separated")]
    = "grid25,mnist5k",
    data: Annotated[str, typer.Option(help="data set(s) of the toy / mnist suite (default grid25,ring8 / mnist5k)")] = "",
    defaults: Annotated[bool, typer.Option(help="setting suites (samplers, anomaly, ...): each family at its own "
                                                "defaults (train()'s steps, the README's commands), not the budget")]
    = False,
    ckpt: Annotated[str, typer.Option(help="setting suites: use these checkpoints, NAME=PATH,... (e.g. "
                                           "ddpm=runs/ddpm-mnist5k/ckpt.pt)")] = "",
    report_only: Annotated[bool, typer.Option("--report", help="only rewrite results.md and the figures from "
                                                               "<out>/results.json (nothing is trained)")] = False,
) -> None:
    """Train (or reuse) every model under the same budget, score it, print the table and write the report."""
    if report_only:
        report(out, runs)
        print(f"wrote {Path(out) / 'results.md'} and the figures from {Path(out) / 'results.json'}")
        return
    run(suite, quick, budget, seeds, out, runs, families, device, threads, samples, samplers_data, data=data,
        defaults=defaults, ckpt=ckpt)


if __name__ == "__main__":
    app()
