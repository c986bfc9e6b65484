"""The contract every model file keeps (one test shape for all, as cleanrl does): on a toy set with a tiny budget,
(a) the same seed gives bit-identical weights, (b) N steps at once equal N/2 steps plus --resume to N, bit for bit,
(c) load + the sample command give finite samples of the data's shape, (d) bad input is one line and exit code 2.

A new model file joins by adding one line to TINY."""
import importlib
import inspect
import json
import subprocess

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

# model file -> train options for a run of a few milliseconds a step on a 2-D toy
TINY = {
    "vae": dict(data="moons", hidden=8, latent_dim=1, kl_warmup=2, batch_size=16),
    "gan": dict(data="ring8", width=8, depth=1, z_dim=4, batch_size=16, eval_every=0),
    "flow": dict(data="moons", hidden=8, blocks=1, batch_size=16, warmup=2),
    "ebm": dict(data="moons", hidden=8, langevin_steps=2, buffer_size=32, sample_steps=2, batch_size=16),
    "score": dict(data="moons", hidden=8, levels=3, steps_per_level=2, batch_size=16),
    "ddpm": dict(data="moons", hidden=16, depth=1, batch_size=16, warmup=2),
    "cfg": dict(data="moons", hidden=16, depth=1, batch_size=16, warmup=2),
    "fm": dict(data="moons", hidden=16, depth=1, batch_size=16, warmup=2, coupling="ot"),
    "consistency": dict(data="moons", hidden=16, depth=1, batch_size=16, warmup=2, ct_double_every=2),
    "ldm": dict(data="moons", ae_steps=3, ae_hidden=8, hidden=16, depth=1, batch_size=16, warmup=2),
}
STEPS = 6


def state(ckpt_path) -> dict[str, torch.Tensor]:
    """Every tensor a run learns: the weights, the EMA weights, the optimizer moments and tensors in `extra`."""
    ck = torch.load(ckpt_path, weights_only=True)
    flat = {}

    def walk(prefix, obj):
        if torch.is_tensor(obj):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}/{i}", v)

    for key in ("models", "ema", "opts", "extra"):
        walk(key, ck.get(key))
    assert any(k.startswith("models/") for k in flat)
    return flat


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(params=sorted(TINY))
def model(request, monkeypatch):
    monkeypatch.setenv("GENMODELS_QUIET", "1")
    return request.param


