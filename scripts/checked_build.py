#!/usr/bin/env python3
"""The checked data plane: a VSWITCH_DEBUG=1 build (-O0 -g, Cython's bounds,
wraparound and initialization checks, AddressSanitizer and
UndefinedBehaviorSanitizer; see setup.py) in a directory of its own, and
the environment to run Python against it (the sanitizer runtime preloaded).

    python3 scripts/checked_build.py [PYTEST_ARGS...]

builds it into build/checked/ and runs pytest there over the data-plane
tests (default: the ones that drive the C code directly), failing on any
sanitizer report. CI runs this once after the release-build suite.
fuzz/run.py builds its own copy (with libFuzzer's coverage, under clang)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATAPLANE_TESTS = ["tests/unit/test_fastpath.py", "tests/unit/test_offload.py",
                   "tests/unit/test_dataplane.py", "tests/unit/test_policy_dataplane.py",
                   "tests/unit/test_workers.py",
                   "tests/test_vxlan.py"]
# Timing, not correctness: a port's 50 us quantum per round cuts a batch short
# at -O0 with sanitizers. The release-build run covers it.
TIMING_TESTS = "not test_batch_limit_per_drain"
SANITIZER_OPTIONS = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
                     "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def build(dest: Path, env: dict | None = None) -> None:
    """Copy the package to dest and build its checked extension there."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "vswitch", dest / "vswitch", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=dest,
                       env={**os.environ, **(env or {}), "VSWITCH_DEBUG": "1"},
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"the checked build failed:\n{r.stderr}")


def gcc_asan_runtime() -> str:
    return subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True, check=True).stdout.strip()


def main() -> int:
    dest = ROOT / "build" / "checked"
    build(dest)
    env = {**os.environ, "LD_PRELOAD": gcc_asan_runtime(), **SANITIZER_OPTIONS}
    # From dest: `python -m` puts the working directory first on sys.path,
    # so `import vswitch` is the checked copy. Make sure it is.
    where = subprocess.run([sys.executable, "-c", "import vswitch._fastpath as f; print(f.__file__)"],
                           cwd=dest, env=env, capture_output=True, text=True)
    if where.returncode or not where.stdout.startswith(str(dest)):
        sys.exit(f"not the checked build: {where.stdout}{where.stderr}")
    tests = sys.argv[1:] or [*(str(ROOT / t) for t in DATAPLANE_TESTS), "-k", TIMING_TESTS]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(ROOT), *tests], cwd=dest, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
