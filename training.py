"""Plumbing shared by the trainers, so that the model files show only the algorithm.

- `App`: a typer app whose errors are one line on stderr and exit code 2 (bad input), never a traceback.
- `device`, `autocast` (bf16 on CUDA only), `seed_everything`, `dist_info` (torchrun/DDP: gloo on CPU, NCCL on CUDA).
- `save_checkpoint` (temp file + rename) and `load_checkpoint` (`torch.load(weights_only=True)`: a checkpoint can never
  run code).
- `Trainer`: optimizers, learning-rate warm-up, EMA (`torch.optim.swa_utils.AveragedModel`), the data order, exact
  resume (models, EMA, optimizers, step, RNG states, data position), a rich progress bar with loss and ETA, a JSON-lines
  metric log, Ctrl-C -> checkpoint and clean exit, NaN/inf loss -> stop with a message, last good checkpoint kept;
  no host-device sync except on logging and checkpoint steps (a fast GPU is never kept waiting by the loop).

Typical use (see ddpm.py):

    tr = Trainer("ddpm", config, {"model": net}, ds, steps=..., batch_size=..., lr=..., out=..., ema_decay=0.999)
    for step, (x, y) in tr:
        with tr.autocast():
            loss = loss_fn(tr.models["model"], x)
        tr.step(loss)
    tr.finish(sample_fn)  # final checkpoint, samples.png; returns the checkpoint path
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Callable

import torch
import torch.distributed as dist
import typer
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover
    from click import exceptions as cx

CKPT_VERSION = 1


# ----------------------------------------------------------------------------------------------------- errors / CLI
class UserError(ValueError):
    """Bad input (a value, a file, a dataset name): shown as one line, exit code 2."""


class TrainingFailed(RuntimeError):
    """The run itself went wrong (NaN loss, diverging energies): shown as one line, exit code 1."""


def fail(message: str) -> None:
    raise UserError(message)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


# The run options every command shares, declared once here (typer reads an option's help from its Annotated type):
#     device: training.Device = "auto"      seed: training.Seed = 0      resume: training.Resume = False
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps")]
Seed = Annotated[int, typer.Option(help="random seed")]
Resume = Annotated[bool, typer.Option(help="continue the run in --out from its checkpoint")]
CkptEvery = Annotated[int, typer.Option(help="checkpoint every N steps")]
# The optimizer's own settings, declared in every train command (each passes them to Trainer, none is hidden there):
#     grad_clip: training.GradClip = 1.0   weight_decay: training.WeightDecay = 0.0   beta1: training.Beta1 = 0.9 ...
GradClip = Annotated[float, typer.Option(help="clip the gradient norm to this before each step (0 = off)")]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay (decoupled, Loshchilov & Hutter 2019)")]
Beta1 = Annotated[float, typer.Option(help="AdamW beta1 (momentum of the gradient average)")]
Beta2 = Annotated[float, typer.Option(help="AdamW beta2 (momentum of the squared-gradient average)")]


class App(typer.Typer):
    """typer.Typer whose failures print one line (`error: ...`) and exit 2 for bad input, 1 for a failed run."""

    def __init__(self, **kwargs):
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def __call__(self, *args, **kwargs):
        prog = Path(sys.argv[0]).name
        try:
            return super().__call__(*args, standalone_mode=False, **kwargs)
        except cx.UsageError as e:  # unknown option, bad type, value out of range
            if type(e).__name__ == "NoArgsIsHelpError":  # typer has already printed the help
                sys.exit(0)
            _exit(f"{prog}: error: {e.format_message()}", 2)
        except (KeyboardInterrupt, getattr(cx, "Abort", KeyboardInterrupt)):
            _exit(f"{prog}: interrupted", 130)
        except getattr(cx, "Exit", SystemExit) as e:
            sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
        except (UserError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            _exit(f"{prog}: error: {e}", 2)
        except ValueError as e:  # data.DataError and other input problems
            if type(e).__name__ == "DataError":
                _exit(f"{prog}: error: {e}", 2)
            raise
        except TrainingFailed as e:
            _exit(f"{prog}: error: {e}", 1)


def _exit(message: str, code: int) -> None:
    print(message.replace("\n", " "), file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------------------------------- device
def device(name: str = "auto") -> torch.device:
    """auto -> cuda > mps > cpu; under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name not in ("cpu", "cuda", "mps"):
        fail(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if name == "cuda":
        check(torch.cuda.is_available(), "--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps":
        check(torch.backends.mps.is_available(), "--device mps asked for, but MPS is not available; use --device cpu")
    return torch.device(name)


def autocast(dev: torch.device):
    """bf16 autocast on CUDA only; full float32 elsewhere (CPU bf16 is slow and MPS support varies)."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CPU and every CUDA device


def dist_info() -> tuple[int, int]:
    """(rank, world_size), initializing the process group under torchrun (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("GENMODELS_BACKEND") != "gloo" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def unwrap(m: torch.nn.Module) -> torch.nn.Module:
    m = m.module if isinstance(m, DistributedDataParallel) else m
    return getattr(m, "_orig_mod", m)  # torch.compile wrapper


# ----------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """Atomic write: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model: str | None = None) -> dict:
    """Load with weights_only=True (tensors and plain containers only). Every failure is a one-line UserError."""
    path = Path(path)
    check(path.is_file(), f"checkpoint {path} not found; train one first (python {model or '<model>'}.py train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, truncated file, or a pickle that asks to run code
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: not a valid weights-only checkpoint ({first[:160]})") from None
    check(isinstance(ckpt, dict) and "config" in ckpt and "models" in ckpt,
          f"{path} is not a checkpoint written by this project")
    if model is not None:
        check(ckpt.get("model_name") == model,
              f"{path} holds a {ckpt.get('model_name')!r} model, not {model!r}")
    return ckpt


def ema_state(ckpt: dict, name: str = "model") -> dict:
    """The weights to sample with: EMA when the run kept one, else the raw weights."""
    return ckpt.get("ema") or ckpt["models"][name]


# ----------------------------------------------------------------------------------------------------- data order
class Batches:
    """Epochs of random permutations from a seeded generator; (epoch, pos) is the whole state, so resume is exact.
    Under DDP each rank takes its own slice of every global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.b, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._perm = None

    def perm(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=g)
        return self._perm

    def next(self) -> torch.Tensor:
        span = self.b * self.world
        if self.pos + span > self.n:  # drop the ragged end of an epoch
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        idx = self.perm()[self.pos + self.rank * self.b: self.pos + (self.rank + 1) * self.b]
        self.pos += span
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos, self._perm = s["epoch"], s["pos"], None


# ----------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs the loop around a model's loss. `models` maps names to modules; each gets an AdamW optimizer
    (lr and betas per name or shared). `ema` names the module whose EMA is kept for sampling. The optimizer settings
    (betas, weight_decay, grad_clip) have no defaults here: each train command declares them as options."""

    def __init__(self, name: str, config: dict, models: dict[str, torch.nn.Module], ds, *, steps: int,
                 batch_size: int, lr: float | dict[str, float], out: str | Path, device: str = "auto",
                 seed: int = 0, resume: bool = False, ema: str | None = "model", ema_decay: float = 0.999,
                 warmup: int = 0, betas: tuple[float, float] | dict, weight_decay: float,
                 grad_clip: float | None, ckpt_every: int = 500, compile: bool = False,
                 extra: dict[str, Any] | None = None, log_every: int = 10):
        check(steps > 0, f"--steps must be positive, got {steps}")
        check(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
        for v in (lr.values() if isinstance(lr, dict) else [lr]):
            check(v > 0, f"--lr must be positive, got {v}")
        check(0 <= ema_decay < 1, f"--ema-decay must be in [0, 1), got {ema_decay}")
        for b in (b for pair in (betas.values() if isinstance(betas, dict) else [betas]) for b in pair):
            check(0 <= b < 1, f"--beta1 and --beta2 must be in [0, 1), got {b}")
        check(weight_decay >= 0, f"--weight-decay must be >= 0, got {weight_decay}")
        check(grad_clip is None or grad_clip >= 0, f"--grad-clip must be >= 0 (0 = off), got {grad_clip}")
        self.name, self.config, self.ds = name, dict(config), ds
        self.steps, self.batch_size, self.warmup, self.grad_clip = steps, batch_size, warmup, grad_clip
        self.ckpt_every, self.log_every = ckpt_every, log_every
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self.dev = globals()["device"](device)
        self.out = Path(out)
        self.ckpt_path = self.out / "ckpt.pt"
        seed_everything(seed + self.rank)  # each rank draws its own noise; rank 0 matches a single-process run

        self.raw = {k: m.to(self.dev) for k, m in models.items()}
        self.opts = {k: torch.optim.AdamW(m.parameters(), lr=lr[k] if isinstance(lr, dict) else lr,
                                          betas=betas[k] if isinstance(betas, dict) else betas,
                                          weight_decay=weight_decay, foreach=True)  # foreach: also on CPU
                     for k, m in self.raw.items()
                     if any(p.requires_grad for p in m.parameters())}
        for opt in self.opts.values():
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
        self.ema = None
        if ema is not None:
            decay = ema_decay

            def ema_avg(avg: list, cur: list) -> None:  # EMA with warm-up: decay_n = min(decay, (1 + n) / (10 + n))
                # all tensors of one dtype at once (foreach); n is the host-side count, so no step waits for the device
                k = self.ema_n
                d = min(decay, (1 + k) / (10 + k))
                if avg[0].is_floating_point():
                    torch._foreach_lerp_(avg, cur, 1 - d)  # avg + (1 - d) (cur - avg) = d avg + (1 - d) cur
                else:  # integer buffers (BatchNorm's batch count) are copied
                    torch._foreach_copy_(avg, cur)

            self.ema_n = 0  # updates so far, = self.ema.n_averaged, kept on the host
            self.ema = AveragedModel(self.raw[ema], use_buffers=True)  # the container (weights, n_averaged)
            self._ema_avg, self._ema_groups = ema_avg, None
        self.ema_name = ema
        self.models = {}
        for k, m in self.raw.items():
            if self.world > 1 and k in self.opts:
                m = DistributedDataParallel(m, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
            if compile:
                m = torch.compile(m)
            self.models[k] = m
        self.batches = Batches(len(ds), batch_size, seed, self.rank, self.world)
        self.x = ds.x.to(self.dev)
        self.y = ds.y.to(self.dev) if ds.y is not None else None
        self.extra = extra if extra is not None else {}
        self.start = 0
        self.step_num = 0
        self._metrics: dict[str, float | torch.Tensor] = {}
        self._unchecked: list[tuple[int, str, torch.Tensor]] = []  # (step, part, loss) not yet checked for NaN/inf
        self._last_good = None
        if resume:
            self._resume()
        elif self.is_main and self.out.exists() and self.ckpt_path.exists():
            print(f"note: starting a new run over {self.ckpt_path} (pass --resume to continue it)", file=sys.stderr)

    # -- checkpointing
    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"version": CKPT_VERSION, "model_name": self.name, "config": self.config, "step": self.step_num,
                "models": {k: unwrap(m).state_dict() for k, m in self.raw.items()},
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "ema_n": int(self.ema.n_averaged) if self.ema is not None else 0,
                "opts": {k: o.state_dict() for k, o in self.opts.items()},
                "batches": self.batches.state_dict(), "rng": rng,
                "extra": {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in self.extra.items()}}

    def save(self) -> Path | None:
        self._check_losses()  # never write weights that a non-finite loss has touched
        if self.is_main:
            save_checkpoint(self.state(), self.ckpt_path)
        return self.ckpt_path

    def _resume(self) -> None:
        check(self.ckpt_path.exists(), f"--resume given, but there is no checkpoint at {self.ckpt_path}")
        ck = load_checkpoint(self.ckpt_path, self.name)
        keys = [k for k in self.config if k not in ("steps", "resume", "device", "compile", "out")]
        diff = [k for k in keys if k in ck["config"] and ck["config"][k] != self.config[k]]
        check(not diff, f"--resume with settings that differ from the checkpoint's: {', '.join(diff)}")
        check(ck["step"] < self.steps, f"the checkpoint is already at step {ck['step']}; pass a larger --steps")
        for k, m in self.raw.items():
            unwrap(m).load_state_dict(ck["models"][k])
        if self.ema is not None:
            self.ema.module.load_state_dict(ck["ema"])
            self.ema.n_averaged.fill_(ck["ema_n"])
            self.ema_n = int(ck["ema_n"])
        for k, o in self.opts.items():
            o.load_state_dict(ck["opts"][k])
        self.batches.load_state_dict(ck["batches"])
        torch.set_rng_state(ck["rng"]["torch"])
        if "cuda" in ck["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        for k, v in ck["extra"].items():
            if k in self.extra and hasattr(self.extra[k], "load_state_dict"):
                self.extra[k].load_state_dict(v)
            else:
                self.extra[k] = v.to(self.dev) if torch.is_tensor(v) else v
        self.start = self.step_num = ck["step"]
        if self.is_main:
            print(f"resumed from {self.ckpt_path} at step {self.start}", file=sys.stderr)

    # -- the loop
    def autocast(self):
        return autocast(self.dev)

    def __iter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.out.mkdir(parents=True, exist_ok=True)
        if self.is_main and self.start == 0:
            (self.out / "config.json").write_text(json.dumps(self.config, indent=1, default=str))
        log = open(self.out / "metrics.jsonl", "a") if self.is_main else None
        progress = Progress(TextColumn(f"[bold]{self.name}[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), disable=not self.is_main or bool(os.environ.get("GENMODELS_QUIET")),
                            transient=False)
        task = progress.add_task("train", total=self.steps, completed=self.start, info="")
        self.t0 = time.time()
        shown, info = time.monotonic(), ""  # the bar is redrawn 4 times a second, not at every step (a toy step: ~1 ms)
        # Ctrl-C usually lands in the caller's loop body (forward/backward), not in this generator: the handler only
        # raises a flag, and the loop stops at the next step boundary with a checkpoint. A second Ctrl-C aborts.
        interrupted = []

        def on_sigint(signum, frame):
            if interrupted:
                raise KeyboardInterrupt
            interrupted.append(signum)

        previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() \
            else None
        try:
            with progress:
                for s in range(self.start, self.steps):
                    self.step_num = s
                    self._metrics = {}
                    idx = self.batches.next().to(self.dev)
                    yield s, (self.x[idx], None if self.y is None else self.y[idx])
                    self.step_num = s + 1
                    if self.ema is not None:
                        self._ema_update()
                        self.ema_n += 1
                    if s % self.log_every == 0 or s + 1 == self.steps:  # the only host-device syncs of a step
                        self._check_losses()
                        m = {k: float(v) for k, v in self._metrics.items()}
                        if log is not None:
                            rec = {"step": s + 1, **{k: round(v, 6) for k, v in m.items()},
                                   "sec": round(time.time() - self.t0, 3)}
                            log.write(json.dumps(rec) + "\n")
                            log.flush()
                        info = " ".join(f"{k} {v:.4g}" for k, v in list(m.items())[:3])
                    if time.monotonic() - shown > 0.25 or s + 1 == self.steps or interrupted:
                        progress.update(task, completed=s + 1, info=info)
                        shown = time.monotonic()
                    if interrupted:
                        break
                    if (s + 1) % self.ckpt_every == 0 and s + 1 < self.steps:
                        self.save()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if log is not None:
                log.close()
        if interrupted:
            self.save()
            if self.is_main:
                print(f"interrupted at step {self.step_num}; checkpoint saved to {self.ckpt_path} "
                      f"(continue with --resume)", file=sys.stderr)
            sys.exit(130)
        self.seconds = time.time() - self.t0

    def _ema_update(self) -> None:
        """AveragedModel.update_parameters(model, use_buffers=True) without its per-step costs: the (EMA, model)
        tensor lists are gathered once, grouped by dtype, and nothing reads a device value (its n_averaged == 0
        test is the host count here). The first update copies the weights, later ones call ema_avg."""
        if self._ema_groups is None:
            groups: dict[torch.dtype, tuple[list, list]] = {}
            ema, model = self.ema.module, self.raw[self.ema_name]
            for a, c in zip(itertools.chain(ema.parameters(), ema.buffers()),
                            itertools.chain(model.parameters(), model.buffers()), strict=True):
                pair = groups.setdefault(a.dtype, ([], []))
                pair[0].append(a.detach())
                pair[1].append(c.detach())
            self._ema_groups = list(groups.values())
        for avg, cur in self._ema_groups:
            if self.ema_n == 0:
                torch._foreach_copy_(avg, cur)
            else:
                self._ema_avg(avg, cur)
        self.ema.n_averaged += 1  # kept for the checkpoint; a device-side add, no sync

    def lr_at(self, step: int) -> float:
        """Linear warm-up over `warmup` steps, then constant (a constant tail keeps resume-to-more-steps exact)."""
        return min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0

    def step(self, loss: torch.Tensor, part: str | None = None, **metrics: float) -> None:
        """backward, clip, optimizer step for one part (default: the only/first optimizer); logs loss and metrics.
        Nothing here waits for the device: the loss, gradient norm and metrics stay tensors until a logging step
        (every log_every steps) or a checkpoint, where one sync checks every loss since the last check; a
        non-finite one stops the run there, before anything is saved, so the last checkpoint on disk is good."""
        part = part or next(iter(self.opts))
        opt = self.opts[part]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if self.grad_clip:
            gn = torch.nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=True)
        else:
            gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) if params else torch.zeros(())
        scale = self.lr_at(self.step_num)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        opt.step()
        key = "loss" if len(self.opts) == 1 else f"loss_{part}"
        self._metrics[key] = loss.detach()
        self._metrics["grad_norm" if len(self.opts) == 1 else f"grad_norm_{part}"] = gn.detach()
        self._unchecked.append((self.step_num, part, loss.detach()))
        self.log(**metrics)

    def log(self, **metrics: float) -> None:
        self._metrics.update({k: v.detach() if torch.is_tensor(v) else float(v) for k, v in metrics.items()})

    def _check_losses(self) -> None:
        """One sync for every loss since the last check: the first non-finite one stops the run (exit code 1)."""
        if not self._unchecked:
            return
        values = torch.stack([v.float().reshape(()) for _, _, v in self._unchecked]).cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            step, part, _ = self._unchecked[int(bad[0])]
            where = f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.exists() else \
                "no checkpoint was written yet"
            raise TrainingFailed(f"{part} loss became {float(values[int(bad[0])])} at step {step}; stopping "
                                 f"({where}). Try a lower --lr.")
        self._unchecked = []

    def sampling_model(self) -> torch.nn.Module:
        m = self.ema.module if self.ema is not None else unwrap(self.raw[next(iter(self.raw))])
        return m.eval()

    def finish(self, sample_fn: Callable[[int], torch.Tensor] | None = None, n: int = 64,
               reference: torch.Tensor | None = None) -> Path:
        """Final checkpoint, then (rank 0) a PNG of samples from sample_fn(n). Returns the checkpoint path."""
        from data import save_samples

        self.save()
        if self.is_main and sample_fn is not None:
            with torch.no_grad():
                x = sample_fn(n)
            png = save_samples(x.cpu(), self.out / "samples.png", reference=reference)
            print(f"checkpoint: {self.ckpt_path}\nsamples:    {png}", file=sys.stderr)
        if dist.is_initialized():
            dist.barrier()
        return self.ckpt_path
