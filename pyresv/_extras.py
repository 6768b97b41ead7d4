"""Optional parts of pyresv and the extras that install them.

The base install (``pip install pyresv``) is the allocator, the simulator, the
``demo``/``simulate``/``check``/``faults`` commands and the SimPy, executor and
asyncio adapters: numpy and SimPy only. Sweeps and sizing on Dask, plots and
the Dask adapter need an extra; asking for them without it raises
:class:`MissingExtra`, whose message names the extra to install.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "require"]

#: extra -> the top-level modules it provides (pyproject.toml's optional-dependencies).
EXTRAS: dict[str, tuple[str, ...]] = {
    "sweep": ("distributed", "tqdm"),
    "dask": ("distributed",),
    "plots": ("matplotlib",),
}


class MissingExtra(ImportError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, what: str) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra ({module} is not installed): pip install 'pyresv[{extra}]'",
            name=module,
        )
        self.extra = extra


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` is installed.

    ``what`` names the feature in the message (``"pyresv sweep"``). It only
    looks the modules up (``importlib.util.find_spec``): nothing is imported.
    """
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtra(extra, module, what)
