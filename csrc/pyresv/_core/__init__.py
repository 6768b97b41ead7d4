"""The compiled core of pyresv: the depth-pool allocator (``pyresv._core.allocator``).

Its C-level API is cimportable from other Cython code: ``from pyresv._core
cimport ...`` (see ``allocator.pxd``); add :func:`pyresv.get_include` to the
include path.
"""
