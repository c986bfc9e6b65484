"""Classifier-free guidance: the guided prediction's laws (endpoints, affine in s, one batched pass), label dropout
at rate p_uncond, no null label in the conditional half, clean errors, and smoke runs of train/sample/sweep."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cfg
import ddpm
import nets
from conftest import assert_one_line_error, run_cli


def toy_model(num_classes, kind="points", seed=0):
    """A randomly initialized class-conditional DDPM (float32: nets.Embed embeds t in float32; MLP for points [B, 2], small UNet for [B, 1, 8, 8])."""
    torch.manual_seed(seed)
    net = nets.MLP(2, 32, 2, num_classes) if kind == "points" else nets.UNet(1, 8, (1, 2), True, num_classes)
    return ddpm.DDPM(net, 50, "linear").eval()


def inputs(model, B, kind, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (B, 2) if kind == "points" else (B, 1, 8, 8)
    return torch.randn(shape, generator=g), torch.randint(0, model.T, (B,), generator=g)


class LabelRecorder:
    """Records every batch of label ids that reaches the network's label embedding."""

    def __init__(self, model):
        self.seen = []
        model.net.embed.label.register_forward_hook(lambda mod, args, out: self.seen.append(args[0].clone()))


# ------------------------------------------------------------------------------------------- the guided prediction
@settings(max_examples=12)
@given(st.sampled_from(["points", "images"]), st.integers(2, 12), st.integers(1, 6), st.integers(0, 10_000),
       st.floats(-3, 8), st.floats(-3, 8))
def test_endpoints_and_affine_in_s(kind, C, B, seed, s1, s2):
    """s = 0 -> eps(x, t, null); s = 1 -> eps(x, t, y); and g(s) = g(0) + s (g(1) - g(0)) for any s."""
    model = toy_model(C, kind, seed)
    x, t = inputs(model, B, kind, seed)
    y = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        eps_u = model.eps(x, t, torch.full((B,), C))  # separate passes: the batched pass must not mix examples
        eps_c = model.eps(x, t, y)
        g = {s: cfg.guided_eps(model, y, s)(x, t) for s in (0.0, 1.0, s1, s2)}
    torch.testing.assert_close(g[0.0], eps_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g[1.0], eps_c, rtol=1e-5, atol=1e-5)
    for s in (s1, s2):
        torch.testing.assert_close(g[s], g[0.0] + s * (g[1.0] - g[0.0]), rtol=1e-5, atol=1e-4)
        # Ho & Salimans eq. 6 in their convention: (1 + w) eps_c - w eps_u with w = s - 1
        torch.testing.assert_close(g[s], s * eps_c - (s - 1) * eps_u, rtol=1e-5, atol=1e-4)


@settings(max_examples=8)
@given(st.sampled_from(ddpm.SAMPLERS), st.integers(1, 6), st.integers(1, 8), st.integers(2, 9),
       st.floats(0, 6), st.booleans(), st.integers(0, 10_000))
def test_one_batched_pass_per_step_and_no_null_in_conditional_half(sampler, steps, B, C, s, scalar, seed):
    """ddpm.sample calls the guided eps_fn `steps` times; each call is ONE network pass on 2B examples whose first half
    carries exactly the requested labels (never the null id C) and whose second half is all null."""
    model = toy_model(C, "points", seed)
    rec = LabelRecorder(model)
    y = torch.tensor(seed % C) if scalar else torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(seed))
    x_T = torch.randn(B, 2)
    ddpm.sample(cfg.guided_eps(model, y, s), model.alpha_bar, x_T, sampler, steps)
    assert len(rec.seen) == steps
    for ids in rec.seen:
        assert ids.shape == (2 * B,)
        assert (ids[:B] != C).all() and (ids[:B] == y.expand(B)).all()
        assert (ids[B:] == C).all()


@given(st.integers(2, 10), st.one_of(st.integers(-50, -1), st.integers(0, 50)))
def test_labels_outside_the_classes_and_unlabelled_models_are_rejected(C, bad):
    model = toy_model(C)
    label = bad if bad < 0 else C + bad  # C itself is the null label: not a class either
    with pytest.raises(ValueError, match="labels must be"):
        cfg.guided_eps(model, label, 2.0)
    with pytest.raises(ValueError, match="labels must be"):
        cfg.guided_eps(model, torch.tensor([0, label]), 2.0)
    unconditional = ddpm.DDPM(nets.MLP(2, 16, 1), 20)  # a ddpm.py model: no label embedding
    with pytest.raises(ValueError, match="without labels"):
        cfg.guided_eps(unconditional, 0, 2.0)


# ------------------------------------------------------------------------------------------- label dropout
@given(st.floats(0.01, 0.99), st.integers(2, 30), st.integers(0, 10_000))
def test_label_dropout_rate_matches_p_uncond(p, C, seed):
    n = 4000
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    y_drop = cfg.drop_labels(y, C, p, generator=g)
    dropped = y_drop == C
    assert (y_drop[~dropped] == y[~dropped]).all()  # kept labels are untouched
    tol = 5 * math.sqrt(p * (1 - p) / n) + 1 / n  # 5 binomial standard deviations
    assert abs(dropped.float().mean().item() - p) <= tol


