"""Type stubs of the compiled depth-pool allocator (``allocator.pyx``)."""

from collections.abc import Sequence
from typing import Any, Literal, Self, SupportsIndex, overload

import numpy as np
import numpy.typing as npt

from pyresv.errors import PENDING as PENDING
from pyresv.errors import AllocatorError as AllocatorError
from pyresv.errors import QueueFull as QueueFull

__all__ = ["DepthPoolAllocator", "PENDING", "AllocatorError", "QueueFull"]

class DepthPoolAllocator:
    """One cluster's resource manager (118a/118b): depth-level reserved pools.

    Not locked: while a batch runs without the GIL on one thread, every call
    from another thread, queries included, raises ``AllocatorError`` ("busy").
    """

    # The extension type takes its arguments in __cinit__, i.e. at __new__ time.
    def __new__(
        cls,
        depths: Sequence[tuple[int, int]] | Sequence[Sequence[int]],
        unreserved: int = 0,
        *,
        max_processes: int = 65536,
        max_waiters: int = 65536,
        wake: Literal["deepest", "fifo"] = "deepest",
    ) -> Self: ...
    @property
    def levels(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def depths(self) -> list[tuple[int, int]]: ...
    @property
    def unreserved(self) -> int: ...
    @property
    def max_processes(self) -> int: ...
    @property
    def max_waiters(self) -> int: ...
    @property
    def wake(self) -> Literal["deepest", "fifo"]: ...
    @property
    def nbytes(self) -> int: ...
    def acquire(self, pid: SupportsIndex, depth: SupportsIndex = 1, remote: bool = False) -> int: ...
    def release(self, tcb: SupportsIndex) -> None: ...
    @property
    def last_ticket(self) -> int:
        """The ticket of the newest request that returned PENDING, or -1 before any."""
    def cancel_request(self, ticket: SupportsIndex) -> bool:
        """Cancel the pending request with this ticket; True if it was pending."""
    @overload
    def take_grants(self, tickets: Literal[False] = False) -> list[tuple[int, int]]: ...
    @overload
    def take_grants(self, tickets: Literal[True]) -> list[tuple[int, int, int]]: ...
    def cancel(self, pid: SupportsIndex) -> int: ...
    def release_all(self, pid: SupportsIndex) -> int: ...
    def level_of(self, tcb: SupportsIndex) -> int: ...
    def holder(self, tcb: SupportsIndex) -> int: ...
    def pending(self, pid: SupportsIndex | None = None) -> int: ...
    def owned_pool(self, pid: SupportsIndex, level: SupportsIndex) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def check(self) -> None: ...
    def acquire_many(
        self,
        pids: npt.ArrayLike,
        depths: npt.ArrayLike,
        remote: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.int32]:
        """The loop of :meth:`acquire`, all or nothing: on QueueFull nothing was done."""
    def release_many(self, tcbs: npt.ArrayLike) -> None:
        """The loop of :meth:`release`; every TCB is checked first."""
    def __reduce__(self) -> tuple[Any, ...]: ...
