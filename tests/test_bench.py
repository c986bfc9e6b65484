"""bench.py: the quick toy suite end to end (fields and sane values of every row, counted NFE, checkpoint reuse with
identical numbers), a missing / broken family reported instead of crashing, and bad input."""
import json
import math
import sys
import time
from pathlib import Path

import pytest

import bench
import bench_report
import data as datasets
from conftest import assert_one_line_error, run_cli

REQUIRED = ("model", "data", "sampler", "nfe", "ms_per_sample", "train_seconds", "status")
DETERMINISTIC = ("fid", "kid", "precision", "recall", "modes", "hq", "nll_nats", "nfe", "steps", "train_seconds")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Two runs of `python bench.py --quick --suite toy`: the first trains, the second must reuse everything."""
    tmp = tmp_path_factory.mktemp("bench")
    args = ["bench.py", "--quick", "--suite", "toy", "--out", tmp / "out", "--runs", tmp / "runs", "--threads", "1"]
    t0 = time.time()
    first = run_cli(*args, timeout=600)
    t1 = time.time()
    assert first.returncode == 0, first.stderr[-3000:]
    rows1 = json.loads((tmp / "out" / "results.json").read_text())
    second = run_cli(*args, timeout=600)
    t2 = time.time()
    assert second.returncode == 0, second.stderr[-3000:]
    rows2 = json.loads((tmp / "out" / "results.json").read_text())
    return dict(tmp=tmp, first=first, second=second, rows1=rows1, rows2=rows2, t_first=t1 - t0, t_second=t2 - t1)


def test_rows_have_documented_fields_and_sane_values(quick):
    rows = quick["rows1"]
    assert {(r["model"], r["data"]) for r in rows} >= {(m, d) for m in bench.MODELS for d in bench.TOYS}
    for r in rows:
        for k in REQUIRED:
            assert k in r, (k, r)
        assert r["status"] == "ok", r  # every family applies to the toys and must run (a failure is a bug)
        K = len(datasets.MODES[r["data"]][0])
        assert 0 <= r["modes"] <= K and 0 <= r["hq"] <= 1, r
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1, r
        assert r["fid"] >= 0 and math.isfinite(r["fid"]), r
        assert r["nfe"] >= 1 and r["ms_per_sample"] > 0 and r["train_seconds"] > 0, r
        assert r["steps"] >= 10 and r["seeds_ok"] == 1 and r["n_samples"] == 500, r
        assert r["train_seconds"] < 30 * r["budget_s"], r  # the chosen step count fits the (1 s) budget
        if r["model"] in ("flow", "vae", "ddpm", "ebm", "fm"):  # the families with a likelihood report it in nats
            assert math.isfinite(r["nll_nats"]), r
        else:
            assert r.get("nll_nats") is None, r


def test_nfe_is_counted_per_sample(quick):
    """NFE is counted through the network while sampling: it must match each sampler's definition."""
    ok = {(r["model"], r["data"], r["sampler"]): r["nfe"] for r in quick["rows1"] if r["status"] == "ok"}
    expected = {"vae": {"decoder": 1}, "gan": {"G(z)": 1}, "flow": {"f^-1(z)": 1}, "ebm": {"langevin-20": 20},
                "score": {"ald-20": 21}, "ddpm": {"ddpm-100": 100, "dpm++2m-20": 20},
                "cfg": {"dpm++2m-20 s=1": 40, "dpm++2m-20 s=3": 40},  # score: + 1 Tweedie step; cfg: doubled batch
                "fm": {"midpoint-10": 20, "euler-10": 10},  # fm: 2 calls per midpoint step
                "consistency": {"1-step": 1, "2-step": 2}}
    checked = 0
    for (model, data, sampler), nfe in ok.items():
        if sampler in expected.get(model, {}):
            assert nfe == expected[model][sampler], (model, data, sampler, nfe)
            checked += 1
    assert checked >= 4


def test_second_run_reuses_checkpoints_with_the_same_numbers(quick):
    assert "trained" in quick["first"].stderr
    assert " trained " not in quick["second"].stderr and "reused" in quick["second"].stderr
    assert quick["t_second"] < quick["t_first"]
    key = lambda r: (r["model"], r["data"], r["sampler"])  # noqa: E731
    second = {key(r): r for r in quick["rows2"]}
    for r in quick["rows1"]:
        s = second[key(r)]
        assert s["status"] == r["status"]
        for m in DETERMINISTIC:
            assert s.get(m) == r.get(m), (key(r), m, r.get(m), s.get(m))


def test_report_files(quick):
    out = quick["tmp"] / "out"
    md = (out / "results.md").read_text()
    assert "trade-off table, measured" in md and "grid25" in md and "ring8" in md
    assert "python bench.py --quick --suite toy" in md  # the command that produced it
    assert (out / "samples.png").stat().st_size > 1000
    assert "┃" in quick["first"].stdout  # the rich table
    (out / "results.md").unlink()  # --report rewrites it from results.json alone: the same text
    done = run_cli("bench.py", "--report", "--out", out, "--runs", quick["tmp"] / "runs")
    assert done.returncode == 0 and (out / "results.md").read_text() == md, done.stderr[-2000:]


SURFACE = ("BENCH = dict(kinds=('points',), options={'points': {}}, quick={'points': {}},\n"
           "             settings={'points': [dict(sampler='x')]})\n"
           "def load(path):\n    return None\n"
           "def generate(model, n, *, generator=None, y=None):\n    return None\n")


