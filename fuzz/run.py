#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser a stranger
can reach: frames with virtio_net headers into the data plane, VXLAN
datagrams from the underlay, classic BPF programs, control API requests,
the CNI plugin's stdin and environment, TOML configs.

    python3 fuzz/run.py NAME [--seconds S] [--build] [-- LIBFUZZER_ARGS...]
    python3 fuzz/run.py all --seconds 15          (what the test suite runs)

NAME is a module of fuzz/ with setup() and one_input(data). --build first
builds the checked data plane (VSWITCH_DEBUG=1: AddressSanitizer,
UndefinedBehaviorSanitizer, Cython's checks; with clang, libFuzzer's
coverage instrumentation of the C code too) into build/fuzz/ and runs
against it, with the sanitizer runtime preloaded. A crash leaves its input
as build/fuzz/crash-NAME-* and exits non-zero; longer runs: --seconds 3600 (and a corpus
directory after "--").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import checked_build  # noqa: E402  (scripts/ is not a package)

HARNESSES = ("datapath", "bpf", "api", "cni", "config")
BUILD = ROOT / "build" / "fuzz"


def build_checked() -> dict:
    """Build the VSWITCH_DEBUG data plane into BUILD; the environment to run it in."""
    runtime = fuzzer_runtime()
    if runtime:
        checked_build.build(BUILD, {"CC": "clang", "LDSHARED": "clang -shared"})
    else:           # no clang: gcc's sanitizers, coverage of the Python layers only
        checked_build.build(BUILD)
        runtime = checked_build.gcc_asan_runtime()
    return {"PYTHONPATH": f"{BUILD}:{ROOT / 'fuzz'}", "LD_PRELOAD": runtime,
            **checked_build.SANITIZER_OPTIONS}


def fuzzer_runtime() -> str | None:
    """AddressSanitizer and libFuzzer in one shared object for Python to
    preload (as atheris's asan_with_fuzzer.so): the C code's coverage hooks
    must reach libFuzzer, not ASan's empty defaults. None without clang's
    runtime libraries."""
    clang = shutil.which("clang")
    if not clang:
        return None
    asan = subprocess.run([clang, "-print-file-name=libclang_rt.asan-x86_64.a"],
                          capture_output=True, text=True).stdout.strip()
    lib = os.path.dirname(asan)
    if not os.path.exists(asan) or not os.path.exists(f"{lib}/libclang_rt.fuzzer_no_main-x86_64.a"):
        return None
    out = BUILD / "asan_with_fuzzer.so"
    objects = BUILD / "asan-objects"
    objects.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ar", "x", asan], cwd=objects, check=True)
    (objects / "asan_preinit.cpp.o").unlink(missing_ok=True)   # .preinit_array: not in a DSO
    subprocess.run([clang + "++", "-shared", "-o", str(out), *map(str, objects.glob("*.o")),
                    "-Wl,--whole-archive", f"{lib}/libclang_rt.fuzzer_no_main-x86_64.a",
                    f"{lib}/libclang_rt.asan_cxx-x86_64.a", "-Wl,--no-whole-archive",
                    "-lpthread", "-ldl", "-lrt", "-lm"], check=True)
    return str(out)


def run(name: str, seconds: float, extra: list[str], env: dict) -> int:
    code = (f"import sys, atheris; sys.argv = [{name!r}, *sys.argv[1:]]\n"
            f"import {name} as h\n"
            "h.setup()\n"
            "atheris.instrument_all()\n"
            "atheris.Setup(sys.argv, h.one_input)\n"
            "atheris.Fuzz()\n")
    corpus = BUILD / "corpus" / name        # seeds the first time, what the fuzzer found after
    corpus.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "fuzz"))
    harness = __import__(name)
    for i, seed in enumerate(harness.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    args = [f"-max_total_time={int(seconds)}", "-timeout=10", "-rss_limit_mb=4096",
            "-max_len=70000", f"-artifact_prefix={BUILD}/crash-{name}-", *extra, str(corpus)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "fuzz"), **env}
    # From the directory whose vswitch/ is to be fuzzed: `python -c` puts the
    # working directory first on sys.path (the checked build, not the release one).
    cwd = env["PYTHONPATH"].split(":")[0]
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd).returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=[*HARNESSES, "all"])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--build", action="store_true", help="run against the checked build")
    args, extra = p.parse_known_args()      # the rest: libFuzzer arguments, corpus directories
    args.extra = [a for a in extra if a != "--"]
    env = build_checked() if args.build else {"PYTHONPATH": f"{ROOT}:{ROOT / 'fuzz'}"}
    failed = []
    for name in HARNESSES if args.name == "all" else (args.name,):
        print(f"fuzz/{name}: {args.seconds:g} s", flush=True)
        if run(name, args.seconds, args.extra, env) != 0:
            failed.append(name)
    if failed:
        print(f"fuzz: crashes in {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
