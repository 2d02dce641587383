"""The linters, configured in pyproject.toml, hold for the whole tree (as
uvloop's and asyncpg's test suites enforce theirs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CYTHON = sorted(str(p.relative_to(ROOT)) for ext in ("pyx", "pxd", "pxi")
                for p in (ROOT / "vswitch").glob(f"*.{ext}"))


# Each run as a module of this Python, so a missing linter fails the test.
LINTERS = {
    "ruff": ["-m", "ruff", "check", "vswitch", "tests", "bench", "fuzz", "scripts", "setup.py"],
    "mypy": ["-m", "mypy"],                        # files and options: pyproject.toml
    "cython-lint": ["-c", "import sys; from cython_lint.cython_lint import main; sys.exit(main())",
                    *CYTHON],
    # The extension's stub (vswitch/_fastpath.pyi) says what the built module has.
    "stubtest": ["-m", "mypy.stubtest", "--allowlist", "tests/unit/stubtest_allowlist.txt",
                 "vswitch._fastpath"],
}


@pytest.mark.parametrize("tool", sorted(LINTERS))
def test_linter_is_clean(tool):
    r = subprocess.run([sys.executable, *LINTERS[tool]], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"{tool}:\n{r.stdout}{r.stderr}"
