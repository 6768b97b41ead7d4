"""Build the example simulator: ``python setup.py build_ext --inplace``.

It compiles against the installed pyresv: ``pyresv.get_include()`` is the
folder that holds ``pyresv/_core/*.pxd``, so ``from pyresv._core cimport ...``
resolves there.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

import pyresv

setup(
    name="nested-sim-example",
    ext_modules=cythonize(
        [Extension("nested_sim", ["nested_sim.pyx"], extra_compile_args=["-O2"])],
        include_path=[pyresv.get_include()],
        compiler_directives={"language_level": 3},
    ),
)