def test_same_seed_same_model_and_resume_is_exact(model, tmp_path):
    mod, kw = importlib.import_module(model), dict(TINY[model], device="cpu", seed=3)
    torch.manual_seed(123)  # whatever the global RNG holds before, the run must not depend on it
    a = mod.train(steps=STEPS, out=str(tmp_path / "a"), **kw)
    torch.manual_seed(456)
    b = mod.train(steps=STEPS, out=str(tmp_path / "b"), **kw)
    assert_identical(state(a), state(b))  # (a)
    mod.train(steps=STEPS // 2, out=str(tmp_path / "c"), **kw)
    c = mod.train(steps=STEPS, out=str(tmp_path / "c"), resume=True, **kw)
    assert_identical(state(a), state(c))  # (b)
    other = mod.train(steps=STEPS, out=str(tmp_path / "d"), **{**kw, "seed": 4})
    assert any(not torch.equal(v, state(other)[k]) for k, v in state(a).items() if k.startswith("models/"))

    # (c) load() rebuilds the model; the sample command writes finite samples of the data's shape
    assert isinstance(mod.load(a), torch.nn.Module)
    proc = run_cli(f"{model}.py", "sample", "--ckpt", a, "--n", 8, "--out", tmp_path / "s.npz", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (8, 2) and np.isfinite(x).all()
    check_surface(mod, a)


def check_surface(mod, ckpt) -> None:
    """The surface bench relies on: generate (data space, reproducible), likelihood where the family has one, and
    the BENCH dict: its train options bind to train, its sampler settings run through generate (points; on images
    they must bind), its likelihood settings bind to likelihood, and its network is what the loaded model calls."""
    model = mod.load(ckpt)
    x1 = mod.generate(model, 5, generator=torch.Generator().manual_seed(1))
    x2 = mod.generate(model, 5, generator=torch.Generator().manual_seed(1))
    assert x1.shape == (5, 2) and torch.isfinite(x1).all() and torch.equal(x1, x2)
    B = mod.BENCH
    assert {"claim", "kinds", "options", "quick", "settings", "network", "batch"} <= B.keys()
    assert isinstance(B["claim"], str) and B["claim"] and set(B["kinds"]) <= {"points", "images"}
    assert isinstance(B["batch"], int) and B["batch"] > 0
    likelihood = getattr(mod, "likelihood", None)
    assert likelihood is not None or not (B.get("likelihood") or B.get("quick_likelihood"))
    for kind in B["kinds"]:
        for opts in (B["options"][kind], B["quick"][kind]):
            inspect.signature(mod.train).bind(**opts)
        if B.get("conditional"):  # bench's conditional suite: its train switch binds, its settings bind to generate
            inspect.signature(mod.train).bind(**B["options"][kind], **B.get("conditional_options", {}))
        for variant in (B.get("variants") or {}).values():  # the mnist suite's other backbones: their options bind
            if kind in variant:
                inspect.signature(mod.train).bind(**B["options"][kind], **variant[kind])
        extra = (B.get("defaults") or {}).get(kind) or {}  # setting suites' --defaults: "@name" = that family's ckpt
        inspect.signature(mod.train).bind(**{k: ("c.pt" if str(v).startswith("@") else v) for k, v in extra.items()})
        if B.get("curve_sampler") and kind == "points":  # the learning curve's setting is one of the settings
            assert B["curve_sampler"] in [s["sampler"] for s in B["settings"][kind]]
        for spec in (B.get("classifier"), B.get("quick_classifier")):
            if spec is not None:  # the generative classifier: the file's classify command
                inspect.signature(mod.classify).bind(ckpt="c.pt", device="cpu", seed=0, **spec)
        for key in ("settings", "quick_settings", "samplers", "guidance", "quick_guidance", "conditional"):
            chosen = B.get(key) or []
            for s in (chosen.get(kind, []) if isinstance(chosen, dict) else chosen):
                kw = {k: v for k, v in s.items() if k != "sampler"}  # "sampler" is the row's label
                assert isinstance(s["sampler"], str) and s["sampler"]
                inspect.signature(mod.generate).bind(model, 3, **kw)
                if kind == "points" and key in ("settings", "quick_settings"):
                    x = mod.generate(model, 3, generator=torch.Generator().manual_seed(0), **kw)
                    assert x.shape == (3, 2) and torch.isfinite(x).all()
        for spec in ((B.get("likelihood") or {}).get(kind), (B.get("quick_likelihood") or {}).get(kind)):
            if spec is not None:
                assert isinstance(spec["n"], int) and spec["n"] > 0  # test examples bench passes
                inspect.signature(likelihood).bind(model, None, **{k: v for k, v in spec.items() if k != "n"})
    target = getattr(model, B["network"]) if B["network"] else model
    assert isinstance(target, torch.nn.Module) or inspect.ismethod(target)
    if likelihood is not None:
        import data

        spec = (B.get("quick_likelihood") or B.get("likelihood") or {}).get("points") or {}
        r = likelihood(model, data.load(model_data(ckpt), "test").x[:50], **{k: v for k, v in spec.items() if k != "n"})
        assert r["kind"] in ("exact", "bound", "grid") and np.isfinite(r["nll_nats"])
        per = r["per_example"]  # bench's anomaly score: one value per example, whose mean is the reported NLL
        assert per.shape == (50,) and abs(float(per.double().mean()) - r["nll_nats"]) < 1e-4 * max(1, abs(r["nll_nats"]))
    for kind, spec in (B.get("anomaly") or {}).items():  # a function of the file and its settings
        spec = dict(spec)
        inspect.signature(getattr(mod, spec.pop("function"))).bind(model, None, **spec)


def model_data(ckpt) -> str:
    return torch.load(ckpt, weights_only=True)["config"]["data"]


# One interpreter runs a file's CLI on several command lines (as `python FILE.py ARGS` would, through its App), so
# that the bad-input checks cost one start of torch per file instead of one per command line.
DRIVER = """
import contextlib, io, json, sys, traceback
import importlib
mod = importlib.import_module(sys.argv[1])
results = []
for args in json.loads(sys.argv[2]):
    sys.argv = [sys.argv[0].replace("-c", mod.__name__ + ".py")] + args
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            mod.app()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_bad_input_is_one_line_and_exit_2(model, tmp_path):
    # (d) a negative step count, an unknown dataset, a missing checkpoint, a corrupt checkpoint
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    cases = [["train", "--data", "moons", "--steps", "-1", "--device", "cpu", "--out", str(tmp_path / "neg")],
             ["train", "--data", "no-such-set", "--device", "cpu", "--out", str(tmp_path / "unknown")],
             ["sample", "--ckpt", str(tmp_path / "missing.pt"), "--device", "cpu"],
             ["sample", "--ckpt", str(tmp_path / "bad.pt"), "--device", "cpu"]]
    proc = run_cli("-c", DRIVER, model, json.dumps(cases))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for args, (code, stderr) in zip(cases, json.loads(proc.stdout.splitlines()[-1])):
        assert_one_line_error(subprocess.CompletedProcess(args, code, "", stderr))