def _fake(tmp_path, monkeypatch, name, source):
    """A model file of bench's: written to tmp_path, importable, and named in bench.MODELS."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    if name not in bench.MODELS:
        monkeypatch.setattr(bench, "MODELS", bench.MODELS + (name,))


def test_missing_or_broken_family_is_reported_not_crashed(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "MODELS", bench.MODELS + ("genmodels_no_such_file",))
    _fake(tmp_path, monkeypatch, "genmodels_broken", "raise ImportError('half written')\n")
    _fake(tmp_path, monkeypatch, "genmodels_partial", "def train(**kw):\n    pass\n")  # no load, generate, BENCH
    _fake(tmp_path, monkeypatch, "genmodels_failing", SURFACE + "def train(**kw):\n    raise RuntimeError('diverged')\n")
    rows = bench.run("toy", quick=True, out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), seeds=1,
                     families="genmodels_no_such_file,genmodels_broken,genmodels_partial,genmodels_failing",
                     verbose=False)
    status = {(r["model"], r["data"]): r["status"] for r in rows}
    for d in bench.TOYS:
        missing = status[("genmodels_no_such_file", d)]
        assert missing.startswith("not available") and "ModuleNotFoundError" in missing
        assert status[("genmodels_broken", d)].startswith("not available") and "half written" in status[("genmodels_broken", d)]
        assert status[("genmodels_partial", d)] == "not available (genmodels_partial.py lacks load, generate, BENCH)"
        assert status[("genmodels_failing", d)].startswith("failed") and "diverged" in status[("genmodels_failing", d)]
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(written) == len(rows) == 8 and all(r["nfe"] is None for r in written)


@pytest.mark.parametrize("args", [["--suite", "nope"], ["--budget", "-1"], ["--families", "vae,nosuch"],
                                  ["--seeds", "x"], ["--report", "--out", "no/such/folder"]])
def test_bad_input_is_one_line(args, tmp_path):
    assert_one_line_error(run_cli("bench.py", *args, "--out", tmp_path / "o", "--runs", tmp_path / "r"))


def test_step_plan_is_remeasured_when_the_model_file_changes(tmp_path, monkeypatch):
    # a fake model file whose "training" logs 10 steps at `per_step` seconds each
    src = ("import json, pathlib\nper_step = {}\ndef train(out, steps, **kw):\n    p = pathlib.Path(out)\n"
           "    p.mkdir(parents=True, exist_ok=True)\n    with open(p / 'metrics.jsonl', 'w') as f:\n"
           "        for s in range(1, 11):\n            f.write(json.dumps({{'step': s, 'sec': s * per_step}}) + '\\n')\n")
    import importlib

    _fake(tmp_path, monkeypatch, "genmodels_timed", src.format(0.1))
    runs = bench.Runs(tmp_path / "runs", "cpu", quick=True)
    fam = bench.Family("genmodels_timed", importlib.import_module("genmodels_timed"))
    assert runs.steps_for(fam, "grid25", {}, 1.0)["steps"] == 10  # 1 s / 0.1 s per step
    fam.mod.per_step = 0.05  # the file is unchanged: the cached plan is used, not a new measurement
    assert runs.steps_for(fam, "grid25", {}, 1.0)["steps"] == 10
    (tmp_path / "genmodels_timed.py").write_text(src.format(0.05))  # the file changed: timed again
    sys.modules.pop("genmodels_timed")
    fam = bench.Family("genmodels_timed", importlib.import_module("genmodels_timed"))
    assert runs.steps_for(fam, "grid25", {}, 1.0)["steps"] == 20


def test_step_ceiling_grows_with_the_budget(tmp_path, monkeypatch):
    """A 1 ms step fills 300 s with 300,000 steps, capped at 200,000; 1,200 s is capped at 800,000, not 200,000
    (a fixed ceiling stopped the toy VAE at about 500 s of a 1,200 s budget)."""
    src = ("import json, pathlib\ndef train(out, steps, **kw):\n    p = pathlib.Path(out)\n"
           "    p.mkdir(parents=True, exist_ok=True)\n    with open(p / 'metrics.jsonl', 'w') as f:\n"
           "        for s in range(1, 11):\n            f.write(json.dumps({'step': s, 'sec': s * 0.001}) + '\\n')\n")
    import importlib

    _fake(tmp_path, monkeypatch, "genmodels_fast", src)
    fam = bench.Family("genmodels_fast", importlib.import_module("genmodels_fast"))
    runs = bench.Runs(tmp_path / "runs", "cpu", quick=True)
    assert runs.steps_for(fam, "grid25", {}, 300.0)["steps"] == 200_000
    assert runs.steps_for(fam, "grid25", {}, 1200.0)["steps"] == 800_000
    assert runs.steps_for(fam, "grid25", {}, 600.0)["steps"] == 400_000
    assert runs.steps_for(fam, "grid25", {}, 100.0)["steps"] == 100_000  # under the floor: the budget decides
    assert runs.refine(fam, "grid25", {}, 1200.0, 1000, 0.5)["steps"] == 800_000  # refined: 2.4M, still capped
    key = runs._plan_key(fam, "grid25", {}, 1500.0)  # a plan saved under the old fixed ceiling is measured again
    runs.plan[key] = {"steps": 200_000, "sec_per_step": 0.001, "first_steps": 20_000}
    assert runs.steps_for(fam, "grid25", {}, 1500.0)["steps"] == 1_000_000


@pytest.mark.usefixtures("single_thread")  # (not bench's --threads: it would leave the process at one thread)
def test_conditional_suite_quick(tmp_path):
    """`--suite conditional`: every family with "conditional" settings trains its conditional model and reports the
    requested-label accuracy, per class, the stratified FID and (vae, flow) the generative classifier's accuracy."""
    rows = bench.run("conditional", quick=True, out=str(tmp_path / "out"), runs=str(tmp_path / "runs"),
                     samplers_data="ring8", verbose=False)
    import importlib

    want = {m for m in bench.MODELS if importlib.import_module(m).BENCH.get("conditional")}
    assert want >= {"vae", "gan", "flow", "cfg", "fm", "ldm"} and {r["model"] for r in rows} == want
    for r in rows:
        assert r["status"] == "ok", r
        assert 0 <= r["accuracy"] <= 1 and len(r["accuracy_per_class"]) == 8 and len(r["fid_per_class"]) == 8, r
        assert r["fid_class_mean"] <= r["fid_class_worst"] + 1e-9, r
        assert abs(r["fid_class_worst"] - max(r["fid_per_class"])) < 1e-3, r  # (the list is rounded)
        assert (r["classifier_accuracy"] is not None) == (r["model"] in ("vae", "flow")), r
    nfe = {(r["model"], r["sampler"]): r["nfe"] for r in rows}
    assert nfe[("cfg", "dpm++2m-20 s=1")] == 40 and nfe[("fm", "midpoint-10 s=1")] == 20  # fm: no second pass at s = 1
    assert nfe[("fm", "midpoint-10 s=1.5")] == 40 and nfe[("vae", "decoder")] == 1 and nfe[("gan", "G(z)")] == 1
    assert "## conditional: ring8" in (tmp_path / "out" / "results.md").read_text()
    # `--suite guidance` asks for labels too: the families with "guidance" settings reuse these conditional models
    guided = bench.run("guidance", quick=True, out=str(tmp_path / "out"), runs=str(tmp_path / "runs"),
                       samplers_data="ring8", verbose=False)
    guided = [r for r in guided if r["suite"] == "guidance"]  # (run returns the merged results)
    assert {r["model"] for r in guided} == {m for m in bench.MODELS if importlib.import_module(m).BENCH.get("guidance")}
    assert {r["model"] for r in guided} >= {"cfg", "fm"}
    ckpts = {r["model"]: r["checkpoint"] for r in rows}
    for r in guided:
        assert r["status"] == "ok" and r["checkpoint"] == ckpts[r["model"]] and 0 <= r["accuracy"] <= 1, r
    nfe = {(r["model"], r["guidance"]): r["nfe"] for r in guided}
    assert nfe[("fm", 1.0)] == 10 and nfe[("fm", 0.0)] == nfe[("fm", 3.0)] == 20  # one pass at s = 1 only
    assert "| fm | 3 |" in (tmp_path / "out" / "results.md").read_text()


