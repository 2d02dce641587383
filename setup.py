"""Cython build of the data plane; everything else is in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("vswitch._fastpath", ["vswitch/_fastpath.pyx"],
                   extra_compile_args=["-O2"])],
        compiler_directives={"language_level": 3},
        annotate=False,
    ),
)
