"""bench.py: the quick toy suite end to end (fields and sane values of every row, counted NFE, checkpoint reuse with
identical numbers), a missing / broken family reported instead of crashing, and bad input."""
import json
import math
import sys
import time

import pytest

import bench
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
                                  ["--seeds", "x"]])
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
