"""pyresv: deadlock-free nested resource use by reserving resources per depth level.

The allocator (:class:`DepthPoolAllocator`) is compiled Cython; the pure-Python
reference of the same contract is :class:`pyresv.reference.DepthPoolAllocator`.

Layers, imported one way (DESIGN.md): this package's allocator layer
(``pyresv._core``, :mod:`pyresv.reference`, :mod:`pyresv.errors`,
``pyresv._validate``) < :mod:`pyresv.sim` (the storage-controller model) <
:mod:`pyresv.adapters` (SimPy, executor, asyncio/anyio, Dask) <
:mod:`pyresv.tools` (CLI, sweeps, sizing, reports, model check).

The compiled core is imported lazily, on first use of
:class:`DepthPoolAllocator`, so that ``pyresv.reference`` and ``pyresv.errors``
work on a machine where the core is not built.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyresv.errors import PENDING, AllocatorError, ConfigError, QueueFull

if TYPE_CHECKING:
    from pyresv._core.allocator import DepthPoolAllocator

try:
    __version__ = _version("pyresv")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DepthPoolAllocator", "PENDING", "AllocatorError", "QueueFull", "ConfigError", "get_include", "__version__",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the compiled core loads on first use (CPython's
    # concurrent/futures/__init__.py does the same for ProcessPoolExecutor).
    if name == "DepthPoolAllocator":
        from pyresv._core.allocator import DepthPoolAllocator

        globals()["DepthPoolAllocator"] = DepthPoolAllocator
        return DepthPoolAllocator
    raise AttributeError(f"module 'pyresv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"DepthPoolAllocator"})


def get_include() -> str:
    """Directory to add to a downstream Cython build's include path.

    ``from pyresv._core cimport ...`` resolves against it (the ``.pxd`` files
    ship next to the compiled core); see ``examples/cython_sim``.
    """
    import pyresv._core

    return str(Path(pyresv._core.__file__).resolve().parent.parent.parent)