@settings(max_examples=5)
@given(st.integers(0, 10_000))
def test_training_loss_sees_the_null_label_at_rate_p_uncond(seed):
    """The path train() uses (cfg.loss -> DDPM.forward -> the network) drops labels at rate p_uncond = 0.1."""
    C, n = 5, 4000
    model = toy_model(C, "points", seed)
    rec = LabelRecorder(model)
    torch.manual_seed(seed)
    y = torch.randint(0, C, (n,))
    value = cfg.loss(model, torch.randn(n, 2), y, C)
    assert math.isfinite(value.item())
    ids = torch.cat(rec.seen)
    rate = (ids == C).float().mean().item()
    assert abs(rate - cfg.P_UNCOND) <= 5 * math.sqrt(0.1 * 0.9 / n)
    assert (ids[ids != C] == y[ids != C]).all()


# ------------------------------------------------------------------------------------------- the stable surface
def shaped(model, kind):
    model.shape = (2,) if kind == "points" else (1, 8, 8)  # as `load` returns it
    return model


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("kind", ["points", "images"])
def test_generate_draws_labels_then_x_T_per_batch(kind):
    """y None: per batch the labels y ~ U{0..C-1}, then x_T ~ N(0, I), from one generator running through, guided
    through ddpm.sample and returned in data space (float32, CPU); this order is what bench's numbers rest on."""
    model = shaped(toy_model(5, kind), kind)
    if kind == "points":
        model.shift, model.scale = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])  # data space != model's
        model.box = 0.5  # the train set's box (ddpm.x0_box): small, so that the clamp acts
    x = cfg.generate(model, 5, generator=torch.Generator().manual_seed(3), guidance=2.5, steps=4, batch_size=3)
    assert x.shape == (5, *model.shape) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    g = torch.Generator().manual_seed(3)
    ref = []
    for b in (3, 2):
        y = torch.randint(5, (b,), generator=g)
        x_T = torch.randn(b, *model.shape, generator=g)
        x_0 = ddpm.sample(cfg.guided_eps(model, y, 2.5), model.alpha_bar64, x_T, "dpm++2m", 4,
                          x0_clip=1.0 if kind == "images" else 0.5)
        ref.append(x_0 * model.scale + model.shift)
    assert torch.equal(x, torch.cat(ref))
    again = cfg.generate(model, 5, generator=torch.Generator().manual_seed(3), guidance=2.5, steps=4, batch_size=3)
    assert torch.equal(x, again)


@pytest.mark.usefixtures("single_thread")
def test_generate_with_labels_and_refusals():
    model = shaped(toy_model(4), "points")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = torch.tensor([0, 3, 3, 1])
    x = cfg.generate(model, 4, generator=g(), y=y, guidance=3.0, method="ddim", steps=5, eta=1.0)
    x_T = torch.randn(4, 2, generator=(h := g()))
    assert torch.equal(x, ddpm.sample(cfg.guided_eps(model, y, 3.0), model.alpha_bar64, x_T, "ddim", 5, 1.0, h))
    one = cfg.generate(model, 4, generator=g(), y=2, steps=3)  # one label for every sample
    assert torch.equal(one, cfg.generate(model, 4, generator=g(), y=torch.full((4,), 2), steps=3))
    with pytest.raises(ValueError, match="labels"):
        cfg.generate(model, 4, y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="0..3"):
        cfg.generate(model, 2, y=torch.tensor([0, 4]))
    unlabelled = shaped(ddpm.DDPM(nets.MLP(2, 16, 1), 50), "points")
    with pytest.raises(ValueError, match="without labels"):
        cfg.generate(unlabelled, 2)


@pytest.mark.usefixtures("single_thread")
def test_bench_schema():
    """BENCH is data in the schema bench.py reads; every setting (main and guidance suites) runs through generate on
    tiny random models, no likelihood, and the network resolves."""
    import inspect

    B = cfg.BENCH
    assert set(B) == {"claim", "kinds", "options", "quick", "settings", "quick_settings", "likelihood",
                      "quick_likelihood", "network", "batch", "guidance", "quick_guidance", "conditional"}
    assert B["claim"] == "guidance trades diversity for quality" and set(B["kinds"]) == {"points", "images"}
    assert isinstance(B["batch"], int) and B["batch"] > 0
    assert B["likelihood"] is None and B["quick_likelihood"] is None and not hasattr(cfg, "likelihood")
    assert "sampler" not in inspect.signature(cfg.generate).parameters  # the label key; the algorithm is "method"
    for kind in B["kinds"]:
        model = shaped(toy_model(3, kind), kind)
        for opts in (B["options"][kind], B["quick"][kind]):
            inspect.signature(cfg.train).bind(**opts)
        for s in B["settings"][kind] + B["quick_settings"][kind] + B["guidance"] + B["quick_guidance"]:
            assert isinstance(s["sampler"], str) and s["sampler"] and s["sampler"].endswith(f"s={s['guidance']:g}")
            kw = {k: v for k, v in s.items() if k != "sampler"}
            inspect.signature(cfg.generate).bind(model, 2, **kw)
            if kind == "images":
                kw["steps"] = 2  # (time) the UNet runs the settings as given, on fewer steps
            x = cfg.generate(model, 2, generator=torch.Generator().manual_seed(0), **kw)
            assert x.shape == (2, *model.shape) and torch.isfinite(x).all()
        assert isinstance(getattr(model, B["network"]), torch.nn.Module)
    assert [s["guidance"] for s in B["guidance"]] == [0, 1, 2, 3, 5]
    assert [s["guidance"] for s in B["quick_guidance"]] == [0, 1, 3]


