"""One place that decides which allocator implementation a caller gets.

``allocator_class("auto")`` is the compiled :class:`pyresv.DepthPoolAllocator`
when the core is built, else the pure-Python reference;
``"compiled"`` and ``"reference"`` ask for one of them. Every layer above
(the simulator, the adapters, the tools) gets its allocator class here, and
:class:`Allocator` is the contract they rely on (DESIGN.md section 1).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol, overload

from pyresv.errors import ConfigError

__all__ = ["ALLOCATORS", "Allocator", "AllocatorFactory", "allocator_class"]

#: The names :func:`allocator_class` accepts.
ALLOCATORS = ("auto", "compiled", "reference")


class Allocator(Protocol):
    """The allocator contract the adapters rely on (DESIGN.md section 1)."""

    @property
    def levels(self) -> int: ...

    @property
    def total(self) -> int: ...

    def acquire(self, pid: int, depth: int = 1, remote: bool = False) -> int: ...

    def release(self, tcb: int) -> None: ...

    def cancel(self, pid: int) -> int: ...

    @property
    def last_ticket(self) -> int: ...

    def cancel_request(self, ticket: int) -> bool: ...

    @overload
    def take_grants(self, tickets: Literal[False] = False) -> list[tuple[int, int]]: ...

    @overload
    def take_grants(self, tickets: Literal[True]) -> list[tuple[int, int, int]]: ...

    def level_of(self, tcb: int) -> int: ...

    def holder(self, tcb: int) -> int: ...

    def pending(self, pid: int | None = None) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def check(self) -> None: ...


#: What builds an :class:`Allocator` from the ``DepthPoolAllocator`` constructor's
#: arguments: the compiled ``pyresv.DepthPoolAllocator``, the pure-Python
#: ``pyresv.reference.DepthPoolAllocator`` or a factory of either.
AllocatorFactory = Callable[..., Allocator]


def allocator_class(name: str = "auto") -> AllocatorFactory:
    """The allocator class called ``name``: ``"compiled"`` (the Cython core),
    ``"reference"`` (the pure-Python oracle) or ``"auto"`` (the core when it is
    built, else the reference).

    Raises :class:`pyresv.errors.ConfigError` (a ``ValueError``) for another
    name, or for ``"compiled"`` when the core is not built.
    """
    if name not in ALLOCATORS:
        raise ConfigError(f"allocator: must be one of {', '.join(ALLOCATORS)}, got {name!r}")
    if name != "reference":
        try:
            from pyresv._core.allocator import DepthPoolAllocator as Compiled
        except ImportError as e:
            if name == "compiled":
                raise ConfigError(f"allocator: the compiled core is not built ({e}); use 'reference'") from None
        else:
            return Compiled
    from pyresv.reference import DepthPoolAllocator as Reference

    return Reference
