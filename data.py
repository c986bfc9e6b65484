"""Datasets and sample writers shared by every model file.

    load(name, split="train") -> Dataset(x, y, kind)
        points: x [N, 2] in raw coordinates; images: x [N, C, H, W] in [-1, 1]; y long [N] or None.

Toy 2-D sets are fixed draws (train: 20,000 points, seed 0; test: 5,000 points, seed 1), so every model sees the
same points. `grid25` and `ring8` follow PacGAN (Lin et al. 2018, https://arxiv.org/abs/1712.04086): 25 Gaussians
with centers {-4,-2,0,2,4}^2 and std 0.05; 8 Gaussians on the unit circle with std 0.01. MODES[name] gives
(centers [K, 2], std) for the mode-coverage metric.

`mnist5k` (the default for image models) is bundled in assets/: 5,000 MNIST digits, 500 per class, split within each
class into the first 400 for train and the last 100 for test. `mnist`, `fashion`, `cifar10` are read from
$GENMODELS_DATA (default ~/.cache/genmodels), downloaded there once with checksum verification.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
TOYS = ["grid25", "ring8", "moons", "checkerboard", "swissroll"]
IMAGES = ["mnist5k", "mnist", "fashion", "cifar10"]
DATASETS = TOYS + IMAGES
TOY_SIZES = {"train": (20_000, 0), "test": (5_000, 1)}  # split -> (number of points, seed)


class DataError(ValueError):
    """Bad dataset name, missing file, failed download or checksum: a message a user can act on."""


@dataclass
class Dataset:
    x: torch.Tensor  # points [N, 2] or images [N, C, H, W] in [-1, 1]
    y: torch.Tensor | None  # long [N] or None
    kind: str  # "points" or "images"
    name: str = ""
    num_classes: int = 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


# ----------------------------------------------------------------------------------------------------- toy 2-D sets
def _grid_centers() -> np.ndarray:
    return np.array([(i, j) for i in range(-4, 5, 2) for j in range(-4, 5, 2)], dtype=np.float64)  # [25, 2]


def _ring_centers() -> np.ndarray:
    angle = 2 * np.pi * np.arange(8) / 8
    return np.stack([np.cos(angle), np.sin(angle)], 1)  # [8, 2]


MODES: dict[str, tuple[torch.Tensor, float]] = {
    "grid25": (torch.tensor(_grid_centers(), dtype=torch.float32), 0.05),
    "ring8": (torch.tensor(_ring_centers(), dtype=torch.float32), 0.01),
}


def _toy(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    if name in MODES:  # equal-weight Gaussian mixture; the label is the mode index
        centers, std = MODES[name]
        k = rng.integers(0, len(centers), n)
        return centers.numpy().astype(np.float64)[k] + std * rng.standard_normal((n, 2)), k
    if name == "moons":  # two interleaved half circles, noise 0.05; label = which moon
        k = rng.integers(0, 2, n)
        angle = np.pi * rng.random(n)
        x = np.where(k[:, None] == 0,
                     np.stack([np.cos(angle), np.sin(angle)], 1),
                     np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1))
        return x + 0.05 * rng.standard_normal((n, 2)), k
    if name == "checkerboard":  # uniform on the 8 dark squares of a 4x4 board over [-4, 4]^2
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2
        x2 = x2 + (np.floor(x1) % 2)
        return np.stack([x1, x2], 1) * 2, None
    if name == "swissroll":  # t in [1.5 pi, 4.5 pi], (t cos t, t sin t) / 5, noise 0.1
        t = 1.5 * np.pi * (1 + 2 * rng.random(n))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5
        return x + 0.1 * rng.standard_normal((n, 2)), None
    raise DataError(f"unknown toy dataset {name!r}")


# ----------------------------------------------------------------------------------------------------- image sets
def cache_dir() -> Path:
    return Path(os.environ.get("GENMODELS_DATA", Path.home() / ".cache" / "genmodels"))


# name -> files: (filename, url, md5); the md5 sums are those published with the datasets
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
REMOTE = {
    "mnist": [("train-images-idx3-ubyte.gz", _MNIST_URL, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte.gz", _MNIST_URL, "d53e105ee54ea40749a09fcbcd1e9432"),
              ("t10k-images-idx3-ubyte.gz", _MNIST_URL, "9fb629c4189551a2d022fa330f9573f3"),
              ("t10k-labels-idx1-ubyte.gz", _MNIST_URL, "ec29112dd5afa0611ce80d1b7f02629c")],
    "fashion": [("train-images-idx3-ubyte.gz", _FASHION_URL, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", _FASHION_URL, "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", _FASHION_URL, "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", _FASHION_URL, "bb300cfdad3c16e7a12a480ee83cd310")],
    "cifar10": [("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/",
                 "c58f30108f718f92721af3b95e74349a")],
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, root: Path | None = None) -> Path:
    """Make sure every file of dataset `name` is in root/name (downloading once), verified by md5; return the folder."""
    folder = (root or cache_dir()) / name
    for filename, url, md5 in REMOTE[name]:
        path = folder / filename
        if path.exists() and _md5(path) == md5:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        try:
            with urllib.request.urlopen(url + filename, timeout=30) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot download {name} ({url + filename}: {e}); put {filename} in {folder} "
                            f"or use the bundled set with --data mnist5k") from None
        if _md5(tmp) != md5:
            tmp.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for {filename} from {url}; try again, or use --data mnist5k")
        os.replace(tmp, path)
    return folder


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format, optionally gzipped): magic 0x00 0x00 0x08 ndim, big-endian dims, uint8."""
    raw = gzip.open(path).read() if str(path).endswith(".gz") else Path(path).read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR-10 ships pickles; allow only what plain numpy arrays need, so a tampered file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to load {module}.{name} from a CIFAR-10 pickle")
        return super().find_class(module, name)