# ------------------------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def grid_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("cfg-grid25")
    return cfg.train(data="grid25", steps=20, hidden=32, depth=1, timesteps=50, batch_size=128, out=str(out),
                     device="cpu", **cfg.BENCH["options"]["points"])  # bench's toy recipe


def test_train_writes_a_labelled_checkpoint(grid_ckpt):
    model = cfg.load(grid_ckpt)
    assert model.num_classes == 25 and cfg.null_label(model) == 25  # grid25: the label is the mode index
    assert (grid_ckpt.parent / "samples.png").is_file()
    assert model.config["p_uncond"] == cfg.P_UNCOND
    import data
    assert model.box == pytest.approx(ddpm.points_box(data.load("grid25").x))  # the samplers' x_0 box, saved
    # the training noise levels are options of cfg.py too, saved and rebuilt: the toy recipe's lognormal P_mean -2.5
    assert (model.t_sampling, model.p_mean, model.prediction) == ("lognormal", -2.5, "v")


def test_sample_cli_one_label(grid_ckpt, tmp_path):
    out = tmp_path / "s.npz"
    proc = run_cli("cfg.py", "sample", "--ckpt", grid_ckpt, "--label", 7, "--guidance", 3, "--n", 30, "--steps", 4,
                   "--sampler", "ddim", "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as f:
        assert f["x"].shape == (30, 2) and np.isfinite(f["x"]).all()
        assert (f["y"] == 7).all()


def test_sample_every_class_and_sweep(grid_ckpt, tmp_path):
    x = cfg.sample_cmd(ckpt=str(grid_ckpt), label=-1, n=53, steps=3, out=str(tmp_path / "all.png"), device="cpu")
    assert x.shape == (50, 2) and (tmp_path / "all.png").is_file()  # 53 // 25 = 2 per class
    rows = cfg.sweep(ckpt=str(grid_ckpt), scales="0,1,2.5", n=50, steps=3, out=str(tmp_path), device="cpu")
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["s"] for r in saved["rows"]] == [0, 1, 2.5] == [r["s"] for r in rows]
    for r in rows:
        assert r["w"] == r["s"] - 1 and r["fid"] >= 0
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0 <= r["accuracy"] <= 1
    assert "| 2.5 |" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 1000


@pytest.mark.filterwarnings("ignore:.*covariance is singular")  # 20 samples for 128-d features: a smoke run
def test_mnist5k_train_sample_sweep(tmp_path):
    ckpt = cfg.train(steps=3, ch=8, ch_mult="1", attn=False, timesteps=50, batch_size=16, out=str(tmp_path),
                     device="cpu")
    x = cfg.sample_cmd(ckpt=str(ckpt), label=4, n=6, steps=2, out=str(tmp_path / "four.npz"), device="cpu")
    assert x.shape == (6, 1, 28, 28) and torch.isfinite(x).all()
    rows = cfg.sweep(ckpt=str(ckpt), scales="0,3", n=20, steps=2, out=str(tmp_path), device="cpu")
    assert [r["s"] for r in rows] == [0, 3] and all(0 <= r["accuracy"] <= 1 and r["is"] >= 1 for r in rows)


def test_label_outside_the_classes_fails_cleanly(grid_ckpt):
    assert_one_line_error(run_cli("cfg.py", "sample", "--ckpt", grid_ckpt, "--label", 25, "--n", 4))


def test_guidance_on_a_model_without_labels_fails_cleanly(tmp_path):
    ckpt = ddpm.train(data="grid25", steps=2, hidden=16, depth=1, timesteps=20, out=str(tmp_path), device="cpu")
    proc = run_cli("cfg.py", "sample", "--ckpt", ckpt, "--guidance", 2, "--n", 4)
    assert_one_line_error(proc)
    assert "without labels" in proc.stderr
    proc = run_cli("cfg.py", "train", "--data", "checkerboard", "--steps", 2, "--out", tmp_path / "c")
    assert_one_line_error(proc)
    assert "no labels" in proc.stderr