def test_per_class_accuracy_and_stratified_fid_by_hand():
    """bench.per_class on real ring8 test points: with their own labels every class is recognized; with the labels
    rotated none is; the per-class Frechet distance is fid.fid of class c's samples against class c's reference."""
    import fid
    import torch

    ref = bench.Reference("ring8", 400)
    test = datasets.load("ring8", "test")
    x, y = test.x[:800], test.y[:800]
    right = bench.per_class(x, y, ref, "ring8")
    assert right["accuracy_per_class"] == [1.0] * 8
    assert bench.per_class(x, (y + 1) % 8, ref, "ring8")["accuracy_per_class"] == [0.0] * 8
    wrong = bench.per_class(x, torch.where(y == 0, 1, y), ref, "ring8")  # class 0's points asked for as class 1
    n0, n1 = int((y == 0).sum()), int((y == 1).sum())
    assert wrong["accuracy_per_class"][1:] == [1.0] * 6 and abs(wrong["accuracy_per_class"][0] - n1 / (n0 + n1)) < 1e-4
    c = 3
    by_hand = fid.fid(ref.feats[(ref.y == c).numpy()], fid.features(x[y == c], "points"))
    assert math.isclose(right["fid_per_class"][c], by_hand, rel_tol=1e-3, abs_tol=1e-3)
    shifted = bench.per_class(x + torch.tensor([0.5, 0.0]) * (y == c)[:, None], y, ref, "ring8")  # move class 3 only
    assert shifted["fid_class_worst_label"] == c and shifted["fid_per_class"][c] > 0.2
    assert all(abs(a - b) < 1e-9 for k, (a, b) in enumerate(zip(shifted["fid_per_class"], right["fid_per_class"]))
               if k != c)


# ----------------------------------------------------------------------------------------------------- issue 21
from hypothesis import given, strategies as st  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import training  # noqa: E402


@given(st.lists(st.integers(0, 4), min_size=1, max_size=12), st.lists(st.integers(0, 4), min_size=1, max_size=12))
def test_auroc_is_the_pair_count_with_half_ties(a, b):
    """AUROC = P(score_out > score_in) + P(tie) / 2 over all pairs; swapping the sets gives 1 - AUROC."""
    pairs = [1.0 if y > x else 0.5 if y == x else 0.0 for x in a for y in b]
    assert math.isclose(bench.auroc(a, b), float(np.mean(pairs)), abs_tol=1e-12)
    assert math.isclose(bench.auroc(a, b) + bench.auroc(b, a), 1.0, abs_tol=1e-12)


