"""pyresv: deadlock-free nested resource use by reserving resources per depth level.

The allocator (:class:`DepthPoolAllocator`) is compiled Cython; the pure-Python
reference of the same contract is :class:`pyresv.reference.DepthPoolAllocator`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path

from pyresv.errors import PENDING, AllocatorError, QueueFull
from pyresv._core.allocator import DepthPoolAllocator

try:
    __version__ = _version("pyresv")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["DepthPoolAllocator", "PENDING", "AllocatorError", "QueueFull", "get_include", "__version__"]


def get_include() -> str:
    """Directory to add to a downstream Cython build's include path.

    ``from pyresv._core cimport ...`` resolves against it (the ``.pxd`` files
    ship next to the compiled core); see ``examples/cython_sim``.
    """
    import pyresv._core

    return str(Path(pyresv._core.__file__).resolve().parent.parent.parent)
