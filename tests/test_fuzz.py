"""The fuzz harnesses (fuzz/) run for a bounded time against the checked
build of the data plane (AddressSanitizer, UndefinedBehaviorSanitizer,
Cython's checks): any crash, sanitizer report or uncaught exception fails
the test and leaves its input in build/fuzz/. Longer runs: fuzz/run.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 15        # per harness; the nightly-style run is `fuzz/run.py all --seconds 3600 --build`


def test_every_parser_survives_its_fuzzer():
    r = subprocess.run([sys.executable, str(ROOT / "fuzz" / "run.py"), "all", "--build",
                        "--seconds", str(SECONDS)], capture_output=True, text=True, timeout=900)
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-60:])
    assert r.returncode == 0, tail
    for name in ("datapath", "bpf", "api", "cni", "config"):
        assert f"fuzz/{name}:" in r.stdout
    assert r.stderr.count("DONE") == 5, tail       # each ran its time out, none stopped early