def test_ood_sets_stay_on_the_8_bit_grid_and_keep_what_they_claim():
    x = datasets.load("mnist5k", "test").x[:8]
    sets = bench.ood_sets(x)
    assert set(sets) == set(bench.OOD)
    for t in sets.values():
        k = (t + 1) * 127.5
        assert t.shape == x.shape and t.min() >= -1 and t.max() <= 1 and torch.allclose(k, k.round(), atol=1e-3)
    flat, perm = x.flatten(1), sets["permuted"].flatten(1)
    assert torch.equal(perm.sort(1).values, flat.sort(1).values)  # each image's own pixels: the same histogram
    assert (perm != flat).any(1).all()  # ... in another order, each image its own:
    same = bench.ood_sets(x[:1].repeat(4, 1, 1, 1))["permuted"]
    assert all(not torch.equal(same[0], same[i]) for i in (1, 2, 3))
    assert torch.equal(sets["flipped"], x.flip(-1)) and torch.equal(sets["inverted"], -x)
    assert torch.equal(bench.ood_sets(x)["noise"], sets["noise"])  # seeded


def test_anomaly_row_by_hand():
    """With a score that sees only each image's histogram (the sum of its pixels, in a fixed order), the permuted
    and flipped digits tie with the digits (AUROC 0.5 exactly) and the inverted digits and the noise, much brighter
    than white-on-black digits, rank above every digit (AUROC 1)."""
    import types

    mod = types.SimpleNamespace(score=lambda model, x: {"per_example": x.flatten(1).sort(1).values.double().sum(1),
                                                        "kind": "pixel sum"})
    r = bench.anomaly_row(bench.Family("fake", mod), None, "mnist5k", {"function": "score"}, 50)
    assert r["auroc_permuted"] == 0.5 and r["auroc_flipped"] == 0.5
    assert r["auroc_inverted"] == 1.0 and r["auroc_noise"] == 1.0 and r["auroc_mean"] == 0.75
    assert r["score"] == "pixel sum (energy)" and r["n_samples"] == 50 and r["score_inverted"] > r["score_test"]


def test_plan_is_refined_from_the_first_snapshot(tmp_path, monkeypatch):
    """The probe's total is re-measured once, on the first snapshot: budget / (seconds / steps), bounded to [0.6, 3]
    x the probe's total; the first snapshot's steps are kept for the other seeds, and a second refinement is a no-op."""
    src = ("import json, pathlib\ndef train(out, steps, **kw):\n    p = pathlib.Path(out)\n"
           "    p.mkdir(parents=True, exist_ok=True)\n    with open(p / 'metrics.jsonl', 'w') as f:\n"
           "        for s in range(1, 11):\n            f.write(json.dumps({'step': s, 'sec': s * 0.1}) + '\\n')\n")
    import importlib

    _fake(tmp_path, monkeypatch, "genmodels_refined", src)
    fam = bench.Family("genmodels_refined", importlib.import_module("genmodels_refined"))
    for root, seconds, want in (("a", 1.4, 71), ("b", 0.1, 300), ("c", 50.0, 60)):  # 10 steps took `seconds`
        runs = bench.Runs(tmp_path / root, "cpu", quick=True)
        assert runs.steps_for(fam, "grid25", {}, 10.0)["steps"] == 100  # the probe: 0.1 s per step
        plan = runs.refine(fam, "grid25", {}, 10.0, 10, seconds)
        assert plan["steps"] == want and plan["first_steps"] == 10 and plan["probe_total"] == 100
        assert plan["sec_per_step"] == pytest.approx(seconds / 10)
        assert runs.refine(fam, "grid25", {}, 10.0, 20, 1.0)["steps"] == want  # refined once
        assert bench.Runs(tmp_path / root, "cpu", quick=True).steps_for(fam, "grid25", {}, 10.0) == plan  # saved


