"""Adapters that put a depth-pool allocator under other runtimes.

* :mod:`pyresv.adapters.simpy`: ``DepthResource``, a SimPy resource.
* :mod:`pyresv.adapters.executor`: ``DepthPoolExecutor``, a ``concurrent.futures`` executor.
* :mod:`pyresv.adapters.aio`: ``DepthLimiter``, an asyncio limiter.
* :mod:`pyresv.adapters.dask`: ``DepthClient``, nested Dask tasks; the levels
  are Dask worker resources, so Dask's scheduler does the queueing there.

The first three queue requests in the allocator and learn that a request was served
from the allocator's grants. :class:`WaitBook` (the executor's and the limiter's)
maps each grant back to its waiter by the request's ticket and withdraws one
waiter exactly (``cancel_request``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

from pyresv._factory import Allocator, AllocatorFactory

__all__ = ["Allocator", "AllocatorFactory", "AllocatorView", "WaitBook", "materialize_depths"]


def materialize_depths(depths: Any) -> Any:
    """``depths`` read once into a list, each level a tuple (an iterator works, as a list does).

    An adapter hands the result to the allocator and then checks it itself, so
    both see the same levels. What cannot be read as a sequence is returned as
    given, for the allocator to refuse with its own message.
    """
    if isinstance(depths, (str, bytes)) or not hasattr(depths, "__iter__"):
        return depths
    return [tuple(d) if hasattr(d, "__iter__") and not isinstance(d, (str, bytes)) else d for d in depths]


class _Queries(Protocol):
    """The read-only part of the allocator contract (what :class:`AllocatorView` forwards)."""

    @property
    def levels(self) -> int: ...

    @property
    def total(self) -> int: ...

    def level_of(self, tcb: int) -> int: ...

    def holder(self, tcb: int) -> int: ...

    def pending(self, pid: int | None = None) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def check(self) -> None: ...


class AllocatorView:
    """An adapter's allocator, read-only: its queries, none of the calls that change it.

    The adapters own their allocator's state (every pending request has a
    waiter in a :class:`WaitBook`); a request or release made behind their back
    would hand a grant to no waiter. They expose this view instead.
    """

    __slots__ = ("_alloc",)

    def __init__(self, allocator: _Queries) -> None:
        self._alloc = allocator

    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return self._alloc.levels

    @property
    def total(self) -> int:
        """Number of TCBs."""
        return self._alloc.total

    @property
    def wake(self) -> str:
        """The wake policy for unreserved TCBs."""
        return str(getattr(self._alloc, "wake", "deepest"))

    def level_of(self, tcb: int) -> int:
        """The level of the TCB's pool, 0 for unreserved."""
        return self._alloc.level_of(tcb)

    def holder(self, tcb: int) -> int:
        """The pid holding the TCB, or -1."""
        return self._alloc.holder(tcb)

    def pending(self, pid: int | None = None) -> int:
        """Pending requests, of ``pid`` or of all."""
        return self._alloc.pending(pid)

    def stats(self) -> dict[str, Any]:
        """The allocator's ``stats()``."""
        return self._alloc.stats()

    def check(self) -> None:
        """The allocator's ``check()``: raises ``pyresv.AllocatorError`` on a broken invariant."""
        self._alloc.check()

    def __repr__(self) -> str:
        return f"AllocatorView({self._alloc!r})"


class WaitBook:
    """The pending requests of one allocator, so that grants find their waiters.

    A waiter is any object (a future, a work item). Each pending request is
    recorded under the allocator's ticket for it (``last_ticket`` right after
    the ``acquire`` that returned ``PENDING``), and a grant names the ticket it
    served (``take_grants(tickets=True)``): the book never infers which of a
    pid's requests a TCB went to. A withdrawn request is cancelled by its ticket
    (``cancel_request``), so the pid's other requests keep their place in the
    queue.

    Invariant: the book holds exactly the allocator's pending requests made
    through it, each with its pid, level and waiter.
    """

    __slots__ = ("_alloc", "_by_ticket")

    def __init__(self, allocator: Allocator) -> None:
        self._alloc = allocator
        #: ``ticket -> (pid, level, waiter)``, in arrival order (tickets increase).
        self._by_ticket: dict[int, tuple[int, int, Any]] = {}

    def add(self, pid: int, level: int, waiter: Any) -> int:
        """Record that ``pid``'s request at ``level``, just queued, is pending for ``waiter``.

        Call it right after the ``acquire`` that returned ``PENDING`` (the
        request's ticket is the allocator's ``last_ticket``). Returns the
        ticket: the waiter's name for :meth:`contains` and :meth:`withdraw`.
        """
        ticket = self._alloc.last_ticket
        self._by_ticket[ticket] = (pid, level, waiter)
        return ticket

    def pop(self, ticket: int) -> tuple[int, Any]:
        """The ``(level, waiter)`` of the request with this ticket (a grant served it); removed.

        Raises ``KeyError`` naming the ticket when the book has no such request
        (the allocator was used behind the adapter's back).
        """
        try:
            _pid, level, waiter = self._by_ticket.pop(ticket)
        except KeyError:
            raise KeyError(f"grant to ticket {ticket}, a request not made through this book") from None
        return level, waiter

    def contains(self, ticket: int) -> bool:
        """Whether the request with this ticket still pends in the book."""
        return ticket in self._by_ticket

    def withdraw(self, ticket: int) -> None:
        """Cancel the pending request with this ticket; the pid's other requests keep their place.

        Raises ``KeyError`` when it is not in the book.
        """
        if ticket not in self._by_ticket:
            raise KeyError(f"ticket {ticket} has no pending request in this book")
        if not self._alloc.cancel_request(ticket):
            raise RuntimeError(f"ticket {ticket} is in the book but not pending in the allocator")
        del self._by_ticket[ticket]

    def drop_pid(self, pid: int) -> list[tuple[int, Any]]:
        """Cancel every pending request of ``pid``; return their ``(level, waiter)``, oldest first."""
        tickets = [t for t, (p, _lvl, _w) in self._by_ticket.items() if p == pid]
        if tickets:
            self._alloc.cancel(pid)
        return [self.pop(t) for t in tickets]

    def drop_all(self) -> list[tuple[int, Any]]:
        """Cancel every pending request in the book; return their ``(level, waiter)``, oldest first."""
        entries = list(self._by_ticket.values())
        for pid in dict.fromkeys(p for p, _lvl, _w in entries):
            self._alloc.cancel(pid)
        self._by_ticket.clear()
        return [(level, waiter) for _p, level, waiter in entries]

    def pids(self) -> list[int]:
        """The pids with pending requests, each once."""
        return list(dict.fromkeys(p for p, _lvl, _w in self._by_ticket.values()))

    def entries(self) -> Iterator[tuple[int, int, Any]]:
        """``(pid, level, waiter)`` of every pending request, oldest first."""
        yield from list(self._by_ticket.values())

    @property
    def count(self) -> int:
        """Number of pending requests in the book."""
        return len(self._by_ticket)

    def __len__(self) -> int:
        return len(self._by_ticket)
