"""Test configuration: a hypothesis profile for CI (modest example counts, no deadline), seeded torch, and helpers
to run the command-line programs as a user would."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of small tensors (`pytestmark = pytest.mark.usefixtures("one_thread")`): one thread avoids the cost
    of synchronizing two (several times faster on 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def single_thread():
    """The same for one test (`@pytest.mark.usefixtures("single_thread")`), the thread count restored after it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_cli(*args, cwd=None, timeout=600, env=None):
    """Run `python <args>` in the repository root; returns the CompletedProcess (stdout/stderr as text)."""
    e = dict(os.environ, GENMODELS_QUIET="1", PYTHONWARNINGS="ignore")
    e.update(env or {})
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


def run_app(app, *args):
    """A model file's typer app on a command line, in this process, as `python FILE.py ARGS` runs it: (exit code,
    stdout, stderr). Cheaper than run_cli where many command lines share one start of torch."""
    import contextlib
    import io

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(proc, code=2):
    """Bad input: exit code `code`, exactly one non-empty line on stderr, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "error" in lines[0]


# A 2-D Gaussian mixture whose marginal eps, score and velocity the sampler tests of ddpm.py and fm.py know exactly
CENTERS = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
STD = 0.1


def mixture_stats(x):
    """(share of points within 3 std of a centre, weight of each component, spread around each centre)."""
    d = (x.double()[:, None] - CENTERS[None]).norm(dim=-1)  # [N, K]
    k = d.argmin(1)
    within = (d.min(1).values < 3 * STD).double().mean().item()  # |x - mu| < 3 std: 98.9% of a 2-D Gaussian
    weights = torch.bincount(k, minlength=3).double() / len(x)
    spread = torch.stack([(x.double()[k == j] - CENTERS[j]).std() for j in range(3)])
    return within, weights, spread
