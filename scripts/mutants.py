"""Mutation check of the test suite: break one formula on purpose, run the tests that should notice, restore.

Each mutant replaces one exact snippet of a source file (it must occur exactly once) in a scratch copy of the
repository, so the working tree is never touched and the check can run beside other work. A mutant is *caught* when
its tests fail; a *survivor* is a formula the suite does not pin.

    python scripts/mutants.py                      # every mutant below (about 5 minutes on 2 cores)
    python scripts/mutants.py --only ddpm          # the mutants whose name starts with "ddpm"
    python scripts/mutants.py --list
    python scripts/mutants.py --file ddpm.py --find "a * b" --replace "a + b" --tests tests/test_ddpm.py  # ad hoc
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, original snippet, mutated snippet, tests that must fail)
MUTANTS: dict[str, tuple[str, str, str, str]] = {}


def add(name: str, file: str, find: str, replace: str, tests: str) -> None:
    MUTANTS[name] = (file, find, replace, tests)


# ----------------------------------------------------------------------------------------------------- the mutants
# (filled in below, one block per file; each names the test that catches it)


# ----------------------------------------------------------------------------------------------------- runner
def scratch_copy() -> Path:
    """The tracked and untracked (not ignored) files of the repository, copied to a temporary folder."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    dst = Path(tempfile.mkdtemp(prefix="mutants-"))
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    return dst


def run_one(copy: Path, file: str, find: str, replace: str, tests: str) -> tuple[str, float]:
    """Apply the mutation in `copy`, run `tests`, restore. Returns ("caught" | "SURVIVED" | "error: ...", seconds)."""
    path = copy / file
    original = path.read_text()
    if original.count(find) != 1:
        return f"error: snippet occurs {original.count(find)} times in {file}", 0.0
    path.write_text(original.replace(find, replace))
    t0 = time.time()
    try:
        env = dict(os.environ, GENMODELS_QUIET="1", PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", *tests.split()],
                              cwd=copy, capture_output=True, text=True, env=env, timeout=900)
    finally:
        path.write_text(original)
    dt = time.time() - t0
    if proc.returncode == 1:
        return "caught", dt
    if proc.returncode == 0:
        return "SURVIVED", dt
    return f"error: pytest exit {proc.returncode}: {proc.stdout[-300:]}", dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the mutants whose name starts with this")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--file", help="ad hoc mutant: the file to change")
    ap.add_argument("--find", help="ad hoc mutant: the exact snippet to replace (must occur once)")
    ap.add_argument("--replace", help="ad hoc mutant: what to put instead")
    ap.add_argument("--tests", help="ad hoc mutant: the tests to run (pytest arguments)")
    a = ap.parse_args()
    if a.file:
        todo = {"ad-hoc": (a.file, a.find, a.replace, a.tests or "tests")}
    else:
        todo = {k: v for k, v in MUTANTS.items() if k.startswith(a.only)}
    if a.list:
        for k, (f, find, rep, tests) in todo.items():
            print(f"{k:32s} {f}: {find!r} -> {rep!r}  [{tests}]")
        return
    copy = scratch_copy()
    survivors, errors = [], []
    try:
        for k, (f, find, rep, tests) in todo.items():
            verdict, dt = run_one(copy, f, find, rep, tests)
            print(f"{verdict:9s} {dt:6.1f} s  {k}", flush=True)
            (survivors if verdict == "SURVIVED" else errors if verdict.startswith("error") else []).append(k)
            if verdict.startswith("error"):
                print("          " + verdict, flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    print(f"{len(todo) - len(survivors) - len(errors)} of {len(todo)} caught; survivors: {survivors or 'none'}; "
          f"errors: {errors or 'none'}")
    sys.exit(1 if survivors or errors else 0)


if __name__ == "__main__":
    main()
