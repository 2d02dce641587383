"""Cython build of the data plane; everything else is in pyproject.toml.

VSWITCH_DEBUG=1 builds the checked variant the fuzzers run: -O0 -g, Cython's
bounds, wraparound and initialization checks (no line tracing: Cython's
traced GIL-free functions take the GIL on return, and a forwarding thread
would then wait for it with a table's lock held), and
AddressSanitizer + UndefinedBehaviorSanitizer on the C code, so that an
out-of-bounds access is reported instead of silently read (run Python with
the sanitizer runtime preloaded: fuzz/run.py does). With CC=clang it also
carries libFuzzer's coverage instrumentation, so the fuzzers are guided by
the C code's branches too. VSWITCH_ANNOTATE=1 writes Cython's annotated
HTML (vswitch/_fastpath.html) for profiling.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("VSWITCH_DEBUG") == "1"
CLANG = "clang" in os.environ.get("CC", "")

directives = {"language_level": 3, "cdivision": True, "boundscheck": DEBUG,
              "wraparound": DEBUG, "initializedcheck": DEBUG}
compile_args, link_args = ["-O2"], []
if DEBUG:
    sanitizers = "address,undefined" + (",fuzzer-no-link" if CLANG else "")
    compile_args = ["-O0", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitizers}"]
    # The sanitizer runtime is not linked in: Python preloads it (fuzz/run.py).
    link_args = [f"-fsanitize={sanitizers}"]

setup(
    ext_modules=cythonize(
        [Extension("vswitch._fastpath", ["vswitch/_fastpath.pyx"],
                   extra_compile_args=compile_args, extra_link_args=link_args)],
        compiler_directives=directives,
        annotate=os.environ.get("VSWITCH_ANNOTATE") == "1",
        force=DEBUG,
    ),
)
