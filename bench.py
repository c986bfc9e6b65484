"""bench.py: the lesson's trade-off table (quality, diversity, stability, likelihood, sampling speed), measured.

Every family (vae, gan, flow, ebm, score, ddpm, cfg, fm) is trained on the same data under the same wall-clock budget and
scored by the same protocol (fid.py), so that each claim of the lesson's table holds or fails on one machine:
    VAE: good likelihood, blurry samples   GAN: sharp, unstable, mode collapse   flow: exact likelihood, slowish
    EBM: slow sampling                     diffusion (ddpm, score): high quality, slow sampling

Suites (`--suite`):
    toy       grid25 and ring8 (PacGAN protocol: 2,500 samples, modes covered and the high-quality fraction within
              3 std of a mode), Frechet distance on raw coordinates, precision/recall (k = 3), KID, NLL in nats where
              the family has one (flow exact, VAE IWAE, DDPM variational bound, EBM grid integration), NFE (network
              calls per sample, counted), ms per sample, training seconds; 3 seeds: mean and spread (the spread is the
              measured "stability").
    mnist     mnist5k: FID/KID with fid.py's MNIST features against the test split, precision/recall, inception
              score, classes covered, bits/dim where available.
    samplers  one trained DDPM (the mnist suite's): ddpm at 1000 steps, ddim at 10/20/50/100 with eta 0 and 1,
              dpm++2m at 10/15/20: quality against NFE (fid_vs_nfe.png) and the Method/Steps/Speed/Quality-drop table;
              the flow-matching model of fm.py (its mnist suite checkpoint) with Euler at 1..32 and Heun at 1..16 steps.
    guidance  the classifier-free guidance sweep of cfg.py (guidance scale against FID / precision / recall).
    conditional  the lesson's "Conditional gen." row: every family whose BENCH has "conditional" settings, trained
              with its "conditional_options" (--cond, --labels), asked for every label equally often: accuracy of the
              requested label (fid.py's classifier; toys: the 10 nearest training points), per class, FID overall and
              per class (stratified FID: the samples of class c against the test examples of class c), and for the
              families with a generative classifier (BENCH "classifier": the file's `classify` command) its accuracy.

Budgets. `--budget S` seconds of training loop per model (default per suite). The step count that fits is chosen by
measurement: a short probe run gives the seconds per step (from the run's metrics.jsonl), then steps = S / that; the
plan is cached in <runs>/plan.json, so that later runs ask for the same steps and reuse the checkpoints under <runs>
whose saved config matches (otherwise they train again).

Interfaces used (DESIGN.md's stable surface; bench holds no per-family code): each name in MODELS is a model file
with `train(**options) -> checkpoint path`, `load(path)`, `generate(model, n, *, generator, y, **settings)` (samples in
data space), `likelihood(model, x, **settings)` where the family has one, and a `BENCH` dict (data: the train options
per data kind and under --quick, the sampler settings, the likelihood settings, the network whose calls are counted,
the lesson's claim; "samplers" / "guidance" settings put a family in those suites), plus fid.py's metrics. A family
whose file is missing, does not import or lacks the surface is reported as "not available"; one whose training or
sampling fails is reported as "failed: ...". Adding a family is a file with the surface plus its name in MODELS.

Commands:
    python bench.py                                  # toy suite, 3 seeds, 12 s per model (13 min on 2 CPU cores)
    python bench.py --quick                          # tiny budgets, 1 seed, few samples (< 3 min; the tests run it)
    python bench.py --suite mnist                    # mnist5k, 60 s of training per model
    python bench.py --suite samplers                 # DDPM samplers: quality against NFE
    python bench.py --suite all
Outputs (--out, default bench/): results.json (one row per model x data x sampler setting), results.md (tables and
the trade-off table with measured numbers), samples.png (every model's samples), fid_vs_nfe.png.
"""
from __future__ import annotations

import contextlib
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

ROOT = Path(__file__).resolve().parent
TOYS = ("grid25", "ring8")
SUITES = ("toy", "mnist", "samplers", "guidance", "conditional")
BUDGET = {"toy": 12.0, "mnist": 60.0, "samplers": 60.0, "guidance": 60.0, "conditional": 60.0}  # s of training per model
QUICK_BUDGET = {"toy": 1.0, "mnist": 3.0, "samplers": 3.0, "guidance": 3.0, "conditional": 3.0}


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
# Every model file bench measures, in the order of the tables. Adding a family = a file with the surface below + its
# name here. bench holds no per-family code: what to train, how to sample and score comes from the file's BENCH dict.
MODELS = ("vae", "gan", "flow", "ebm", "score", "ddpm", "cfg", "fm", "consistency", "ldm")
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


def likelihood_row(fam: Family, model, data: str, kind: str, quick: bool) -> dict | None:
    """The family's likelihood on a fixed random subset of the test split (seed 0, the first n of one permutation):
    {"nll_nats" | "nll_bpd": value} (+ "nll_mass_outside_nats", the grid likelihood's box check), or None."""
    spec = fam.likelihood_settings(kind, quick)
    if spec is None:
        return None
    ds = datasets.load(data, "test")
    n = spec.pop("n", 0) or len(ds)
    x = ds.x[torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]]
    r = _quiet(fam.mod.likelihood, model, x, **spec)
    out = {k: float(r[k]) for k in ("nll_nats", "nll_bpd") if r.get(k) is not None}
    if r.get("mass_outside_nats") is not None:
        out["nll_mass_outside_nats"] = float(r["mass_outside_nats"])
    return out