def read_cifar10(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read cifar-10-python.tar.gz: data_batch_1..5 (train) or test_batch, each a pickled dict of uint8 rows."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}
        for n in names:
            if n not in members:
                raise DataError(f"{path} has no {n}; is it cifar-10-python.tar.gz?")
            d = _ArrayUnpickler(io.BytesIO(tar.extractfile(members[n]).read()), encoding="bytes").load()
            xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))  # rows of 3072 = [3, 32, 32]
            ys.append(np.asarray(d[b"labels"], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _images(name: str, split: str, root: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, C, H, W] and labels [N]."""
    if name == "mnist5k":
        with np.load(ASSETS / "mnist5k.npz") as f:
            x, y = f["x"], f["y"].astype(np.int64)  # sorted by class, 500 each
        within = np.arange(len(y)) % 500  # position inside its class block
        keep = within < 400 if split == "train" else within >= 400
        return x[keep][:, None], y[keep]
    folder = fetch(name, root)
    if name == "cifar10":
        return read_cifar10(folder / "cifar-10-python.tar.gz", split)
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return x[:, None], y


def load(name: str, split: str = "train", root: Path | None = None) -> Dataset:
    """Load a dataset by name; split is "train" or "test"."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use train or test")
    if name in TOYS:
        n, seed = TOY_SIZES[split]
        x, y = _toy(name, n, seed)
        y = None if y is None else torch.as_tensor(y, dtype=torch.long)
        return Dataset(torch.as_tensor(x, dtype=torch.float32), y, "points", name,
                       0 if y is None else int(y.max()) + 1)
    x, y = _images(name, split, root)
    x = torch.as_tensor(np.array(x), dtype=torch.float32) / 127.5 - 1  # uint8 {0..255} -> [-1, 1]
    return Dataset(x, torch.as_tensor(y, dtype=torch.long), "images", name, 10)


# ----------------------------------------------------------------------------------------------------- writers
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] [N, C, H, W] -> uint8 [N, H, W, C] (the inverse of load's scaling, rounded)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images [N, C, H, W] in [-1, 1] into one uint8 array [rows*(H+pad)+pad, cols*(W+pad)+pad, C]."""
    imgs = to_uint8(x)
    n, h, w, c = imgs.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i, img in enumerate(imgs):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return grid


def save_samples(x: torch.Tensor, path: str | Path, nrow: int | None = None, title: str | None = None,
                 reference: torch.Tensor | None = None) -> Path:
    """Write images [N, C, H, W] as a PNG grid (Pillow), or points [N, 2] as a scatter plot (matplotlib)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4:
        grid = image_grid(x, nrow)
        img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
        scale = max(1, 256 // max(img.size))  # enlarge small grids so single digits are visible
        img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = x.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        ref = reference.detach().float().cpu().numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8", label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="tab:blue", alpha=0.6, label="samples")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def samples_path(out: str | Path | None, default: str | Path) -> Path:
    """The `--out` of a `sample` command (`default`, e.g. next to the checkpoint, when empty), checked to be a .png or
    .npz before any sampling starts."""
    path = Path(out or default)
    if path.suffix not in (".png", ".npz"):
        raise DataError(f"--out must end in .png or .npz, got {path.name!r}")
    return path


def write_samples(x: torch.Tensor, out: str | Path, reference: torch.Tensor | None = None, nrow: int | None = None,
                  **arrays) -> Path:
    """The `--out` of every `sample` command: `.npz` -> raw samples in data space under key `x` (plus any extra
    arrays, e.g. labels y); `.png` -> a grid (images) or scatter (points). Prints the path written."""
    path = samples_path(out, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez_compressed(path, x=x.detach().cpu().numpy(), **{k: v.detach().cpu().numpy() if torch.is_tensor(v)
                                                                  else np.asarray(v) for k, v in arrays.items()})
    else:
        save_samples(x, path, nrow=nrow, reference=reference)
    print(f"wrote {path}")
    return path
