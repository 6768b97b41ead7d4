"""Build the Cython core. Metadata lives in pyproject.toml.

Set ``PYRESV_DEBUG=1`` to compile with bounds checks, wraparound and C asserts
turned back on (a debug build for hunting memory errors).
"""

import os

import numpy

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

DEBUG = os.environ.get("PYRESV_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}

extra_compile_args = ["-O0", "-g"] if DEBUG else ["-O2", "-g0"]
define_macros = [] if DEBUG else [("NDEBUG", None)]
define_macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))
# Python's own CFLAGS define NDEBUG: the checked build takes it back out.
undef_macros = ["NDEBUG"] if DEBUG else []

extensions = [
    Extension(
        "pyresv._core.allocator",
        ["csrc/pyresv/_core/allocator.pyx"],
        include_dirs=[numpy.get_include()],  # cimport numpy: batch outputs made without a Python call
        extra_compile_args=extra_compile_args,
        define_macros=define_macros,
        undef_macros=undef_macros,
    ),
    # The benchmarks' baselines (private): the core's C functions in nogil
    # loops and the two-call floor.
    Extension(
        "pyresv._core._baselines",
        ["csrc/pyresv/_core/_baselines.pyx"],
        extra_compile_args=extra_compile_args,
        define_macros=define_macros,
        undef_macros=undef_macros,
    ),
    # The drop-in DepthResource(env, capacity=N) of pyresv.adapters.simpy,
    # compiled (private; the adapter keeps the pure-Python reference).
    Extension(
        "pyresv._core._simpy_fast",
        ["csrc/pyresv/_core/_simpy_fast.pyx"],
        extra_compile_args=extra_compile_args,
        define_macros=define_macros,
        undef_macros=undef_macros,
    ),
]


class BuildPyWithPxd(build_py):
    """Copy the ``.pxd``/``.pyi`` files of ``csrc/`` into the build tree.

    They are the cimport API of the core and its type stubs. An editable
    install reads them in place, so it is skipped there.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for root, _dirs, files in os.walk(os.path.join("csrc", "pyresv")):
            rel = os.path.relpath(root, "csrc")
            for name in files:
                if name.endswith((".pxd", ".pyi")):
                    target = os.path.join(self.build_lib, rel, name)
                    self.mkpath(os.path.dirname(target))
                    self.copy_file(os.path.join(root, name), target)


setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        compiler_directives=directives,
        nthreads=2,
        # The checked build writes its C elsewhere, always afresh: cythonize
        # does not track directives, so the release build's C (in csrc/)
        # would otherwise be reused without the bounds checks.
        build_dir="build/checked" if DEBUG else None,
        force=DEBUG,
    ),
    cmdclass={"build_py": BuildPyWithPxd},
)