# ----------------------------------------------------------------------------------------------------- budgeted training
def _log_seconds(run_dir: Path) -> list[tuple[int, float]]:
    """(step, seconds since the loop started) from a run's metrics.jsonl."""
    out = []
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out.append((int(rec["step"]), float(rec["sec"])))
            except (ValueError, KeyError):
                continue
    return out


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

    def steps_for(self, fam: Family, data: str, opts: dict, budget: float) -> dict:
        """Steps that fit `budget` seconds of training loop: probe a few steps, measure seconds per step."""
        code = _file_sha1(fam.mod.__file__)  # a changed model file is re-timed
        key = json.dumps([fam.name, data, budget, opts, self.device, torch.get_num_threads(), code], sort_keys=True)
        if key in self.plan:
            return self.plan[key]
        probe = 6 if self.quick else 30
        out = self.root / "_probe" / f"{fam.name}-{data}"
        shutil.rmtree(out, ignore_errors=True)
        _quiet(fam.mod.train, data=data, steps=probe, seed=0, out=str(out), device=self.device, **opts)
        log = _log_seconds(out)
        if len(log) >= 2 and log[-1][0] > log[0][0]:
            per_step = (log[-1][1] - log[0][1]) / (log[-1][0] - log[0][0])  # leaves out the first (warm-up) step
        else:
            per_step = (log[-1][1] if log else 1.0) / probe
        steps = int(min(200_000, max(10, budget / max(per_step, 1e-6))))
        entry = {"steps": steps, "sec_per_step": per_step, "probe_steps": probe,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        with locked(self.plan_path):  # merge with what another bench process may have written meanwhile
            self.plan = json.loads(self.plan_path.read_text()) if self.plan_path.exists() else {}
            self.plan[key] = entry
            self.plan_path.write_text(json.dumps(self.plan, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        return self.plan[key]

    def checkpoint(self, fam: Family, data: str, opts: dict, steps: int, seed: int) -> tuple[Path, dict]:
        """A checkpoint trained with exactly these options: reused when its saved config matches, else trained."""
        kw = dict(data=data, steps=steps, seed=seed, **opts)
        out = self.root / data / f"{fam.name}-s{seed}-{_key(kw)}"
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
        t0 = time.perf_counter()
        path = Path(_quiet(fam.mod.train, out=str(out), device=self.device, **kw))
        wall = time.perf_counter() - t0
        log = _log_seconds(out)
        info = {"train_seconds": log[-1][1] if log else wall, "train_wall_seconds": wall, "steps": steps}
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

    def cache_samples(self, data: str, name: str, x: torch.Tensor) -> None:
        (self.root / "samples").mkdir(exist_ok=True)
        torch.save(x[:1000 if x.dim() == 2 else 36].float().clone(), self.root / "samples" / f"{data}__{name}.pt")

    def cached_samples(self, data: str, name: str) -> torch.Tensor | None:
        p = self.root / "samples" / f"{data}__{name}.pt"
        return torch.load(p, weights_only=True) if p.exists() else None


# ----------------------------------------------------------------------------------------------------- metrics
class Reference:
    """Real test data and its features for one data set (computed once)."""

    def __init__(self, name: str, n: int):
        ds = datasets.load(name, "test")
        self.name, self.kind = name, ds.kind
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
        self.x, self.y = ds.x[perm], (ds.y[perm] if ds.y is not None else None)
        self.feats = fid.features(self.x, "points" if self.kind == "points" else "mnist")
        self.modes = datasets.MODES.get(name)
        self.extractor = "raw coordinates" if self.kind == "points" else "fid.py MNIST features (128-d)"


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
METRICS = ("fid", "kid", "precision", "recall", "modes", "hq", "is", "classes", "nll_nats", "nll_bpd",
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


def not_run(base: dict, status: str) -> list[dict]:
    return [dict(base, sampler="-", nfe=None, ms_per_sample=None, train_seconds=None, status=status)]


def bench_family(name: str, data: str, ref: Reference, runs: Runs, cfg: dict, log) -> list[dict]:
    """Train (or reuse) one family on one data set for every seed; one row per sampler setting."""
    base = dict(suite=cfg["suite"], model=name, data=data, budget_s=cfg["budget"], seeds=cfg["seeds"])
    fam, why = import_family(name)
    if fam is None:
        return not_run(base, why)
    kind = ref.kind
    if kind not in fam.kinds:
        return not_run(base, "not applicable")
    opts = fam.options(kind, cfg["quick"])
    settings = fam.settings(kind, cfg["quick"])
    try:
        plan = runs.steps_for(fam, data, opts, cfg["budget"])
    except BaseException as e:  # noqa: BLE001 (a failing file must not stop the bench)
        if isinstance(e, KeyboardInterrupt):
            raise
        return not_run(base, f"failed: probe run: {type(e).__name__}: {str(e)[:160]}")
    per = {s["sampler"]: [] for s in settings}
    failures = []
    for seed in range(cfg["seeds"]):
        try:
            ckpt, info = runs.checkpoint(fam, data, opts, plan["steps"], seed)
            log(f"  {name} {data} seed {seed}: {'reused' if info['reused'] else 'trained'} {ckpt} "
                f"({plan['steps']} steps, {info['train_seconds']:.1f}s)")
            model = fam.mod.load(str(ckpt))
            likelihood = likelihood_row(fam, model, data, kind, cfg["quick"])
            for i, s in enumerate(settings):
                x, nfe, ms = timed_sample(fam, model, cfg["n"], s, seed)
                r = dict(score_samples(x, ref), nfe=nfe, ms_per_sample=ms, train_seconds=info["train_seconds"],
                         steps=plan["steps"], **(likelihood or {}))
                per[s["sampler"]].append(r)
                if seed == 0 and i == 0:
                    runs.cache_samples(data, name, x)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            failures.append(f"seed {seed}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            log(f"  {name} {data} seed {seed}: FAILED {failures[-1]}")
    rows = []
    for s in settings:
        agg = aggregate(per[s["sampler"]])
        ok = len(per[s["sampler"]])
        status = "ok" if not failures else f"failed {len(failures)}/{cfg['seeds']} seeds: " + "; ".join(failures)
        row = dict(base, sampler=s["sampler"], nfe=agg.pop("nfe", None), ms_per_sample=agg.pop("ms_per_sample", None),
                   train_seconds=agg.pop("train_seconds", None), **agg, seeds_ok=ok, n_samples=cfg["n"],
                   reference=f"{data}:test ({len(ref.x)}), {ref.extractor}", status=status if ok else
                   "failed: " + "; ".join(failures))
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
    return rows


# The suites of one trained model and many settings: "samplers" (the families whose BENCH lists "samplers": quality
# against network calls) and "guidance" (those whose BENCH lists "guidance": the guidance scale against quality and
# diversity, with labels asked for evenly and the label accuracy measured).
SETTING_SUITES = {"samplers": "samplers", "guidance": "guidance", "conditional": "conditional"}


def setting_rows(cfg: dict, runs: Runs, families: list[str], data: str, log) -> list[dict]:
    """One checkpoint per family (seed 0, the toy / mnist suite's options and budget, so that its checkpoint is
    reused), sampled with every setting of the suite; common random numbers across settings."""
    key = SETTING_SUITES[cfg["suite"]]
    cfg = dict(cfg, budget=cfg["budget_given"] or (QUICK_BUDGET if cfg["quick"] else BUDGET)[
        "toy" if data in TOYS else "mnist"])
    conditional = key == "conditional"
    rows = []
    for name in families:
        fam, why = import_family(name)
        if fam is None or not fam.settings("points", cfg["quick"], key) + fam.settings("images", cfg["quick"], key):
            continue  # a family without this suite's settings takes no part (the file may be missing)
        base = dict(suite=cfg["suite"], model=name, data=data, budget_s=cfg["budget"], seeds=1)
        try:
            ref = Reference(data, 500 if cfg["quick"] else 5000 if data in TOYS else 1000)
            kind = ref.kind
            n = cfg["samples"] or ((40 if conditional else 32) if cfg["quick"] else 2500 if kind == "points" else
                                   100 if key == "samplers" else 1000 if conditional else 200)
            opts = fam.options(kind, cfg["quick"])
            if conditional:  # the family's switch to its conditional model (--cond, --labels)
                opts.update(fam.spec.get("conditional_options") or {})
            plan = runs.steps_for(fam, data, opts, cfg["budget"])
            ckpt, info = runs.checkpoint(fam, data, opts, plan["steps"], 0)
            log(f"{cfg['suite']}: {name} {data}: {'reused' if info['reused'] else 'trained'} {ckpt}")
            model = fam.mod.load(str(ckpt))
            C = int(getattr(model, "num_classes", 0) or 0)
            if conditional and not C:
                raise ValueError(f"{name}.py's conditional_options trained a model without labels")
            y = torch.arange(n) % C if key in ("guidance", "conditional") and C else None  # every class equally often
            classifier = fam.spec.get("quick_classifier" if cfg["quick"] else "classifier") if conditional else None
            gen_acc = None
            if classifier is not None:  # the generative classifier: the file's classify command, Bayes' rule
                gen_acc = _quiet(fam.mod.classify, ckpt=str(ckpt), device="cpu", seed=0, **classifier)["accuracy"]
            for s in fam.settings(kind, cfg["quick"], key):
                x, nfe, ms = timed_sample(fam, model, n, s, 0, y)
                r = dict(base, sampler=s["sampler"], nfe=nfe, ms_per_sample=ms, train_seconds=info["train_seconds"],
                         steps=plan["steps"], **score_samples(x, ref), n_samples=n, status="ok",
                         reference=f"{data}:test ({len(ref.x)}), {ref.extractor}",
                         **{("sampler_steps" if k == "steps" else k): v for k, v in s.items() if k != "sampler"})
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


def _fmt(v, spec=".3f", std=None):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    s = format(v, spec) if isinstance(v, float) else str(v)
    if std is not None and std > 0:
        s += " ± " + format(std, spec)
    return s


def _cols(r: dict, images: bool) -> list[str]:
    g = r.get
    nll = _fmt(g("nll_nats"), ".3f", g("nll_nats_std")) if g("nll_nats") is not None else \
        (_fmt(g("nll_bpd"), ".3f", g("nll_bpd_std")) + " bpd" if g("nll_bpd") is not None else "-")
    quality = ([_fmt(g("fid"), ".2f", g("fid_std")), _fmt(g("kid"), ".4f"), _fmt(g("is"), ".2f"),
                _fmt(g("classes"), ".1f")] if images else
               [_fmt(g("modes"), ".1f", g("modes_std")), _fmt(g("hq"), ".3f", g("hq_std")),
                _fmt(g("fid"), ".3f", g("fid_std"))])
    return [r["data"], r["model"], r["sampler"], *quality, _fmt(g("precision"), ".3f"), _fmt(g("recall"), ".3f"), nll,
            _fmt(g("nfe"), ".0f"), _fmt(g("ms_per_sample"), ".3g"), _fmt(g("train_seconds"), ".1f"),
            _fmt(g("steps"), ".0f"), r["status"] if r["status"] == "ok" else r["status"][:90]]


def _header(images: bool) -> list[str]:
    q = ["FID", "KID", "IS", "classes"] if images else ["modes", "hq", "Frechet dist."]
    return ["data", "model", "sampler", *q, "precision", "recall", "NLL", "NFE", "ms/sample", "train s", "steps", "status"]


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    images = any(r["data"] not in TOYS for r in rows)
    t = Table(title=title)
    for h in _header(images):
        t.add_column(h, justify="left" if h in ("data", "model", "sampler", "status") else "right")
    for r in rows:
        t.add_row(*_cols(r, images))
    Console(width=200).print(t)


def md_table(header: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body])


# The lesson's table (relative tiers), and the measured column each claim is checked against.
LESSON = {  # family: (quality, diversity, stability, likelihood, sampling speed)
    "vae": ("low (blurry)", "high", "high", "good (bound)", "fast"),
    "gan": ("high (sharp)", "low (mode collapse)", "low", "none", "fast"),
    "flow": ("medium", "high", "high", "exact", "slowish"),
    "ebm": ("medium", "medium", "low", "unnormalized", "slow"),
    "score": ("high", "high", "high", "none", "slow"),
    "ddpm": ("high", "high", "high", "good (bound)", "slow"),
}
TIER = {"low": 0, "none": 0, "slow": 0, "unnormalized": 0, "medium": 1, "slowish": 1, "high": 2, "good": 2,
        "exact": 2, "fast": 2}


def _tier(claim: str) -> int | None:
    return TIER.get(claim.split(" ")[0])


def claims(rows: list[dict]) -> list[str]:
    """The lesson's specific claims, each checked against the measured rows in one plain sentence."""
    ok = [r for r in rows if r["status"] == "ok" and r["suite"] in ("toy", "mnist")]
    out = []

    def best(model, data):
        c = [r for r in ok if r["model"] == model and r["data"] == data and r.get("fid") is not None]
        return min(c, key=lambda r: r["fid"]) if c else None

    for data in sorted({r["data"] for r in ok}, key=lambda d: (d not in TOYS, d)):
        fams = {m: best(m, data) for m in LESSON if best(m, data)}
        if len(fams) < 3:
            continue
        others = lambda m: [r for k, r in fams.items() if k != m]  # noqa: E731
        med = lambda m, key: float(np.median([r[key] for r in others(m) if r.get(key) is not None] or [float("nan")]))  # noqa: E731
        toy = data in TOYS
        K = len(datasets.MODES[data][0]) if toy else 10
        if "gan" in fams:
            g = fams["gan"]
            if toy:
                seeds_modes = (g.get("per_seed") or {}).get("modes") or [g["modes"]]
                collapsed = g["modes"] < min(K, med("gan", "modes"))  # drops more modes than the other families
                out.append(f"{data}: GAN mode collapse: {'holds' if collapsed else 'NOT observed'}: modes covered "
                           f"per seed {seeds_modes} of {K} (others' median {med('gan', 'modes'):.1f}).")
                out.append(f"{data}: GAN sharp samples: {'holds' if g['hq'] >= med('gan', 'hq') else 'does NOT hold'}: "
                           f"hq {g['hq']:.3f} vs the others' median {med('gan', 'hq'):.3f}.")
            else:
                out.append(f"{data}: GAN mode collapse: classes covered {g.get('classes', 0):.0f}/10, recall "
                           f"{g.get('recall', 0):.3f} (others' median {med('gan', 'recall'):.3f}).")
            if g.get("fid_std") is not None:
                cv = lambda r: r["fid_std"] / max(r["fid"], 1e-9)  # noqa: E731
                other_cv = float(np.median([cv(r) for r in others("gan") if r.get("fid_std") is not None]))
                out.append(f"{data}: GAN unstable: {'holds' if cv(g) > other_cv else 'does NOT hold'}: the spread of its "
                           f"Frechet distance over seeds is {100 * cv(g):.0f}% of the mean (others' median "
                           f"{100 * other_cv:.0f}%).")
        if "vae" in fams:
            v = fams["vae"]
            if toy:
                out.append(f"{data}: VAE blurry: {'holds' if v['hq'] < med('vae', 'hq') else 'does NOT hold'}: hq "
                           f"{v['hq']:.3f} vs the others' median {med('vae', 'hq'):.3f} (samples between the modes).")
            else:
                out.append(f"{data}: VAE blurry: precision {v.get('precision', 0):.3f} and FID {v['fid']:.1f} vs the "
                           f"others' median {med('vae', 'precision'):.3f} and {med('vae', 'fid'):.1f}.")
        key = "nll_nats" if toy else "nll_bpd"
        nlls = {m: r[key] for m, r in fams.items() if r.get(key) is not None}
        if "flow" in nlls and len(nlls) > 1:
            order = sorted(nlls, key=nlls.get)
            out.append(f"{data}: likelihoods ({'nats' if toy else 'bits/dim'}, lower is better; flow exact, VAE and DDPM "
                       f"upper bounds{', EBM grid integration' if toy else ''}): " +
                       ", ".join(f"{m} {nlls[m]:.3f}" for m in order) +
                       f". VAE good likelihood: {'holds' if 'vae' in nlls and order.index('vae') <= 1 else 'does NOT hold' if 'vae' in nlls else 'n/a'}.")
        one_shot = [fams[m]["ms_per_sample"] for m in ("gan", "vae") if m in fams]
        for m, what in (("ebm", "EBM slow sampling"), ("ddpm", "diffusion slow sampling"), ("score", "score model slow sampling"),
                        ("flow", "flow slowish")):
            rs = [r for r in ok if r["model"] == m and r["data"] == data and r.get("ms_per_sample")]
            if not rs or not one_shot:
                continue
            slowest = max(rs, key=lambda r: r["ms_per_sample"])
            ratio = slowest["ms_per_sample"] / max(min(one_shot), 1e-9)
            limit = 3 if m == "flow" else 10  # "slowish" vs "slow": 3x / 10x the fastest one-shot generator
            out.append(f"{data}: {what}: {'holds' if ratio > limit else 'does NOT hold'} (> {limit}x): {slowest['sampler']} takes "
                       f"{slowest['ms_per_sample']:.3g} ms per sample (NFE {slowest['nfe']:.0f}), {ratio:.0f}x the "
                       f"fastest one-shot generator (GAN/VAE, {min(one_shot):.3g} ms).")
        if "ddpm" in fams:
            d = fams["ddpm"]
            qkey, better = ("hq", max) if toy else ("fid", min)
            vals = {m: r.get(qkey) for m, r in fams.items() if r.get(qkey) is not None}
            order = sorted(vals, key=vals.get, reverse=better is max)  # best first
            rank = lambda m: order.index(m) + 1 if m in order else None  # noqa: E731
            top_third = math.ceil(len(order) / 3)
            verdict = "n/a" if rank("ddpm") is None else "holds" if rank("ddpm") <= top_third else "does NOT hold"
            out.append(f"{data}: diffusion high quality: {verdict}: DDPM ({d['sampler']}) {qkey} "
                       f"{vals.get('ddpm', float('nan')):.3f}, rank {rank('ddpm')}/{len(order)}; best is {order[0]} "
                       f"({vals[order[0]]:.3f})" + (f"; the score model ranks {rank('score')}" if rank("score") else "") + ".")
    return out


def tradeoff(rows: list[dict]) -> tuple[str, list[str]]:
    """The lesson's table filled with measured numbers: for each family its best row per data set, each column
    ranked among the families measured (top third = high, bottom third = low), compared with the lesson's tier."""
    ok = [r for r in rows if r["status"] == "ok" and r["suite"] in ("toy", "mnist") and r["model"] in LESSON]
    notes, body = [], []
    columns = [  # name, row -> measured value (higher is better), formatter
        ("quality", lambda r: (r.get("hq") if r["data"] in TOYS else -r["fid"] if r.get("fid") is not None else None),
         lambda r: (f"FID {r['fid']:.2f}" if r["data"] not in TOYS else f"hq {r.get('hq', 0):.3f}, FD {r['fid']:.3f}")),
        ("diversity", lambda r: (r.get("modes", 0) + 1e-3 * r.get("recall", 0))
         if r["data"] in TOYS else r.get("recall"),
         lambda r: (f"modes {r.get('modes', 0):.1f}/{len(datasets.MODES[r['data']][0])}, recall {r.get('recall', 0):.2f}"
                    if r["data"] in TOYS else f"recall {r.get('recall', 0):.2f}")),
        ("stability", lambda r: -(r.get("fid_std", 0) / max(r["fid"], 1e-9)) if r.get("fid_std") is not None else None,
         lambda r: f"FD/FID spread {100 * r.get('fid_std', 0) / max(r['fid'], 1e-9):.0f}% over {r['seeds']} seeds"),
        ("likelihood", lambda r: (-r["nll_nats"] if r.get("nll_nats") is not None else
                                  -r["nll_bpd"] if r.get("nll_bpd") is not None else None),
         lambda r: (f"{r['nll_nats']:.2f} nats" if r.get("nll_nats") is not None else f"{r['nll_bpd']:.2f} bpd")),
        ("sampling speed", lambda r: -r["ms_per_sample"] if r.get("ms_per_sample") is not None else None,
         lambda r: f"{r['ms_per_sample']:.3f} ms, NFE {r['nfe']:.0f}"),
    ]
    for data in sorted({r["data"] for r in ok}, key=lambda d: (d not in TOYS, d)):
        best = {}
        for r in ok:
            if r["data"] == data and r.get("fid") is not None:
                if r["model"] not in best or r["fid"] < best[r["model"]]["fid"]:
                    best[r["model"]] = r
        fams = [f for f in LESSON if f in best]
        cells = {f: [] for f in fams}
        for ci, (name, value, fmt) in enumerate(columns):
            vals = {f: value(best[f]) for f in fams}
            have = [f for f in fams if vals[f] is not None]
            ranked = sorted(have, key=lambda f: -vals[f])
            for f in fams:
                claim = LESSON[f][ci]
                if vals[f] is None:
                    cells[f].append(f"lesson: {claim}; measured: none")
                    continue
                rank = ranked.index(f)
                k = len(ranked)
                tier = 2 if rank < k / 3 else 0 if rank >= 2 * k / 3 else 1
                want = _tier(claim)
                verdict = "" if want is None or k < 3 else "agrees" if tier == want else \
                    "CONTRADICTS" if abs(tier - want) == 2 else "partly"
                cells[f].append(f"lesson: {claim}; measured: {fmt(best[f])} (rank {rank + 1}/{k}) {verdict}".strip())
                if verdict == "CONTRADICTS":
                    notes.append(f"{data}: {f} {name}: the lesson says {claim}, but it ranks {rank + 1} of {k} "
                                 f"({fmt(best[f])}).")
        for f in fams:
            body.append([data, f"{f} ({best[f]['sampler']})", *cells[f]])
    header = ["data", "family (sampler)", "quality", "diversity", "stability (seed spread)", "likelihood",
              "sampling speed"]
    return md_table(header, body), notes


def write_markdown(rows: list[dict], out: Path) -> None:
    runs_seen = []
    for r in rows:
        if r.get("run") and r["run"] not in runs_seen:
            runs_seen.append(r["run"])
    parts = ["# bench.py results", "", "Produced by (one line per command whose rows are below):", ""]
    parts += [f"- `{m['command']}` on {m['machine']}; started {m['when']}, wall time {m['wall_s']} s; {m['load']}; "
              f"model files (sha1 of their content): " + ", ".join(f"{k}.py {v}" for k, v in m.get("code_sha1", {}).items())
              for m in runs_seen]
    parts += ["", "Each model is trained for the same wall-clock budget of training loop (steps = budget / measured "
             "seconds per step); `train s` is the loop time actually spent. Numbers are the mean (± the standard "
             "deviation over seeds, the measured training stability). NFE = network calls per sample, counted "
             "through the network while sampling (EBM: energy gradients, i.e. forward + backward). NLL: nats per "
             "point on the toys (flow exact, VAE IWAE bound, DDPM variational bound, EBM grid integration of exp(-E)); "
             "bits/dim on images (flow exact with uniform dequantization, VAE IWAE with the discretized-logistic "
             "decoder, DDPM variational bound with the discretized decoder)."]
    for suite in SUITES:
        srows = [r for r in rows if r["suite"] == suite]
        if not srows:
            continue
        for data in sorted({r["data"] for r in srows}, key=lambda d: (d not in TOYS, d)):
            d_rows = [r for r in srows if r["data"] == data]
            images = data not in TOYS
            parts += ["", f"## {suite}: {data}", "",
                      f"Budget {d_rows[0]['budget_s']:g} s per model, {d_rows[0]['seeds']} seed(s), "
                      f"{d_rows[0].get('n_samples', '-')} samples against {d_rows[0].get('reference', '-')}.", ""]
            if suite == "samplers":
                parts.append(samplers_markdown(d_rows))
            elif suite == "guidance":
                parts.append(md_table(["guidance scale s (= 1 + w)", "FID" if images else "Frechet dist.", "precision",
                                       "recall", "label accuracy", "IS", "NFE", "status"],
                                      [[_fmt(r.get("guidance"), ".3g"), _fmt(r.get("fid"), ".3f"),
                                        _fmt(r.get("precision"), ".3f"), _fmt(r.get("recall"), ".3f"),
                                        _fmt(r.get("accuracy"), ".3f"), _fmt(r.get("is"), ".2f"), _fmt(r.get("nfe"), ".0f"),
                                        r["status"]] for r in d_rows]))
            elif suite == "conditional":
                parts.append(md_table(["model", "setting", "label accuracy", "FID" if images else "Frechet dist.",
                                       "per-class FID: mean / worst (class)", "generative classifier", "precision",
                                       "recall", "NFE", "steps", "status"],
                                      [[r["model"], r["sampler"], _fmt(r.get("accuracy"), ".3f"),
                                        _fmt(r.get("fid"), ".3f"),
                                        f"{_fmt(r.get('fid_class_mean'), '.2f')} / {_fmt(r.get('fid_class_worst'), '.2f')}"
                                        f" ({r.get('fid_class_worst_label', '-')})",
                                        _fmt(r.get("classifier_accuracy"), ".3f"), _fmt(r.get("precision"), ".3f"),
                                        _fmt(r.get("recall"), ".3f"), _fmt(r.get("nfe"), ".0f"),
                                        _fmt(r.get("steps"), ".0f"), r["status"]] for r in d_rows]))
            else:
                parts.append(md_table(_header(images), [_cols(r, images) for r in d_rows]))
    table, notes = tradeoff(rows)
    if table.count("\n") > 1:
        parts += ["", "## The lesson's trade-off table, measured", "",
                  "Each cell: the lesson's claim, the measured number, its rank among the families measured on that "
                  "data set (best first; tiers: top third high, bottom third low) and whether they agree. Quality: the "
                  "high-quality fraction hq (toys: samples within 3 std of a mode, PacGAN) or FID; diversity: modes "
                  "covered (toys; ties broken by recall) or recall; "
                  "stability: spread of FD/FID over seeds relative to its mean; likelihood: test NLL; speed: ms per "
                  "sample on this CPU.", "", table, ""]
        parts += ["### The lesson's claims, one by one", ""] + [f"- {c}" for c in claims(rows)] + [""]
        parts += ["### Where the measurement contradicts the lesson (opposite tier)", ""]
        parts += [f"- {n}" for n in notes] or ["- nothing ranked opposite to the lesson's tier in this run."]
    parts += ["", "Rows whose status is not `ok` name why (a family whose file is missing or fails to import is "
              "`not available`)."]
    (out / "results.md").write_text("\n".join(parts) + "\n")


def samplers_markdown(rows: list[dict]) -> str:
    ok = [r for r in rows if r["status"] == "ok" and r.get("fid") is not None]
    base = next((r for r in ok if r["sampler"] == "ddpm-1000"), None)
    if base is None:
        return md_table(["sampler", "status"], [[r["sampler"], r["status"]] for r in rows])
    body = []
    for r in ok:
        speed = base["ms_per_sample"] / r["ms_per_sample"]
        drop = r["fid"] - base["fid"]
        method = r["method"].upper() if r["method"] != "dpm++2m" else "DPM-Solver++(2M)"
        body.append([method if r["model"] == base["model"] else f"{r['model']}.py {method}",  # another family's solver
                     str(r["sampler_steps"]) + (f" (eta {r['eta']:g})" if r["method"] == "ddim" else ""),
                     f"{speed:.1f}x (NFE {r['nfe']:.0f})", f"{r['fid']:.2f} ({drop:+.2f}, {100 * drop / base['fid']:+.0f}%)",
                     f"{r['kid']:.4f}", f"{r['precision']:.3f} / {r['recall']:.3f}", f"{r['ms_per_sample']:.2f}"])
    return md_table(["Method", "Steps", "Relative speed (measured)",
                     f"{'FID' if rows[0]['data'] not in TOYS else 'Frechet dist.'} (quality drop vs DDPM 1000)", "KID",
                     "precision / recall", "ms/sample"], body)


def write_figures(rows: list[dict], out: Path, runs: Runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted({(r["data"], r["model"]) for r in rows if r["status"] == "ok" and r["suite"] in ("toy", "mnist")})
    data_names = sorted({d for d, _ in pairs}, key=lambda d: (d not in TOYS, d))
    models = [m for m in MODELS if any(p[1] == m for p in pairs)]
    if data_names and models:
        fig, axes = plt.subplots(len(data_names), len(models), figsize=(1.6 * len(models), 1.7 * len(data_names)),
                                 dpi=50, squeeze=False)  # small: the figure is committed
        for i, d in enumerate(data_names):
            ref = datasets.load(d, "test").x[:1000] if d in TOYS else None
            for j, m in enumerate(models):
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                x = runs.cached_samples(d, m) if (d, m) in pairs else None
                if j == 0:
                    ax.set_ylabel(d, fontsize=8)
                if i == 0:
                    ax.set_title(m, fontsize=9)
                if x is None:
                    ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                    continue
                if x.dim() == 2:
                    ax.scatter(ref[:500, 0], ref[:500, 1], s=0.5, c="0.75")
                    ax.scatter(x[:600, 0], x[:600, 1], s=0.5, c="tab:blue")
                    lim = 5.5 if d == "grid25" else 1.6
                    ax.set_xlim(-lim, lim)
                    ax.set_ylim(-lim, lim)
                    ax.set_aspect("equal")
                else:
                    ax.imshow(datasets.image_grid(x.clamp(-1, 1), 6)[..., 0], cmap="gray")
        fig.tight_layout()
        fig.savefig(out / "samples.png")
        plt.close(fig)
    srows = [r for r in rows if r["suite"] == "samplers" and r["status"] == "ok" and r.get("fid") is not None]
    sdata = sorted({r["data"] for r in srows}, key=lambda d: (d not in TOYS, d))
    if srows:
        fig, axes = plt.subplots(1, len(sdata), figsize=(5 * len(sdata), 3.6), dpi=80, squeeze=False)
        for ax, d in zip(axes[0], sdata):
            rd = [r for r in srows if r["data"] == d]
            for label, sel, style in (("DDIM eta 0", lambda r: r["method"] == "ddim" and r["eta"] == 0, "o-"),
                                      ("DDIM eta 1", lambda r: r["method"] == "ddim" and r["eta"] == 1, "s-"),
                                      ("DPM-Solver++(2M)", lambda r: r["method"] == "dpm++2m", "^-"),
                                      ("DDPM ancestral", lambda r: r["method"] == "ddpm", "k*")):
                pts = sorted((r["nfe"], r["fid"]) for r in rd if sel(r))
                if pts:
                    ax.plot(*zip(*pts), style, label=label, ms=5)
            for m, method in sorted({(r["model"], r["method"]) for r in rd if r["model"] != "ddpm"}):  # other families
                pts = sorted((r["nfe"], r["fid"]) for r in rd if (r["model"], r["method"]) == (m, method))
                ax.plot(*zip(*pts), "x--", label=f"{m}.py {method}", ms=5)
            ax.set_xscale("log")
            ax.set_xlabel("network calls per sample (NFE)")
            ax.set_ylabel("FID (fid.py MNIST features)" if d not in TOYS else "Frechet distance (coordinates)")
            ax.set_title(f"Samplers on {d}: quality against NFE (n = {rd[0]['n_samples']})", fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "fid_vs_nfe.png")
        plt.close(fig)


# ----------------------------------------------------------------------------------------------------- command
app = training.App(help="Train every generative model on the same data and budget; measure the lesson's trade-offs.",
                   no_args_is_help=False)


def run(suite: str = "toy", quick: bool = False, budget: float = 0.0, seeds: int = 0, out: str = "bench",
        runs: str = "runs/bench", families: str = "", device: str = "cpu", threads: int = 0, samples: int = 0,
        samplers_data: str = "grid25,mnist5k", verbose: bool = True, data: str = "") -> list[dict]:
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
        cfg = dict(suite=s, quick=quick, data=tuple(d.strip() for d in data.split(",") if d.strip()), budget_given=budget, budget=budget or (QUICK_BUDGET if quick else BUDGET)[s],
                   seeds=seeds or (1 if quick or s != "toy" else 3),
                   n=samples or ((500 if s == "toy" else 100) if quick else 2500 if s == "toy" else 200),
                   n_real=500 if quick else 5000 if s == "toy" else 1000, samples=samples)
        if s in ("toy", "mnist"):
            rows = suite_models(s, cfg, r, names, log)
        else:
            rows = [row for d in samplers_data.split(",")
                    for row in setting_rows(cfg, r, names, d.strip(), log)]
        if verbose:
            print_table(rows, f"bench --suite {s}" + (" --quick" if quick else ""))
        new_rows += rows
    cmd = "python bench.py " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "bench.py" else \
        f"bench.run(suite={suite!r}, quick={quick}, budget={budget}, seeds={seeds})"
    load_note = f"load average {load_1m:.1f} on {os.cpu_count()} cores at the start" + \
        (" (other jobs shared the CPU: timings inflated)" if load_1m > 1.5 else "")
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


@app.command()
def main(
    suite: Annotated[str, typer.Option(help="toy | mnist | samplers | guidance | conditional | all")] = "toy",
    quick: Annotated[bool, typer.Option(help="tiny budgets, 1 seed, few samples (< 3 min on 2 CPU cores)")] = False,
    budget: Annotated[float, typer.Option(help="seconds of training loop per model (0 = the suite's default: "
                                               "toy 12, mnist 60; quick 1 / 3)")] = 0.0,
    seeds: Annotated[int, typer.Option(help="seeds per model (0 = 3 on toy, 1 elsewhere and with --quick)")] = 0,
    out: Annotated[str, typer.Option(help="folder for results.json, results.md, samples.png, fid_vs_nfe.png")] = "bench",
    runs: Annotated[str, typer.Option(help="folder for checkpoints (reused when their config matches) and the plan")]
    = "runs/bench",
    families: Annotated[str, typer.Option(help="comma-separated subset of " + ",".join(MODELS) + " (default all)")]
    = "",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps (training)")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 0,
    samples: Annotated[int, typer.Option(help="samples per model (0 = 2,500 on toys, 200 on mnist5k, 100 for mnist5k "
                                                "samplers)")]
    = 0,
    samplers_data: Annotated[str, typer.Option(help="data set(s) of the samplers, guidance and conditional suites, "
                                                    "comma-separated")]
    = "grid25,mnist5k",
    data: Annotated[str, typer.Option(help="data set(s) of the toy / mnist suite (default grid25,ring8 / mnist5k)")] = "",
) -> None:
    """Train (or reuse) every model under the same budget, score it, print the table and write the report."""
    run(suite, quick, budget, seeds, out, runs, families, device, threads, samples, samplers_data, data=data)


if __name__ == "__main__":
    app()