def test_probes_side_by_side_do_not_share_a_folder(tmp_path, monkeypatch):
    """Two bench processes (the mnist and the conditional suite) probe the same family at once: each plan must come
    from its own probe's step times (a shared probe folder, emptied by the other, once planned 99,000 steps), and a
    probe that logs nothing fails instead of guessing."""
    import importlib
    import threading

    src = ("import json, pathlib, shutil, time\ndef train(out, steps, rate=0.1, delay=0.0, log=True, **kw):\n"
           "    time.sleep(delay)\n    p = pathlib.Path(out)\n    p.mkdir(parents=True, exist_ok=True)\n"
           "    if log:\n        with open(p / 'metrics.jsonl', 'w') as f:\n"
           "            for s in range(1, 11):\n                f.write(json.dumps({'step': s, 'sec': s * rate}) + '\\n')\n"
           "    time.sleep(0.4 - delay)\n")
    _fake(tmp_path, monkeypatch, "genmodels_probed", src)
    fam = bench.Family("genmodels_probed", importlib.import_module("genmodels_probed"))
    runs = bench.Runs(tmp_path / "runs", "cpu", quick=True)
    plans = {}
    threads = [threading.Thread(target=lambda o: plans.update({o["rate"]: runs.steps_for(fam, "grid25", o, 1.0)}),
                                args=(o,)) for o in (dict(rate=0.1), dict(rate=0.05, delay=0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert plans[0.1]["steps"] == 10 and plans[0.05]["steps"] == 20
    with pytest.raises(RuntimeError, match="no step times"):
        runs.steps_for(fam, "grid25", dict(log=False), 1.0)


def test_sample_cache_is_kept_per_budget(tmp_path):
    """A run at another budget shares the runs root: it must not overwrite the samples that samples.png draws for the
    rows of results.json (a 180 s toy run once replaced the 60 s run's samples)."""
    runs = bench.Runs(tmp_path, "cpu", quick=True)
    short, long = torch.zeros(5, 2), torch.ones(5, 2)
    runs.cache_samples("grid25", "vae", 60.0, short)
    runs.cache_samples("grid25", "vae", 180.0, long)
    assert torch.equal(runs.cached_samples("grid25", "vae", 60.0), short)
    assert torch.equal(runs.cached_samples("grid25", "vae", 180.0), long)
    assert runs.cached_samples("grid25", "vae", 300.0) is None and runs.cached_samples("ring8", "vae", 60.0) is None


def test_loop_seconds_counts_every_segment_and_sub_run(tmp_path):
    (tmp_path / "ae").mkdir()
    lines = [{"step": 1, "sec": 1.0}, {"step": 11, "sec": 3.0}, {"step": 12, "sec": 0.5}, {"step": 20, "sec": 1.5}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")  # a run and its resume
    (tmp_path / "ae" / "metrics.jsonl").write_text(json.dumps({"step": 5, "sec": 4.0}) + "\n")  # ldm's stage 1
    assert bench._loop_seconds(tmp_path) == pytest.approx(3.0 + 1.5 + 4.0)


@pytest.mark.usefixtures("single_thread")
def test_curve_snapshot_chain_is_the_same_run(tmp_path):
    """A learning curve's snapshots are one run: Runs.checkpoint(prev=...) copies the snapshot before and resumes it,
    which gives the weights of a straight run of as many steps, and adds up the training seconds."""
    runs = bench.Runs(tmp_path, "cpu", quick=True)
    fam, _ = bench.import_family("ddpm")
    opts = fam.options("points", True)
    straight, _ = runs.checkpoint(fam, "ring8", opts, 40, 0)
    half, first = runs.checkpoint(fam, "ring8", opts, 20, 0, label="half")
    chained, info = runs.checkpoint(fam, "ring8", opts, 40, 0, prev=half, label="chain")
    a, b = training.load_checkpoint(straight), training.load_checkpoint(chained)
    assert a["step"] == b["step"] == 40 and training.load_checkpoint(half)["step"] == 20
    for k, v in a["models"]["model"].items():
        assert torch.equal(v, b["models"]["model"][k]), k
    assert info["train_seconds"] > first["train_seconds"] > 0 and info["steps"] == 40
    logged = [s for s, _ in bench._log_seconds(chained.parent)]  # resumed: steps 1-20 were not trained again
    assert logged == sorted(set(logged)) and logged[-1] == 40 and any(s <= 20 for s in logged)
    again, same = runs.checkpoint(fam, "ring8", opts, 40, 0, prev=half, label="chain")  # reused, same numbers
    assert same["reused"] and same["train_seconds"] == info["train_seconds"]


def _samplers_rows():
    base = dict(suite="samplers", data="mnist5k", status="ok", precision=0.5, recall=0.5, kid=0.0, confident=0.5)
    return [dict(base, model="ddpm", sampler="ddpm-1000", method="ddpm", sampler_steps=1000, nfe=1000, fid=10.0,
                 ms_per_sample=1000.0),
            dict(base, model="ddpm", sampler="ddim-50", method="ddim", eta=0.0, sampler_steps=50, nfe=50, fid=10.5,
                 ms_per_sample=50.0),
            dict(base, model="ddpm", sampler="ddim-20", method="ddim", eta=0.0, sampler_steps=20, nfe=20, fid=14.0,
                 ms_per_sample=20.0),
            dict(base, model="fm", sampler="euler-4", method="euler", sampler_steps=4, nfe=4, fid=12.0, ms_per_sample=4.0),
            dict(base, model="fm", sampler="euler-16", method="euler", sampler_steps=16, nfe=16, fid=11.5,
                 ms_per_sample=16.0),
            dict(base, model="consistency", sampler="1-step", sampler_steps=1, nfe=1, fid=14.0, ms_per_sample=1.0),
            dict(base, model="consistency", sampler="4-step", sampler_steps=4, nfe=4, fid=16.0, ms_per_sample=4.0),
            dict(base, model="ldm", sampler="ddim-50", method="ddim", eta=0.0, sampler_steps=50, nfe=50, fid=12.0,
                 ms_per_sample=2.5)]


def test_frontier_claims_by_hand():
    rows = _samplers_rows()
    text = "\n".join(bench_report.frontier_claims(rows))
    # fm is within 10% of its best (11.5) at 4 calls; ddpm's deterministic samplers within 10% of DDPM 1000 at 50
    assert "fewer ODE steps: holds" in text and "(11.5) at 4 network calls" in text and "1000 (10) at 50 calls" in text
    assert "(taken as at most +50% over DDPM 1000): holds: 1 call(s) FID 14.00 (+40%)" in text
    assert "costs 20.0x less" in text and "DDIM-50 is 400x faster" in text  # 1 ms / 0.05 ms per call; 1000 / 2.5
    rows[5]["fid"] = 15.5  # the best consistency FID is now 55% over DDPM 1000
    rows[3]["fid"] = 20.0  # fm needs 16 calls now, ddpm 50: still fewer
    text = "\n".join(bench_report.frontier_claims(rows))
    assert "over DDPM 1000): does NOT hold" in text and "at 16 network calls" in text
    rows[4]["fid"], rows[4]["nfe"] = 11.5, 64  # fm's best needs 64 calls: more than ddpm's 50
    assert "fewer ODE steps: does NOT hold" in "\n".join(bench_report.frontier_claims(rows))
    for r in rows:  # FIDs this far apart by chance alone: DDIM-20's 14 is as close to DDPM 1000's 10 as 10.5 is
        r["fid_real_std"] = 2.0
    text = "\n".join(bench_report.frontier_claims(rows))
    assert "1000 (10) at 20 calls" in text and "(or 2 std of real data's FID at this n, 4)" in text
    curve = lambda fids: [dict(frac=f, sec=300 * f, fid=v) for f, v in zip((0.2, 0.5, 1.0), fids)]  # noqa: E731
    mnist = dict(suite="mnist", data="mnist5k", status="ok", sampler="x")
    fast = [dict(mnist, model="fm", curve=curve([30, 20, 10])), dict(mnist, model="ddpm", curve=curve([40, 25, 12]))]
    assert "flow matching trains faster: holds" in "\n".join(bench_report.frontier_claims(fast))
    fast[0]["curve"][2]["fid"] = 13
    assert "flow matching trains faster: partly" in "\n".join(bench_report.frontier_claims(fast))
    del fast[0]["curve"][2]["fid"]  # a seed-mean point without the metric (a seed's samples were not finite)
    assert "20 vs 25 at 150 s / 150 s; - vs 12 at 300 s / 300 s." in "\n".join(bench_report.frontier_claims(fast))
    # on a toy the consistency claim is judged by hq: a close Frechet distance with samples off the modes fails it
    toy = [dict(r, data="grid25", hq=0.98 if r["model"] == "ddpm" else 0.08) for r in _samplers_rows()]
    text = "\n".join(bench_report.frontier_claims(toy))
    assert "grid25: consistency models, 1-4 steps with a moderate quality penalty (on 2-D points by hq, taken as at " \
           "least DDPM 1000's / 1.5): does NOT hold: 1 call(s) hq 0.080 (FD 14)" in text
    toy[6]["hq"] = 0.66  # 4 calls: 0.66 >= 0.98 / 1.5 = 0.653
    assert "quality penalty (on 2-D points by hq, taken as at least DDPM 1000's / 1.5): holds" in \
        "\n".join(bench_report.frontier_claims(toy))
    # ... and so is "fewer ODE steps": fm's Euler-4 has FD 12, close to its best 11.5, but hq 0.08 against 0.96
    hq = {"ddpm-1000": 0.98, "ddim-50": 0.95, "ddim-20": 0.85, "euler-4": 0.08, "euler-16": 0.96}
    for r in toy:
        r["hq"] = hq.get(r["sampler"], r["hq"])
    text = "\n".join(bench_report.frontier_claims(toy))
    assert "grid25: straighter trajectories, fewer ODE steps (on 2-D points by hq, as close = at least the reference " \
           "/ 1.1, or 2 binomial std below it): holds: fm.py's ODE comes as close to its best hq (0.960) at 16 " \
           "network calls; ddpm.py's deterministic samplers (DDIM eta 0, DPM-Solver++) come as close to DDPM 1000's " \
           "hq (0.980) at 50 calls. fm Euler: 4 calls hq 0.080, 16 calls hq 0.960." in text
    toy[2]["hq"] = 0.90  # DDIM-20: 0.90 >= 0.98 / 1.1 = 0.891, so ddpm needs 20 calls, fm still 16
    assert "DPM-Solver++) come as close to DDPM 1000's hq (0.980) at 20 calls" in "\n".join(bench_report.frontier_claims(toy))
    toy[4]["nfe"] = 32  # fm's best needs 32 calls now
    assert "fewer ODE steps (on 2-D points by hq, as close = at least the reference / 1.1, or 2 binomial std below " \
           "it): does NOT hold" in "\n".join(bench_report.frontier_claims(toy))
    for r in toy:  # 100 samples: hq 0.08 is within 2 binomial std (0.06) of a best of 0.10 (0.10 / 1.1 = 0.091)
        r["n_samples"] = 100
    toy[4]["hq"] = 0.10
    assert "its best hq (0.100) at 4 network calls" in "\n".join(bench_report.frontier_claims(toy))
    for r in toy[1:3]:  # no DDIM setting comes close to DDPM 1000's hq
        r["hq"] = 0.5
    assert "DDPM 1000's hq (0.980) at none of their settings (up to 50) calls" in "\n".join(bench_report.frontier_claims(toy))
    del toy[3]["hq"]  # a row without hq: the toy's claim falls back to the Frechet distance
    text = "\n".join(bench_report.frontier_claims(toy))
    assert "grid25: straighter trajectories, fewer ODE steps: " in text and "by hq, as close" not in text


def test_load_note_counts_this_runs_threads():
    assert "inflated" not in bench.describe_load(1.0, 2, 1)  # a one-thread run beside another on 2 cores
    assert "inflated" in bench.describe_load(1.0, 2, 2)  # a two-thread run beside one
    assert "inflated" not in bench.describe_load(0.2, 2, 2) and "2 torch threads" in bench.describe_load(0.2, 2, 2)


def test_fid_noise_is_real_data_scored_like_samples():
    """fid_noise: independent draws of real training points against the test reference: a small, nonzero floor with
    a nonzero spread, far below a model that misses (every point moved by 0.5)."""
    noise = bench.fid_noise("ring8", 300, 1000)
    assert 0 < noise["fid_real_std"] < noise["fid_real"] < 0.05
    ref = bench.Reference("ring8", 1000)
    assert bench.score_samples(datasets.load("ring8", "train").x[:300] + 0.5, ref)["fid"] > 10 * noise["fid_real"]


def test_samplers_table_has_every_family_and_the_lessons_speed():
    md = bench_report.samplers_markdown(_samplers_rows())
    lines = {tuple(c.strip("| ") for c in line.split(" | ")[:2]): line for line in md.splitlines()}
    assert "| 1x |" in lines[("DDPM", "1000")] and "| 20x |" in lines[("DDIM", "50, eta 0")]
    assert "| 50x |" in lines[("DDIM", "20, eta 0")] and "| 250x |" in lines[("consistency.py consistency", "4")]
    assert "| 1000x |" in lines[("consistency.py consistency", "1")] and "| 3200x |" in lines[("ldm.py DDIM", "50, eta 0")]
    lines["ldm.py DDIM"] = lines[("ldm.py DDIM", "50, eta 0")]
    assert "400.0x" in lines["ldm.py DDIM"] and "+20%" in lines["ldm.py DDIM"]  # measured speed, FID change


def test_tradeoff_conditional_and_anomaly_columns_use_absolute_tiers():
    mnist = dict(suite="mnist", data="mnist5k", status="ok", sampler="s", precision=0.5, recall=0.5, nfe=1,
                 ms_per_sample=1.0, seeds=1)
    rows = [dict(mnist, model=m, fid=f) for m, f in (("vae", 50.0), ("gan", 40.0), ("flow", 60.0), ("ddpm", 20.0))]
    rows += [dict(suite="conditional", data="mnist5k", status="ok", model="vae", accuracy=0.85),
             dict(suite="conditional", data="mnist5k", status="ok", model="cfg", accuracy=0.3),
             dict(suite="anomaly", data="mnist5k", status="ok", model="flow", auroc_mean=0.5,
                  **{f"auroc_{k}": 0.5 for k in bench.OOD}),
             dict(suite="anomaly", data="mnist5k", status="ok", model="vae", auroc_mean=0.8,
                  **{f"auroc_{k}": 0.8 for k in bench.OOD})]
    table, notes = bench_report.tradeoff(rows)
    cells = {line.split(" | ")[1].split(" ")[0]: line.split(" | ") for line in table.splitlines()[2:]}
    assert "label accuracy 0.85 agrees" in cells["vae"][7]  # yes from 0.8
    assert "label accuracy 0.30 (cfg.py) CONTRADICTS" in cells["ddpm"][7]  # the lesson's yes, measured below 0.5
    assert "mean 0.80 agrees" in cells["vae"][8]  # approximate: 0.7-0.9
    assert "mean 0.50 CONTRADICTS" in cells["flow"][8] and "measured: none" in cells["gan"][8]
    assert any("flow anomaly" in n for n in notes) and any("ddpm conditional" in n for n in notes)


@pytest.mark.usefixtures("single_thread")
def test_anomaly_suite_quick(tmp_path):
    """`--suite anomaly`: the families with a likelihood or an energy on images, an AUROC per OOD set."""
    rows = bench.run("anomaly", quick=True, out=str(tmp_path / "out"), runs=str(tmp_path / "runs"),
                     samplers_data="grid25,mnist5k", families="gan,flow,ebm", verbose=False)
    assert {(r["model"], r["data"]) for r in rows} == {("flow", "mnist5k"), ("ebm", "mnist5k")}  # images only
    for r in rows:
        assert r["status"] == "ok", r
        assert all(0 <= r[f"auroc_{k}"] <= 1 for k in bench.OOD) and r["n_samples"] == 16, r
        assert math.isfinite(r["score_test"]) and r["steps"] >= 1, r
    score = {r["model"]: r["score"] for r in rows}
    assert score == {"flow": "exact (bits/dim)", "ebm": "energy (energy)"}
    assert "## anomaly: mnist5k" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("ckpt", ["nosuch=x.pt", "ddpm=/no/such/ckpt.pt", "ddpm"])
def test_bad_ckpt_is_one_line(ckpt, tmp_path):
    assert_one_line_error(run_cli("bench.py", "--suite", "samplers", "--ckpt", ckpt, "--out", tmp_path / "o",
                                  "--runs", tmp_path / "r"))


@pytest.mark.usefixtures("single_thread")
def test_mnist_suite_runs_the_backbone_variant(tmp_path):
    """BENCH "variants": fm.py's DiT trains and is scored as its own row (fm+dit) beside the UNet's, with its own
    checkpoint (net = dit in its saved config)."""
    rows = bench.run("mnist", quick=True, out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), families="fm",
                     verbose=False)
    by = {r["model"]: r for r in rows}
    assert set(by) == {"fm", "fm+dit"} and all(r["status"] == "ok" for r in rows), rows
    assert by["fm+dit"]["fid"] > 0 and by["fm+dit"]["curve"][-1]["fid"] == by["fm+dit"]["fid"]
    ckpts = list((tmp_path / "runs" / "mnist5k").glob("fm+dit-s0-*/ckpt.pt"))
    assert len(ckpts) == 1 and training.load_checkpoint(ckpts[0])["config"]["net"] == "dit"


def test_defaults_resolve_the_teacher_and_the_steps(tmp_path, monkeypatch):
    """--defaults: a family is trained with train()'s own defaults plus BENCH["defaults"], where "@name" is the
    checkpoint chosen for that family earlier in the suite (consistency distils ddpm's) and "steps" overrides a
    per-kind default; --ckpt comes first."""
    import types

    calls = []
    runs = bench.Runs(tmp_path, "cpu", quick=True)
    monkeypatch.setattr(runs, "checkpoint", lambda fam, data, opts, steps, seed, prev=None, label="":
                        calls.append((opts, steps, seed, label)) or (Path("c.pt"), {}))

    def train(data="mnist5k", steps=1500, teacher=None, seed=0, out=None):
        pass

    mod = types.SimpleNamespace(train=train, BENCH={"defaults": {"images": {"teacher": "@ddpm"}}})
    cfg = dict(ckpts={}, defaults=True, budget=1.0)
    bench.family_checkpoint(bench.Family("cm", mod), "mnist5k", "images", cfg, runs, {}, {"ddpm": Path("t/ckpt.pt")})
    assert calls[-1] == ({"teacher": str(Path("t/ckpt.pt"))}, 1500, 0, "cm-defaults")
    with pytest.raises(training.UserError, match="need ddpm's checkpoint"):
        bench.family_checkpoint(bench.Family("cm", mod), "mnist5k", "images", cfg, runs, {}, {})
    mod.BENCH = {"defaults": {"images": {"steps": 7}}}
    bench.family_checkpoint(bench.Family("cm", mod), "mnist5k", "images", cfg, runs, {}, {})
    assert calls[-1] == ({}, 7, 0, "cm-defaults")
    # a labelled suite (conditional, guidance) passes the conditional_options in opts: the default model is trained
    # with them (fm --labels), the family's other bench options are not
    mod.BENCH = {"conditional_options": {"labels": True}}
    bench.family_checkpoint(bench.Family("cm", mod), "mnist5k", "images", cfg, runs, {"labels": True, "ch": 8}, {})
    assert calls[-1] == ({"labels": True}, 1500, 0, "cm-defaults")
    mod.train = lambda data="mnist5k", steps=None, seed=0, out=None: None  # a per-kind default and none in BENCH
    mod.BENCH = {}
    with pytest.raises(training.UserError, match="no default --steps"):
        bench.family_checkpoint(bench.Family("cm", mod), "mnist5k", "images", cfg, runs, {}, {})


@pytest.mark.usefixtures("single_thread")
def test_setting_suite_samples_the_given_checkpoint(tmp_path):
    """--ckpt NAME=PATH: the samplers suite samples that checkpoint (no training), and the report names it."""
    runs = bench.Runs(tmp_path / "r0", "cpu", quick=True)
    fam, _ = bench.import_family("ddpm")
    path, _ = runs.checkpoint(fam, "ring8", fam.options("points", True), 20, 0)
    rows = bench.run("samplers", quick=True, out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), families="ddpm",
                     samplers_data="ring8", ckpt=f"ddpm={path}", verbose=False)
    assert rows and all(r["status"] == "ok" and r["checkpoint"] == str(path) and r["steps"] == 20 for r in rows), rows
    assert all(r["budget_s"] is None for r in rows) and not (tmp_path / "runs" / "ring8").exists()  # nothing trained
    assert {r["sampler"] for r in rows} >= {"ddpm-1000", "ddim-10-eta0"}
    assert f"ddpm `{path}` (20 steps, given)" in (tmp_path / "out" / "results.md").read_text()
    assert all(r["checkpoint_from"] == "given" for r in rows)


def test_suite_samples_ask_for_every_digit_equally_often():
    """The labelled suites' image sample counts are multiples of the 10 digits, as in the conditional suite; the
    guidance suite scores as many digits as the conditional one (1,000; 200 before, a noisy FID)."""
    for key in bench.SETTING_SUITES:
        for quick in (True, False):
            n = bench.suite_samples(key, "images", quick)
            assert n > 0 and (key not in bench.LABELLED or n % 10 == 0), (key, quick, n)
    assert bench.suite_samples("guidance", "images", False) == bench.suite_samples("conditional", "images", False)
    assert bench.suite_samples("guidance", "images", True) == bench.suite_samples("conditional", "images", True)


def test_report_names_each_checkpoint_s_source(tmp_path):
    """A setting suite whose checkpoints came from different places: each is named with its budget, or as given."""
    common = dict(suite="guidance", data="mnist5k", seeds=1, status="ok", n_samples=10, reference="r", nfe=20,
                  sampler="s", guidance=1.0, fid=1.0)
    rows = [dict(common, model="cfg", checkpoint="a.pt", steps=402, budget_s=300.0, checkpoint_from="budget"),
            dict(common, model="fm", checkpoint="b.pt", steps=1395, budget_s=None, checkpoint_from="given")]
    bench_report.write_markdown(rows, tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "cfg `a.pt` (402 steps, 300 s budget); fm `b.pt` (1395 steps, given)" in text


def test_a_seed_without_metrics_is_named_in_its_row():
    """A seed whose samples held non-finite values has no metrics (score_samples' note): the row's mean is over the
    other seeds, and the row says so in its status cell instead of passing for the mean of all of them."""
    per = [dict(seed=0, hq=0.8), dict(seed=1, note="50 non-finite sample values: no metrics"), dict(seed=2, hq=0.9)]
    assert bench.aggregate(per)["hq"] == pytest.approx(0.85)
    warning = bench.seed_warning(per)
    assert warning == "seed 1: 50 non-finite sample values: no metrics; the mean is over the other 2"
    assert bench.seed_warning([per[0], per[2]]) is None
    row = dict(data="grid25", model="m", sampler="s", status="ok", warning=warning, hq=0.85)
    assert bench_report._cols(row, images=False)[-1] == f"ok ({warning})"
