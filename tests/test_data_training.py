"""data.py (toy definitions, bundled digits, file parsers, offline errors) and training.py (checkpoints, NaN stop,
Ctrl-C, data order)."""
import gzip
import io
import os
import pickle
import signal
import struct
import tarfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import data
import training


# ------------------------------------------------------------------------------------------- data
def test_pacgan_toys_match_their_definitions():
    centers, std = data.MODES["grid25"]
    assert std == 0.05 and sorted(set(centers[:, 0].tolist())) == [-4, -2, 0, 2, 4] and len(centers) == 25
    centers8, std8 = data.MODES["ring8"]
    assert std8 == 0.01 and len(centers8) == 8 and torch.allclose(centers8.norm(dim=1), torch.ones(8))
    for name, (c, s) in data.MODES.items():
        ds = data.load(name)
        d = torch.cdist(ds.x, c)  # distance to every center
        k = d.argmin(1)
        assert torch.equal(k, ds.y)  # the label is the nearest mode
        resid = ds.x - c[k]
        assert abs(resid.std().item() - s) < 0.05 * s
        assert torch.bincount(k).min() > 0.8 * len(ds) / len(c)  # equal weights


@pytest.mark.parametrize("name", data.TOYS)
def test_toy_splits_are_fixed_draws(name):
    a, b, test = data.load(name), data.load(name), data.load(name, "test")
    assert a.x.shape == (20_000, 2) and test.x.shape == (5_000, 2) and a.kind == "points"
    assert torch.equal(a.x, b.x) and not torch.equal(a.x[:5000], test.x)


def test_mnist5k_split_is_balanced_and_in_range():
    tr, te = data.load("mnist5k"), data.load("mnist5k", "test")
    assert tr.x.shape == (4000, 1, 28, 28) and te.x.shape == (1000, 1, 28, 28)
    assert torch.bincount(tr.y).tolist() == [400] * 10 and torch.bincount(te.y).tolist() == [100] * 10
    assert tr.x.min() == -1 and tr.x.max() == 1
    # uint8 round trip: load's scaling is exactly inverted by to_uint8
    raw = np.load(data.ASSETS / "mnist5k.npz")["x"]
    assert np.array_equal(data.to_uint8(te.x[:10])[..., 0], raw[400:410])  # class 0's last 100 are the test split


def test_unknown_dataset_and_split():
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(data.DataError, match="unknown split"):
        data.load("moons", "val")


def write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@given(n=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 6))
def test_idx_parser_roundtrip(tmp_path_factory, n, h, w):
    arr = np.random.default_rng(n * 100 + h * 10 + w).integers(0, 256, (n, h, w))
    path = tmp_path_factory.mktemp("idx") / "x-idx3-ubyte.gz"
    write_idx(path, arr)
    assert np.array_equal(data.read_idx(path), arr)


def test_idx_parser_rejects_truncated(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(path)


def test_mnist_from_local_folder_with_checksums(tmp_path, monkeypatch):
    """A folder holding the four IDX files is used; the md5 check makes a file with wrong contents re-download."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    files = {}
    imgs = np.random.default_rng(0).integers(0, 256, (6, 28, 28))
    labels = np.arange(6) % 10
    for name, arr in [("train-images-idx3-ubyte.gz", imgs), ("train-labels-idx1-ubyte.gz", labels),
                      ("t10k-images-idx3-ubyte.gz", imgs[:2]), ("t10k-labels-idx1-ubyte.gz", labels[:2])]:
        write_idx(folder / name, arr)
        files[name] = data._md5(folder / name)
    monkeypatch.setitem(data.REMOTE, "mnist", [(n, "http://127.0.0.1:9/", md5) for n, md5 in files.items()])
    ds = data.load("mnist", root=tmp_path)
    assert ds.x.shape == (6, 1, 28, 28) and ds.y.tolist() == labels.tolist() and ds.kind == "images"
    assert data.load("mnist", "test", root=tmp_path).x.shape == (2, 1, 28, 28)
    # a corrupted file fails its checksum, the re-download fails offline: one message naming the bundled set
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(data.DataError, match="--data mnist5k"):
        data.load("mnist", "test", root=tmp_path)


def test_cifar10_reader_and_refusal_of_code(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps({b"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8), b"labels": [1, 2, 3]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    x, y = data.read_cifar10(path, "train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.uint8 and y.tolist() == [1, 2, 3] * 5
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        blob = pickle.dumps({b"data": __import__("collections").OrderedDict(), b"labels": []})
        info = tarfile.TarInfo("test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(data.DataError, match="refusing"):
        data.read_cifar10(evil, "test")


def test_save_samples_png_and_scatter(tmp_path):
    from PIL import Image

    p = data.save_samples(torch.rand(10, 1, 28, 28) * 2 - 1, tmp_path / "g.png")
    img = Image.open(p)
    assert img.size[0] >= 4 * 30  # 4 columns of 28 + padding, enlarged
    p = data.save_samples(torch.randn(100, 2), tmp_path / "s.png", reference=torch.randn(50, 2))
    assert Image.open(p).size == (400, 400)


# ------------------------------------------------------------------------------------------- training
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)


OPTIM = dict(betas=(0.9, 0.999), weight_decay=0.0, grad_clip=1.0)


def make_trainer(tmp_path, **kw):
    ds = data.load("moons")
    args = dict(steps=12, batch_size=16, lr=1e-2, out=tmp_path / "run", device="cpu", ckpt_every=4, **OPTIM)
    args.update(kw)
    return training.Trainer("toy", {"lr": args["lr"]}, {"model": Net()}, ds, **args)


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])
def test_ema_is_the_warmed_up_average_of_the_weights_after_each_step(tmp_path, decay):
    """EMA_1 = w_1 (the first update copies), then EMA_n+1 = d_n EMA_n + (1 - d_n) w_n+1 with d_n = min(decay,
    (1 + n) / (10 + n)), n the updates so far; and resuming halfway continues the same average."""
    def run(steps, resume=False):
        tr = make_trainer(tmp_path, steps=steps, ema_decay=decay, resume=resume, ckpt_every=6)
        weights = []
        for _, (x, _) in tr:
            tr.step(tr.models["model"](x).pow(2).mean())
            weights.append([p.detach().clone() for p in tr.raw["model"].parameters()])
        tr.save()
        return tr, weights

    tr, weights = run(12)
    expected = [w.double() for w in weights[0]]
    for n, w in enumerate(weights[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * x.double() for e, x in zip(expected, w)]
    for e, got in zip(expected, tr.ema.module.parameters()):
        torch.testing.assert_close(got.double(), e, rtol=1e-5, atol=1e-6)
    full = [p.clone() for p in tr.ema.module.parameters()]
    import shutil
    shutil.rmtree(tmp_path / "run")
    run(6)
    tr2, _ = run(12, resume=True)
    for a, b in zip(full, tr2.ema.module.parameters()):
        assert torch.equal(a, b)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # the losses are checked on logging steps and before each checkpoint (no sync per step): the NaN of step 6 is
    # found at the checkpoint of step 8, named with its own step, and that checkpoint is never written
    tr = make_trainer(tmp_path, log_every=10)
    with pytest.raises(training.TrainingFailed, match="loss became nan at step 6"):
        for step, (x, _) in tr:
            loss = tr.models["model"](x).pow(2).mean()
            tr.step(loss * float("nan") if step == 6 else loss)
    assert tr.step_num == 8
    ck = training.load_checkpoint(tmp_path / "run" / "ckpt.pt", "toy")
    assert ck["step"] == 4  # the last checkpoint before the failure
    assert all(torch.isfinite(v).all() for v in ck["models"]["model"].values())


def test_ctrl_c_saves_checkpoint_and_exits_cleanly(tmp_path):
    tr = make_trainer(tmp_path)
    with pytest.raises(SystemExit) as e:
        for step, (x, _) in tr:
            if step == 6:  # Ctrl-C in the middle of a step: the step completes, then the run stops
                os.kill(os.getpid(), signal.SIGINT)
            tr.step(tr.models["model"](x).pow(2).mean())
    assert e.value.code == 130
    assert training.load_checkpoint(tmp_path / "run" / "ckpt.pt")["step"] == 7
    tr = make_trainer(tmp_path, resume=True)
    assert tr.start == 7


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint({"config": {"a": 1}, "models": {}}, path)

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        training.save_checkpoint({"config": {"a": 2}, "models": {}}, path)
    assert training.load_checkpoint(path)["config"] == {"a": 1}  # the old checkpoint survived intact


def test_resume_refuses_changed_settings_and_wrong_model(tmp_path):
    tr = make_trainer(tmp_path)
    for _, (x, _) in tr:
        tr.step(tr.models["model"](x).pow(2).mean())
    tr.save()
    with pytest.raises(training.UserError, match="differ"):
        training.Trainer("toy", {"lr": 0.5}, {"model": Net()}, data.load("moons"), steps=20, batch_size=16, lr=0.5,
                         out=tmp_path / "run", device="cpu", resume=True, **OPTIM)
    with pytest.raises(training.UserError, match="not 'ddpm'"):
        training.load_checkpoint(tmp_path / "run" / "ckpt.pt", "ddpm")


@given(st.integers(10, 200), st.integers(1, 9), st.integers(1, 3))
def test_batches_cover_each_epoch_once_and_split_ranks(n, b, world):
    """Every rank's slices of one epoch are disjoint, and an epoch visits each example at most once."""
    seen = []
    for rank in range(world):
        bt = training.Batches(n, b, seed=3, rank=rank, world=world)
        for _ in range(n // (b * world)):
            seen.append(bt.next())
    flat = torch.cat(seen) if seen else torch.zeros(0, dtype=torch.long)
    assert len(flat) == len(set(flat.tolist())) == (n // (b * world)) * b * world


def test_progress_bar_is_redrawn_a_few_times_a_second_not_every_step(tmp_path, monkeypatch):
    """Issue 20: on the toys a step takes about a millisecond, so the bar is updated every 0.25 s (and at the last
    step), not per step or per logging step."""
    import time

    from rich.progress import Progress

    calls, real = [], Progress.update
    monkeypatch.setattr(Progress, "update", lambda self, task, **kw: (calls.append(kw), real(self, task, **kw))[1])
    tr = make_trainer(tmp_path, steps=400, log_every=10, ckpt_every=1000)
    t0 = time.monotonic()
    for _, (x, _) in tr:
        tr.step(tr.models["model"](x).pow(2).mean())
    elapsed = time.monotonic() - t0
    assert 1 <= len(calls) <= 2 + 4 * elapsed, (len(calls), elapsed)
    assert calls[-1]["completed"] == 400 and calls[-1]["info"].startswith("loss ")


def test_the_first_ema_update_copies_the_weights_and_counts_on_the_host(tmp_path):
    """After one step the EMA is the weights themselves (AveragedModel's first update; the decay schedule's n = 0
    would give 0.1 w_0 + 0.9 w_1), and both counts, the host's and the checkpoint's n_averaged, are 1."""
    tr = make_trainer(tmp_path, steps=1, ema_decay=0.999)
    w0 = [p.detach().clone() for p in tr.raw["model"].parameters()]
    for _, (x, _) in tr:
        tr.step(tr.models["model"](x).pow(2).mean())
    for a, b, c in zip(tr.ema.module.parameters(), tr.raw["model"].parameters(), w0):
        assert torch.equal(a, b) and not torch.equal(b, c)
    assert tr.ema_n == 1 and int(tr.ema.n_averaged) == 1
